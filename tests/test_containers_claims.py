"""Issue 14, parts 2 and 3: content claimed by its place is read as that format, and every
"skip N bytes" equals the loader's.

Files are made by the real libraries (joblib, numpy, torch); attack files are built by hand where
a pickle breaks our sniffing but not the loader. Nothing here loads a scanned file.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any, List

import pytest
from container_support import Evil, assert_benign, assert_malicious, evil_pickle, rules, scan

np = pytest.importorskip("numpy")
joblib = pytest.importorskip("joblib")

#: Every dtype form joblib writes raw bytes for (numpy pickles each as ctor + __setstate__).
JOBLIB_DTYPES: List[Any] = [
    "f8", "<f4", ">f8", "f2", "i1", "u2", ">i4", "<i8", "?", "c8", ">c16", "U1", "<U7", ">U3", "S1", "S9",
    "V4", "V0", "i4,i4", "i4,(2,3)f8,U2", [("a", "<i4"), ("b", ">f8", (2,))], [("s", "f4", (3,))], [("t", "i2", (2, 2)), ("u", "O")],
    "M8[ns]", "m8[25s]", "M8[D]", "M8", np.dtype("i1,f8", align=True), np.dtype([("x", "u1"), ("y", "i8")],
                                                                           align=True),
    [("n", [("m", "i2"), ("k", "S3")]), ("z", "f4")],
]
#: (shape, order) forms: 0-d, 1-d, n-d, zero-size, Fortran order.
SHAPES = [((), "C"), ((5,), "C"), ((3, 4), "C"), ((3, 4), "F"), ((0,), "C"), ((2, 0, 3), "C")]


def _array(dtype: Any, shape: Any, order: str) -> "np.ndarray":
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    raw = (np.arange(max(n * dt.itemsize, 1), dtype=np.uint8) % 251).tobytes()[:n * dt.itemsize]
    arr = np.frombuffer(raw, dtype=dt, count=n) if dt.itemsize and not dt.hasobject else np.zeros(n, dtype=dt)
    return np.array(arr.reshape(shape), order=order)


@pytest.mark.parametrize("dtype", JOBLIB_DTYPES, ids=[str(d) for d in JOBLIB_DTYPES])
def test_joblib_array_skip_equals_numpy_for_every_dtype_form(tmp_path: Path, dtype: Any) -> None:
    """joblib writes each array's raw bytes after its wrapper; the walk skips exactly
    ``itemsize * size`` (numpy's) and finds a payload right after, for every dtype and shape form."""
    for i, (shape, order) in enumerate(SHAPES):
        arr = _array(dtype, shape, order)
        if arr.dtype.itemsize == 0:
            continue  # joblib.load itself fails on zero-size dtypes (division by zero)
        ok = tmp_path / f"ok{i}.joblib"
        joblib.dump({"a": arr, "b": np.arange(3.0)}, ok)
        assert_benign(ok)
        bad = tmp_path / f"bad{i}.joblib"
        joblib.dump([arr, Evil()], bad)
        assert_malicious(bad)


def _wrapper_stream(dtype_ctor: bytes, dtype_state: bytes, raw: bytes, after: bytes) -> bytes:
    """A joblib stream by hand: NumpyArrayWrapper(dtype=numpy.dtype(<ctor>) + BUILD <state>), raw
    bytes, then ``after`` (the rest of the outer pickle). Protocol 2, no alignment field."""
    out = io.BytesIO()
    out.write(b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\nq\x00)\x81q\x01}q\x02(")
    out.write(b"X\x05\x00\x00\x00shapeK\x02\x85")
    out.write(b"X\x05\x00\x00\x00orderX\x01\x00\x00\x00C")
    out.write(b"X\x05\x00\x00\x00dtypecnumpy\ndtype\n" + dtype_ctor + b"R" + dtype_state)
    out.write(b"X\x08\x00\x00\x00subclasscnumpy\nndarray\n")
    out.write(b"X\n\x00\x00\x00allow_mmap\x89ub")
    return out.getvalue() + raw + after


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


EVIL_TAIL = b"\x94" + pickle.dumps(Evil(), protocol=2)[2:]  # POP the array, then the payload


def test_hand_made_wrapper_matches_joblib_layout(tmp_path: Path) -> None:
    """The hand-built stream walks like a real one: the payload after 2 float64s is found."""
    data = _wrapper_stream(b"(" + _str("f8") + b"\x89\x88t", b"", b"\x00" * 16, EVIL_TAIL)
    (tmp_path / "w.pkl").write_bytes(data)
    assert_malicious(tmp_path / "w.pkl")


def test_dtype_state_that_makes_an_f8_hold_objects_fails_closed(tmp_path: Path) -> None:
    """numpy copies NPY_ITEM_REFCOUNT from the state: an 'f8' dtype whose state sets flag 1 has
    hasobject true, and joblib then reads an inline pickle where we would skip 16 raw bytes. The
    size is not certain, so the stream is not resynchronised by a guess: it is unscanned."""
    state = b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x01tb"
    data = _wrapper_stream(b"(" + _str("f8") + b"\x89\x88t", state, b"\x00" * 16, EVIL_TAIL)
    (tmp_path / "flags.pkl").write_bytes(data)
    code, result = scan(tmp_path / "flags.pkl")
    assert code != 0
    assert "unscanned-parse-error" in rules(result), rules(result)


def test_void_state_size_is_numpys(tmp_path: Path) -> None:
    """numpy takes a void dtype's size from its state ('V8' + elsize 4 is V4): a payload placed
    after 2 x 4 bytes (where joblib resumes) is found, not skipped over as 16 bytes."""
    state = b"(K\x03X\x01\x00\x00\x00|NNNK\x04K\x01K\x00tb"
    data = _wrapper_stream(b"(" + _str("V8") + b"\x89\x88t", state, b"\x00" * 8, EVIL_TAIL + b"\x00" * 8)
    (tmp_path / "v.pkl").write_bytes(data)
    assert_malicious(tmp_path / "v.pkl")


@pytest.mark.parametrize("ctor", ["f12", "l", "g", "T", "O4", "(2)i4"])
def test_platform_or_unknown_dtype_strings_fail_closed(tmp_path: Path, ctor: str) -> None:
    data = _wrapper_stream(b"(" + _str(ctor) + b"\x89\x88t", b"", b"\x00" * 64, EVIL_TAIL)
    (tmp_path / "u.pkl").write_bytes(data)
    code, result = scan(tmp_path / "u.pkl")
    assert code != 0, rules(result)
    assert any(f.unscanned or f.rule_id == "pickle-broken-stream" for f in result.findings)
