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
    "V4", "V0", "i4,i4", "i4,(2,3)f8,U2", [("a", "<i4"), ("b", ">f8", (2,))], [("s", "f4", (3,))],
    [("t", "i2", (2, 2)), ("u", "O")],
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


# -- places that claim their content: read as a pickle, never sniffed --------------------------

torch = pytest.importorskip("torch")

#: Pickle streams a loader (CPython's C unpickler) runs but a sniffer may refuse. Each imports
#: os.system (never run here) after something a strict reader stumbles on.
HOSTILE = {
    # protocol 0, no PROTO: a 1.1 MiB STRING line before the import (CPython reads lines of
    # any length).
    "long-line": b"(S'" + b"a" * ((1 << 20) + 64) + b"'\ncos\nsystem\n(S'echo owned'\ntRl.",
    # protocol 0, no PROTO, a 1.1 MiB run of digits in an INT line before the import.
    "long-int": b"(I" + b"7" * ((1 << 20) + 64) + b"\ncos\nsystem\n(S'echo owned'\ntRl.",
    # not a pickle at all (an invalid first opcode): the loader fails at once, but the claimed
    # place must not pass it as "not a pickle" either.
    "garbage": b"\xff\xfe" + b"\x00" * 64,
}


def _rezip(src: Path, dst: Path, replace: "dict[str, bytes]", compression: int = 0) -> None:
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data)


def _blocks_or_unscanned(path: Path) -> List[str]:
    code, result = scan(path)
    assert code != 0, [f.to_dict() for f in result.findings]
    assert "unrecognized-format" not in rules(result)
    return rules(result)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_torch_data_pkl_is_read_as_a_pickle(tmp_path: Path, kind: str) -> None:
    torch.save({"w": torch.arange(4.0)}, tmp_path / "ok.pt")
    _rezip(tmp_path / "ok.pt", tmp_path / "bad.pt", {"/data.pkl": HOSTILE[kind]})
    got = _blocks_or_unscanned(tmp_path / "bad.pt")
    assert "pickle-broken-stream" in got or "pickle-dangerous-global" in got or "unscanned-limit" in got, got


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_torchscript_constants_pkl_is_read_as_a_pickle(tmp_path: Path, kind: str) -> None:
    class Tiny(torch.nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return x + 1

    torch.jit.save(torch.jit.script(Tiny()), str(tmp_path / "ts.pt"))
    _rezip(tmp_path / "ts.pt", tmp_path / "bad.pt", {"/constants.pkl": HOSTILE[kind]})
    code, result = scan(tmp_path / "bad.pt")
    hits = [f for f in result.findings if (f.member or "").endswith("constants.pkl")]
    assert code != 0 and hits, [f.to_dict() for f in result.findings]
    assert any(f.unscanned or f.rule_id in ("pickle-broken-stream", "pickle-dangerous-global") for f in hits)


def test_torch_package_resource_pickle_is_read_as_a_pickle(tmp_path: Path) -> None:
    from torch.package import PackageExporter

    with PackageExporter(str(tmp_path / "pkg.pt")) as exp:
        exp.save_pickle("res", "obj.pkl", {"a": 1})
    _rezip(tmp_path / "pkg.pt", tmp_path / "bad.pt", {"res/obj.pkl": HOSTILE["long-line"]})
    code, result = scan(tmp_path / "bad.pt")
    hits = [f for f in result.findings if (f.member or "").endswith("res/obj.pkl")]
    assert code != 0 and hits, [f.to_dict() for f in result.findings]


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "xz", "lzma", "lz4"])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_joblib_decompressed_stream_is_read_as_a_pickle(tmp_path: Path, compress: str, kind: str) -> None:
    """Every compressor joblib.load recognises (joblib/compressor.py)."""
    import bz2
    import gzip
    import lzma
    import zlib

    if compress == "lz4":
        lz4_frame = pytest.importorskip("lz4.frame")
    pack = {"zlib": lambda d: zlib.compress(d, 3), "gzip": gzip.compress, "bz2": bz2.compress,
            "xz": lambda d: lzma.compress(d, lzma.FORMAT_XZ),
            "lzma": lambda d: lzma.compress(d, lzma.FORMAT_ALONE),
            "lz4": lambda d: lz4_frame.compress(d)}[compress]
    (tmp_path / "m.joblib").write_bytes(pack(HOSTILE[kind]))
    _blocks_or_unscanned(tmp_path / "m.joblib")


def test_gzipped_tar_is_not_a_broken_pickle(tmp_path: Path) -> None:
    """joblib.load would unpickle a .tar.gz too, but its first byte fails every unpickler before
    anything runs; the tar reading is what counts (no false 'broken pickle')."""
    import gzip
    import tarfile

    inner = tmp_path / "model.txt"
    inner.write_text("weights")
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.add(inner, arcname="model/weights.txt")
    (tmp_path / "t.tar.gz").write_bytes(gzip.compress((tmp_path / "t.tar").read_bytes()))
    code, result = scan(tmp_path / "t.tar.gz")
    assert "pickle-broken-stream" not in rules(result), rules(result)


def _legacy_tar(tmp_path: Path, pickle_member: bytes) -> Path:
    import tarfile

    members = {"sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
               "pickle": pickle_member,
               "storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
               "tensors": pickle.dumps(0, protocol=2)}
    path = tmp_path / "legacy.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_legacy_torch_tar_pickle_member_is_read_as_a_pickle(tmp_path: Path, kind: str) -> None:
    _blocks_or_unscanned(_legacy_tar(tmp_path, HOSTILE[kind]))


def test_legacy_torch_tar_benign(tmp_path: Path) -> None:
    assert_benign(_legacy_tar(tmp_path, pickle.dumps({"a": 1}, protocol=2)))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_npy_object_array_data_is_read_as_a_pickle(tmp_path: Path, kind: str) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    (tmp_path / "o.npy").write_bytes(buf.getvalue() + HOSTILE[kind])
    _blocks_or_unscanned(tmp_path / "o.npy")
    _rezip_npz(tmp_path, buf.getvalue() + HOSTILE[kind])


def _rezip_npz(tmp_path: Path, member: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "o.npz", "w") as z:
        z.writestr("arr_0.npy", member)
    _blocks_or_unscanned(tmp_path / "o.npz")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_legacy_torch_file_pickles_are_read_as_pickles(tmp_path: Path, kind: str) -> None:
    """The five pickles of a legacy torch.save file: a hostile 4th pickle is not passed."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    # Replace the main (4th) pickle: magic, protocol, sys_info are the first three.
    pos = 0
    from safemodel_ci.formats.pickle import scan_pickle_at
    from safemodel_ci.source import BytesSource

    for _ in range(3):
        pos = scan_pickle_at(BytesSource(data), _null_ctx(), pos).end
    (tmp_path / "legacy.pt").write_bytes(data[:pos] + HOSTILE[kind])
    _blocks_or_unscanned(tmp_path / "legacy.pt")


def _null_ctx():  # type: ignore[no-untyped-def]
    from safemodel_ci.context import ScanContext
    from safemodel_ci.policy import Policy

    return ScanContext("x", Policy())


# -- .npy: header read as numpy.lib.format reads it, data length as numpy computes it -----------

NPY_DTYPES: List[Any] = [
    "<f8", ">i2", "|u1", "?", "<c16", "<U5", "|S3", "|V7", "<M8[us]", ">m8[h]",
    [("a", "<i4"), ("b", ">f8", (2, 3))], np.dtype("i1,f8", align=True), np.dtype("i1,(2)u2,U1"),
    np.dtype({"names": ["x", "y"], "formats": ["<i2", "<f4"], "offsets": [0, 8], "itemsize": 16}),
    np.dtype([(("title", "n"), "<i4"), ("m", [("k", "|S2"), ("j", "<u8")])]),
]


def _npy(arr: "np.ndarray", version: "tuple[int, int]") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", NPY_DTYPES, ids=[str(d) for d in NPY_DTYPES])
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_data_length_equals_numpys(tmp_path: Path, dtype: Any, version: "tuple[int, int]") -> None:
    """For each dtype form and header version: the file is exactly header + itemsize * size (no
    'trailing data'), and a pickle appended right after the data is found."""
    for i, shape in enumerate([(), (3,), (2, 0), (2, 3)]):
        arr = np.zeros(shape, dtype=np.dtype(dtype))
        data = _npy(arr if i % 2 else np.asfortranarray(arr), version)
        (tmp_path / f"a{i}.npy").write_bytes(data)
        assert_benign(tmp_path / f"a{i}.npy")
        (tmp_path / f"b{i}.npy").write_bytes(data + evil_pickle())
        result = assert_malicious(tmp_path / f"b{i}.npy")
        assert "npy-trailing-data" in rules(result)


def _npy_raw(header: str, version: "tuple[int, int]" = (1, 0), encoding: str = "latin1") -> bytes:
    body = header.encode(encoding)
    fmt = "<H" if version == (1, 0) else "<I"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(body)) + body


def test_npy_python2_long_suffix_header_is_read_like_numpy(tmp_path: Path) -> None:
    """Headers written by Python 2 carry 'L' suffixes; numpy (versions <= 2.0) strips them and
    reads the data: a payload after 3 * 8 bytes is found as trailing data, not missed."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (3L,), }\n"
    raw = _npy_raw(header) + b"\x00" * 24
    from numpy.lib.format import read_array  # numeric array, allow_pickle=False: no code can run

    with pytest.warns(UserWarning):
        assert read_array(io.BytesIO(raw), allow_pickle=False).shape == (3,)
    (tmp_path / "p2.npy").write_bytes(raw + evil_pickle())
    assert "npy-trailing-data" in rules(assert_malicious(tmp_path / "p2.npy"))
    # Version 3 does not get that second chance in numpy, nor here.
    (tmp_path / "p3.npy").write_bytes(_npy_raw(header, (3, 0), "utf8") + b"\x00" * 24)
    code, result = scan(tmp_path / "p3.npy")
    assert code != 0 and "unscanned-parse-error" in rules(result)


def test_npy_header_literal_forms_numpy_accepts(tmp_path: Path) -> None:
    """ast.literal_eval forms: a comment, a UTF-8 v3 header, unusual spacing and line breaks."""
    from numpy.lib.format import read_array

    cases = [
        ("{'descr':'<i4','fortran_order':False,'shape':(2,)} # a comment", (1, 0), "latin1", 8),
        ("{'shape': (2,), 'descr': [('\u00e9t\u00e9', '<f4')], 'fortran_order': True}", (3, 0), "utf8", 8),
        ("{\n 'descr' : '<u2' ,\n 'fortran_order' : False ,\n 'shape' : ( 4 , ) ,\n}", (2, 0), "latin1", 8),
    ]
    for i, (header, version, enc, nbytes) in enumerate(cases):
        raw = _npy_raw(header, version, enc) + b"\x00" * nbytes
        assert read_array(io.BytesIO(raw), allow_pickle=False).nbytes == nbytes
        (tmp_path / f"h{i}.npy").write_bytes(raw)
        assert_benign(tmp_path / f"h{i}.npy")
        (tmp_path / f"e{i}.npy").write_bytes(raw + evil_pickle())
        assert_malicious(tmp_path / f"e{i}.npy")


@pytest.mark.parametrize("descr", ["'<f12'", "'<i8,<i4'", "'(2,)i4'", "'<g'", "[('a', '|V0', 3)]"])
def test_npy_descr_of_uncertain_size_fails_closed(tmp_path: Path, descr: str) -> None:
    header = "{'descr': %s, 'fortran_order': False, 'shape': (2,), }" % descr
    (tmp_path / "u.npy").write_bytes(_npy_raw(header) + b"\x00" * 64 + evil_pickle())
    code, result = scan(tmp_path / "u.npy")
    assert code != 0 and "unscanned-parse-error" in rules(result), rules(result)


# -- legacy torch storages: element sizes exactly torch's --------------------------------------

def test_storage_element_sizes_are_torchs() -> None:
    import warnings

    from torch._utils import _element_size

    from safemodel_ci.formats.torch_storages import STORAGE_ELEMENT_SIZES

    expected = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in dir(torch):
            cls = getattr(torch, name)
            if isinstance(cls, type) and isinstance(getattr(cls, "dtype", None), torch.dtype):
                expected[name] = _element_size(cls.dtype)
    assert STORAGE_ELEMENT_SIZES == expected


LEGACY_DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                 "bool", "complex64", "complex128"]


@pytest.mark.parametrize("dtype", LEGACY_DTYPES)
def test_legacy_storages_skipped_exactly(tmp_path: Path, dtype: str) -> None:
    """A legacy checkpoint of each dtype (plus a float32 one, so sizes differ within the file) is
    laid out exactly: clean as saved, and a pickle appended after the last storage is found."""
    t = torch.arange(7).to(getattr(torch, dtype))
    buf = io.BytesIO()
    torch.save({"t": t, "f": torch.ones(3), "view": t[2:5]}, buf, _use_new_zipfile_serialization=False)
    (tmp_path / "ok.pt").write_bytes(buf.getvalue())
    assert_benign(tmp_path / "ok.pt")
    (tmp_path / "bad.pt").write_bytes(buf.getvalue() + evil_pickle())
    result = assert_malicious(tmp_path / "bad.pt")
    assert "torch-unaccounted-bytes" in rules(result)


def test_legacy_storage_of_unknown_type_is_unscanned(tmp_path: Path) -> None:
    """The storage type named by a persistent id is not a torch class of known element size: the
    raw area is not laid out by trying sizes until something fits; it is unscanned."""
    buf = io.BytesIO()
    torch.save({"f": torch.ones(4)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b"FloatStorage", b"FloatStorag2", 1)
    (tmp_path / "u.pt").write_bytes(data)
    code, result = scan(tmp_path / "u.pt")
    assert code != 0 and "unscanned-parse-error" in rules(result), rules(result)


#: A protocol 0 call through INST (no 'c' GLOBAL, no PROTO): nothing a carving regex looks for.
INST_PAYLOAD = b"(S'echo owned'\nios\nsystem\n."


def _tar_members(members: "dict[str, bytes]") -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _storages(views: bytes, types: "list[tuple[Any, int, int]]") -> bytes:
    out = pickle.dumps(len(types), protocol=2)
    for i, (cls, elem, n) in enumerate(types):
        out += pickle.dumps((str(i), "cpu", cls), protocol=2) + struct.pack("<Q", n) + b"\x01" * (n * elem)
    return out + views


def _tensors(payload_at_end: bytes = b"") -> bytes:
    out = pickle.dumps(2, protocol=2)
    for i, ndim in enumerate((2, 0)):
        out += pickle.dumps((f"t{i}", str(i), torch.FloatTensor), protocol=2)
        out += struct.pack("<i", ndim) + b"\0" * 4 + struct.pack(f"<{ndim}q", *([3] * ndim)) * 2
        out += struct.pack("<q", 0)
    return out + payload_at_end


TAR_TYPES = [(torch.FloatStorage, 4, 6), (torch.HalfStorage, 2, 5), (torch.ComplexDoubleStorage, 16, 3),
             (torch.BoolStorage, 1, 7)]


def _torch_tar(storages: bytes, tensors: bytes, main: bytes = b"") -> bytes:
    return _tar_members({"sys_info": pickle.dumps({"protocol_version": 1001}, protocol=2),
                         "storages": storages, "tensors": tensors,
                         "pickle": main or pickle.dumps({"a": 1}, protocol=2)})


def test_legacy_tar_records_walked_exactly(tmp_path: Path) -> None:
    """storages/tensors are read record by record as torch reads them: a clean file is clean, and
    an INST payload as the storage-views pickle (which a carving search does not spot) is found."""
    views = pickle.dumps([], protocol=2)
    (tmp_path / "ok.tar").write_bytes(_torch_tar(_storages(views, TAR_TYPES), _tensors()))
    assert_benign(tmp_path / "ok.tar")
    (tmp_path / "views.tar").write_bytes(_torch_tar(_storages(INST_PAYLOAD, TAR_TYPES), _tensors()))
    assert_malicious(tmp_path / "views.tar", member="storages")


def test_legacy_tar_trailing_record_bytes_are_searched(tmp_path: Path) -> None:
    (tmp_path / "t.tar").write_bytes(_torch_tar(_storages(pickle.dumps([], protocol=2), TAR_TYPES),
                                                _tensors(evil_pickle())))
    result = assert_malicious(tmp_path / "t.tar", member="tensors")
    assert "torch-unaccounted-bytes" in rules(result)


def test_legacy_tar_unknown_storage_type_is_unscanned(tmp_path: Path) -> None:
    types = [(torch.FloatTensor, 4, 2)]  # a tensor class has no _dtype: not a storage type
    (tmp_path / "u.tar").write_bytes(_torch_tar(_storages(pickle.dumps([], protocol=2), types), _tensors()))
    code, result = scan(tmp_path / "u.tar")
    assert code != 0 and "unscanned-parse-error" in rules(result)


@pytest.mark.parametrize("ext", [".pkl", ".pt", ".pth", ".ckpt", ".joblib", ".sav", ".dill", ".pickle"])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_file_named_for_an_unpickling_loader_is_read_as_a_pickle(tmp_path: Path, ext: str, kind: str) -> None:
    """pickle.load / joblib.load / torch.load (of a non-zip file) unpickle whatever they get: such a
    file that no reader detects is still read as a pickle, never passed as unrecognised."""
    (tmp_path / f"m{ext}").write_bytes(HOSTILE[kind])
    code, result = scan(tmp_path / f"m{ext}")
    if kind == "garbage":  # \xff is no opcode: the named loader refuses it (issue 18: HIGH)
        assert code == 1 and rules(result) == ["name-format-mismatch"]
    else:
        assert code != 0 and "unrecognized-format" not in rules(result), rules(result)


def test_junk_named_like_a_checkpoint_is_not_what_its_name_says(tmp_path: Path) -> None:
    """Junk named .pt is refused by torch.load: not an unrecognised file (INFO) but a file that is
    not what its name says (issue 18), and named .bin (an ambiguous name) it stays a notice."""
    (tmp_path / "junk.pt").write_bytes(b"JUNK" * 1024 + b"\x00" * 4096)
    code, result = scan(tmp_path / "junk.pt")
    assert code == 1 and rules(result) == ["name-format-mismatch"]
    (tmp_path / "junk.bin").write_bytes(b"JUNK" * 1024 + b"\x00" * 4096)
    code, result = scan(tmp_path / "junk.bin")
    assert code == 0 and rules(result) == ["unrecognized-format"]


def test_torchscript_extra_files_are_not_claimed_and_debug_pkl_is(tmp_path: Path) -> None:
    """torch.jit.load returns extra/ files as bytes (not unpickled): a non-pickle extra 'x.pkl' is
    no finding; the archive's code/*.debug_pkl members are pickles torch reads."""
    class Tiny(torch.nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return x * 2

    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(path), _extra_files={"notes.pkl": b"\xff plain bytes"})
    code, result = scan(path)
    assert not [f for f in result.findings if "notes.pkl" in (f.member or "")], rules(result)
    import zipfile

    names = zipfile.ZipFile(path).namelist()
    debug = [n for n in names if n.endswith(".debug_pkl")]
    assert debug
    _rezip(path, tmp_path / "bad.pt", {debug[0]: HOSTILE["long-int"]})
    code, result = scan(tmp_path / "bad.pt")
    assert code != 0 and any(debug[0] in (f.member or "") for f in result.findings)
