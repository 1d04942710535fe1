"""Generate safemodel_ci/data/tf_ops.json from TensorFlow's op registry.

Run once per TensorFlow release in an environment that has TensorFlow
(``pip install tensorflow-cpu``; ``python tools/gen_tf_ops.py``); the scanner only reads the JSON.

The allowlist is the ops that compute on their inputs: every op TensorFlow registers as stateless,
minus the stateless ops that read files, write debug dumps or call Python (listed below with the
reason the scanner reports), plus the stateful ops every model uses that still only touch memory
(variables, function calls, control flow, random numbers, lookup tables, in-memory iterators and
queues). Checkpoint ops (SaveV2, RestoreV2 ...) are kept apart: the scanner allows them only in
the saver's own subgraph.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session as c_api

_FILE = "reads or writes files"
_PY = "calls back into Python"
_NET = "reaches other processes over the network"
_DEBUG = "writes debug dumps to file:// or grpc:// URLs named in the graph"

#: Ops that touch the file system, run Python, or reach the network: CRITICAL.
CRITICAL = {
    "ReadFile": "reads a file", "WriteFile": "writes a file", "MatchingFiles": "lists files",
    "ImmutableConst": "memory-maps a file", "InitializeTableFromTextFile": "reads a file",
    "InitializeTableFromTextFileV2": "reads a file", "LoadAndRemapMatrix": "reads a checkpoint file",
    "GenerateVocabRemapping": "reads vocabulary files", "DecodeProtoV2": "may read a descriptor file",
    "EncodeProto": "may read a descriptor file", "Skipgram": "reads a text file",
    "FixedUnigramCandidateSampler": "reads a vocabulary file",
    "RecordInput": "reads files matching a pattern",
    "CreateSummaryFileWriter": "writes files", "CreateSummaryDbWriter": "writes a database file",
    "WholeFileReader": _FILE, "WholeFileReaderV2": _FILE, "TextLineReader": _FILE, "TextLineReaderV2": _FILE,
    "FixedLengthRecordReader": _FILE, "FixedLengthRecordReaderV2": _FILE, "TFRecordReader": _FILE,
    "TFRecordReaderV2": _FILE, "LMDBReader": _FILE, "IdentityReader": _FILE, "IdentityReaderV2": _FILE,
    "TextLineDataset": _FILE, "TFRecordDataset": _FILE, "TFRecordDatasetV2": _FILE,
    "FixedLengthRecordDataset": _FILE, "FixedLengthRecordDatasetV2": _FILE, "CSVDataset": _FILE,
    "CSVDatasetV2": _FILE, "ExperimentalCSVDataset": _FILE, "LMDBDataset": _FILE,
    "ExperimentalLMDBDataset": _FILE, "SqlDataset": "opens a database",
    "ExperimentalSqlDataset": "opens a database",
    "MatchingFilesDataset": "lists files", "ExperimentalMatchingFilesDataset": "lists files",
    "SnapshotDataset": _FILE, "SnapshotDatasetV2": _FILE, "SnapshotDatasetReader": _FILE,
    "SnapshotNestedDatasetReader": _FILE, "SnapshotChunkDataset": _FILE, "ListSnapshotChunksDataset": _FILE,
    "DistributedSave": _FILE, "SaveDataset": _FILE, "SaveDatasetV2": _FILE, "LoadDataset": _FILE,
    "DatasetToTFRecord": "writes a file", "ExperimentalDatasetToTFRecord": "writes a file",
    "CacheDataset": "may write cache files", "CacheDatasetV2": "may write cache files",
    "CalibrationStatisticsSaver": "writes a file", "FileSystemSetConfiguration": "reconfigures file systems",
    "DebugIdentity": _DEBUG, "DebugIdentityV2": _DEBUG, "DebugIdentityV3": _DEBUG, "DebugNanCount": _DEBUG,
    "DebugNumericSummary": _DEBUG, "DebugNumericSummaryV2": _DEBUG, "DumpTensor": _DEBUG,
    "PyFunc": _PY, "PyFuncStateless": _PY, "EagerPyFunc": _PY,
    "DataServiceDataset": _NET, "DataServiceDatasetV2": _NET, "DataServiceDatasetV3": _NET,
    "DataServiceDatasetV4": _NET, "RegisterDataset": _NET, "RegisterDatasetV2": _NET, "Rpc": _NET,
    "TryRpc": _NET,
    "RpcClient": _NET, "RpcCall": _NET, "RpcServer": _NET, "RpcServerStart": _NET, "RpcServerRegister": _NET,
    "RpcGetValue": _NET, "RpcCheckStatus": _NET, "DeleteRpcFutureResource": _NET, "RemoteCall": _NET,
}
#: Ops of the collective families reach other workers: CRITICAL too.
CRITICAL_PREFIXES = {"Collective": _NET}

#: Checkpoint ops: allowed only inside the saver's own subgraph, on the saver's filename.
CHECKPOINT = ["SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "SaveSlices", "Restore", "RestoreSlice"]

#: Stateless ops that are not pure compute: HIGH unless allowed by configuration.
NOT_COMPUTE = ["Copy", "CopyHost", "DatasetFromGraph", "XlaCustomCall", "XlaCustomCallV2", "XlaLaunchV2",
               "TPUPartitionedCall", "SleepDataset", "ExperimentalSleepDataset", "ReaderRead",
               "ReaderReadUpTo",
               "ReaderReset", "ReaderRestoreState", "ReaderSerializeState", "ReaderNumRecordsProduced",
               "ReaderNumWorkUnitsCompleted"]

#: Stateful ops that only touch the process's memory: variables, calls and control flow, random
#: numbers, lookup tables, in-memory datasets, iterators, queues and assertions.
STATEFUL_COMPUTE = re.compile(r"""(
    VarHandleOp|_VarHandlesOp|ReadVariableOp|_ReadVariablesOp|AssignVariableOp|AssignAddVariableOp|
    AssignSubVariableOp|VarIsInitializedOp|VariableShape|Variable|VariableV2|TemporaryVariable|
    DestroyResourceOp|DisableCopyOnRead|Resource(Gather|GatherNd|Scatter\w*|Apply\w*|SparseApply\w*|
    StridedSliceAssign|CountUpTo)|
    StatefulPartitionedCall|If|While|Case|_If|_While|_Arg|_Retval|NoOp|
    Random\w*|TruncatedNormal|ParameterizedTruncatedNormal|Multinomial|Stateful(Uniform\w*|StandardNormal\w*|
    TruncatedNormal|RandomBinomial)|RngReadAndSkip|RngSkip|NonDeterministicInts|StatelessRandomGetAlg|
    (Anonymous|Delete|Dummy)(Random)?SeedGenerator|SampleDistortedBoundingBox(V2)?|
    (All|LogUniform|Uniform|LearnedUnigram|ThreadUnsafeUnigram)CandidateSampler|
    (Anonymous)?(Mutable)?(Dense)?HashTable(OfTensors)?(V2)?|AnonymousMutable\w*|LookupTable\w+V2|
    InitializeTableV2|InitializeTableFromDataset|
    Assert|CheckNumerics(V2)?|Print|PrintV2|Timestamp|GuaranteeConst|DeepCopy|Empty|DeviceIndex|
    DevicePlacementOp|GraphDefVersion|IsTensorFloat32Enabled|
    TensorArray\w*|Stack(V2|PushV2|PopV2|CloseV2)?|Mutex(V2|Lock)|ConsumeMutexLock|
    (Padding)?FIFOQueue(V2)?|PriorityQueue(V2)?|RandomShuffleQueue(V2)?|Queue\w+V2|
    (Ordered)?Map(Clear|IncompleteSize|Peek|Size|Stage|Unstage|UnstageNoKey)|Stage(Clear|Peek|Size)?|Unstage|
    (Sparse)?ConditionalAccumulator|ResourceAccumulator\w+|ResourceConditionalAccumulator|Barrier|
    AnonymousIterator(V2|V3)?|Iterator(V2)?|IteratorGetNext(Sync|AsOptional)?|MakeIterator|DeleteIterator|
    OneShotIterator|DatasetToSingleElement|ReduceDataset|GeneratorDataset|TensorDataset|TensorSliceDataset|
    SparseTensorSliceDataset|RangeDataset|(Experimental)?RandomDataset(V2)?|ShuffleDatasetV[23]|
    ShuffleAndRepeatDatasetV2|(Experimental)?GroupByReducerDataset|(Anonymous|Delete|Dummy)MemoryCache|
    DummyIterationCounter|GlobalShuffleDataset|ListDataset|
    CudnnRNN\w*|BoostedTrees\w+|IsBoostedTrees\w+|
    AddManySparseToTensorsMap|AddSparseToTensorsMap|TakeManySparseFromTensorsMap
)\Z""", re.VERBOSE)


def main() -> int:
    buf = c_api.TF_GetAllOpList()
    ops = op_def_pb2.OpList()
    ops.ParseFromString(c_api.TF_GetBuffer(buf))
    registered = {o.name: o for o in ops.op}
    critical = dict(CRITICAL)
    for name in registered:
        for prefix, why in CRITICAL_PREFIXES.items():
            if name.startswith(prefix):
                critical.setdefault(name, why)
    excluded = set(critical) | set(CHECKPOINT) | set(NOT_COMPUTE)
    allowed = sorted(n for n, o in registered.items() if n not in excluded
                     and (not o.is_stateful or STATEFUL_COMPUTE.match(n)))
    stateful_allowed = sorted(n for n in allowed if registered[n].is_stateful)
    data = {
        "generated_by": "tools/gen_tf_ops.py",
        "tensorflow_version": tf.__version__,
        "registered": len(registered),
        "allowed": allowed,
        "critical": dict(sorted(critical.items())),
        "checkpoint": CHECKPOINT,
        "not_compute": sorted(NOT_COMPUTE),
    }
    out = Path(__file__).resolve().parent.parent / "safemodel_ci" / "data" / "tf_ops.json"
    out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    print(f"{out}: {len(registered)} registered ops, {len(allowed)} allowlisted ({len(stateful_allowed)} of "
          f"them stateful), {len(critical)} critical, {len(CHECKPOINT)} checkpoint ops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
