"""ONNX models made with the onnx package: external data paths and custom operator domains."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safemodel_ci.findings import Severity
from safemodel_ci.formats.onnx import location_problem
from safemodel_ci.scanner import ScanOptions, scan_file

onnx = pytest.importorskip("onnx")
np = pytest.importorskip("numpy")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(domain: str = "", op: str = "MatMul", subgraph: bool = False) -> "onnx.ModelProto":
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    nodes = [helper.make_node(op, ["X", "W"], ["Y"], name="mm", domain=domain)]
    if subgraph:
        inner_w = numpy_helper.from_array(np.zeros((4,), np.float32), "inner_w")
        then_out = helper.make_tensor_value_info("T", TensorProto.FLOAT, [4])
        then_g = helper.make_graph([helper.make_node("Identity", ["inner_w"], ["T"], name="id")],
                                   "then", [], [then_out], [inner_w])
        else_g = helper.make_graph([helper.make_node("Identity", ["inner_w"], ["T"], name="id2")],
                                   "else", [], [then_out], [inner_w])
        cond = helper.make_tensor_value_info("C", TensorProto.BOOL, [])
        nodes.append(helper.make_node("If", ["C"], ["Z"], name="branch", then_branch=then_g,
                                      else_branch=else_g))
        graph = helper.make_graph(nodes, "g", [x, cond], [y, helper.make_tensor_value_info(
            "Z", TensorProto.FLOAT, [4])], [w])
    else:
        graph = helper.make_graph(nodes, "g", [x], [y], [w])
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    return helper.make_model(graph, opset_imports=opsets, producer_name="safemodel-tests")


def _save_external(model: "onnx.ModelProto", path: Path) -> None:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)


def _scan(path: Path):
    return scan_file(str(path), ScanOptions())


def test_plain_model_passes(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    onnx.save_model(_model(subgraph=True), str(p))
    result = _scan(p)
    assert result.formats == ["onnx"]
    assert result.findings == []


def test_external_data_beside_model_passes(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    _save_external(_model(), p)
    assert (tmp_path / "weights.bin").is_file()
    result = _scan(p)
    assert result.findings == []


@pytest.mark.parametrize("location,why", [
    ("../../etc/passwd", "contains '..'"),
    ("/etc/passwd", "is an absolute path"),
    ("weights/../../../secret", "contains '..'"),
    ("C:\\Windows\\win.ini", "is an absolute path"),
])
def test_external_data_escaping_the_folder(tmp_path: Path, location: str, why: str) -> None:
    model = _model(subgraph=True)
    p = tmp_path / "model.onnx"
    _save_external(model, p)
    loaded = onnx.load(str(p), load_external_data=False)
    # Point the If branch's initializer (inside a subgraph attribute) at the hostile location.
    branch = next(n for n in loaded.graph.node if n.op_type == "If")
    inner = branch.attribute[0].g.initializer[0]
    inner.data_location = TensorProto.EXTERNAL
    del inner.external_data[:]
    inner.external_data.add(key="location", value=location)
    inner.ClearField("raw_data")
    p.write_bytes(loaded.SerializeToString())
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "onnx-external-data-path"]
    assert len(hits) == 1, result.findings
    assert hits[0].details["tensor"] == "inner_w" and hits[0].details["problem"] == why
    assert "subgraph of node 'branch'" in hits[0].message
    assert hits[0].severity == Severity.HIGH


def test_external_data_through_symlink_out_of_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    p = model_dir / "model.onnx"
    _save_external(_model(), p)
    os.replace(model_dir / "weights.bin", outside / "weights.bin")
    os.symlink(outside, model_dir / "data")
    loaded = onnx.load(str(p), load_external_data=False)
    for entry in loaded.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "data/weights.bin"
    p.write_bytes(loaded.SerializeToString())
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "onnx-external-data-path"]
    assert len(hits) == 1 and "outside the model folder" in hits[0].details["problem"]


def test_unknown_external_data_key(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    _save_external(_model(), p)
    loaded = onnx.load(str(p), load_external_data=False)
    loaded.graph.initializer[0].external_data.add(key="__class__", value="x")
    p.write_bytes(loaded.SerializeToString())
    result = _scan(p)
    assert [f.rule_id for f in result.findings] == ["onnx-external-data-key"]


def test_custom_domain_is_medium_and_microsoft_is_standard(tmp_path: Path) -> None:
    p = tmp_path / "custom.onnx"
    onnx.save_model(_model(domain="com.example.ops", op="MySecretOp"), str(p))
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "onnx-custom-domain"]
    assert len(hits) == 1 and hits[0].severity == Severity.MEDIUM
    assert hits[0].details == {"domain": "com.example.ops", "op": "MySecretOp"}
    assert "node 'mm'" in hits[0].message
    q = tmp_path / "ms.onnx"
    onnx.save_model(_model(domain="com.microsoft", op="FusedMatMul"), str(q))
    assert _scan(q).findings == []


def test_truncated_model_is_unscanned(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(_model().SerializeToString()[:-20])
    result = _scan(p)
    assert "onnx" in result.formats
    assert not result.complete


def test_location_rules() -> None:
    assert location_problem("weights.bin", None) is None
    assert location_problem("sub/dir/weights.bin", None) is None
    assert location_problem("a\x00b", None) == "contains a NUL byte"
    assert location_problem("..\\..\\x", None) == "contains '..'"
    assert location_problem("\\\\server\\share\\x", None) == "is an absolute path"


# -- field order: a ModelProto is recognised by decoding it, not by its first byte --------------

def _top_fields(data: bytes) -> "list[bytes]":
    """The top-level fields of an encoded message, each as its raw bytes (tag + value)."""
    from safemodel_ci.protobuf import ProtoView
    from safemodel_ci.source import BytesSource

    view = ProtoView(BytesSource(data))
    out = []
    for f in view.fields():
        out.append(data[f.offset:f.end])
    return out


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _hostile_model() -> bytes:
    """An onnx-made model whose initializer reads external data from outside its folder."""
    model = _model(domain="evil.ops")
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    return model.SerializeToString()


REORDERINGS = {
    "reversed": lambda fields: fields[::-1],
    "graph-first": lambda fields: sorted(fields, key=lambda f: f[0] != 0x3A),
    "unknown-varint-first": lambda fields: [_varint(1000 << 3) + _varint(7)] + fields,
    "unknown-group-first": lambda fields: [_varint(999 << 3 | 3) + b"\x08\x01" + _varint(999 << 3 | 4)]
    + fields,
    "ir-version-last": lambda fields: [f for f in fields if f[0] != 0x08]
    + [f for f in fields if f[0] == 0x08],
    "no-ir-version": lambda fields: [f for f in fields if f[0] != 0x08],
    "producer-as-varint-first": lambda fields: [_varint(2 << 3) + _varint(5)] + fields,
    "graph-split-in-two": None,  # protobuf merges repeated occurrences of a message field
}


@pytest.mark.parametrize("how", sorted(REORDERINGS))
def test_model_recognised_whatever_its_field_order(tmp_path: Path, how: str) -> None:
    fields = _top_fields(_hostile_model())
    if how == "graph-split-in-two":
        full = onnx.ModelProto()
        full.ParseFromString(_hostile_model())
        tensors, rest = onnx.GraphProto(), onnx.GraphProto()
        tensors.initializer.extend(full.graph.initializer)
        rest.CopyFrom(full.graph)
        rest.ClearField("initializer")
        parts = [b"\x3a" + _varint(len(g)) + g
                 for g in (tensors.SerializeToString(), rest.SerializeToString())]
        data = parts[0] + b"".join(f for f in fields if f[0] != 0x3A) + parts[1]
    else:
        data = b"".join(REORDERINGS[how](fields))
    parsed = onnx.ModelProto()
    parsed.ParseFromString(data)  # what onnx.load parses: the same model, external path included
    assert any(e.value == "../../../etc/passwd" for t in parsed.graph.initializer for e in t.external_data)
    p = tmp_path / "m.onnx"
    p.write_bytes(data)
    result = _scan(p)
    assert "onnx" in result.formats, how
    rules = {f.rule_id for f in result.findings}
    assert {"onnx-external-data-path", "onnx-custom-domain"} <= rules, (how, rules)


def test_unclosed_group_is_not_a_model(tmp_path: Path) -> None:
    """protobuf refuses a group that never closes; so does the decoder (no claim, no crash)."""
    data = _varint(999 << 3 | 3) + b"\x08\x01" + _hostile_model()
    from google.protobuf.message import DecodeError

    with pytest.raises(DecodeError):
        onnx.ModelProto().ParseFromString(data)
    p = tmp_path / "m.onnx"
    p.write_bytes(data)
    assert "onnx" not in _scan(p).formats
@pytest.mark.parametrize("prefix", [b"\x98\x06\x01", b"\x42\x00"],
                         ids=["varint-field-99", "empty-graph-field-8"])
def test_model_not_starting_with_ir_version_is_read(tmp_path: Path, prefix: bytes) -> None:
    """onnx.load takes fields in any order; the detector demanded ir_version's tag (08) first, so a
    leading unknown or reordered field made a model with a traversing external_data location
    'not a model' under a name that binds no loader."""
    model = _model()
    init = model.graph.initializer[0]
    init.data_location = TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../../etc/passwd")
    init.ClearField("raw_data")
    data = prefix + model.SerializeToString()
    parsed = onnx.ModelProto.FromString(data)  # protobuf's own parser accepts it
    assert parsed.graph.initializer[0].external_data[0].value == "../../etc/passwd"
    p = tmp_path / "weights.bin"
    p.write_bytes(data)
    result = _scan(p)
    assert "onnx" in result.formats
    assert [f.details["problem"] for f in result.findings if f.rule_id == "onnx-external-data-path"] == \
        ["contains '..'"]
