"""Parallel scans: same results, same order, same bytes as a serial run."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import List

import pytest

from safemodel_ci import cli, parallel
from safemodel_ci.config import Config, IgnoredFile
from safemodel_ci.findings import FileResult, Severity
from safemodel_ci.parallel import ScanPlan, scan_paths
from safemodel_ci.scanner import ScanOptions


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def make_tree(root: Path, n: int = 60) -> List[Path]:
    """A mixed tree: benign and malicious pickles, zips, junk named like models, empty files."""
    files: List[Path] = []
    for i in range(n):
        kind = i % 5
        sub = root / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        if kind == 0:
            path = sub / f"benign{i}.pkl"
            path.write_bytes(pickle.dumps({"layer": i, "w": [0.5] * i}, protocol=i % 5 + 1))
        elif kind == 1:
            path = sub / f"evil{i}.pkl"
            buf = io.BytesIO()
            pickle.dump({"x": _Payload(), "i": i}, buf, protocol=2)
            path.write_bytes(buf.getvalue())
        elif kind == 2:
            path = sub / f"archive{i}.zip"
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("data.pkl", pickle.dumps([i]))
                zf.writestr("notes.txt", "hello")
        elif kind == 3:
            path = sub / f"junk{i}.bin"
            path.write_bytes(b"not a model " * 5 + bytes(i))
        else:
            path = sub / f"empty{i}.bin"
            path.write_bytes(b"")
        files.append(path)
    return files


def scan(paths: List[Path], jobs: int, plan: ScanPlan = ScanPlan()) -> List[FileResult]:
    return list(scan_paths([str(p) for p in paths], plan, jobs=jobs))


def test_jobs_give_the_same_results_in_the_same_order(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    serial = scan(files, 1)
    assert [r.path for r in serial] == [str(p) for p in files]
    for jobs in (2, 3):
        assert [r.to_dict() for r in scan(files, jobs)] == [r.to_dict() for r in serial]


def test_objects_are_frozen_only_while_workers_fork(tmp_path: Path) -> None:
    """Workers start with the parent's objects frozen (their pages stay shared); the parent's own
    collector is left as it was, or cyclic garbage alive at the fork would never be freed."""
    files = make_tree(tmp_path, 40)
    before = gc.get_freeze_count()
    assert len(scan(files, 2)) == len(files)
    assert gc.get_freeze_count() == before


def test_spawned_workers_give_the_same_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing relies on fork: the plan is pickled, workers import what they need."""
    files = make_tree(tmp_path, 40)
    serial = scan(files, 1)
    monkeypatch.setattr(parallel, "START_METHOD", "spawn")
    assert [r.to_dict() for r in scan(files, 2)] == [r.to_dict() for r in serial]


def test_cli_output_is_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "tree")
    outputs = {}
    for fmt in ("text", "json"):
        for jobs in ("1", "2"):
            code = cli.main(["scan", "--no-cache", "--jobs", jobs, "-f", fmt, str(tmp_path / "tree")])
            outputs[fmt, jobs] = (code, capsys.readouterr().out)
        assert outputs[fmt, "1"] == outputs[fmt, "2"]
    assert outputs["json", "1"][1].count('"path"') > 60


def test_cached_parallel_run_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "tree", 30)
    args = ["scan", "-f", "json", str(tmp_path / "tree")]
    cli.main(args + ["--no-cache", "--jobs", "1"])
    reference = capsys.readouterr().out
    for jobs in ("2", "2", "1"):  # fills the cache in workers, then hits in workers and in-process
        cli.main(args + ["--jobs", jobs])
        assert capsys.readouterr().out == reference


def test_hits_in_the_parent_misses_in_workers(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "tree", 60)
    plan = ScanPlan(cache_dir=str(tmp_path / "cache"))
    reference = [r.to_dict() for r in scan(files, 1)]
    assert [r.to_dict() for r in scan(files, 2, plan)] == reference
    for path in files[::3]:  # a third of the files change: misses, scanned by workers
        path.write_bytes(path.read_bytes() + b"\0")
    reference = [r.to_dict() for r in scan(files, 1)]
    results = scan(files, 2, plan)
    assert [r.to_dict() for r in results] == reference
    assert [r.cached for r in results] == [i % 3 != 0 for i in range(len(files))]


def test_ignores_apply_in_workers(tmp_path: Path) -> None:
    files = make_tree(tmp_path, 20)
    junk = files[3]  # unrecognized-format, raised to HIGH below so that there is something to ignore
    digest = hashlib.sha256(Path(junk).read_bytes()).hexdigest()
    config = Config(root=str(tmp_path), ignores=(IgnoredFile(digest, "reviewed", origin="cfg:1"),),
                    severity_overrides=(("unrecognized-format", Severity.HIGH),))
    plan = ScanPlan(options=ScanOptions(policy=config.policy()), config=config)
    results = scan(files, 2, plan)
    assert [f.rule_id for f in results[3].findings] == ["ignored-by-config"]
    assert [f.rule_id for f in results[8].findings] == ["unrecognized-format"]  # other junk: not pinned
    assert [r.to_dict() for r in results] == [r.to_dict() for r in scan(files, 1, plan)]


def test_batches_keep_order_and_isolate_large_files(tmp_path: Path) -> None:
    small = [tmp_path / f"s{i}" for i in range(50)]
    for p in small:
        p.write_bytes(b"x")
    large = tmp_path / "large"
    with open(large, "wb") as fh:
        fh.truncate(parallel.LARGE_FILE)
    paths = [str(p) for p in small[:20]] + [str(large)] + [str(p) for p in small[20:]]
    batches = list(parallel._batches(paths, 2))
    assert [p for b in batches for p in b] == paths
    assert [str(large)] in batches
    assert max(len(b) for b in batches) <= parallel.MAX_BATCH


def test_a_dying_worker_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [tmp_path / f"f{i}.pt" for i in range(parallel.MIN_FILES_FOR_PROCESSES + 2)]
    for p in files:
        p.write_bytes(b"junk")
    monkeypatch.setattr(parallel, "_scan_batch", _die)
    results = scan(files, 2)
    assert [r.path for r in results] == [str(p) for p in files]
    assert all(not r.complete and r.findings[0].rule_id == "scanner-error" for r in results)


def _die(paths: List[str]) -> List[FileResult]:
    os._exit(3)


def test_default_jobs_is_the_cpu_count() -> None:
    assert parallel.default_jobs() >= 1
    args = cli.build_parser().parse_args(["scan", "x"])
    assert args.jobs is None
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["scan", "--jobs", "0", "x"])
    assert info.value.code == 3


# ---- issue 17 item 6: an ignore applies only to the content that was scanned ------------------

@pytest.mark.parametrize("padding", [0, 600_000], ids=["small-snapshot", "large-read-log"])
@pytest.mark.parametrize("cached", [False, True], ids=["no-cache", "cache"])
def test_ignore_is_matched_against_the_bytes_the_scan_judged(padding: int, cached: bool, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A file swapped for a reviewed (ignored) one right after its scan keeps the scan's findings."""
    reviewed = tmp_path / "reviewed.bin"
    reviewed.write_bytes(b"a reviewed benign file " * 10 + b"\0" * padding)
    target = tmp_path / "model.pkl"
    buf = io.BytesIO()
    pickle.dump([b"\0" * padding, _Payload()], buf, protocol=4)
    evil = buf.getvalue()
    target.write_bytes(evil)
    config = Config(root=str(tmp_path), ignores=(
        IgnoredFile(hashlib.sha256(Path(reviewed).read_bytes()).hexdigest(), "reviewed", origin="cfg:1"),))
    plan = ScanPlan(options=ScanOptions(policy=config.policy()), config=config,
                    cache_dir=str(tmp_path / "cache") if cached else None)
    real_scan = parallel.scan_file_cached

    def scan_then_swap(path: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_scan(path, *args, **kwargs)
        target.write_bytes(reviewed.read_bytes())  # the swap an attacker races in
        return result

    monkeypatch.setattr(parallel, "scan_file_cached", scan_then_swap)
    (result,) = scan([target], 1, plan)
    assert "pickle-dangerous-global" in [f.rule_id for f in result.findings]
    assert "ignored-by-config" not in [f.rule_id for f in result.findings]
    # Unswapped, the ignore pins the reviewed content as before (through the same judged bytes).
    monkeypatch.setattr(parallel, "scan_file_cached", real_scan)
    (again,) = scan([target], 1, plan)  # now holds the reviewed bytes, scanned as such
    assert not [f for f in again.findings if f.severity > Severity.INFO]
    target.write_bytes(evil)
    pinned = Config(root=str(tmp_path), ignores=(
        IgnoredFile(hashlib.sha256(Path(target).read_bytes()).hexdigest(), "reviewed", origin="cfg:1"),))
    plan2 = ScanPlan(options=ScanOptions(policy=pinned.policy()), config=pinned, cache_dir=plan.cache_dir)
    for _ in range(2):  # fresh scan, then (with a cache) a hit
        (ok,) = scan([target], 1, plan2)
        assert [f.rule_id for f in ok.findings] == ["ignored-by-config"]


# ---- issue 17 item 7: SIGTERM to the parent ends the workers too ------------------------------------

def _children(pid: int) -> List[int]:
    out: List[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads child processes from /proc (Linux)")
def test_sigterm_to_the_parent_terminates_the_workers(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    # 40 links to one 14 MB pickle of strings (about 1.5 s of CPU each to scan): batches of three
    # keep a worker busy for seconds, so a worker left behind is still there when looked for.
    first = tmp_path / "m0.pkl"
    first.write_bytes(pickle.dumps([str(i) for i in range(900_000)], protocol=2))
    for i in range(1, 40):
        os.link(first, tmp_path / f"m{i}.pkl")
    proc = subprocess.Popen([sys.executable, "-m", "safemodel_ci", "scan", "--no-cache", "--jobs", "2",
                             "--quiet", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        workers: List[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.1)
            workers = [c for c in _children(proc.pid) if _alive(c)]
        assert len(workers) >= 2, "the workers never started"
        time.sleep(0.5)  # the workers are in their first batch
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        time.sleep(1.0)
        left = [w for w in workers if _alive(w)]
        assert left == [], f"workers still running after the parent ended: {left}"
        assert code == 143, proc.stderr.read().decode()[-2000:] if proc.stderr else code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for worker in workers if "workers" in locals() else []:  # left behind by a failing run
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)
