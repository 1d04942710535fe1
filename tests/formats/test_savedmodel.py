"""TensorFlow SavedModel and keras_metadata.pb, built with the real protobuf library (no TensorFlow).

The message classes are made at run time from descriptors carrying the field numbers of
TensorFlow's public .proto files, so the encoder is protobuf's own, not ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from safemodel_ci.findings import Severity
from safemodel_ci.formats.savedmodel_reader import RIEGELI_SIGNATURE
from safemodel_ci.scanner import ScanOptions, scan_file

descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
message_factory = pytest.importorskip("google.protobuf.message_factory")
descriptor_pool = pytest.importorskip("google.protobuf.descriptor_pool")

_T = descriptor_pb2.FieldDescriptorProto


def _messages() -> Dict[str, Any]:
    """Classes for the subset of tensorflow.* and tf_keras SavedMetadata messages the scanner reads."""
    fdp = descriptor_pb2.FileDescriptorProto(name="tf_subset.proto", package="tfsub", syntax="proto3")

    def msg(name: str, fields: list, nested: list = ()) -> Any:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        return m

    opt, rep = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED
    s, b, i64, m_ = _T.TYPE_STRING, _T.TYPE_BYTES, _T.TYPE_INT64, _T.TYPE_MESSAGE

    def map_entry(name: str, value_type: str) -> Any:
        e = descriptor_pb2.DescriptorProto(name=name)
        e.field.add(name="key", number=1, type=s, label=opt)
        e.field.add(name="value", number=2, type=m_, label=opt, type_name=value_type)
        e.options.map_entry = True
        return e

    msg("NameAttrList", [("name", 1, s, opt, None), ("attr", 2, m_, rep, ".tfsub.NameAttrList.AttrEntry")],
        [map_entry("AttrEntry", ".tfsub.AttrValue")])
    msg("ListValue", [("s", 2, b, rep, None), ("func", 9, m_, rep, ".tfsub.NameAttrList")])
    # TensorProto: dtype=1 (DT_STRING=7), string_val=8 (tensor.proto).
    msg("TensorProto", [("dtype", 1, _T.TYPE_INT32, opt, None), ("string_val", 8, b, rep, None)])
    msg("AttrValue", [("list", 1, m_, opt, ".tfsub.ListValue"), ("s", 2, b, opt, None),
                      ("i", 3, i64, opt, None), ("tensor", 8, m_, opt, ".tfsub.TensorProto"),
                      ("func", 10, m_, opt, ".tfsub.NameAttrList")])
    msg("NodeDef", [("name", 1, s, opt, None), ("op", 2, s, opt, None), ("input", 3, s, rep, None),
                    ("attr", 5, m_, rep, ".tfsub.NodeDef.AttrEntry")],
        [map_entry("AttrEntry", ".tfsub.AttrValue")])
    msg("ArgDef", [("name", 1, s, opt, None)])
    msg("OpDef", [("name", 1, s, opt, None), ("input_arg", 2, m_, rep, ".tfsub.ArgDef")])
    msg("FunctionDef", [("signature", 1, m_, opt, ".tfsub.OpDef"),
                        ("node_def", 3, m_, rep, ".tfsub.NodeDef")])
    msg("FunctionDefLibrary", [("function", 1, m_, rep, ".tfsub.FunctionDef")])
    msg("GraphDef", [("node", 1, m_, rep, ".tfsub.NodeDef"),
                     ("library", 2, m_, opt, ".tfsub.FunctionDefLibrary")])
    msg("MetaInfoDef", [("meta_graph_version", 1, s, opt, None), ("tags", 4, s, rep, None)])
    # saver.proto: filename_tensor_name=1, save_tensor_name=2, restore_op_name=3.
    msg("SaverDef", [("filename_tensor_name", 1, s, opt, None), ("save_tensor_name", 2, s, opt, None),
                     ("restore_op_name", 3, s, opt, None)])
    # meta_graph.proto: CollectionDef node_list=1 (NodeList value=1).
    msg("NodeList", [("value", 1, s, rep, None)])
    msg("CollectionDef", [("node_list", 1, m_, opt, ".tfsub.NodeList")])
    msg("MetaGraphDef", [("meta_info_def", 1, m_, opt, ".tfsub.MetaInfoDef"),
                         ("graph_def", 2, m_, opt, ".tfsub.GraphDef"),
                         ("saver_def", 3, m_, opt, ".tfsub.SaverDef"),
                         ("collection_def", 4, m_, rep, ".tfsub.MetaGraphDef.CollectionDefEntry")],
        [map_entry("CollectionDefEntry", ".tfsub.CollectionDef")])
    msg("SavedModel", [("saved_model_schema_version", 1, i64, opt, None),
                       ("meta_graphs", 2, m_, rep, ".tfsub.MetaGraphDef")])
    msg("SavedObject", [("node_id", 2, _T.TYPE_INT32, opt, None), ("node_path", 3, s, opt, None),
                        ("identifier", 4, s, opt, None), ("metadata", 5, s, opt, None)])
    msg("SavedMetadata", [("nodes", 1, m_, rep, ".tfsub.SavedObject")])
    pool = descriptor_pool.DescriptorPool()
    fd = pool.Add(fdp)
    return {name: message_factory.GetMessageClass(fd.message_types_by_name[name])
            for name in ("SavedModel", "SavedMetadata")}


MSG = _messages()


def _node(graph_or_fn: Any, name: str, op: str, *inputs: str, **attrs: Any) -> Any:
    node = graph_or_fn.add(name=name, op=op)
    node.input.extend(inputs)
    for key, value in attrs.items():
        if isinstance(value, str):
            node.attr[key].s = value.encode()
        elif isinstance(value, dict):  # a func attr
            node.attr[key].func.name = value["func"]
        elif isinstance(value, list):  # a DT_STRING constant
            node.attr[key].tensor.dtype = 7
            node.attr[key].tensor.string_val.extend(v.encode() for v in value)
    return node


def _function(g: Any, name: str, args: tuple = ()) -> Any:
    fn = g.library.function.add()
    fn.signature.name = name
    for a in args:
        fn.signature.input_arg.add(name=a)
    return fn


def _saver_functions(g: Any, save_prefix: str = "file_prefix", suffix: str = "_temp/part") -> None:
    """The save and restore functions tf.saved_model.save writes (node names and inputs as TF 2.21
    writes them: ``__inference__traced_save_N`` joins the prefix with a temp suffix and shards it)."""
    save = _function(g, "__inference__traced_save_133", ("file_prefix", "read_variable", "savev2_const"))
    nodes = save.node_def
    _node(nodes, "StaticRegexFullMatch", "StaticRegexFullMatch", "file_prefix")
    _node(nodes, "Const", "Const", value=[".part"])
    _node(nodes, "Const_1", "Const", value=[suffix])
    _node(nodes, "Select", "Select", "StaticRegexFullMatch:output:0", "Const:output:0", "Const_1:output:0")
    _node(nodes, "StringJoin", "StringJoin", save_prefix, "Select:output:0")
    _node(nodes, "num_shards", "Const")
    _node(nodes, "ShardedFilename/shard", "Const")
    _node(nodes, "ShardedFilename", "ShardedFilename", "StringJoin:output:0",
          "ShardedFilename/shard:output:0", "num_shards:output:0")
    _node(nodes, "SaveV2/tensor_names", "Const", value=["w/.ATTRIBUTES/VARIABLE_VALUE"])
    _node(nodes, "SaveV2", "SaveV2", "ShardedFilename:filename:0", "SaveV2/tensor_names:output:0")
    _node(nodes, "MergeV2Checkpoints/checkpoint_prefixes", "Pack", "ShardedFilename:filename:0", "^SaveV2")
    _node(nodes, "MergeV2Checkpoints", "MergeV2Checkpoints",
          "MergeV2Checkpoints/checkpoint_prefixes:output:0", "file_prefix")
    restore = _function(g, "__inference__traced_restore_145", ("file_prefix", "assignvariableop_variable"))
    _node(restore.node_def, "RestoreV2/tensor_names", "Const", value=["w/.ATTRIBUTES/VARIABLE_VALUE"])
    _node(restore.node_def, "RestoreV2", "RestoreV2", "file_prefix", "RestoreV2/tensor_names:output:0")
    _node(restore.node_def, "AssignVariableOp", "AssignVariableOp", "assignvariableop_variable",
          "RestoreV2:tensors:0")


def _saved_model(extra_fn_ops=(), extra_graph_ops=(), func_ref: str = "", saver: bool = True,
                 **saver_kwargs: str) -> bytes:
    """A TF2 SavedModel shaped as tf.saved_model.save writes it: a serving signature calling a
    library function, and the saver (filename placeholder, save / restore call nodes, functions)."""
    sm = MSG["SavedModel"](saved_model_schema_version=1)
    mg = sm.meta_graphs.add()
    mg.meta_info_def.tags.append("serve")
    g = mg.graph_def
    _node(g.node, "x", "Placeholder")
    _node(g.node, "w", "VarHandleOp")
    _node(g.node, "call", "StatefulPartitionedCall", "x", "w", f={"func": "__inference_call_42"})
    if saver:
        _node(g.node, "saver_filename", "Placeholder")
        _node(g.node, "StatefulPartitionedCall_1", "StatefulPartitionedCall", "saver_filename", "w",
              f={"func": "__inference__traced_save_133"})
        _node(g.node, "StatefulPartitionedCall_2", "StatefulPartitionedCall", "saver_filename", "w",
              f={"func": "__inference__traced_restore_145"})
        mg.saver_def.filename_tensor_name = "saver_filename:0"
        mg.saver_def.save_tensor_name = "StatefulPartitionedCall_1:0"
        mg.saver_def.restore_op_name = "StatefulPartitionedCall_2"
        _saver_functions(g, **saver_kwargs)
    for name, op, attrs in extra_graph_ops:
        _node(g.node, name, op, **attrs)
    fn = _function(g, "__inference_call_42", ("x", "w"))
    _node(fn.node_def, "read", "ReadVariableOp", "w")
    _node(fn.node_def, "matmul", "MatMul", "x", "read:value:0")
    _node(fn.node_def, "relu", "Relu", "matmul:product:0")
    for name, op, attrs in extra_fn_ops:
        _node(fn.node_def, name, op, **attrs)
    if func_ref:
        n = _node(fn.node_def, "mapper", "MapDataset")
        n.attr["f"].list.func.add(name=func_ref)
    return sm.SerializeToString()


def _tf1_saved_model(restore_from: str = "save/Const", const: str = "model", main_op_runs: str = "",
                     restore_runs: str = "") -> bytes:
    """A TF1 SavedModel (tf.compat.v1.saved_model.Builder): the saver's ops sit in the save/ scope."""
    sm = MSG["SavedModel"](saved_model_schema_version=1)
    mg = sm.meta_graphs.add()
    mg.meta_info_def.tags.append("serve")
    nodes = mg.graph_def.node
    _node(nodes, "x", "Placeholder")
    _node(nodes, "w", "VarHandleOp")
    _node(nodes, "y", "MatMul", "x", "w/Read/ReadVariableOp")
    _node(nodes, "save/filename/input", "Const", value=[const])
    _node(nodes, "save/Const", "PlaceholderWithDefault", "save/filename/input")
    _node(nodes, "save/Const_1", "Const", value=[".part"])
    _node(nodes, "save/Const_2", "Const", value=["_temp/part"])
    _node(nodes, "save/Select", "Select", "save/StaticRegexFullMatch", "save/Const_1", "save/Const_2")
    _node(nodes, "save/StringJoin", "StringJoin", "save/Const", "save/Select")
    _node(nodes, "save/ShardedFilename", "ShardedFilename", "save/StringJoin", "save/ShardedFilename/shard")
    _node(nodes, "save/SaveV2", "SaveV2", "save/ShardedFilename", "save/SaveV2/tensor_names")
    _node(nodes, "save/MergeV2Checkpoints/checkpoint_prefixes", "Pack", "save/ShardedFilename",
          "^save/SaveV2")
    _node(nodes, "save/MergeV2Checkpoints", "MergeV2Checkpoints",
          "save/MergeV2Checkpoints/checkpoint_prefixes", "save/Const")
    _node(nodes, "save/leak", "Const", value=["../../../etc/cron.d/x"])
    _node(nodes, "save/RestoreV2", "RestoreV2", restore_from, "save/RestoreV2/tensor_names")
    _node(nodes, "save/restore_all", "NoOp", "^save/RestoreV2",
          *([f"^{restore_runs}"] if restore_runs else []))
    _node(nodes, "main_op", "NoOp", *([f"^{main_op_runs}"] if main_op_runs else []))
    mg.collection_def["saved_model_main_op"].node_list.value.append("main_op")
    mg.saver_def.filename_tensor_name = "save/Const:0"
    mg.saver_def.save_tensor_name = "save/Identity:0"
    mg.saver_def.restore_op_name = "save/restore_all"
    return sm.SerializeToString()


def _scan(path: Path):
    return scan_file(str(path), ScanOptions())


def test_ordinary_savedmodel_passes(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model())
    result = _scan(p)
    assert "savedmodel" in result.formats
    assert not result.blocking(Severity.LOW)
    assert result.complete
    ops = {f.details["op"] for f in result.findings if f.rule_id == "tf-checkpoint-op"}
    assert ops == {"SaveV2", "RestoreV2", "MergeV2Checkpoints"}
    assert all(f.severity == Severity.INFO for f in result.findings)


def test_readfile_inside_library_function(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(extra_fn_ops=[("read_secret", "ReadFile", {})]))
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "tf-dangerous-op"]
    assert len(hits) == 1
    assert hits[0].details == {"op": "ReadFile", "node": "read_secret", "function": "__inference_call_42"}
    assert "__inference_call_42" in hits[0].message and "read_secret" in hits[0].message
    assert result.blocking(Severity.HIGH)


def test_pyfunc_and_print_to_file_in_graph(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(extra_graph_ops=[
        ("cb", "PyFunc", {"token": "pyfunc_0"}),
        ("log", "PrintV2", {"output_stream": "file:///tmp/leak.txt"}),
        ("stderr", "PrintV2", {"output_stream": "stderr"}),
    ]))
    result = _scan(p)
    hits = {(f.details["op"], f.details["node"]) for f in result.findings if f.rule_id == "tf-dangerous-op"}
    assert hits == {("PyFunc", "cb"), ("PrintV2", "log")}


def test_primitive_op_named_by_func_attr(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(func_ref="WriteFile"))
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "tf-dangerous-op"]
    assert [h.details["op"] for h in hits] == ["WriteFile"]
    assert hits[0].details["node"] == "mapper"


def test_truncated_savedmodel_is_unscanned(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model()[:-7])
    result = _scan(p)
    assert "savedmodel" in result.formats
    assert any(f.rule_id == "protobuf-malformed" for f in result.findings)
    assert not result.complete


def test_chunked_savedmodel_is_unscanned(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.cpb"
    p.write_bytes(RIEGELI_SIGNATURE + b"\x00" * 100)
    result = _scan(p)
    assert [f.rule_id for f in result.findings] == ["unscanned-unsupported"]


def test_other_binaries_are_not_claimed(tmp_path: Path) -> None:
    p = tmp_path / "random.pb"
    p.write_bytes(bytes(range(256)) * 8)
    assert "savedmodel" not in _scan(p).formats
    q = tmp_path / "saved.pb"
    q.write_bytes(b"\x08\x01\x12\x03abc")  # a SavedModel-shaped header whose meta graph is not one
    assert "savedmodel" not in _scan(q).formats


def _keras_metadata(layer: Dict[str, Any]) -> bytes:
    md = MSG["SavedMetadata"]()
    root = md.nodes.add(node_id=0, node_path="root", identifier="_tf_keras_sequential")
    root.metadata = json.dumps({"name": "sequential", "class_name": "Sequential",
                                "config": {"name": "sequential", "layers": []}})
    node = md.nodes.add(node_id=1, node_path="root.layer-0", identifier="_tf_keras_layer")
    node.metadata = json.dumps(layer)
    return md.SerializeToString()


def test_keras_metadata_ordinary_layer_passes(tmp_path: Path) -> None:
    p = tmp_path / "keras_metadata.pb"
    p.write_bytes(_keras_metadata({"name": "dense", "class_name": "Dense",
                                   "config": {"name": "dense", "units": 4, "activation": "relu"}}))
    result = _scan(p)
    assert "keras-metadata" in result.formats
    assert result.findings == []


def test_keras_metadata_lambda_is_critical(tmp_path: Path) -> None:
    import base64
    import marshal

    code = base64.b64encode(marshal.dumps((lambda x: __import__("os").system("id")).__code__)).decode()
    p = tmp_path / "keras_metadata.pb"
    p.write_bytes(_keras_metadata({"name": "lam", "class_name": "Lambda",
                                   "config": {"name": "lam", "function": [code, None, None],
                                              "function_type": "lambda", "module": "__main__"}}))
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "keras-lambda-code"]
    assert len(hits) == 1 and hits[0].severity == Severity.CRITICAL
    assert "system" in hits[0].details["names"] and "root.layer-0" in hits[0].message


def test_savedmodel_directory(tmp_path: Path) -> None:
    """A SavedModel folder as TensorFlow writes it: only the graph and the Keras metadata are claimed."""
    from safemodel_ci.sources.paths import iter_paths

    root = tmp_path / "export"
    (root / "variables").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "saved_model.pb").write_bytes(_saved_model(extra_fn_ops=[("leak", "WriteFile", {})]))
    (root / "keras_metadata.pb").write_bytes(_keras_metadata({"name": "dense", "class_name": "Dense",
                                                              "config": {"name": "dense", "units": 4}}))
    # fingerprint.pb: FingerprintDef (uint64 hashes 1-5, VersionDef 6), not a SavedModel.
    (root / "fingerprint.pb").write_bytes(b"\x08\xd2\x09\x10\xe5\x12\x18\x07\x20\x09\x28\x0b\x32\x02\x08\x01")
    (root / "variables" / "variables.index").write_bytes(b"\x00\x00\x00\x00\x00\x01\x00" + b"\x11" * 40)
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"\x00" * 64)
    results = {Path(p).name: scan_file(p, ScanOptions()) for p in iter_paths([str(root)])}
    assert results["saved_model.pb"].formats == ["savedmodel"]
    assert results["keras_metadata.pb"].formats == ["keras-metadata"]
    assert results["fingerprint.pb"].formats == []
    blocking = {name for name, r in results.items() if r.blocking(Severity.HIGH)}
    assert blocking == {"saved_model.pb"}


# ---- allowlist and the saver's checkpoint ops ------------------------------------------------------

def _rules(path: Path) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for f in _scan(path).findings:
        out.setdefault(f.rule_id, []).append(f)
    return out


def test_tf1_saver_scope_passes(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_tf1_saved_model())
    result = _scan(p)
    assert not result.blocking(Severity.LOW), [f.to_dict() for f in result.findings]
    ops = {f.details["op"] for f in result.findings if f.rule_id == "tf-checkpoint-op"}
    assert ops == {"SaveV2", "RestoreV2", "MergeV2Checkpoints"}


def test_tf1_restore_from_a_constant_is_high(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_tf1_saved_model(restore_from="save/leak"))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert [h.details["op"] for h in hits] == ["RestoreV2"] and hits[0].severity == Severity.HIGH
    assert "../../../etc/cron.d/x" in hits[0].message


@pytest.mark.parametrize("suffix", ["/etc/cron.d/job", "../../outside", "gs://bucket/ckpt", "C:\\\\x"])
def test_saver_with_bad_constant_prefix_is_high(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(suffix=suffix))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert {h.details["op"] for h in hits} == {"SaveV2", "MergeV2Checkpoints"}
    assert all(h.details["function"] == "__inference__traced_save_133" for h in hits)


def test_saver_writing_a_constant_instead_of_its_placeholder_is_high(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(save_prefix="Const_1:output:0"))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    # The shards are written and merged under the constant name; the final merge still targets the
    # placeholder (input 1), but its input 0 lists the constant-named shards.
    assert {h.details["op"] for h in hits} == {"SaveV2", "MergeV2Checkpoints"}
    assert "does not come from the saver's filename placeholder" in hits[0].message


def test_checkpoint_op_in_signature_function_is_high(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(extra_fn_ops=[("dump", "SaveV2", {})]))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert [(h.details["op"], h.details["function"]) for h in hits] == [("SaveV2", "__inference_call_42")]


def test_saver_function_called_from_init_code_is_high(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(extra_graph_ops=[
        ("init", "StatefulPartitionedCall", {"f": {"func": "__inference__traced_save_133"}})]))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert {h.details["op"] for h in hits} == {"SaveV2", "MergeV2Checkpoints"}


def test_checkpoint_ops_without_a_saver_are_high(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(saver=False, extra_graph_ops=[("restore", "RestoreV2", {})]))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert [h.details["op"] for h in hits] == ["RestoreV2"] and "no saver" in hits[0].message


@pytest.mark.parametrize("op", ["DebugIdentity", "DebugIdentityV2", "DebugNumericSummaryV2", "EagerPyFunc",
                                "ReadFile", "CollectiveReduceV2", "RemoteCall"])
def test_file_network_and_python_ops_are_critical(tmp_path: Path, op: str) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(extra_fn_ops=[("x", op, {"debug_urls": "file:///tmp/dump"})]))
    hits = _rules(p)["tf-dangerous-op"]
    assert [h.details["op"] for h in hits] == [op] and hits[0].severity == Severity.CRITICAL


@pytest.mark.parametrize("op", ["SentencepieceOp", "XlaCustomCall", "WriteScalarSummary", "Send"])
def test_ops_outside_the_allowlist_are_high(tmp_path: Path, op: str) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(extra_fn_ops=[("x", op, {}), ("y", op, {})]))
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "tf-unknown-op"]
    assert len(hits) == 1 and hits[0].details["op"] == op and "2 uses" in hits[0].message
    assert result.blocking(Severity.HIGH)


def test_node_calling_a_library_function_by_op_name_passes(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_saved_model(extra_graph_ops=[("direct", "__inference_call_42", {})]))
    assert not _scan(p).blocking(Severity.LOW)


def test_tf_tables_are_generated_from_the_registry() -> None:
    from safemodel_ci.formats.savedmodel import tf_tables

    t = tf_tables()
    assert len(t.allowed) > 1500
    assert {"MatMul", "Conv2D", "StatefulPartitionedCall", "VarHandleOp", "StringJoin"} <= t.allowed
    assert not ({"ReadFile", "WriteFile", "DebugIdentityV2", "PyFunc", "SaveV2"} & t.allowed)
    assert {"SaveV2", "RestoreV2", "MergeV2Checkpoints"} <= t.checkpoint
    assert not (t.allowed & set(t.critical))


def test_tf1_saver_run_by_the_main_op_is_high(tmp_path: Path) -> None:
    """TF1's filename is a PlaceholderWithDefault: run unfed by the main op, SaveV2 writes files."""
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_tf1_saved_model(main_op_runs="save/MergeV2Checkpoints"))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert {h.details["op"] for h in hits} == {"SaveV2", "MergeV2Checkpoints"}
    assert all("init/main op" in h.message for h in hits)


def test_tf1_restore_that_writes_is_high(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_tf1_saved_model(restore_runs="save/SaveV2"))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert [h.details["op"] for h in hits] == ["SaveV2"] and "restored" in hits[0].message


def test_tf1_filename_default_outside_the_folder_is_high(tmp_path: Path) -> None:
    p = tmp_path / "saved_model.pb"
    p.write_bytes(_tf1_saved_model(const="/etc/cron.d/model"))
    hits = _rules(p)["tf-checkpoint-op-misplaced"]
    assert {h.details["op"] for h in hits} == {"SaveV2", "MergeV2Checkpoints", "RestoreV2"}
    assert "/etc/cron.d/model" in hits[0].message


def test_saver_def_occurring_twice_is_merged_as_protobuf_merges_it(tmp_path: Path) -> None:
    """A second saver_def naming only restore_op_name replaces the first's (protobuf merge): the
    restore TensorFlow runs on load is then the main op's node that writes a checkpoint, not the
    saver's restore. The scanner read the first saver_def only."""
    sm = MSG["SavedModel"].FromString(_tf1_saved_model())
    extra = MSG["SavedModel"]()
    mg = extra.meta_graphs.add()
    mg.saver_def.restore_op_name = "save/SaveV2"
    merged_meta = sm.meta_graphs[0].SerializeToString() + mg.SerializeToString()
    # One meta graph whose bytes hold two saver_def fields (field 3 twice).
    data = b"\x08\x01" + b"\x12" + _varint(len(merged_meta)) + merged_meta
    assert MSG["SavedModel"].FromString(data).meta_graphs[0].saver_def.restore_op_name == "save/SaveV2"
    p = tmp_path / "saved_model.pb"
    p.write_bytes(data)
    rules = _rules(p)
    assert "tf-checkpoint-op-misplaced" in rules, {k: len(v) for k, v in rules.items()}


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


@pytest.mark.parametrize("prefix", [b"\x18\x01", b"\xa2\x06\x03abc", b"\x25\x00\x00\x00\x00"],
                         ids=["varint-field-3", "len-field-100", "fixed32-field-4"])
def test_savedmodel_starting_with_an_unknown_field_is_still_read(tmp_path: Path, prefix: bytes) -> None:
    """protobuf skips unknown fields wherever they are; the detector used to demand that the file
    start with field 1 or 2, so one leading unknown field made a hostile SavedModel 'not a model'."""
    data = prefix + _saved_model(extra_fn_ops=[("read_secret", "ReadFile", {})])
    assert MSG["SavedModel"].FromString(data).meta_graphs[0].graph_def.library.function
    p = tmp_path / "saved_model.pb"
    p.write_bytes(data)
    hits = _rules(p).get("tf-dangerous-op", [])
    assert [h.details["op"] for h in hits] == ["ReadFile"]


def test_keras_metadata_with_a_leading_unknown_field_or_other_first_node(tmp_path: Path) -> None:
    import base64
    import marshal

    code = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
    md = MSG["SavedMetadata"].FromString(_keras_metadata({
        "name": "lam", "class_name": "Lambda",
        "config": {"name": "lam", "function": [code, None, None], "function_type": "lambda"}}))
    md.nodes[0].identifier = "_generic_user_object"  # the Lambda's node is not the first
    p = tmp_path / "keras_metadata.pb"
    p.write_bytes(b"\x10\x07" + md.SerializeToString())  # and an unknown field 2 comes first
    result = _scan(p)
    assert "keras-metadata" in result.formats
    assert [f.rule_id for f in result.findings if f.rule_id == "keras-lambda-code"] == ["keras-lambda-code"]
