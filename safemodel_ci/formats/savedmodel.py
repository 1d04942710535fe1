"""TensorFlow SavedModel (``saved_model.pb``), its chunked form, and ``keras_metadata.pb``.

The protobuf is decoded directly (no TensorFlow). Field numbers, from TensorFlow's public protos
(``core/protobuf/saved_model.proto``, ``meta_graph.proto``, ``core/framework/graph.proto``,
``function.proto``, ``node_def.proto``, ``attr_value.proto``):

- SavedModel: saved_model_schema_version=1, meta_graphs=2 (MetaGraphDef)
- MetaGraphDef: meta_info_def=1, graph_def=2, saver_def=3, collection_def=4, signature_def=5,
  asset_file_def=6, object_graph_def=7
- GraphDef: node=1 (NodeDef), library=2 (FunctionDefLibrary)
- FunctionDefLibrary: function=1 (FunctionDef); FunctionDef: signature=1 (OpDef, name=1), node_def=3
- NodeDef: name=1, op=2, attr=5 (map entry key=1, value=2 AttrValue)
- AttrValue: list=1 (ListValue, func=9), s=2, func=10 (NameAttrList: name=1, attr=2)

Every op of the graph and of every library function is collected, and ``NameAttrList.name`` values
too (attr_value.proto: a func attr may name a primitive op, not only a library function). File,
Python-callback and network ops are reported with op, node and function; the checkpoint ops that
every SavedModel's own saver uses are listed at INFO and never block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator, List, Optional, Set, Tuple

from ..context import ScanContext
from ..protobuf import LEN, VARINT, ProtobufError, ProtoView, looks_like_message, looks_like_truncated_message
from ..source import ByteSource
from .interface import FormatReader
from .keras_config import walk_keras_config

#: Ops that touch the file system, run Python, or reach the network when the graph runs.
DANGEROUS_OPS = {
    # files
    "ReadFile": "reads a file", "WriteFile": "writes a file", "MatchingFiles": "lists files",
    "ImmutableConst": "memory-maps a file", "InitializeTableFromTextFile": "reads a file",
    "InitializeTableFromTextFileV2": "reads a file", "LoadAndRemapMatrix": "reads a checkpoint file",
    "GenerateVocabRemapping": "reads vocabulary files", "DecodeProtoV2": "may read a descriptor file",
    "CreateSummaryFileWriter": "writes files", "CreateSummaryDbWriter": "writes a database file",
    "WholeFileReader": "reads files", "WholeFileReaderV2": "reads files",
    "TextLineReader": "reads files", "TextLineReaderV2": "reads files",
    "FixedLengthRecordReader": "reads files", "FixedLengthRecordReaderV2": "reads files",
    "TFRecordReader": "reads files", "TFRecordReaderV2": "reads files", "LMDBReader": "reads files",
    # datasets that read or write files
    "TextLineDataset": "reads files", "TFRecordDataset": "reads files", "TFRecordDatasetV2": "reads files",
    "FixedLengthRecordDataset": "reads files", "FixedLengthRecordDatasetV2": "reads files",
    "CSVDataset": "reads files", "CSVDatasetV2": "reads files", "ExperimentalCSVDataset": "reads files",
    "LMDBDataset": "reads files", "ExperimentalLMDBDataset": "reads files",
    "SqlDataset": "opens a database", "ExperimentalSqlDataset": "opens a database",
    "MatchingFilesDataset": "lists files", "ExperimentalMatchingFilesDataset": "lists files",
    "SnapshotDataset": "reads and writes files", "SnapshotDatasetV2": "reads and writes files",
    "SaveDataset": "writes files", "SaveDatasetV2": "writes files", "LoadDataset": "reads files",
    "DatasetToTFRecord": "writes a file", "ExperimentalDatasetToTFRecord": "writes a file",
    "CacheDataset": "may write cache files", "CacheDatasetV2": "may write cache files",
    # Python callbacks
    "PyFunc": "calls Python", "PyFuncStateless": "calls Python", "EagerPyFunc": "calls Python",
    # network
    "DataServiceDataset": "connects to a data service",
    "DataServiceDatasetV2": "connects to a data service",
    "DataServiceDatasetV3": "connects to a data service",
    "DataServiceDatasetV4": "connects to a data service",
    "RegisterDataset": "connects to a data service", "RegisterDatasetV2": "connects to a data service",
    "Rpc": "makes RPC calls", "TryRpc": "makes RPC calls", "RpcClient": "makes RPC calls",
    "RpcCall": "makes RPC calls", "RpcServer": "opens an RPC server", "RpcServerStart": "opens an RPC server",
}
#: The saver's own ops: every SavedModel has them. Listed, never blocking.
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "SaveSlices", "Restore",
                            "RestoreSlice", "ShardedFilename", "ShardedFilespec"})
#: Riegeli/records files start with these 64 bytes: a chunked SavedModel (``saved_model.cpb``).
RIEGELI_SIGNATURE = bytes.fromhex(
    "83af70d10d884a3f0000000000000000400000000000000091bac23c9287e1a9"
    "0000000000000000e19f13c0e9b1c37273000000000000000000000000000000")
MAX_REPORTED_OPS = 200


@dataclass(frozen=True)
class OpUse:
    op: str
    node: str
    function: Optional[str]
    offset: int
    output_stream: Optional[str] = None


def _is_savedmodel(source: ByteSource, head: bytes) -> bool:
    if not head or head[0] not in (0x08, 0x12):
        return False
    view = ProtoView(source)
    if not looks_like_message(view, {1: VARINT, 2: LEN}, {2}):
        # A cut-off file still claims the format, so that it is reported unreadable, not unknown.
        return head[0] == 0x08 and looks_like_truncated_message(view, {1: VARINT, 2: LEN}, {1}, {2})
    try:
        for f in view.fields():
            if f.number == 2:
                meta = view.sub(f)
                return looks_like_message(meta, {n: LEN for n in range(1, 8)}, set()) and any(
                    g.number in (1, 2) and g.wire_type == LEN for g in meta.fields())
    except ProtobufError:
        return False
    return False


def _map_entries(view: ProtoView, number: int) -> Iterator[Tuple[str, ProtoView]]:
    """(key, value view) of a ``map<string, Message>`` field."""
    for f in view.fields():
        if f.number == number and f.wire_type == LEN:
            entry = view.sub(f)
            key, value = "", None
            for g in entry.fields():
                if g.number == 1 and g.wire_type == LEN:
                    key = entry.text_of(g, 4096)
                elif g.number == 2 and g.wire_type == LEN:
                    value = entry.sub(g)
            if value is not None:
                yield key, value


class GraphWalk:
    """Collects op uses from GraphDefs and their function libraries."""

    def __init__(self, ctx: ScanContext) -> None:
        self.ctx = ctx
        self.uses: List[OpUse] = []
        self.func_refs: List[OpUse] = []
        self.library: Set[str] = set()
        self.nodes = 0

    def graph(self, g: ProtoView) -> None:
        for f in g.fields():
            if f.number == 1 and f.wire_type == LEN:
                self.node(g.sub(f), None)
            elif f.number == 2 and f.wire_type == LEN:
                self.function_library(g.sub(f))

    def function_library(self, lib: ProtoView) -> None:
        for f in lib.fields():
            if f.number == 1 and f.wire_type == LEN:
                self.function(lib.sub(f))

    def function(self, fn: ProtoView) -> None:
        name = None
        nodes = []
        for f in fn.fields():
            if f.number == 1 and f.wire_type == LEN:
                sig = fn.sub(f)
                for g in sig.fields():
                    if g.number == 1 and g.wire_type == LEN:
                        name = sig.text_of(g, 4096)
            elif f.number == 3 and f.wire_type == LEN:
                nodes.append(fn.sub(f))
        if name:
            self.library.add(name)
        for node in nodes:
            self.node(node, name or "<unnamed function>")
        for key, value in _map_entries(fn, 5):  # the function's own attrs may name functions too
            self.attr(value, f"<attr {key}>", name or "<unnamed function>", 0)

    def node(self, node: ProtoView, function: Optional[str]) -> None:
        self.nodes += 1
        if self.nodes % 4096 == 0:
            self.ctx.check_deadline()
        name, op, stream = "", "", None
        for f in node.fields():
            if f.number == 1 and f.wire_type == LEN:
                name = node.text_of(f, 4096)
            elif f.number == 2 and f.wire_type == LEN:
                op = node.text_of(f, 4096)
        for key, value in _map_entries(node, 5):
            if key == "output_stream":
                stream = self._attr_string(value)
            self.attr(value, name, function, 0)
        self.uses.append(OpUse(op, name, function, node.start, stream))

    @staticmethod
    def _attr_string(value: ProtoView) -> Optional[str]:
        for f in value.fields():
            if f.number == 2 and f.wire_type == LEN:
                return value.text_of(f, 4096)
        return None

    def attr(self, value: ProtoView, node: str, function: Optional[str], depth: int) -> None:
        if depth > 32:
            raise ProtobufError("attribute values nested too deeply", value.start)
        for f in value.fields():
            if f.number == 10 and f.wire_type == LEN:
                self.name_attr_list(value.sub(f), node, function, depth)
            elif f.number == 1 and f.wire_type == LEN:
                lst = value.sub(f)
                for g in lst.fields():
                    if g.number == 9 and g.wire_type == LEN:
                        self.name_attr_list(lst.sub(g), node, function, depth)

    def name_attr_list(self, nal: ProtoView, node: str, function: Optional[str], depth: int) -> None:
        for f in nal.fields():
            if f.number == 1 and f.wire_type == LEN:
                self.func_refs.append(OpUse(nal.text_of(f, 4096), node, function, nal.start))
        for _, value in _map_entries(nal, 2):
            self.attr(value, node, function, depth + 1)

    def all_ops(self) -> List[OpUse]:
        # A func attr naming a library function is a call, not an op; anything else is a primitive op.
        return self.uses + [u for u in self.func_refs if u.op not in self.library]


def report_ops(uses: List[OpUse], ctx: ScanContext) -> None:
    """Report the dangerous and checkpoint ops among ``uses``."""
    reported = 0
    checkpoint: dict = {}
    for use in uses:
        where = f"node {use.node!r}" + (f" of function {use.function!r}" if use.function else " of the graph")
        what = DANGEROUS_OPS.get(use.op)
        if use.op == "PrintV2" and use.output_stream and use.output_stream.startswith("file://"):
            what = f"prints to the file {use.output_stream[7:]!r}"
        if what is not None:
            reported += 1
            if reported <= MAX_REPORTED_OPS:
                ctx.report("tf-dangerous-op", f"op {use.op} ({what}) in {where}", offset=use.offset,
                           details={"op": use.op, "node": use.node, "function": use.function})
        elif use.op in CHECKPOINT_OPS:
            checkpoint.setdefault(use.op, []).append(where)
    if reported > MAX_REPORTED_OPS:
        ctx.report("tf-dangerous-op", f"{reported - MAX_REPORTED_OPS} more dangerous op uses not listed",
                   details={"more": reported - MAX_REPORTED_OPS})
    for op, places in sorted(checkpoint.items()):
        ctx.report("tf-checkpoint-op", f"op {op} ({len(places)} uses, e.g. {places[0]})",
                   details={"op": op, "count": len(places)})


class SavedModelReader(FormatReader):
    """``saved_model.pb``: every op of every graph and library function."""

    name = "savedmodel"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return _is_savedmodel(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        view = ProtoView(source)
        walk = GraphWalk(ctx)
        try:
            for f in view.fields():
                if f.number != 2 or f.wire_type != LEN:
                    continue
                meta = view.sub(f)
                for g in meta.fields():
                    if g.number == 2 and g.wire_type == LEN:
                        walk.graph(meta.sub(g))
        except ProtobufError as exc:
            report_ops(walk.all_ops(), ctx)
            ctx.report("protobuf-malformed", f"SavedModel does not decode: {exc}", offset=exc.offset)
            return
        report_ops(walk.all_ops(), ctx)


class ChunkedSavedModelReader(FormatReader):
    """Riegeli records files: how TensorFlow stores a chunked SavedModel (``saved_model.cpb``)."""

    name = "riegeli"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return head[:64] == RIEGELI_SIGNATURE

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        ctx.report("unscanned-unsupported",
                   "Riegeli records file (the format of a chunked SavedModel, saved_model.cpb): its graph "
                   "cannot be inspected by this scanner", offset=0)


# ---- keras_metadata.pb ------------------------------------------------------------------------

def _is_keras_metadata(source: ByteSource, head: bytes) -> bool:
    if not head or head[0] != 0x0A:
        return False
    view = ProtoView(source)
    if not looks_like_message(view, {1: LEN}, {1}):
        return False
    try:
        for f in view.fields():
            if f.number == 1:
                node = view.sub(f)
                for g in node.fields():
                    if g.number == 4 and g.wire_type == LEN:
                        return node.text_of(g, 64).startswith("_tf_keras")
                return False
    except ProtobufError:
        return False
    return False


class KerasMetadataReader(FormatReader):
    """``keras_metadata.pb`` (tf-keras SavedMetadata: nodes=1 -> identifier=4, metadata=5 JSON)."""

    name = "keras-metadata"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return _is_keras_metadata(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        view = ProtoView(source)
        try:
            for f in view.fields():
                if f.number != 1 or f.wire_type != LEN:
                    continue
                node = view.sub(f)
                path, metadata, at = "", None, node.start
                for g in node.fields():
                    if g.number == 3 and g.wire_type == LEN:
                        path = node.text_of(g, 4096)
                    elif g.number == 5 and g.wire_type == LEN:
                        if g.length > ctx.limits.max_in_memory_bytes:
                            ctx.report("unscanned-limit", f"metadata of node {path!r} exceeds the in-memory "
                                       "limit", offset=g.start)
                            continue
                        if ctx.json_too_large(g.length, f"metadata of node {path!r}", offset=g.start):
                            continue
                        metadata, at = node.bytes_of(g, g.length), g.start
                if metadata is None:
                    continue
                try:
                    doc = json.loads(metadata.decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    ctx.report("unscanned-parse-error", f"metadata of node {path!r} is not JSON: {exc}",
                               offset=at)
                    continue
                walk_keras_config(doc, ctx, root=path or "<node>", offset=at)
        except ProtobufError as exc:
            ctx.report("protobuf-malformed", f"keras_metadata.pb does not decode: {exc}", offset=exc.offset)
