"""Result cache: hits on unchanged bytes, misses on every change that matters, safe under concurrency."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import zipfile
from pathlib import Path
from typing import List

import pytest

from safemodel_ci import cache as cache_mod
from safemodel_ci import cli
from safemodel_ci.cache import ResultCache, _decode_log, scan_file_cached
from safemodel_ci.context import Limits
from safemodel_ci.findings import Severity
from safemodel_ci.formats.pickle import PickleReader
from safemodel_ci.policy import Policy
from safemodel_ci.scanner import ScanOptions, scan_file
from safemodel_ci.source import BytesSource, FileSource

OPTIONS = ScanOptions()


def entries(directory: Path) -> List[str]:
    return sorted(glob.glob(str(directory / "v*" / "*" / "*" / "*.json")))


def read_log(directory: Path) -> List[int]:
    (entry,) = entries(directory)
    return list(_decode_log(json.loads(Path(entry).read_text())["reads"]))


def big_junk(path: Path, size: int = 4 << 20) -> Path:
    """A file named like a model whose content is no model: the scan reads only a few ranges of it."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(0)
        fh.write(b"JUNK" * 1024)
    return path


def test_hit_on_unchanged_file(tmp_path: Path) -> None:
    model = big_junk(tmp_path / "m.bin")
    cache = ResultCache(str(tmp_path / "cache"))
    first = scan_file_cached(str(model), OPTIONS, cache)
    assert not first.cached and len(entries(tmp_path / "cache")) == 1
    second = scan_file_cached(str(model), OPTIONS, cache)
    assert second.cached and cache.hits == 1
    assert second.to_dict() == first.to_dict() == scan_file(str(model), OPTIONS).to_dict()
    # The re-run reads what the scan read, a small part of the file, not the whole file.
    assert second.bytes_read == first.bytes_read < model.stat().st_size // 4
    source = FileSource(str(model))
    fp = cache_mod.options_fingerprint(OPTIONS)
    with source:
        assert cache.lookup_file(source, str(model), str(model), fp) is not None
        assert source.bytes_read <= first.bytes_read


def test_change_inside_the_read_ranges_is_a_miss_outside_is_a_hit(tmp_path: Path) -> None:
    model = big_junk(tmp_path / "m.bin")
    cache_dir = tmp_path / "cache"
    cache = ResultCache(str(cache_dir))
    scan_file_cached(str(model), OPTIONS, cache)
    log = read_log(cache_dir)
    ranges = [(log[i], log[i] + log[i + 1]) for i in range(0, len(log), 2)]
    read = lambda off: any(a <= off < b for a, b in ranges)  # noqa: E731
    outside = next(off for off in range(0, model.stat().st_size, 4096) if not read(off))

    # A byte the scan never looked at cannot change its result: still a hit.
    with open(model, "r+b") as fh:
        fh.seek(outside)
        fh.write(b"X")
    assert scan_file_cached(str(model), OPTIONS, cache).cached

    # A byte it did read: a miss, and a fresh scan.
    with open(model, "r+b") as fh:
        fh.seek(ranges[0][0] + 1)
        fh.write(b"Y")
    again = scan_file_cached(str(model), OPTIONS, cache)
    assert not again.cached
    assert scan_file_cached(str(model), OPTIONS, cache).cached  # stored anew

    # A different size: a miss even before reading.
    with open(model, "ab") as fh:
        fh.write(b"\0")
    assert not scan_file_cached(str(model), OPTIONS, cache).cached


def test_tool_version_change_invalidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_junk(tmp_path / "m.bin")
    cache = ResultCache(str(tmp_path / "cache"))
    scan_file_cached(str(model), OPTIONS, cache)
    assert scan_file_cached(str(model), OPTIONS, cache).cached
    before = cache_mod.tool_fingerprint()
    monkeypatch.setattr(cache_mod, "__version__", "99.0.0")
    after = cache_mod.tool_fingerprint.__wrapped__()  # type: ignore[attr-defined]
    assert after != before and after.startswith("99.0.0+")
    monkeypatch.setattr(cache_mod, "tool_fingerprint", lambda: after)
    assert not scan_file_cached(str(model), OPTIONS, cache).cached
    assert scan_file_cached(str(model), OPTIONS, cache).cached


def test_code_change_invalidates(tmp_path: Path) -> None:
    """The fingerprint covers the package's code files, not only the version string."""
    before = cache_mod.tool_fingerprint.__wrapped__()  # type: ignore[attr-defined]
    package = Path(cache_mod.__file__).parent
    target = package / "__init__.py"
    st = target.stat()
    try:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert cache_mod.tool_fingerprint.__wrapped__() != before  # type: ignore[attr-defined]
    finally:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("changed", [
    ScanOptions(policy=Policy(severity_overrides={"unrecognized-format": Severity.LOW})),
    ScanOptions(policy=Policy(allow_globals=frozenset({"mypkg.Thing"}))),
    ScanOptions(limits=Limits().replace(max_depth=2)),
])
def test_policy_or_limits_change_invalidates(tmp_path: Path, changed: ScanOptions) -> None:
    model = big_junk(tmp_path / "m.bin")
    cache = ResultCache(str(tmp_path / "cache"))
    scan_file_cached(str(model), OPTIONS, cache)
    result = scan_file_cached(str(model), changed, cache)
    assert not result.cached
    if changed.policy.severity_overrides:
        assert result.findings[0].severity is Severity.LOW  # the new policy applied, not the old result
    assert scan_file_cached(str(model), changed, cache).cached
    assert scan_file_cached(str(model), OPTIONS, cache).cached  # both entries live side by side


def test_displayed_path_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_junk(tmp_path / "m.bin")
    cache = ResultCache(str(tmp_path / "cache"))
    scan_file_cached(str(model), OPTIONS, cache)
    monkeypatch.chdir(tmp_path)
    result = scan_file_cached("m.bin", OPTIONS, cache)
    assert not result.cached and result.path == "m.bin" and result.findings[0].path == "m.bin"


def test_corrupt_entries_are_misses(tmp_path: Path) -> None:
    model = big_junk(tmp_path / "m.bin")
    cache_dir = tmp_path / "cache"
    cache = ResultCache(str(cache_dir))
    scan_file_cached(str(model), OPTIONS, cache)
    (entry,) = entries(cache_dir)
    good = Path(entry).read_text()
    data = json.loads(good)
    for bad in ("", "{", "[]", json.dumps(dict(data, format=0)), json.dumps(dict(data, reads="%%")),
                json.dumps(dict(data, result={"path": 3})), json.dumps(dict(data, digest="0" * 64))):
        Path(entry).write_text(bad)
        result = scan_file_cached(str(model), OPTIONS, cache)
        assert not result.cached, bad
        assert json.loads(Path(entry).read_text()) == data  # rewritten whole
    assert scan_file_cached(str(model), OPTIONS, cache).cached


def test_stale_versions_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_junk(tmp_path / "m.bin", 1 << 16)
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(cache_mod, "tool_fingerprint", lambda: "0.0.1+old")
    scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    old = cache_dir / "v1" / "0.0.1+old"
    assert old.is_dir()
    (cache_dir / "v0").mkdir()  # a former entry layout
    monkeypatch.setattr(cache_mod, "tool_fingerprint", lambda: "0.0.2+new")
    scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    assert old.is_dir()  # recently used: another installed version may still need it
    week3 = 21 * 86400
    for stale in (old, cache_dir / "v0"):
        os.utime(stale, (os.stat(stale).st_atime - week3, os.stat(stale).st_mtime - week3))
    assert ResultCache(str(cache_dir)).prune() == 2
    assert not old.exists() and not (cache_dir / "v0").exists()
    assert (cache_dir / "v1" / "0.0.2+new").is_dir()
    assert len(entries(cache_dir)) == 1


def test_unwritable_cache_dir_still_scans(tmp_path: Path) -> None:
    model = big_junk(tmp_path / "m.bin")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    cache = ResultCache(str(blocker))
    assert not scan_file_cached(str(model), OPTIONS, cache).cached
    assert not scan_file_cached(str(model), OPTIONS, cache).cached


def test_incomplete_results_are_not_stored(tmp_path: Path) -> None:
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "hello")
    no_time = ScanOptions(limits=Limits().replace(max_seconds_per_file=-1.0))
    cache = ResultCache(str(tmp_path / "cache"))
    result = scan_file_cached(str(archive), no_time, cache)
    assert not result.complete and any(f.rule_id == "unscanned-limit" for f in result.findings)
    assert entries(tmp_path / "cache") == []


def test_results_that_read_other_files_are_not_stored(tmp_path: Path) -> None:
    """An LFS pointer is scanned through its object in .git/lfs: that file is not in the key."""
    content = b"not a model, but the LFS object"
    oid = hashlib.sha256(content).hexdigest()
    obj = tmp_path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    obj.parent.mkdir(parents=True)
    obj.write_bytes(content)
    pointer = tmp_path / "m.pt"
    pointer.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n")
    cache = ResultCache(str(tmp_path / "cache"))
    result = scan_file_cached(str(pointer), OPTIONS, cache)
    if "lfs-pointer" not in result.formats:
        pytest.skip("Git LFS reader not registered")
    assert result.complete
    assert entries(tmp_path / "cache") == []


def _hammer(args: "tuple[str, str, int]") -> List[bool]:
    path, cache_dir, rounds = args
    cache = ResultCache(cache_dir)
    out = []
    for _ in range(rounds):
        result = scan_file_cached(path, OPTIONS, cache)
        cache._store("0" * 64, {"size": 1, "result": result.to_dict()})  # same key from every process
        out.append(result.cached)
    return out


def test_concurrent_writers(tmp_path: Path) -> None:
    models = [str(big_junk(tmp_path / f"m{i}.bin", 1 << 20)) for i in range(3)]
    cache_dir = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_hammer, [(models[i % 3], cache_dir, 15) for i in range(8)])
    assert sum(len(r) for r in results) == 120
    files = glob.glob(os.path.join(cache_dir, "**", "*"), recursive=True)
    assert not [f for f in files if os.path.basename(f).startswith(".tmp-")]  # no leftovers
    for entry in entries(tmp_path / "cache"):
        json.loads(Path(entry).read_text())  # every entry whole
    cache_mod.tool_fingerprint.cache_clear()  # the workers fingerprinted the code as it is now
    cache = ResultCache(cache_dir)
    assert all(scan_file_cached(m, OPTIONS, cache).cached for m in models)


def test_sha256_keyed_entries(tmp_path: Path) -> None:
    model = big_junk(tmp_path / "m.bin", 1 << 16)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    cache = ResultCache(str(tmp_path / "cache"))
    result = scan_file(str(model), OPTIONS, "hf://org/repo@abc/m.pt")
    assert cache.get_by_sha256(digest, 1 << 16, "hf://org/repo@abc/m.pt", OPTIONS) is None
    assert cache.put_by_sha256(digest, 1 << 16, "hf://org/repo@abc/m.pt", OPTIONS, result)
    hit = cache.get_by_sha256(digest.upper(), 1 << 16, "hf://org/repo@abc/m.pt", OPTIONS)
    assert hit is not None and hit.cached and hit.findings == result.findings
    assert cache.get_by_sha256(digest, 1 << 16, "hf://org/repo@abc/other.pt", OPTIONS) is None
    other_policy = ScanOptions(policy=Policy(allow_globals=frozenset({"a.b"})))
    assert cache.get_by_sha256(digest, 1 << 16, "hf://org/repo@abc/m.pt", other_policy) is None


def test_small_files_are_keyed_by_their_whole_content(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"not a model " * 100)
    cache_dir = tmp_path / "cache"
    cache = ResultCache(str(cache_dir))
    scan_file_cached(str(model), OPTIONS, cache)
    (entry,) = entries(cache_dir)
    data = json.loads(Path(entry).read_text())
    assert data["whole_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() and "reads" not in data
    assert scan_file_cached(str(model), OPTIONS, cache).cached
    content = bytearray(model.read_bytes())
    content[-1] ^= 1
    model.write_bytes(bytes(content))
    assert not scan_file_cached(str(model), OPTIONS, cache).cached


class _ChangingSource(BytesSource):
    """Content that changes after the scan (a file rewritten while it was being scanned)."""

    def swap(self, data: bytes) -> None:
        self._data = memoryview(data)


def test_a_file_changed_during_the_scan_is_not_keyed_by_its_new_content(tmp_path: Path) -> None:
    inner = _ChangingSource(b"A" * 100)
    rec = cache_mod.RecordingSource(inner)
    rec.read_at(0, 10)
    inner.swap(b"B" * 100)  # the scan saw A..., the file now holds B...
    cache = ResultCache(str(tmp_path / "cache"))
    result = scan_file(str(big_junk(tmp_path / "x.bin", 100)), OPTIONS)
    assert cache.store_file(rec, "/x", "x", "fp", result)
    (entry,) = entries(tmp_path / "cache")
    data = json.loads(Path(entry).read_text())
    assert "whole_sha256" not in data and data["digest"] == rec.digest.hexdigest()


def test_recording_source_replays(tmp_path: Path) -> None:
    inner = BytesSource(bytes(range(256)) * 10)
    rec = cache_mod.RecordingSource(inner)
    rec.read_at(5, 10)
    rec.read_at(2500, 100)  # short: the source ends at 2560
    rec.read_at(0, 3)
    assert list(rec.log) == [5, 10, 2500, 60, 0, 3]
    assert cache_mod.replay_digest(BytesSource(bytes(range(256)) * 10), rec.log) == rec.digest.hexdigest()
    changed = bytearray(bytes(range(256)) * 10)
    changed[2555] ^= 1
    assert cache_mod.replay_digest(BytesSource(bytes(changed)), rec.log) != rec.digest.hexdigest()
    assert cache_mod.replay_digest(BytesSource(bytes(2000)), rec.log) is None  # now too short


def test_cli_uses_the_cache_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("SAFEMODEL_CACHE_DIR", str(cache_dir))
    (tmp_path / "models").mkdir()
    model = big_junk(tmp_path / "models" / "m.bin")
    assert cli.main(["scan", "--no-cache", "-f", "json", str(model)]) == 0
    uncached = capsys.readouterr().out
    assert entries(cache_dir) == []
    assert cli.main(["scan", "-f", "json", str(model)]) == 0
    assert capsys.readouterr().out == uncached
    assert len(entries(cache_dir)) == 1
    assert cli.main(["scan", "-f", "json", str(model)]) == 0
    assert capsys.readouterr().out == uncached  # a cached result reports exactly the same
    monkeypatch.setenv("SAFEMODEL_NO_CACHE", "1")
    os.unlink(entries(cache_dir)[0])
    assert cli.main(["scan", "-f", "json", str(model)]) == 0
    assert entries(cache_dir) == []


def _pickle_reader_ready() -> bool:
    return PickleReader().detect(BytesSource(pickle.dumps({"a": 1})), pickle.dumps({"a": 1}))


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def test_cached_malicious_result_keeps_its_findings(tmp_path: Path) -> None:
    if not _pickle_reader_ready():
        pytest.skip("pickle reader not available yet")
    bad = tmp_path / "bad.pkl"
    buf = io.BytesIO()
    pickle.dump({"weights": [1.0] * 1000, "x": _Payload()}, buf, protocol=4)
    bad.write_bytes(buf.getvalue())
    cache = ResultCache(str(tmp_path / "cache"))
    first = scan_file_cached(str(bad), OPTIONS, cache)
    assert any(f.severity is Severity.CRITICAL for f in first.findings)
    second = scan_file_cached(str(bad), OPTIONS, cache)
    assert second.cached and second.findings == first.findings


def test_a_small_file_rewritten_during_the_scan_is_keyed_by_what_the_scan_read(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"A" * 100)
    cache = ResultCache(str(tmp_path / "cache"))
    result = scan_file(str(model), OPTIONS)
    with FileSource(str(model)) as source:
        assert source.read_at(0, 10) == b"A" * 10  # the first read takes the whole small file
        model.write_bytes(b"B" * 100)
        assert source.read_at(90, 10) == b"A" * 10  # later reads come from that copy
        assert cache.store_snapshot(source, str(model), str(model), "fp", result)
    (entry,) = entries(tmp_path / "cache")
    assert json.loads(Path(entry).read_text())["whole_sha256"] == hashlib.sha256(b"A" * 100).hexdigest()


# ---- issue 17 item 2: entries an attacker writes into a shared cache directory ------------------

class _Evil:
    """Pickled (never unpickled) into a file whose load would call os.system."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def evil_model(path: Path, padding: int = 400_000) -> Path:
    """A real malicious pickle, bigger than FileSource.SLURP_SIZE so the read-log path is used."""
    path.write_bytes(pickle.dumps([b"\0" * padding, _Evil()], protocol=4))
    return path


def _forge_clean_entry(cache_dir: Path, model: Path) -> Path:
    """What an attacker with write access to the cache directory writes: the old entry layout with
    an empty read log and a clean result, at the key anyone can compute."""
    fp = cache_mod.options_fingerprint(OPTIONS)
    cache = ResultCache(str(cache_dir))
    key = cache.file_key(os.path.abspath(model), model.stat().st_size, str(model), fp)
    path = Path(cache._entry_path(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {"path": str(model), "size": model.stat().st_size, "formats": ["pickle"], "findings": [],
             "bytes_read": 0}
    path.write_text(json.dumps({"size": model.stat().st_size, "result": clean, "reads": "r:",
                                "digest": hashlib.sha256(b"").hexdigest(), "format": cache_mod.CACHE_FORMAT,
                                "key": key}))
    return path


def test_forged_entry_does_not_pass_a_malicious_file(tmp_path: Path) -> None:
    model = evil_model(tmp_path / "evil.pkl")
    cache_dir = tmp_path / "cache"
    _forge_clean_entry(cache_dir, model)
    result = scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    assert not result.cached
    assert any(f.rule_id == "pickle-dangerous-global" for f in result.findings)


def test_entry_with_valid_mac_but_empty_read_log_is_refused(tmp_path: Path) -> None:
    """Even an entry written with the key must check bytes of the file: an empty log matches anything."""
    model = evil_model(tmp_path / "evil.pkl")
    cache_dir = tmp_path / "cache"
    cache = ResultCache(str(cache_dir))
    fp = cache_mod.options_fingerprint(OPTIONS)
    size = model.stat().st_size
    key = cache.file_key(os.path.abspath(model), size, str(model), fp)
    clean = {"path": str(model), "size": size, "formats": ["pickle"], "findings": [], "bytes_read": 0}
    assert cache._store(key, {"size": size, "result": clean, "reads": "r:",
                              "digest": hashlib.sha256(b"").hexdigest()})
    result = scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    assert not result.cached and any(f.rule_id == "pickle-dangerous-global" for f in result.findings)


def test_entries_are_authenticated_and_key_file_is_private(tmp_path: Path) -> None:
    model = evil_model(tmp_path / "evil.pkl")
    cache_dir = tmp_path / "cache"
    first = scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    key_file = cache_dir / cache_mod.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == cache_mod.KEY_BYTES
    (entry,) = entries(cache_dir)
    assert Path(entry).stat().st_mode & 0o777 == 0o600  # made private, as tempfile.mkstemp makes files
    assert not glob.glob(str(cache_dir / "**" / ".tmp-*"), recursive=True)  # renamed or removed
    data = json.loads(Path(entry).read_text())
    assert len(data["mac"]) == 64
    assert scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir))).cached
    # A clean result swapped into the genuine entry (MAC kept) no longer authenticates.
    text = Path(entry).read_text()
    data["result"]["findings"] = []
    Path(entry).write_text(json.dumps(data, separators=(",", ":")))
    again = scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    assert not again.cached and again.findings == first.findings
    assert text  # the original was a valid entry


def test_fifo_at_an_entry_path_does_not_hang(tmp_path: Path) -> None:
    import signal

    model = evil_model(tmp_path / "evil.pkl")
    cache_dir = tmp_path / "cache"
    scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    (entry,) = entries(cache_dir)
    os.unlink(entry)
    os.mkfifo(entry)

    class Hung(BaseException):  # not an OSError: the look-up must not swallow it as a miss
        pass

    def hung(*_: object) -> None:
        raise Hung("the cache look-up blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        result = scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not result.cached and any(f.rule_id == "pickle-dangerous-global" for f in result.findings)


def test_oversized_entry_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_junk(tmp_path / "m.pt")
    cache_dir = tmp_path / "cache"
    scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))
    (entry,) = entries(cache_dir)
    monkeypatch.setattr(cache_mod, "MAX_ENTRY_BYTES", os.path.getsize(entry) - 1)
    assert not scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir))).cached


@pytest.mark.parametrize("problem", ["other-owner", "group-writable", "key-readable", "key-other-owner"])
def test_untrusted_cache_dir_is_refused_with_a_warning(problem: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = evil_model(tmp_path / "evil.pkl")
    cache_dir = tmp_path / "cache"
    scan_file_cached(str(model), OPTIONS, ResultCache(str(cache_dir)))  # a genuine cache
    key_file = cache_dir / cache_mod.KEY_FILE
    other = 65534 if os.geteuid() != 65534 else 65533
    if problem in ("other-owner", "key-other-owner") and os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    if problem == "other-owner":
        os.chown(cache_dir, other, -1)
    elif problem == "group-writable":
        os.chmod(cache_dir, 0o777)
    elif problem == "key-readable":
        os.chmod(key_file, 0o644)
    else:
        os.chown(key_file, other, -1)
    assert cache_mod.check_cache_dir(str(cache_dir)) is not None
    monkeypatch.setenv("SAFEMODEL_CACHE_DIR", str(cache_dir))
    code = cli.main(["scan", "--format", "json", "--quiet", "-j", "1", str(model)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "result cache not used" in err and str(cache_dir) in err
    assert json.loads(out)["files"][0]["cached"] is False if "cached" in json.loads(out)["files"][0] else True
    # Used directly, the cache refuses too (no crash, no hit, nothing stored).
    cache = ResultCache(str(cache_dir))
    assert cache.problem is not None
    assert not scan_file_cached(str(model), OPTIONS, cache).cached and cache.stores == 0


def test_private_files_are_new_private_and_never_through_a_symlink(tmp_path: Path) -> None:
    """``_private_file`` (the cache's mkstemp without tempfile): mode 0600, a fresh name each time, and
    a name that already exists (here a symlink planted by another user) is never opened."""
    fds = []
    try:
        made = set()
        for _ in range(20):
            fd, path = cache_mod._private_file(str(tmp_path), ".tmp-", ".json")
            fds.append(fd)
            assert os.path.dirname(path) == str(tmp_path) and os.path.basename(path).startswith(".tmp-")
            assert path.endswith(".json") and os.stat(path).st_mode & 0o777 == 0o600
            made.add(path)
        assert len(made) == 20
    finally:
        for fd in fds:
            os.close(fd)
    target = tmp_path / "target"
    target.write_bytes(b"")
    os.symlink(target, tmp_path / "planted")
    with pytest.raises(FileExistsError):
        os.open(str(tmp_path / "planted"), cache_mod._PRIVATE_FLAGS, 0o600)
