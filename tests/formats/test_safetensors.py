"""safetensors validation: real files pass, each crafted violation gets its rule, and the real
``safetensors`` loader agrees (it only parses headers here: loading safetensors runs no code)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import pytest

from safemodel_ci.cli import main
from safemodel_ci.context import ScanContext
from safemodel_ci.findings import FileResult, Severity
from safemodel_ci.formats.safetensors import DTYPE_BITS, claims_safetensors, read_safetensors_header
from safemodel_ci.policy import Policy
from safemodel_ci.rules import RULES_BY_ID
from safemodel_ci.scanner import ScanOptions, scan_file
from safemodel_ci.source import BytesSource

safetensors = pytest.importorskip("safetensors")


def st_bytes(
    header: Union[dict, bytes, str], data: bytes = b"", *, n: Optional[int] = None, pad: bool = True
) -> bytes:
    """A safetensors file from a header (dict, or raw text/bytes used verbatim) and data bytes."""
    if isinstance(header, dict):
        raw = json.dumps(header, separators=(",", ":")).encode()
        if pad:
            raw += b" " * (-len(raw) % 8)
    else:
        raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def f32(name: str = "t", begin: int = 0, count: int = 1, **extra: Any) -> dict:
    return {name: {"dtype": "F32", "shape": [count], "data_offsets": [begin, begin + 4 * count], **extra}}


def scan_path(path: Path) -> FileResult:
    return scan_file(str(path), ScanOptions())


def rule_ids(result: FileResult) -> List[str]:
    return [f.rule_id for f in result.findings]


def validate_bytes(data: bytes) -> Tuple[List[str], bool]:
    """Rule ids reported by the header validator alone, and whether anything blocks (>= HIGH)."""
    ctx = ScanContext("crafted.safetensors", Policy())
    read_safetensors_header(BytesSource(data, "crafted.safetensors"), ctx)
    return [f.rule_id for f in ctx.findings], any(f.severity >= Severity.HIGH for f in ctx.findings)


def reference_accepts(data: bytes) -> Tuple[bool, str]:
    """What safetensors 0.8 says about the bytes (``deserialize`` parses the header and validates)."""
    try:
        safetensors.deserialize(data)
    except Exception as exc:  # noqa: BLE001 - SafetensorError, whatever the binding raises
        return False, str(exc)
    return True, ""


def safe_open_accepts(path: Path) -> bool:
    """What ``safe_open`` (the lazy loader) says about a file: it validates the header on open."""
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            list(f.keys())
    except Exception:  # noqa: BLE001
        return False
    return True


# ---- files written by the real library --------------------------------------------------------


def _torch_dtypes() -> List[Tuple[str, Any]]:
    try:
        import safetensors.torch as st_torch
        import torch
    except ImportError:  # the numpy front end is still tested
        return []

    names = dict(st_torch._TYPES)  # every dtype the installed safetensors maps for torch
    for attr, code in (("float8_e8m0fnu", "F8_E8M0"), ("float4_e2m1fn_x2", "F4")):
        if hasattr(torch, attr):
            names[code] = getattr(torch, attr)
    return sorted(names.items())


def _make_tensor(torch: Any, dtype: Any, shape: Tuple[int, ...]) -> Any:
    if str(dtype) == "torch.float4_e2m1fn_x2":  # packed: built from bytes
        return torch.zeros(shape, dtype=torch.uint8).view(dtype)
    if dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool)
    if dtype.is_complex:
        return torch.ones(shape, dtype=dtype) * (1 + 2j)
    return (
        torch.arange(int(torch.tensor(shape).prod().item()) if shape else 1, dtype=torch.float32)
        .reshape(shape)
        .to(dtype)
        if shape
        else torch.tensor(3.0).to(dtype)
    )


def test_torch_writer_every_dtype_passes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    dtypes = _torch_dtypes()
    tensors = {}
    for code, dtype in dtypes:
        tensors[f"{code}.matrix"] = _make_tensor(torch, dtype, (3, 4))
        tensors[f"{code}.empty"] = _make_tensor(torch, dtype, (0, 4))
        if code != "F4":  # torch's packed fp4 has no scalar
            tensors[f"{code}.scalar"] = _make_tensor(torch, dtype, ())
    path = tmp_path / "all_dtypes.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "every dtype"})
    written = json.loads(path.read_bytes()[8 : 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
    assert {v["dtype"] for k, v in written.items() if k != "__metadata__"} == {c for c, _ in dtypes}
    assert {"F8_E4M3", "F8_E5M2"} <= {c for c, _ in dtypes}
    result = scan_path(path)
    assert result.findings == [], [f.message for f in result.findings]
    assert result.formats == ["safetensors"]


@pytest.mark.parametrize("code_dtype", _torch_dtypes(), ids=lambda cd: cd[0])
def test_torch_writer_single_dtype_passes(tmp_path: Path, code_dtype: Tuple[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    code, dtype = code_dtype
    path = tmp_path / f"{code}.safetensors"
    save_file({"w": _make_tensor(torch, dtype, (5, 2))}, str(path))
    assert scan_path(path).findings == []


def test_numpy_writer_passes(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    arrays = {
        "f64": np.linspace(0, 1, 7),
        "f32": np.ones((2, 3), np.float32),
        "f16": np.zeros(5, np.float16),
        "i64": np.arange(4),
        "u64": np.arange(4, dtype=np.uint64),
        "i32": np.arange(3, dtype=np.int32),
        "u32": np.arange(3, dtype=np.uint32),
        "i16": np.arange(3, dtype=np.int16),
        "u16": np.arange(3, dtype=np.uint16),
        "i8": np.arange(3, dtype=np.int8),
        "u8": np.arange(3, dtype=np.uint8),
        "bool": np.array([True, False]),
        "c64": np.ones(2, np.complex64),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(1.5, np.float32),
    }
    path = tmp_path / "np.safetensors"
    save_file(arrays, str(path), metadata={"framework": "numpy"})
    result = scan_path(path)
    assert result.findings == []
    assert result.formats == ["safetensors"]


def test_empty_file_of_the_library_passes(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "nothing.safetensors"
    save_file({}, str(path))
    assert scan_path(path).findings == []


# ---- crafted files: one per rule, checked against the reference ---------------------------------

T4 = b"\0" * 4


def _every_dtype_file() -> bytes:
    header, offset = {}, 0
    for d in sorted(DTYPE_BITS):
        size = 8 * DTYPE_BITS[d] // 8  # 8 elements
        header[f"t.{d}"] = {"dtype": d, "shape": [2, 4], "data_offsets": [offset, offset + size]}
        offset += size
    return st_bytes(header, b"\x01" * offset)


#: (case id, file bytes, expected rule id or None for "no finding").
CASES: List[Tuple[str, bytes, Optional[str]]] = [
    ("too-small", b"\x08\0\0", "safetensors-too-small"),
    ("too-large", struct.pack("<Q", 100_000_001) + b'{"t":{"dtype":"F32"}}', "safetensors-header-too-large"),
    (
        "u64-max-length",
        struct.pack("<Q", (1 << 64) - 1) + b'{"__metadata__":{}}',
        "safetensors-header-too-large",
    ),
    ("length-past-eof", struct.pack("<Q", 500) + b'{"t":{"dtype":"F32"}}', "safetensors-header-length"),
    (
        "not-utf8",
        st_bytes(b'{"t\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4),
        "safetensors-header-not-utf8",
    ),
    (
        "leading-space",
        st_bytes(b' {"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4),
        "safetensors-header-start",
    ),
    ("leading-newline", st_bytes(b'\n\t{"__metadata__":{"a":"b"}}'), "safetensors-header-start"),
    ("not-json", st_bytes(b'{"t":{"dtype":"F32",'), "safetensors-header-not-json"),
    ("nul-padding", st_bytes(b'{"__metadata__":{}}\0\0\0\0\0'), "safetensors-header-not-json"),
    (
        "nan",
        st_bytes(b'{"t":{"x":NaN,"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4),
        "safetensors-header-not-json",
    ),
    (
        "infinity",
        st_bytes(b'{"t":{"x":-Infinity,"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4),
        "safetensors-header-not-json",
    ),
    (
        "out-of-range",
        st_bytes(b'{"t":{"x":1e400,"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4),
        "safetensors-header-not-json",
    ),
    ("lone-surrogate", st_bytes(b'{"__metadata__":{"a":"\\ud800"}}'), "safetensors-header-not-json"),
    ("control-char", st_bytes(b'{"__metadata__":{"a":"\x01"}}'), "safetensors-header-not-json"),
    ("trailing-comma", st_bytes(b'{"__metadata__":{},}'), "safetensors-header-not-json"),
    (
        "too-deep",
        st_bytes(
            b'{"t":{"x":' + b"[" * 126 + b"]" * 126 + b',"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4
        ),
        "safetensors-header-not-json",
    ),
    (
        "deep-but-ok",
        st_bytes(
            b'{"t":{"x":' + b"[" * 125 + b"]" * 125 + b',"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4
        ),
        "safetensors-tensor-unknown-field",
    ),
    ("not-object", st_bytes(b'[{"dtype":"F32"}]'), "safetensors-header-not-object"),
    ("tab-padding", st_bytes(b'{"__metadata__":{"a":"b"}}\t\t\n'), "safetensors-header-padding"),
    (
        "dup-tensor",
        st_bytes(
            b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
            b'"t":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}',
            T4,
        ),
        "safetensors-duplicate-key",
    ),
    (
        "dup-field",
        st_bytes(b'{"t":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4),
        "safetensors-duplicate-key",
    ),
    ("dup-metadata", st_bytes(b'{"__metadata__":{},"__metadata__":{}}'), "safetensors-duplicate-key"),
    ("dup-metadata-key", st_bytes(b'{"__metadata__":{"a":"1","a":"2"}}'), "safetensors-duplicate-key"),
    (
        "dup-in-unknown-field",
        st_bytes(b'{"t":{"x":{"k":1,"k":2},"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', T4),
        "safetensors-duplicate-key",
    ),
    ("metadata-int", st_bytes({"__metadata__": {"a": 1}}), "safetensors-metadata-type"),
    ("metadata-null-value", st_bytes({"__metadata__": {"a": None}}), "safetensors-metadata-type"),
    ("metadata-list", st_bytes({"__metadata__": ["a"]}), "safetensors-metadata-type"),
    ("metadata-null", st_bytes({"__metadata__": None}), None),
    ("tensor-int", st_bytes({"t": 1}), "safetensors-tensor-not-object"),
    ("tensor-array", st_bytes({"t": ["F32", [1], [0, 4]]}, T4), "safetensors-tensor-not-object"),
    (
        "missing-dtype",
        st_bytes({"t": {"shape": [1], "data_offsets": [0, 4]}}, T4),
        "safetensors-tensor-missing-field",
    ),
    (
        "missing-shape",
        st_bytes({"t": {"dtype": "F32", "data_offsets": [0, 4]}}, T4),
        "safetensors-tensor-missing-field",
    ),
    (
        "missing-offsets",
        st_bytes({"t": {"dtype": "F32", "shape": [1]}}, T4),
        "safetensors-tensor-missing-field",
    ),
    ("unknown-field", st_bytes(f32(extra="payload"), T4), "safetensors-tensor-unknown-field"),
    (
        "unknown-dtype",
        st_bytes({"t": {"dtype": "F128", "shape": [1], "data_offsets": [0, 4]}}, T4),
        "safetensors-dtype",
    ),
    (
        "lowercase-dtype",
        st_bytes({"t": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}}, T4),
        "safetensors-dtype",
    ),
    (
        "dtype-int",
        st_bytes({"t": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}}, T4),
        "safetensors-dtype",
    ),
    (
        "dtype-enum-map",
        st_bytes({"t": {"dtype": {"F32": None}, "shape": [1], "data_offsets": [0, 4]}}, T4),
        "safetensors-dtype",
    ),
    (
        "shape-negative",
        st_bytes({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, T4),
        "safetensors-shape",
    ),
    (
        "shape-float",
        st_bytes({"t": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}, T4),
        "safetensors-shape",
    ),
    (
        "shape-minus-zero",
        st_bytes(b'{"t":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}'),
        "safetensors-shape",
    ),
    (
        "shape-bool",
        st_bytes({"t": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, T4),
        "safetensors-shape",
    ),
    (
        "shape-2**64",
        st_bytes({"t": {"dtype": "F32", "shape": [1 << 64], "data_offsets": [0, 4]}}, T4),
        "safetensors-shape",
    ),
    (
        "shape-not-list",
        st_bytes({"t": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}, T4),
        "safetensors-shape",
    ),
    (
        "offsets-three",
        st_bytes({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 4]}}, T4),
        "safetensors-data-offsets",
    ),
    (
        "offsets-string",
        st_bytes({"t": {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}}, T4),
        "safetensors-data-offsets",
    ),
    (
        "offsets-negative",
        st_bytes({"t": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, T4),
        "safetensors-data-offsets",
    ),
    ("hole-at-start", st_bytes(f32(begin=4), b"\0" * 8), "safetensors-offsets-not-contiguous"),
    (
        "hole-between",
        st_bytes({**f32("a"), **f32("b", begin=8)}, b"\0" * 12),
        "safetensors-offsets-not-contiguous",
    ),
    (
        "overlap",
        st_bytes({**f32("a", count=2), **f32("b", begin=4)}, b"\0" * 8),
        "safetensors-offsets-not-contiguous",
    ),
    (
        "reversed",
        st_bytes({"t": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}),
        "safetensors-offsets-not-contiguous",
    ),
    (
        "overflow",
        st_bytes({"t": {"dtype": "F32", "shape": [1 << 32, 1 << 32], "data_offsets": [0, 4]}}, T4),
        "safetensors-size-overflow",
    ),
    (
        "overflow-bits",
        st_bytes({"t": {"dtype": "U8", "shape": [1 << 61], "data_offsets": [0, 4]}}, T4),
        "safetensors-size-overflow",
    ),
    (
        "overflow-before-zero",
        st_bytes({"t": {"dtype": "U8", "shape": [(1 << 64) - 1, (1 << 64) - 1, 0], "data_offsets": [0, 0]}}),
        "safetensors-size-overflow",
    ),
    (
        "zero-before-huge",
        st_bytes({"t": {"dtype": "U8", "shape": [0, (1 << 64) - 1, (1 << 64) - 1], "data_offsets": [0, 0]}}),
        None,
    ),
    (
        "f4-odd",
        st_bytes({"t": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, b"\0"),
        "safetensors-subbyte-misaligned",
    ),
    (
        "f4-scalar",
        st_bytes({"t": {"dtype": "F4", "shape": [], "data_offsets": [0, 1]}}, b"\0"),
        "safetensors-subbyte-misaligned",
    ),
    (
        "f6-three",
        st_bytes({"t": {"dtype": "F6_E3M2", "shape": [3], "data_offsets": [0, 2]}}, b"\0\0"),
        "safetensors-subbyte-misaligned",
    ),
    ("f4-even", st_bytes({"t": {"dtype": "F4", "shape": [2, 2], "data_offsets": [0, 2]}}, b"\0\0"), None),
    ("f6-four", st_bytes({"t": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]}}, b"\0" * 3), None),
    (
        "size-mismatch",
        st_bytes(f32(count=2) | {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, T4),
        "safetensors-tensor-size",
    ),
    ("trailing-bytes", st_bytes(f32(), T4 + b"junk"), "safetensors-data-coverage"),
    ("truncated", st_bytes(f32(count=4), T4), "safetensors-data-coverage"),
    (
        "empty-tensors-share-offset",
        st_bytes(
            {
                **f32("c"),
                "a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
                "b": {"dtype": "I8", "shape": [2, 0], "data_offsets": [4, 4]},
            },
            T4,
        ),
        None,
    ),
    ("every-dtype", _every_dtype_file(), None),
]


#: Cases where the spec (and so this scanner) is stricter than safetensors 0.8, which loads them.
#: Each is blocked (HIGH) here on purpose; see the rule descriptions.
STRICTER_THAN_REFERENCE = {
    "dup-tensor",  # 0.8 silently keeps the last tensor of a repeated name
    "dup-metadata-key",  # 0.8 keeps the last value
    "dup-in-unknown-field",  # 0.8 ignores unknown fields, duplicates inside included
    "tensor-array",  # serde reads a struct from a 3-element array
    "dtype-enum-map",  # serde reads an enum from {"F32": null}
}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_crafted_file_gets_its_rule_and_agrees_with_reference(
    case: Tuple[str, bytes, Optional[str]], tmp_path: Path
) -> None:
    name, data, expected = case
    rules, blocked = validate_bytes(data)
    if expected is None:
        assert rules == [], rules
    else:
        assert expected in rules, (rules, expected)
        assert rules[0] == expected, f"first finding should be {expected}, got {rules}"
    ok, why = reference_accepts(data)
    if name in STRICTER_THAN_REFERENCE:
        assert ok and blocked, (ok, blocked, why)
    else:
        assert blocked == (not ok), f"scanner blocked={blocked} but safetensors 0.8 says {why or 'ok'}"

    # The same bytes as a file: detected by content wherever they start like a header.
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    assert safe_open_accepts(path) == ok, "safe_open and deserialize disagree"
    result = scan_path(path)
    if claims_safetensors(BytesSource(data), data[:4096]):
        assert "safetensors" in result.formats
        assert [r for r in rule_ids(result) if r.startswith("safetensors-")] == rules
    else:
        assert "safetensors" not in result.formats


def test_rule_ids_exist_and_severity_policy() -> None:
    for _, _, expected in CASES:
        if expected is not None:
            assert expected in RULES_BY_ID
    medium = {"safetensors-header-start", "safetensors-header-padding", "safetensors-tensor-unknown-field"}
    for rule_id, rule in RULES_BY_ID.items():
        if rule_id.startswith("safetensors-") and not rule_id.startswith("safetensors-index-"):
            assert rule.severity == (Severity.MEDIUM if rule_id in medium else Severity.HIGH), rule_id


def test_messages_name_tensor_and_offsets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hole.safetensors"
    path.write_bytes(st_bytes({**f32("layer.0.weight"), **f32("layer.1.bias", begin=8)}, b"\0" * 12))
    assert main(["scan", "--quiet", "--format", "json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    (finding,) = report["files"][0]["findings"]
    assert finding["rule_id"] == "safetensors-offsets-not-contiguous"
    assert "layer.1.bias" in finding["message"] and "[8, 12]" in finding["message"]
    assert finding["details"]["data_offsets"] == [8, 12]
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert finding["offset"] == 8 + header_len + 8
    assert main(["scan", "--quiet", str(path)]) == 1
    text = capsys.readouterr().out
    assert "safetensors-offsets-not-contiguous" in text and "layer.1.bias" in text


def test_many_bad_tensors_are_summed_up() -> None:
    header = {f"t{i}": {"dtype": "F128", "shape": [1], "data_offsets": [0, 4]} for i in range(50)}
    ctx = ScanContext("many.safetensors", Policy())
    read_safetensors_header(BytesSource(st_bytes(header, T4)), ctx)
    assert len(ctx.findings) == 21
    assert "30 more" in ctx.findings[-1].message


def test_random_binary_with_brace_is_not_claimed() -> None:
    # '{"' at offset 8 with an impossible length and no safetensors key: not a safetensors claim.
    data = b"\xff" * 8 + b'{"x' + bytes(range(256)) * 4
    assert not claims_safetensors(BytesSource(data), data[:4096])
    data = b"\x10\0\0\0\0\0\0\0" + b"{\x01binary" + b"\0" * 64
    assert not claims_safetensors(BytesSource(data), data[:4096])
    # A JSON text indented by 8 that mentions dtypes is text, not a safetensors claim.
    data = b'[\n       {"dtype": "F32", "shape": [1]}\n]\n'
    assert not claims_safetensors(BytesSource(data), data)


# ---- polyglots ----------------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("touch /tmp/safemodel-canary-should-not-exist",))


def _malicious_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _Payload()}, protocol=2))
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def _pickle_reader_ready() -> bool:
    from safemodel_ci.formats import pickle as pickle_reader

    return hasattr(pickle_reader, "scan_pickle_at")


def test_zip_inside_last_tensor_is_reported_malicious(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = _malicious_zip()
    header = {
        "__metadata__": {"format": "pt"},
        **f32("w", count=2),
        "blob": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [8, 8 + len(payload)]},
    }
    data = st_bytes(header, b"\0" * 8 + payload)
    assert reference_accepts(data)[0], "the file is a valid safetensors file"
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    result = scan_path(path)
    ids = rule_ids(result)
    assert "safetensors" in result.formats and "zip" in result.formats
    assert "polyglot" in ids
    if _pickle_reader_ready():
        assert "pickle-dangerous-global" in ids
    assert main(["scan", "--quiet", str(path)]) == 1
    capsys.readouterr()


def test_zip_appended_after_data_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(st_bytes(f32(), T4) + _malicious_zip())
    ids = rule_ids(scan_path(path))
    assert "safetensors-data-coverage" in ids and "polyglot" in ids


def test_npy_at_start_of_tensor_data_is_a_polyglot(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.int64))
    npy = buf.getvalue()
    header = {"hidden": {"dtype": "U8", "shape": [len(npy)], "data_offsets": [0, len(npy)]}}
    data = st_bytes(header, npy)
    assert reference_accepts(data)[0]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    result = scan_path(path)
    poly = [f for f in result.findings if f.rule_id == "polyglot"]
    assert poly, rule_ids(result)
    assert "npy" in poly[0].details["formats"] or "numpy" in poly[0].details["formats"]
    assert poly[0].offset == 8 + struct.unpack("<Q", data[:8])[0]
    assert any("<tensor data>" in label for label in result.formats)


def test_tensor_bytes_that_merely_start_like_a_pickle_are_not_reported(tmp_path: Path) -> None:
    # F16 values whose first bytes read \x80\x02 then junk: not a pickle stream, not a polyglot.
    blob = b"\x80\x02\xff\xfe" + b"\x13\x37" * 30
    header = {"w": {"dtype": "F16", "shape": [len(blob) // 2], "data_offsets": [0, len(blob)]}}
    path = tmp_path / "model.safetensors"
    path.write_bytes(st_bytes(header, blob))
    assert scan_path(path).findings == []


def test_safetensors_inside_a_zip_is_validated(tmp_path: Path) -> None:
    bad = st_bytes(f32(), T4 + b"extra")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("weights/model.safetensors", bad)
    path = tmp_path / "bundle.zip"
    path.write_bytes(buf.getvalue())
    result = scan_path(path)
    cov = [f for f in result.findings if f.rule_id == "safetensors-data-coverage"]
    assert cov and cov[0].member == "weights/model.safetensors"


def _blob_file(blob: bytes) -> bytes:
    return st_bytes({"blob": {"dtype": "U8", "shape": [len(blob)], "data_offsets": [0, len(blob)]}}, blob)


def test_malicious_pickle_at_start_of_tensor_data(tmp_path: Path) -> None:
    if not _pickle_reader_ready():
        pytest.skip("pickle VM not available")
    data = _blob_file(pickle.dumps({"w": _Payload()}, protocol=4))
    assert reference_accepts(data)[0]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    result = scan_path(path)
    ids = rule_ids(result)
    assert "polyglot" in ids and "pickle-dangerous-global" in ids
    danger = next(f for f in result.findings if f.rule_id == "pickle-dangerous-global")
    assert danger.member == "<tensor data>"


def test_complete_benign_pickle_in_tensor_data_is_still_a_polyglot(tmp_path: Path) -> None:
    if not _pickle_reader_ready():
        pytest.skip("pickle VM not available")
    path = tmp_path / "model.safetensors"
    path.write_bytes(_blob_file(pickle.dumps({"w": [1, 2, 3]}, protocol=4)))
    result = scan_path(path)
    assert [f.rule_id for f in result.findings] == ["polyglot"]
    assert result.findings[0].details["formats"] == ["pickle"]
