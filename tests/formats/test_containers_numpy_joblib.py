"""NumPy .npy files and joblib files, plain and compressed with every compressor."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pytest
from container_support import Evil, assert_benign, assert_malicious, evil_pickle, find, needs_vm, rules, scan

from safemodel_ci.context import Limits
from safemodel_ci.formats.joblib import JoblibCompressedReader
from safemodel_ci.formats.numpy import descr_has_object, itemsize, parse_header
from safemodel_ci.source import BytesSource

np = pytest.importorskip("numpy")

COMPRESSORS = ["zlib", "gzip", "bz2", "xz", "lzma", "lz4"]


def npy_bytes(array: "np.ndarray", version: "tuple[int, int] | None" = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=True)
    return buf.getvalue()


# -- .npy structure ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_header_versions(version: "tuple[int, int]") -> None:
    data = npy_bytes(np.arange(6, dtype="<i4").reshape(2, 3), version)
    header, major, start = parse_header(BytesSource(data))
    assert (header["shape"], header["descr"], major) == ((2, 3), "<i4", version[0])
    assert len(data) - start == 24


def test_object_dtype_anywhere_in_descr() -> None:
    assert descr_has_object("|O")
    assert descr_has_object([("a", "<f8"), ("b", [("c", "|O")])])
    assert not descr_has_object([("a", "<f8"), ("s", "|S5"), ("u", "<U3", (2,))])
    assert itemsize([("a", "<f8"), ("s", "|S5"), ("u", "<U3", (2,))]) == 8 + 5 + 24
    dt = np.dtype([("a", "<f8"), ("s", "|S5"), ("u", "<U3", (2,))])
    assert dt.itemsize == 37


def test_header_is_a_literal_never_code(tmp_path: Path) -> None:
    header = b"{'descr': __import__('os').system('echo hi'), 'fortran_order': False, 'shape': (1,)}"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path = tmp_path / "evil_header.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 8)
    code, result = scan(path)
    assert code == 2
    assert "unscanned-parse-error" in rules(result)


def test_numeric_arrays_pass_and_read_only_the_header(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.zeros(2_000_000))
    np.save(tmp_path / "rec.npy", np.zeros(3, dtype=[("a", "<f4"), ("b", "|S3")]))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.ones((3, 4))))
    for name in ("big.npy", "rec.npy", "fortran.npy"):
        result = assert_benign(tmp_path / name)
        assert result.formats == ["npy"]
    # The header, plus what every detector looks at (a zip end record may sit in the last 64 KiB):
    # the 16 MB of array data are not read.
    assert assert_benign(tmp_path / "big.npy").bytes_read < 1_000_000


def test_truncated_array_fails_closed(tmp_path: Path) -> None:
    data = npy_bytes(np.arange(100.0))
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    code, result = scan(tmp_path / "cut.npy")
    assert code == 2 and "unscanned-parse-error" in rules(result)


def test_trailing_bytes_reported(tmp_path: Path) -> None:
    data = npy_bytes(np.arange(4.0))
    (tmp_path / "t.npy").write_bytes(data + b"garbage")
    code, result = scan(tmp_path / "t.npy")
    assert code == 0
    assert find(result, "npy-trailing-data")[0].offset == len(data)


@needs_vm
def test_object_arrays(tmp_path: Path) -> None:
    np.save(tmp_path / "ok.npy", np.array([{"a": 1}, "text", None], dtype=object), allow_pickle=True)
    result = assert_benign(tmp_path / "ok.npy")
    assert find(result, "npy-object-array")[0].severity.name == "LOW"
    data = npy_bytes(np.array([1, Evil()], dtype=object))
    (tmp_path / "evil.npy").write_bytes(data)
    header_end = parse_header(BytesSource(data))[2]
    result = assert_malicious(tmp_path / "evil.npy")
    assert find(result, "npy-object-array")[0].offset == header_end
    assert all(f.offset >= header_end for f in result.findings if f.rule_id == "pickle-dangerous-global")


@needs_vm
def test_payload_after_numeric_array(tmp_path: Path) -> None:
    data = npy_bytes(np.arange(4.0))
    (tmp_path / "tail.npy").write_bytes(data + evil_pickle())
    assert_malicious(tmp_path / "tail.npy", member=f"<after array@{len(data)}>")


@needs_vm
def test_pickle_named_npy(tmp_path: Path) -> None:
    # np.load(allow_pickle=True) unpickles a file that is neither npy nor npz.
    (tmp_path / "p.npy").write_bytes(evil_pickle())
    assert_malicious(tmp_path / "p.npy")


# -- joblib --------------------------------------------------------------------------------------

def _dump(obj: object, path: Path, compress: "str | None") -> Path:
    joblib = pytest.importorskip("joblib")
    if compress == "lz4":
        pytest.importorskip("lz4")
    joblib.dump(obj, path, compress=(compress, 3) if compress else 0)
    return path


@pytest.mark.parametrize("compress", COMPRESSORS)
def test_compressed_joblib_detected_and_decompressed(tmp_path: Path, compress: str) -> None:
    path = _dump({"w": np.arange(10)}, tmp_path / f"m.{compress}", compress)
    data = path.read_bytes()
    assert JoblibCompressedReader().detect(BytesSource(data), data[:4096])
    code, result = scan(path)
    assert f"joblib-{compress}" in result.formats


def test_weak_magic_alone_does_not_decide() -> None:
    reader = JoblibCompressedReader()
    for data in (b"x marks the spot, not a zlib stream", b"BZ is a prefix here", b"(S'a'\np0\n.",
                 b"\x5d\x00 not lzma"):
        assert not reader.detect(BytesSource(data), data), data


@needs_vm
@pytest.mark.parametrize("compress", [None] + COMPRESSORS)
def test_joblib_benign_and_malicious(tmp_path: Path, compress: "str | None") -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    model = sklearn.LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    assert_benign(_dump({"model": model, "w": np.arange(100.0)}, tmp_path / "ok.joblib", compress))
    member = f"<{compress}>" if compress else None
    assert_malicious(_dump([np.arange(1000.0), Evil()], tmp_path / "evil.joblib", compress), member=member)


@needs_vm
def test_payload_after_a_joblib_array(tmp_path: Path) -> None:
    """The call sits after the raw bytes of an array: the walk must skip them and go on."""
    path = _dump({"a": np.arange(50_000.0), "b": np.ones((10, 10)), "x": Evil()}, tmp_path / "p.joblib", None)
    result = assert_malicious(path)
    # The global is imported after 400 kB of raw float64 bytes, which the walk skipped.
    hits = [f for f in result.findings if f.rule_id == "pickle-dangerous-global"]
    assert any(f.offset > 50_000 * 8 for f in hits), [f.offset for f in hits]


@needs_vm
def test_legacy_zf_format(tmp_path: Path) -> None:
    compat = pytest.importorskip("joblib.numpy_pickle_compat")
    with open(tmp_path / "old.pkl", "wb") as fh:
        compat.write_zfile(fh, evil_pickle())
    result = assert_malicious(tmp_path / "old.pkl", member="<zf>")
    assert "joblib-zf" in result.formats


@needs_vm
def test_trailing_payload_after_compressed_stream(tmp_path: Path) -> None:
    data = zlib.compress(b"\x80\x02]q\x00.")
    (tmp_path / "z.joblib").write_bytes(data + evil_pickle())
    result = assert_malicious(tmp_path / "z.joblib", member=f"<after zlib@{len(data)}>")
    assert find(result, "compressed-trailing-data")[0].offset == len(data)


def test_decompression_limits(tmp_path: Path) -> None:
    (tmp_path / "bomb.joblib").write_bytes(zlib.compress(b"\0" * (16 << 20), 9))
    code, result = scan(tmp_path / "bomb.joblib", Limits(max_compression_ratio=100))
    assert code == 2
    assert any("ratio" in f.message for f in find(result, "unscanned-limit"))
    (tmp_path / "big.joblib").write_bytes(zlib.compress(bytes(range(256)) * 8192))
    code, result = scan(tmp_path / "big.joblib", Limits(max_decompressed_bytes=1 << 20))
    assert code == 2
    assert any("decompressed-bytes" in f.message for f in find(result, "unscanned-limit"))


def test_lz4_without_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safemodel_ci.formats.joblib as joblib_reader

    (tmp_path / "m.joblib").write_bytes(b"\x04\x22\x4d\x18" + b"\0" * 32)
    monkeypatch.setattr(joblib_reader, "lz4_available", lambda: False)
    code, result = scan(tmp_path / "m.joblib")
    assert code == 2
    assert "unscanned-unsupported" in rules(result)
