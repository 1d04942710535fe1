"""Regressions for bugs the hardening work (limit tests, fuzzing) found in the readers and helpers."""

from __future__ import annotations

import base64
import bz2
import struct
import tracemalloc
from pathlib import Path

import pytest
from cputime import cpu_seconds

from safemodel_ci.context import Limits, ScanContext, ScanLimitExceeded
from safemodel_ci.decompress import decompress_to_source
from safemodel_ci.policy import Policy
from safemodel_ci.source import BytesSource


def _bz2_bomb(size: int) -> bytes:
    comp = bz2.BZ2Compressor(9)
    out = [comp.compress(b"\x80\x04\x8e" + struct.pack("<Q", size))]
    chunk = bytes(1 << 20)
    for _ in range(size // len(chunk)):
        out.append(comp.compress(chunk))
    return b"".join(out) + comp.compress(b".") + comp.flush()


def test_decompression_bomb_stops_before_its_output_is_collected() -> None:
    """A few hundred bytes of bz2 expand to 128 MB in one ``feed``: the decompressor's output used
    to be gathered in a list before any limit was checked (the whole expansion in memory). Pieces
    are now checked one by one, so the ratio limit stops it after about 1 MiB."""
    data = _bz2_bomb(128 << 20)
    assert len(data) < 4096
    ctx = ScanContext("bomb.joblib", Policy(), Limits())
    tracemalloc.start()
    try:
        with pytest.raises(ScanLimitExceeded, match="ratio"):
            decompress_to_source(BytesSource(data), "bz2", ctx, "bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak traced memory {peak >> 20} MiB"


def test_hdf5_whose_root_group_cannot_be_opened_is_unscanned_not_a_crash(tmp_path: Path) -> None:
    """Found by the mutation fuzzer: a Keras .h5 with its first 373 bytes duplicated in front opens,
    but its root group does not, and h5py raised KeyError (not OSError) from ``File.attrs``: the
    reader crashed (``scanner-error``). Now a precise ``unscanned-parse-error``."""
    h5py = pytest.importorskip("h5py")
    from safemodel_ci.scanner import ScanOptions, scan_file

    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = '{"class_name": "Sequential", "config": {"layers": []}}'
        f.attrs["keras_version"] = "2.15.0"
        f.create_group("model_weights")
    data = path.read_bytes()
    path.write_bytes(data[:373] + data)
    result = scan_file(str(path), ScanOptions())
    rules = [f.rule_id for f in result.findings]
    assert "scanner-error" not in rules
    assert "unscanned-parse-error" in rules and not result.complete


def test_hdf5_damaged_global_heap_does_not_hang(tmp_path: Path) -> None:
    """Found by the mutation fuzzer: the zoo's Keras model.h5 with 391 bytes in the middle
    duplicated. libhdf5 loops forever on it holding the GIL; the HDF5 reader runs h5py in a forked
    child with a time limit (``Limits.max_native_parse_seconds``). Scanned in a child process so a
    regression cannot hang the test run."""
    pytest.importorskip("h5py")
    import subprocess
    import sys

    from fixture_factory import make_zoo

    make_zoo(tmp_path / "zoo", tmp_path / "CANARY")
    data = (tmp_path / "zoo" / "model.h5").read_bytes()
    path = tmp_path / "damaged.h5"
    path.write_bytes(data[:2233] + data[1842:2233] + data[2233:])
    try:
        proc = subprocess.run([sys.executable, "-m", "safemodel_ci", "scan", "--no-cache", "--jobs", "1",
                               str(path)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the scan of a 6.8 kB damaged HDF5 file did not finish in 120 s")
    assert proc.returncode == 2, proc.stdout
    assert "unscanned-limit" in proc.stdout and "HDF5 library did not finish" in proc.stdout, proc.stdout


@pytest.mark.parametrize("data", [b"ZF1", b"ZF0x1f", b"ZF" + b"0" * 18])
def test_joblib_zf_header_cut_short_is_not_a_detection_crash(data: bytes) -> None:
    """A legacy joblib ``ZF`` header cut short (found by atheris: ``ZF1``) made the detector slice
    from past the end of the file ("negative slice"): a scanner-error for a 3-byte file."""
    from safemodel_ci.scanner import ScanOptions, scan_byte_source

    result = scan_byte_source(BytesSource(data, name="x.pkl"), "x.pkl", ScanOptions())
    assert "scanner-error" not in [f.rule_id for f in result.findings], result.findings


#: 288 bytes of bz2 found by atheris: they expand past the 1000:1 ratio into a pickle of 843,000
#: one-byte TUPLE1 opcodes (the decompressed part is scanned before the limit stops it).
_BZ2_TUPLE_STORM = base64.b64decode(
    "QlpoMzFBWSZTWS6nueUAAHV/4v/QbExQYQBE6BkQgL//3gAO5BBiogBAALAAutBqBT1NMmmg0DIyA0BkAND0mTTIRTRMTTaa"
    "GpowTIxDENAMjI9RkGI0kyIyA0ZGmmgDTRo0A00AGg8A9PRSQA/Ff9ksEZklHYwSTTLUal4lLJJBGchFNInCZgmqAAAAbV2+"
    "47jefkX2XBmtA4LkKknuQ0WdxXlHTyckkZVJZQ9rUtsDCMZiiAgpLFiaSOxbUgMXwCJCtZADl5Y6UtmXPGySAFj1wCyOkd9I"
    "DQ8Vzwow3mXhBDUgSRm2AAAAAAAAB9BwT/khJTGygbmDBJSSzUYG5aLiPzf3JWXnYoQ+upYx+dOGYgFIN/F3JFOFCQLqe55Q"
)


def test_bz2_joblib_of_one_byte_opcodes_stays_under_two_seconds_of_cpu() -> None:
    from safemodel_ci.scanner import ScanOptions, scan_byte_source

    start = cpu_seconds()
    result = scan_byte_source(BytesSource(_BZ2_TUPLE_STORM, name="x.joblib"), "x.joblib", ScanOptions())
    seconds = cpu_seconds() - start
    rules = {f.rule_id for f in result.findings}
    assert "unscanned-limit" in rules and "scanner-error" not in rules, rules
    assert seconds < 2.0
