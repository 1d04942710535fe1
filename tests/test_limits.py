"""Every resource limit, hit with a hostile input built here: the finding, the memory and the time.

Each case runs the real command line in a child process (``safemodel scan --format json --no-cache
--jobs 1``, through :data:`CHILD`) so that its peak resident memory can be read exactly: the child
reports its own ``VmHWM`` (the high-water mark of its address space, which starts anew at exec;
``ru_maxrss`` does not: on Linux a child inherits the forking parent's peak, here pytest's).
A case passes when the scan reports the expected rule (the limit fails closed, never clean), the
child's peak RSS stays under 200 MB and it uses at most ``MAX_SECONDS`` of CPU time (generous:
typical times are far lower; CPU time, so that a loaded machine cannot fail a case).

Set ``SAFEMODEL_LIMITS_LOG=FILE`` to append one JSON line per case (exit, rules, RSS, seconds).
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import os
import pickle
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import pytest
from cputime import children_cpu_seconds

from safemodel_ci.context import Limits
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK

MAX_RSS_MB = 200
MAX_SECONDS = 60.0
#: A payload a loader would run (``os.system``), as a protocol 2 pickle; dumped, never loaded.
EVIL = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


#: Runs the CLI like ``python -m safemodel_ci``, then writes its peak RSS in kB to $SAFEMODEL_HWM_FILE.
CHILD = r"""
import os, sys
from safemodel_ci.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    hwm = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
with open(os.environ["SAFEMODEL_HWM_FILE"], "w") as fh:
    fh.write(hwm)
sys.exit(code)
"""


@dataclass
class Run:
    """What one child-process scan did."""

    exit_code: int
    report: dict
    peak_rss_mb: float
    #: CPU seconds of the child (and what it waited for): the work done, which a loaded machine
    #: does not inflate; a hang is caught by the wall-clock timeout of the run instead.
    seconds: float
    stderr: str

    @property
    def findings(self) -> List[dict]:
        return [f for file in self.report.get("files", []) for f in file.get("findings", [])]

    @property
    def rules(self) -> List[str]:
        return [f["rule_id"] for f in self.findings]

    def messages(self, rule_id: str) -> str:
        return "\n".join(f["message"] for f in self.findings if f["rule_id"] == rule_id)


def run_scan(case: str, paths: Sequence[Path], tmp_path: Path, extra: Sequence[str] = (),
             config: Optional[str] = None) -> Run:
    """Scan ``paths`` in a child process; its exit code, JSON report, peak RSS (MB) and seconds."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    args = [sys.executable, "-c", CHILD, "scan", "--format", "json", "--no-cache", "--jobs", "1",
            "--quiet", *extra]
    if config is not None:
        cfg = tmp_path / f"{case}.safemodel.yaml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    args += [str(p) for p in paths]
    out_path, err_path = tmp_path / f"{case}.out.json", tmp_path / f"{case}.err.txt"
    hwm_path = tmp_path / f"{case}.hwm"
    env = {**os.environ, "SAFEMODEL_HWM_FILE": str(hwm_path), "SAFEMODEL_NO_CACHE": "1"}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = children_cpu_seconds()
        try:  # a hang must not hang the suite
            proc = subprocess.run(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=tmp_path,
                                  env=env, timeout=MAX_SECONDS * 3)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{case}: scan still running after {MAX_SECONDS * 3:.0f}s")
        seconds = children_cpu_seconds() - start
    text = out_path.read_text()
    report = json.loads(text) if text.strip() else {}
    peak = int(hwm_path.read_text()) / 1024 if hwm_path.exists() else float("inf")
    run = Run(proc.returncode, report, peak, seconds, err_path.read_text())
    log = os.environ.get("SAFEMODEL_LIMITS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case, "exit": run.exit_code, "rules": sorted(set(run.rules)),
                                 "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 2)}) + "\n")
    return run


def assert_bounded(run: Run) -> None:
    assert run.peak_rss_mb < MAX_RSS_MB, f"peak RSS {run.peak_rss_mb:.0f} MB"
    assert run.seconds < MAX_SECONDS, f"took {run.seconds:.1f}s"
    assert "Traceback" not in run.stderr, run.stderr[-2000:]


def assert_limit(run: Run, rule_id: str = "unscanned-limit", contains: str = "") -> None:
    """The scan stopped at a limit, said which, and did not pass."""
    assert_bounded(run)
    assert rule_id in run.rules, (run.exit_code, run.rules, run.stderr[-1000:])
    if contains:
        assert contains in run.messages(rule_id), run.messages(rule_id)
    assert run.exit_code in (EXIT_FINDINGS, EXIT_INCOMPLETE), run.exit_code


# ---- decompression bombs ----------------------------------------------------------------------

#: Uncompressed size of the bombs: 1/100 of the 8 GiB default budget, but every one exceeds the
#: 1000:1 ratio limit (deflate tops out near 1032:1 on zeros, bz2 and xz go far beyond).
BOMB_BYTES = 256 << 20


def bomb_pickle_stream(compressor) -> bytes:  # type: ignore[no-untyped-def]
    """A protocol 4 pickle whose BINBYTES8 argument is BOMB_BYTES of zeros, fed through ``compressor``
    (with ``compress``/``flush``) chunk by chunk so that building it stays small in memory. A loader
    must read the whole argument to reach STOP, so the scanner must decompress all of it."""
    out = [compressor.compress(b"\x80\x04\x8e" + struct.pack("<Q", BOMB_BYTES))]
    chunk = bytes(1 << 20)
    for _ in range(BOMB_BYTES // len(chunk)):
        out.append(compressor.compress(chunk))
    out.append(compressor.compress(b"\x94."))
    out.append(compressor.flush())
    return b"".join(out)


class _ZlibLike:
    def __init__(self, wbits: int) -> None:
        self.obj = zlib.compressobj(9, zlib.DEFLATED, wbits)

    def compress(self, data: bytes) -> bytes:
        return self.obj.compress(data)

    def flush(self) -> bytes:
        return self.obj.flush()


JOBLIB_BOMBS = {
    "zlib": lambda: _ZlibLike(zlib.MAX_WBITS),
    "gzip": lambda: _ZlibLike(zlib.MAX_WBITS | 16),
    "bz2": lambda: bz2.BZ2Compressor(9),
    "xz": lambda: lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0),
    "lzma": lambda: lzma.LZMACompressor(format=lzma.FORMAT_ALONE, preset=0),
}


@pytest.mark.parametrize("method", sorted(JOBLIB_BOMBS))
def test_compressed_joblib_bomb(method: str, tmp_path: Path) -> None:
    path = tmp_path / f"bomb_{method}.joblib"
    path.write_bytes(bomb_pickle_stream(JOBLIB_BOMBS[method]()))
    run = run_scan(f"joblib-{method}-bomb", [path], tmp_path)
    assert_limit(run, contains="ratio")


def _zip_with_raw_member(name: str, method: int, data: bytes, usize: int, crc: int) -> bytes:
    """A zip with one member whose compressed bytes are given (zipfile cannot stream 256 MB cheaply)."""
    fname = name.encode()
    version = 63 if method == zipfile.ZIP_LZMA else 46 if method == zipfile.ZIP_BZIP2 else 20
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, version, 2 if method == zipfile.ZIP_LZMA else 0,
                        method, 0, 0x21, crc, len(data), usize, len(fname), 0) + fname
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, version, version,
                          2 if method == zipfile.ZIP_LZMA else 0, method, 0, 0x21, crc, len(data), usize,
                          len(fname), 0, 0, 0, 0, 0o644 << 16, 0) + fname
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def _bomb_crc() -> int:
    crc = zlib.crc32(b"\x80\x04\x8e" + struct.pack("<Q", BOMB_BYTES))
    chunk = bytes(1 << 20)
    for _ in range(BOMB_BYTES // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    return zlib.crc32(b"\x94.", crc)


class _ZipLzma:
    """The zip LZMA method: 2 version bytes, 2-byte properties size, properties, raw LZMA1 data."""

    def __init__(self) -> None:
        filters = [{"id": lzma.FILTER_LZMA1, "preset": 0}]
        props = lzma._encode_filter_properties(filters[0])  # type: ignore[attr-defined]
        self.head = struct.pack("<BBH", 9, 4, len(props)) + props
        self.obj = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=[
            lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)])  # type: ignore[attr-defined]

    def compress(self, data: bytes) -> bytes:
        head, self.head = self.head, b""
        return head + self.obj.compress(data)

    def flush(self) -> bytes:
        return self.head + self.obj.flush()


NPZ_BOMBS = {
    "deflate": (zipfile.ZIP_DEFLATED, lambda: _ZlibLike(-zlib.MAX_WBITS)),
    "bzip2": (zipfile.ZIP_BZIP2, lambda: bz2.BZ2Compressor(9)),
    "lzma": (zipfile.ZIP_LZMA, _ZipLzma),
}


@pytest.mark.parametrize("method", sorted(NPZ_BOMBS))
def test_zip_and_npz_member_bomb(method: str, tmp_path: Path) -> None:
    """A .npz (a zip of .npy members) whose member inflates to 256 MB: the ratio limit stops it."""
    zip_method, make = NPZ_BOMBS[method]
    data = bomb_pickle_stream(make())
    path = tmp_path / f"bomb_{method}.npz"
    path.write_bytes(_zip_with_raw_member("arr_0.pkl", zip_method, data, BOMB_BYTES + 13, _bomb_crc()))
    run = run_scan(f"npz-{method}-bomb", [path], tmp_path)
    assert_limit(run, contains="ratio")


def test_decompressed_bytes_budget(tmp_path: Path) -> None:
    """With the ratio limit out of the way, the per-file decompressed-bytes budget stops the same bomb."""
    path = tmp_path / "bomb.joblib"
    path.write_bytes(bomb_pickle_stream(bz2.BZ2Compressor(9)))
    run = run_scan("decompressed-bytes-budget", [path], tmp_path,
                   config="limits:\n  max-compression-ratio: 100000000\n  max-decompressed-bytes: 16777216\n")
    assert_limit(run, contains="decompressed-bytes limit")


# ---- archives ---------------------------------------------------------------------------------

def test_archives_nested_beyond_max_depth(tmp_path: Path) -> None:
    data = EVIL
    levels = Limits().max_depth + 4
    for i in range(levels):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"level{i}.zip" if i else "data.pkl", data)
        data = buf.getvalue()
    path = tmp_path / "nested.zip"
    path.write_bytes(data)
    run = run_scan("nested-zips", [path], tmp_path)
    assert_limit(run, contains="nesting deeper")


def million_member_zip(path: Path, count: int) -> None:
    """``count`` empty stored members, written as raw zip64 records (zipfile would take minutes)."""
    names = [b"m%07d" % i for i in range(count)]
    crc = 0
    local_fmt = struct.Struct("<IHHHHHIIIHH")
    central_fmt = struct.Struct("<IHHHHHHIIIHHHHHII")
    with open(path, "wb") as fh:
        offsets = []
        pos = 0
        parts = []
        for name in names:
            rec = local_fmt.pack(0x04034B50, 20, 0, 0, 0, 0x21, crc, 0, 0, len(name), 0) + name
            offsets.append(pos)
            pos += len(rec)
            parts.append(rec)
        fh.write(b"".join(parts))
        cd_start = pos
        cd = b"".join(central_fmt.pack(0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, 0, 0, len(name), 0, 0, 0, 0,
                                       0o644 << 16, off) + name for name, off in zip(names, offsets))
        fh.write(cd)
        zip64_end_at = cd_start + len(cd)
        fh.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(cd), cd_start))
        fh.write(struct.pack("<IIQI", 0x07064B50, 0, zip64_end_at, 1))
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))


def test_million_member_zip(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    million_member_zip(path, 1_000_000)
    run = run_scan("million-member-zip", [path], tmp_path)
    assert_limit(run, contains=str(Limits().max_members))


# ---- pickle VM --------------------------------------------------------------------------------

PICKLE_CASES = {
    # MARK two million times: the mark stack (limit max_pickle_stack) overflows.
    "marks": b"\x80\x02" + b"(" * 2_000_000 + b".",
    # Push two million Nones: the stack limit.
    "stack": b"\x80\x02" + b"N" * 2_000_000 + b".",
    # Two million distinct memo slots: the memo limit.
    "memo": b"\x80\x02N" + b"".join(b"r" + struct.pack("<I", i) for i in range(2_000_000)) + b".",
    # One memo slot at the highest index LONG_BINPUT can name, then a GET of an index never PUT.
    "memo-index": b"\x80\x02Nr\xff\xff\xff\xff0j\xfe\xff\xff\xff.",
}


@pytest.mark.parametrize("case", sorted(PICKLE_CASES))
def test_hostile_pickle_structure(case: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(PICKLE_CASES[case])
    run = run_scan(f"pickle-{case}", [path], tmp_path)
    expected = {"marks": "too many MARKs", "stack": "stack deeper", "memo": "memo larger",
                "memo-index": "memo value not found"}[case]
    assert_limit(run, "pickle-broken-stream", contains=expected)


def test_pickle_memo_index_at_maximum_is_accepted_and_bounded(tmp_path: Path) -> None:
    """LONG_BINPUT 2**32-1 is legal: it is one dict entry, not a 4-billion-slot table."""
    path = tmp_path / "memo_max.pkl"
    path.write_bytes(b"\x80\x02Nr\xff\xff\xff\xff0j\xff\xff\xff\xff.")
    run = run_scan("pickle-memo-index-max", [path], tmp_path)
    assert_bounded(run)
    assert run.exit_code == EXIT_OK, run.rules


def test_pickle_stack_and_memo_full_at_once(tmp_path: Path) -> None:
    """A million empty dicts, each on the stack and in the memo: both limits reached at once."""
    path = tmp_path / "dicts.pkl"
    path.write_bytes(b"\x80\x04" + b"}\x94" * Limits().max_pickle_stack + b".")
    run = run_scan("pickle-stack-and-memo-full", [path], tmp_path)
    assert_bounded(run)
    assert run.seconds < 2.0 * 2  # two 1 MB halves: the < 2 s per 1 MB target


def test_per_file_time_budget(tmp_path: Path) -> None:
    """A pickle long enough to outlast a small time budget stops with ``unscanned-limit``."""
    path = tmp_path / "long.pkl"
    path.write_bytes(b"\x80\x02" + b"N0" * 4_000_000 + b"N.")
    run = run_scan("time-budget", [path], tmp_path, config="limits:\n  max-seconds-per-file: 0.2\n")
    assert_limit(run, contains="time budget")


# ---- headers that claim too much --------------------------------------------------------------

def _safetensors(claimed: int, body: bytes = b"{}") -> bytes:
    return struct.pack("<Q", claimed) + body


@pytest.mark.parametrize("claimed,rule_id", [
    (100_000_000, "safetensors-header-length"),       # at the reference's limit, past the file's end
    (100_000_001, "safetensors-header-too-large"),    # over the reference's limit
    (2**63, "safetensors-header-too-large"),
])
def test_safetensors_header_claims(claimed: int, rule_id: str, tmp_path: Path) -> None:
    path = tmp_path / "claims.safetensors"
    path.write_bytes(_safetensors(claimed, b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
    run = run_scan(f"safetensors-claims-{claimed}", [path], tmp_path)
    assert_limit(run, rule_id)


def test_safetensors_header_over_in_memory_limit(tmp_path: Path) -> None:
    """A real 2 MB header with the in-memory limit set to 1 MB: not read into memory, unscanned."""
    header = json.dumps({"__metadata__": {"pad": "x" * (2 << 20)}}).encode()
    path = tmp_path / "big_header.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    run = run_scan("safetensors-in-memory-limit", [path], tmp_path,
                   config="limits:\n  max-in-memory-bytes: 1048576\n")
    assert_limit(run, contains="in-memory limit")


def _many_tensors_safetensors(path: Path, min_header_bytes: int) -> int:
    """A valid safetensors file whose header lists enough 4-byte tensors to reach the size."""
    entry = '"model.layers.{i}.mlp.experts.weight":{{"dtype":"F32","shape":[1],"data_offsets":[{a},{b}]}}'
    parts, size, i = [], 2, 0
    while size < min_header_bytes:
        part = entry.format(i=i, a=4 * i, b=4 * i + 4)
        parts.append(part)
        size += len(part) + 1
        i += 1
    header = ("{" + ",".join(parts) + "}").encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4 * i))
    return len(header)


def test_safetensors_header_over_the_json_limit(tmp_path: Path) -> None:
    """A real 17 MB header (about 190,000 tensors, valid by the spec) is not parsed by default:
    parsing it would take about 200 MB; the file is reported unscanned, never clean."""
    path = tmp_path / "many.safetensors"
    n = _many_tensors_safetensors(path, 17 << 20)
    assert n > Limits().max_json_bytes
    run = run_scan("safetensors-json-limit", [path], tmp_path)
    assert_limit(run, contains="max-json-bytes")


def test_json_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "some.safetensors"
    n = _many_tensors_safetensors(path, 100_000)
    config = tmp_path / "cfg"
    config.mkdir()
    below = run_scan("json-limit-below", [path], config, config=f"limits:\n  max-json-bytes: {n - 1}\n")
    assert_limit(below, contains="max-json-bytes")
    above = run_scan("json-limit-above", [path], config, config=f"limits:\n  max-json-bytes: {n}\n")
    assert_bounded(above)
    assert above.exit_code == EXIT_OK, above.rules


def test_keras_config_over_the_json_limit(tmp_path: Path) -> None:
    layers = [{"class_name": "Dense", "config": {"name": f"d{i}", "units": 1}} for i in range(2000)]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"class_name": "Sequential", "config": {"layers": layers}}))
    run = run_scan("keras-json-limit", [path], tmp_path, config="limits:\n  max-json-bytes: 4096\n")
    assert_limit(run, contains="JSON config")


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


@pytest.mark.parametrize("etype", [0, 8, 9])  # u8, string, array of arrays
def test_gguf_array_claiming_2_pow_63_elements(etype: int, tmp_path: Path) -> None:
    kv = _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama")
    kv += _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, etype, 2**63)
    path = tmp_path / "huge_array.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv + b"\x00" * 64)
    run = run_scan(f"gguf-array-2^63-type{etype}", [path], tmp_path)
    assert_limit(run, "gguf-invalid-header")


# ---- what the directory walk meets --------------------------------------------------------------

def test_symlinks_out_of_the_tree_are_scanned_and_loops_end(tmp_path: Path) -> None:
    """A link to a file is read as a loader reads it (torch.load follows links): its target's content is
    scanned and reported under the link's path. A link to a directory outside is not followed and makes
    the run incomplete (issue 17 item 3: never INFO and exit 0)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(EVIL)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "ok.pkl").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    (tree / "to_evil.pkl").symlink_to(outside / "evil.pkl")
    (tree / "to_outside_dir").symlink_to(outside, target_is_directory=True)
    (tree / "loop_dir").symlink_to(tree, target_is_directory=True)
    (tree / "loop_a").symlink_to(tree / "loop_b")
    (tree / "loop_b").symlink_to(tree / "loop_a")
    run = run_scan("symlinks-default", [tree], tmp_path)
    assert_bounded(run)
    scanned = {Path(f["path"]).name for f in run.report["files"]}
    assert not any(f["path"].endswith("outside/evil.pkl") for f in run.report["files"])
    by_name = {Path(f["path"]).name: f for f in run.findings}
    assert by_name["to_evil.pkl"]["rule_id"] == "pickle-dangerous-global"  # under the link's path
    assert by_name["to_outside_dir"]["rule_id"] == "unscanned-link"
    assert by_name["loop_dir"]["rule_id"] == "skipped-not-regular"  # inside the tree: scanned there
    assert run.exit_code == EXIT_FINDINGS
    # A link loop is never a pass: it cannot be opened, and says so.
    loops = [f for f in run.findings if Path(f["path"]).name in ("loop_a", "loop_b")]
    assert loops and all(f["rule_id"] == "unscanned-unreadable" for f in loops)
    assert "ok.pkl" in scanned
    # Only the directory link out: incomplete (exit 2), not a pass.
    (tree / "to_evil.pkl").unlink()
    alone = run_scan("symlinks-dir-only", [tree], tmp_path)
    assert alone.exit_code == EXIT_INCOMPLETE
    # --follow-symlinks: the directory out of the tree is walked, and the directory loop still ends.
    followed = run_scan("symlinks-followed", [tree], tmp_path, extra=["--follow-symlinks"])
    assert_bounded(followed)
    assert "pickle-dangerous-global" in followed.rules
    assert followed.exit_code == EXIT_FINDINGS


def test_unreadable_directory_is_unscanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A directory the walk cannot list hides its files: unscanned-unreadable (exit 2), not a notice.

    chmod 000 does not stop root, so listing it fails through os.scandir here (the call the walk makes).
    """
    from safemodel_ci.cli import main

    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "evil.pkl").write_bytes(EVIL)
    (tree / "ok.pkl").write_bytes(pickle.dumps([1], protocol=2))
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code = main(["scan", "--format", "json", "--no-cache", "-j", "1", "--quiet", str(tree)])
    report = json.loads(capsys.readouterr().out)
    found = {f["path"]: f["rule_id"] for r in report["files"] for f in r["findings"]}
    assert found.get(str(tree / "locked")) == "unscanned-unreadable"
    assert code == EXIT_INCOMPLETE


def test_directory_nesting_of_any_depth(tmp_path: Path) -> None:
    """The walk keeps its own stack: 1,500 nested folders (deeper than the recursion limit) are walked."""
    from conftest import remove_deep_tree

    tree = tmp_path / "tree"
    deep = str(tree)
    os.mkdir(deep)
    try:
        for _ in range(1500):
            deep += "/d"
            os.mkdir(deep)
        with open(deep + "/evil.pkl", "wb") as fh:
            fh.write(EVIL)
        run = run_scan("deep-nesting", [tree], tmp_path)
    finally:
        remove_deep_tree(str(tree))  # pytest's own clean-up would recurse
    assert "pickle-dangerous-global" in run.rules, run.stderr[-2000:]
    assert run.exit_code == EXIT_FINDINGS


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.pkl"
    path.write_bytes(EVIL)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reads; "
                        "test_dangling_link_given_directly covers open failures")
        run = run_scan("unreadable-file", [path], tmp_path)
    finally:
        path.chmod(0o600)
    assert_limit(run, "unscanned-unreadable")
    assert run.exit_code == EXIT_INCOMPLETE


def test_dangling_link_given_directly(tmp_path: Path) -> None:
    """A file that cannot be opened (here a link to nothing, which even root cannot read)."""
    path = tmp_path / "model.pkl"
    path.symlink_to(tmp_path / "missing-target.pkl")
    run = run_scan("dangling-link", [path], tmp_path)
    assert_limit(run, "unscanned-unreadable")
    assert run.exit_code == EXIT_INCOMPLETE


def test_fifo_and_devices_are_skipped_with_a_notice(tmp_path: Path) -> None:
    """Never opened: reading a fifo with no writer, or /dev/zero, would block or never end."""
    fifo = tmp_path / "model.pkl"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    devices = [Path(d) for d in ("/dev/zero", "/dev/null", "/dev/urandom") if os.path.exists(d)]
    run = run_scan("fifo-and-devices", [fifo, *devices], tmp_path)
    assert_bounded(run)
    skipped = {f["path"] for f in run.findings if f["rule_id"] == "skipped-not-regular"}
    assert skipped == {str(fifo), *map(str, devices)}
    assert run.exit_code == EXIT_OK  # a notice: not a model file, nothing to scan


def test_fifo_inside_a_walked_directory(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "pipe.bin")
    (tree / "evil.pkl").write_bytes(EVIL)
    run = run_scan("fifo-in-directory", [tree], tmp_path)
    assert_bounded(run)
    assert "skipped-not-regular" in run.rules and "pickle-dangerous-global" in run.rules
    assert run.exit_code == EXIT_FINDINGS


# ---- the baseline every number above is compared with ---------------------------------------------

def test_baseline_scan_of_a_small_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    run = run_scan("baseline", [path], tmp_path)
    assert_bounded(run)
    assert run.exit_code == EXIT_OK

