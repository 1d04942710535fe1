"""``safemodel cache``: a cache filled by the real ``hf_hub_download`` from the fake Hub, then scanned."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from safemodel_ci.cli import main
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from safemodel_ci.sources.hfcache import expected_digest, hash_blob

from conftest import remove_deep_tree
from hub_server import FakeHub, fake_hub_env
from model_files import _SystemPayload, safetensors_bytes

pytest.importorskip("huggingface_hub")


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from fake_hub_env(tmp_path, monkeypatch)


def download(hub: FakeHub, cache: Path, repo_id: str, files: List[str], revision: str) -> List[Path]:
    from huggingface_hub import hf_hub_download

    return [Path(hf_hub_download(repo_id, f, revision=revision, cache_dir=cache, endpoint=hub.endpoint,
                                 token=False)) for f in files]


def run_json(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, dict]:
    code = main(args + ["--format", "json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture()
def filled_cache(hub: FakeHub, tmp_path: Path) -> Tuple[Path, str, str]:
    """Two revisions of one repo that share the safetensors blob and differ in config.json."""
    weights = safetensors_bytes({"w": ("F32", [4], 16)})
    old = hub.add_commit("acme/cached", {"model.safetensors": weights, "config.json": b'{"v": 1}'},
                         refs=("v1",))
    new = hub.add_commit("acme/cached", {"model.safetensors": weights, "config.json": b'{"v": 2}',
                                         "sub/notes.txt": b"hello"}, refs=("main",))
    cache = tmp_path / "cache"
    download(hub, cache, "acme/cached", ["model.safetensors", "config.json"], "v1")
    download(hub, cache, "acme/cached", ["model.safetensors", "config.json", "sub/notes.txt"], "main")
    return cache, old, new


def test_cache_is_scanned_per_revision_and_each_blob_once(
        filled_cache: Tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cache, old, new = filled_cache
    code, report = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_OK, report
    paths = {f["path"] for f in report["files"]}
    assert paths == {f"acme/cached@{old}:model.safetensors", f"acme/cached@{old}:config.json",
                     f"acme/cached@{new}:model.safetensors", f"acme/cached@{new}:config.json",
                     f"acme/cached@{new}:sub/notes.txt"}
    summary = report["extra"]["cache"]
    assert summary["repos"] == 1 and summary["revisions"] == 2 and summary["files"] == 5
    assert summary["blobs_scanned"] == 4  # the shared safetensors blob is read once
    code = main(["cache", "--cache-dir", str(cache)])
    out = capsys.readouterr().out
    assert "1 repo, 2 revisions, 5 files, 4 blobs scanned" in out and "PASS" in out
    assert "verified: 4 of 4 blobs hashed against their names" in out


def test_blob_altered_after_download_is_reported_for_every_revision(
        filled_cache: Tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cache, old, new = filled_cache
    blob = Path(os.path.realpath(cache / "models--acme--cached" / "snapshots" / new / "model.safetensors"))
    assert len(blob.name) == 64  # LFS: named by sha256
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one tensor byte: still a valid safetensors file, only the hash tells
    blob.write_bytes(bytes(data))
    config = Path(os.path.realpath(cache / "models--acme--cached" / "snapshots" / old / "config.json"))
    assert len(config.name) == 40  # regular file: named by its git blob sha1
    config.write_bytes(b'{"v": 1, "trust_remote_code": true}')

    code, report = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_FINDINGS
    flagged: Dict[str, dict] = {f["path"]: g for f in report["files"] for g in f["findings"]
                                if g["rule_id"] == "cache-blob-mismatch"}
    assert set(flagged) == {f"acme/cached@{old}:model.safetensors", f"acme/cached@{new}:model.safetensors",
                            f"acme/cached@{old}:config.json"}
    finding = flagged[f"acme/cached@{new}:model.safetensors"]
    assert finding["severity"] == "HIGH"
    assert finding["details"]["algorithm"] == "sha256" and finding["details"]["expected"] == blob.name
    assert flagged[f"acme/cached@{old}:config.json"]["details"]["algorithm"] == "git-sha1"


def test_malicious_pickle_in_cache_is_found(hub: FakeHub, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    evil = pickle.dumps(_SystemPayload("echo pwned"), protocol=2)
    sha = hub.add_commit("acme/pickled", {"model.pkl": evil})
    cache = tmp_path / "cache"
    download(hub, cache, "acme/pickled", ["model.pkl"], "main")
    code, report = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert [f["path"] for f in report["files"]] == [f"acme/pickled@{sha}:model.pkl"]
    assert code == EXIT_FINDINGS
    assert any(f["rule_id"] == "pickle-dangerous-global" for f in report["files"][0]["findings"])


def test_corrupted_cache_entry_is_an_error_and_a_missing_cache_a_usage_error(
        filled_cache: Tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache, _, _ = filled_cache
    (cache / "models--acme--broken").mkdir()  # no snapshots folder
    code, report = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_INCOMPLETE
    assert len(report["errors"]) == 1 and "corrupted cache entry" in report["errors"][0]["message"]
    assert len(report["files"]) == 5  # the healthy repo is still scanned
    assert main(["cache", "--cache-dir", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert "not found" in capsys.readouterr().err


def blob_digest_mismatch(path: str, name: str) -> Optional[Tuple[str, str, str]]:
    """``(algorithm, expected, actual)`` when the blob does not hash to ``name``, else None: the check
    ``safemodel cache`` makes of every blob (hfcache._hash_check), without its thread pool."""
    algorithm = expected_digest(name)
    if algorithm is None:
        return None
    actual = hash_blob(path, algorithm).digest
    return None if actual == name else (algorithm, name, actual)


def test_blob_digest_check_streams_and_knows_both_kinds_of_names(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom(3 << 20)  # several hash chunks
    sha256 = hashlib.sha256(data).hexdigest()
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert blob_digest_mismatch(str(path), sha256) is None
    assert blob_digest_mismatch(str(path), git_sha1) is None
    assert blob_digest_mismatch(str(path), "model.safetensors") is None  # a copied file: nothing to check
    wrong = "0" * 64
    assert blob_digest_mismatch(str(path), wrong) == ("sha256", wrong, sha256)


def test_a_blob_link_naming_other_content_is_reported_even_when_the_content_was_scanned(
        hub: FakeHub, filled_cache: Tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cache, _, new = filled_cache
    weights = Path(os.path.realpath(cache / "models--acme--cached" / "snapshots" / new / "model.safetensors"))
    sha = hub.add_commit("acme/other", {"model.safetensors": safetensors_bytes({"v": ("F32", [8], 32)})})
    [downloaded] = download(hub, cache, "acme/other", ["model.safetensors"], "main")
    blob = Path(os.path.realpath(downloaded))
    blob.unlink()
    blob.symlink_to(weights)  # the other repo's blob now links to content with another hash
    code, report = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_FINDINGS
    flagged = [f["path"] for f in report["files"] for g in f["findings"]
               if g["rule_id"] == "cache-blob-mismatch"]
    assert flagged == [f"acme/other@{sha}:model.safetensors"]
    assert report["extra"]["cache"]["blobs_scanned"] == 4  # the linked content was scanned only once


def _cache_summary(report: dict) -> dict:
    return report["extra"]["cache"]


def test_a_second_scan_takes_results_from_the_result_cache_until_a_blob_changes(
        filled_cache: Tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cache, old, new = filled_cache
    code, first = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_OK and _cache_summary(first)["blobs_from_cache"] == 0
    code, second = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_OK and _cache_summary(second)["blobs_from_cache"] == 4
    assert [(f["path"], f["findings"]) for f in second["files"]] == \
        [(f["path"], f["findings"]) for f in first["files"]]
    assert "4 results from the result cache" in second["extra"]["notes"][0]

    # A blob rewritten in place (same name) is new content: scanned again, never the old verdict.
    config = Path(os.path.realpath(cache / "models--acme--cached" / "snapshots" / new / "config.json"))
    config.write_bytes(pickle.dumps(_SystemPayload("echo pwned"), protocol=2))
    code, third = run_json(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_FINDINGS and _cache_summary(third)["blobs_from_cache"] == 3
    rules = {g["rule_id"] for f in third["files"] if f["path"] == f"acme/cached@{new}:config.json"
             for g in f["findings"]}
    assert {"pickle-dangerous-global", "cache-blob-mismatch"} <= rules

    code, uncached = run_json(["cache", "--cache-dir", str(cache), "--no-cache"], capsys)
    assert code == EXIT_FINDINGS and _cache_summary(uncached)["blobs_from_cache"] == 0
    assert [(f["path"], f["findings"]) for f in uncached["files"]] == \
        [(f["path"], f["findings"]) for f in third["files"]]


def test_a_big_lfs_blob_is_hashed_once_per_run_and_its_result_cached(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = safetensors_bytes({"w": ("F32", [100_000], 400_000)})  # over the 256 KiB read-whole size
    sha = hub.add_commit("acme/big", {"model.safetensors": weights})
    cache = tmp_path / "cache"
    [path] = download(hub, cache, "acme/big", ["model.safetensors"], "main")
    assert len(Path(os.path.realpath(path)).name) == 64  # LFS: named by its sha256
    for from_cache in (0, 1):
        code, report = run_json(["cache", "--cache-dir", str(cache)], capsys)
        assert code == EXIT_OK, report
        summary = _cache_summary(report)
        assert summary["blobs_from_cache"] == from_cache
        assert summary["bytes_hashed"] == len(weights)  # the name check and the cache key share one hash
        assert report["files"][0]["path"] == f"acme/big@{sha}:model.safetensors"
        assert report["files"][0]["formats"] == ["safetensors"]


def test_a_big_blob_changed_while_it_was_scanned_is_not_cached(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from itertools import count

    from safemodel_ci.sources import hfcache

    weights = safetensors_bytes({"w": ("F32", [100_000], 400_000)})
    hub.add_commit("acme/moving", {"model.safetensors": weights})
    cache = tmp_path / "cache"
    download(hub, cache, "acme/moving", ["model.safetensors"], "main")
    ticks = count()
    monkeypatch.setattr(hfcache, "_stamp", lambda path: (0, 0, next(ticks)))  # differs at each look
    for _ in range(2):
        code, report = run_json(["cache", "--cache-dir", str(cache)], capsys)
        assert code == EXIT_OK and _cache_summary(report)["blobs_from_cache"] == 0


# ---- issue 17 item 3: a hostile cache (fifo blobs, links out, unnamed blobs, deep folders) ------

class _Hung(BaseException):
    """Raised by the alarm when a scan blocks (not an OSError, so nothing swallows it)."""


def _run_with_alarm(args: List[str], capsys: pytest.CaptureFixture[str],
                    seconds: int = 20) -> Tuple[int, dict]:
    import signal

    def hung(*_: object) -> None:
        raise _Hung("the cache scan blocked")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return run_json(args, capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _findings(report: dict, path: str) -> List[str]:
    return sorted(g["rule_id"] for f in report["files"] if f["path"] == path for g in f["findings"])


def test_a_fifo_blob_is_never_opened(filled_cache: Tuple[Path, str, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cache, _, new = filled_cache
    blob = Path(os.path.realpath(cache / "models--acme--cached" / "snapshots" / new / "config.json"))
    blob.unlink()
    os.mkfifo(blob)  # opening it for reading would wait for a writer forever
    code, report = _run_with_alarm(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_INCOMPLETE
    assert _findings(report, f"acme/cached@{new}:config.json") == ["unscanned-unreadable"]


def test_a_snapshot_link_out_of_the_cache_is_reported_and_its_target_scanned(
        filled_cache: Tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache, _, new = filled_cache
    outside = tmp_path / "elsewhere" / "payload.bin"
    outside.parent.mkdir()
    outside.write_bytes(pickle.dumps(_SystemPayload("echo pwned"), protocol=2))
    link = cache / "models--acme--cached" / "snapshots" / new / "config.json"
    link.unlink()
    link.symlink_to(outside)
    code, report = _run_with_alarm(["cache", "--cache-dir", str(cache)], capsys)
    assert code == EXIT_FINDINGS
    rules = _findings(report, f"acme/cached@{new}:config.json")
    assert {"cache-link-outside", "cache-blob-unverified", "pickle-dangerous-global"} <= set(rules)


def test_a_blob_not_named_by_a_hash_gets_a_finding(filled_cache: Tuple[Path, str, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cache, _, new = filled_cache
    link = cache / "models--acme--cached" / "snapshots" / new / "sub" / "notes.txt"
    blob = Path(os.path.realpath(link))
    renamed = blob.with_name("notes-copy")
    blob.rename(renamed)
    link.unlink()
    link.symlink_to(renamed)
    code, report = _run_with_alarm(["cache", "--cache-dir", str(cache)], capsys)
    assert _findings(report, f"acme/cached@{new}:sub/notes.txt") == ["cache-blob-unverified"]
    assert code == EXIT_OK  # MEDIUM: shown, below the default fail-on
    code, _ = _run_with_alarm(["cache", "--cache-dir", str(cache), "--fail-on", "medium"], capsys)
    assert code == EXIT_FINDINGS


def test_deeply_nested_snapshot_folders(filled_cache: Tuple[Path, str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cache, _, new = filled_cache
    snapshot = cache / "models--acme--cached" / "snapshots" / new
    blob = Path(os.path.realpath(snapshot / "config.json"))
    deep = str(snapshot)
    try:
        for _ in range(1200):  # deeper than the recursion limit; os.mkdir one level at a time
            deep += "/d"
            os.mkdir(deep)
        os.symlink(blob, deep + "/config.json")
        code, report = _run_with_alarm(["cache", "--cache-dir", str(cache)], capsys, seconds=120)
    finally:
        remove_deep_tree(str(snapshot / "d"))  # pytest's own clean-up would recurse
    assert code == EXIT_OK, report
    rel = "/".join(["d"] * 1200) + "/config.json"
    assert f"acme/cached@{new}:{rel}" in {f["path"] for f in report["files"]}


# ---- issue 20 item 2: hashing at the disk's speed, --no-verify ------------------------------------

def _big_json(n: int) -> bytes:
    return json.dumps({"model": {"vocab": {f"tok{i}": i for i in range(n)}}}).encode()


@pytest.fixture()
def mixed_cache(hub: FakeHub, tmp_path: Path) -> Tuple[Path, str, Dict[str, bytes]]:
    """Big blobs of both kinds of name (hashed in the pool) beside small ones and a malicious pickle."""
    files = {"model.safetensors": safetensors_bytes({"w": ("F32", [200_000], 800_000)}),  # LFS, sha256
             "tokenizer.json": _big_json(40_000),  # > 256 KiB, not LFS: named by its git sha1
             "config.json": b'{"model_type": "bert"}',
             "model.pkl": pickle.dumps(_SystemPayload("echo pwned"), protocol=2)}
    assert len(files["tokenizer.json"]) > (256 << 10)
    sha = hub.add_commit("acme/mixed", files)
    cache = tmp_path / "cache"
    download(hub, cache, "acme/mixed", sorted(files), "main")
    return cache, sha, files


def _blob(cache: Path, sha: str, name: str) -> Path:
    return Path(os.path.realpath(cache / "models--acme--mixed" / "snapshots" / sha / name))


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # the last tensor byte / a digit of the json: still well-formed, only the hash tells
    path.write_bytes(bytes(data))


def _mismatched(report: dict) -> List[str]:
    return sorted(f["path"] for f in report["files"] for g in f["findings"]
                  if g["rule_id"] == "cache-blob-mismatch")


@pytest.mark.parametrize("cache_flag", [["--no-cache"], []])
def test_every_tampered_blob_is_found_whichever_thread_hashed_it(
        mixed_cache: Tuple[Path, str, Dict[str, bytes]], capsys: pytest.CaptureFixture[str],
        cache_flag: List[str]) -> None:
    cache, sha, files = mixed_cache
    code, clean = run_json(["cache", "--cache-dir", str(cache)] + cache_flag, capsys)
    summary = _cache_summary(clean)
    assert summary["verified"] is True and _mismatched(clean) == []
    assert summary["blobs_hashed"] == 4 and summary["bytes_hashed"] == sum(len(d) for d in files.values())
    names = {name: _blob(cache, sha, name).name for name in files}
    assert len(names["model.safetensors"]) == 64 and len(names["tokenizer.json"]) == 40  # both kinds, big
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        _tamper(_blob(cache, sha, name))
    code, report = run_json(["cache", "--cache-dir", str(cache)] + cache_flag, capsys)
    assert code == EXIT_FINDINGS
    assert _mismatched(report) == [f"acme/mixed@{sha}:{n}" for n in ("config.json", "model.safetensors",
                                                                       "tokenizer.json")]
    by_path = {g["path"]: g for f in report["files"] for g in f["findings"]
               if g["rule_id"] == "cache-blob-mismatch"}
    for name in ("model.safetensors", "tokenizer.json"):
        details = by_path[f"acme/mixed@{sha}:{name}"]["details"]
        import hashlib

        data = _blob(cache, sha, name).read_bytes()
        expected = hashlib.sha256(data).hexdigest() if details["algorithm"] == "sha256" else \
            hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        assert details["expected"] == names[name] and details["actual"] == expected
    assert "pickle-dangerous-global" in _findings(report, f"acme/mixed@{sha}:model.pkl")


def test_no_verify_scans_every_file_but_hashes_nothing_and_says_so(
        mixed_cache: Tuple[Path, str, Dict[str, bytes]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from safemodel_ci.sources import hfcache

    cache, sha, files = mixed_cache
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        _tamper(_blob(cache, sha, name))

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("--no-verify hashed a blob")

    monkeypatch.setattr(hfcache, "hash_blob", no_hashing)
    monkeypatch.setattr(hfcache, "digest_bytes", no_hashing)
    code, report = run_json(["cache", "--cache-dir", str(cache), "--no-verify", "--no-cache"], capsys)
    summary = _cache_summary(report)
    assert summary["verified"] is False and summary["blobs_hashed"] == 0 and summary["bytes_hashed"] == 0
    assert "not verified" in summary["verification"]
    assert summary["blobs_scanned"] == 4 and len(report["files"]) == 4  # still scanned
    assert _mismatched(report) == []  # not looked for: the summary says so
    assert code == EXIT_FINDINGS
    assert "pickle-dangerous-global" in _findings(report, f"acme/mixed@{sha}:model.pkl")
    assert {f["path"]: f["formats"] for f in report["files"]}[f"acme/mixed@{sha}:model.safetensors"] == \
        ["safetensors"]
    # The text note and the job summary (markdown of the JSON report) say it too.
    main(["cache", "--cache-dir", str(cache), "--no-verify", "--no-cache"])
    assert "4 blobs scanned; not verified (--no-verify)" in capsys.readouterr().out
    out = tmp_path / "report.json"
    main(["cache", "--cache-dir", str(cache), "--no-verify", "--no-cache", "-f", "json", "-o", str(out)])
    capsys.readouterr()
    main(["merge", str(out), "--format", "markdown"])
    assert "**Hugging Face cache" in (md := capsys.readouterr().out) and "not verified" in md
    monkeypatch.undo()
    code, verified = run_json(["cache", "--cache-dir", str(cache), "--no-cache"], capsys)
    assert len(_mismatched(verified)) == 3 and "verified: 4 of 4 blobs" in verified["extra"]["notes"][0]


@pytest.mark.parametrize("size", [0, 1, 4095, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (3 << 20) + 7])
def test_hash_blob_equals_hashlib_and_git(tmp_path: Path, size: int) -> None:
    import hashlib
    import shutil
    import subprocess

    from safemodel_ci.sources.hfcache import digest_bytes, hash_blob

    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    git_sha1 = hashlib.sha1(b"blob %d\0" % size + data).hexdigest()
    for buffer in (None, bytearray(4096), bytearray(3 << 20)):
        assert hash_blob(str(path), "sha256", buffer).digest == sha256
        hashed = hash_blob(str(path), "git-sha1", buffer)
        assert hashed.digest == git_sha1 and hashed.size == size
    assert digest_bytes(data, "sha256") == sha256 and digest_bytes(data, "git-sha1") == git_sha1
    if shutil.which("git"):  # git's own object id for the same file
        out = subprocess.run(["git", "hash-object", "--no-filters", str(path)], capture_output=True,
                             text=True)
        assert out.returncode == 0 and out.stdout.strip() == git_sha1


def test_the_pool_hashes_each_blob_once_and_equal_to_hashlib(tmp_path: Path) -> None:
    import hashlib

    from safemodel_ci.sources.hfcache import BlobHasher

    paths = []
    for i in range(12):
        path = tmp_path / f"b{i}"
        path.write_bytes(os.urandom(300_000 + i * 70_001))
        paths.append(str(path))
    hasher = BlobHasher(workers=2)
    try:
        for p in paths + paths:  # queued twice: hashed once
            hasher.queue(p, "sha256")
        hasher.queue(paths[0], "git-sha1")  # the other kind of name: another hash of the same blob
        for p in reversed(paths):  # taken in another order than queued
            assert hasher.result(p, "sha256").digest == hashlib.sha256(Path(p).read_bytes()).hexdigest()
        data = Path(paths[0]).read_bytes()
        assert hasher.result(paths[0], "git-sha1").digest == \
            hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        assert hasher.blobs == 12  # distinct blobs
        assert hasher.bytes == sum(os.path.getsize(p) for p in paths) + len(data)
        (tmp_path / "gone").write_bytes(b"x" * 400_000)
        hasher.queue(str(tmp_path / "gone"), "sha256")
        hasher.close()  # not waited for: dropped or stopped, never an error
    finally:
        hasher.close()
    missing = BlobHasher(workers=1)
    missing.queue(str(tmp_path / "nowhere"), "sha256")
    with pytest.raises(OSError):
        missing.result(str(tmp_path / "nowhere"), "sha256")
    with pytest.raises(OSError):  # the failure is kept, not retried
        missing.result(str(tmp_path / "nowhere"), "sha256")
    missing.close()


def test_a_stopped_hash_ends_at_the_next_chunk(tmp_path: Path) -> None:
    import threading

    from safemodel_ci.sources.hfcache import HashCancelled, hash_blob

    path = tmp_path / "blob"
    path.write_bytes(b"\0" * (4 << 20))
    stop = threading.Event()
    stop.set()
    with pytest.raises(HashCancelled):
        hash_blob(str(path), "sha256", stop=stop)


def test_hash_threads_follow_the_cpus_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from safemodel_ci.sources.hfcache import hash_workers

    monkeypatch.delenv("SAFEMODEL_HASH_THREADS", raising=False)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    assert hash_workers() == max(1, min(8, cpus))
    monkeypatch.setenv("SAFEMODEL_HASH_THREADS", "1")
    assert hash_workers() == 1
    for junk in ("0", "-3", "many", ""):
        monkeypatch.setenv("SAFEMODEL_HASH_THREADS", junk)
        assert hash_workers() == max(1, min(8, cpus))
