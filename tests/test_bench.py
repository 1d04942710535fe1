"""The benchmark script runs end to end on a tiny corpus, and safemodel's verdicts match the truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run_bench.py"


def test_bench_quick_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("joblib")
    proc = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path), "--small", "40", "--skip-big",
                           "--tools", "safemodel", "--timeout", "120", "--startup-runs", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "| small | safemodel |" in table and "| small | safemodel (cached) |" in table
    assert "| safemodel | 40 | 16 | 0 | 0 | 24 |" in table  # every malicious file caught, no false alarm
    results = json.loads((tmp_path / "results.json").read_text())
    small = [r for r in results["runs"] if r["tool"] == "safemodel" and r["target"] == "small"]
    assert small and small[0]["exit_code"] == 1 and 0 < small[0]["max_rss_mb"] < 150
    # issue 20 item 3 in the same run: bench/startup.py's rows beside the interpreter
    assert "| python -c pass (reference) |" in table
    assert "| pre-commit hook, 1 small model, warm cache |" in table
    startup = results["startup"]
    assert startup["goal"] == 1.6 and startup["table"] in table


def test_hf_cache_bench_quick_run(tmp_path: Path) -> None:
    """bench/hf_cache_hash.py on a tiny cache: every row measured, every blob hashed once, nothing
    left under /tmp (the 0.8x goal is for GB caches; a tiny one measures start-up)."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    out = tmp_path / "hf.json"
    script = BENCH.parent / "hf_cache_hash.py"
    before = {p.name for p in Path("/tmp").glob("safemodel-hfcache-*")}
    proc = subprocess.run([sys.executable, str(script), "--size-gb", "0.01", "--repeat", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: goal not met; 2: a broken run
    result = json.loads(out.read_text())
    assert {"sha256sum", "safemodel cache", "safemodel cache --no-verify"} <= set(result["rows"])
    assert result["verified"]["bytes_hashed"] == result["bytes"] and result["verified"]["blobs_hashed"] == 79
    assert "| `safemodel cache` |" in proc.stdout and "x sha256sum" in proc.stdout
    assert {p.name for p in Path("/tmp").glob("safemodel-hfcache-*")} == before


def test_hub_many_repos_bench_quick_run(tmp_path: Path) -> None:
    """bench/hub_many_repos.py on 6 repos of 2 files at 20 ms a request: every file of every repo
    scanned clean in both runs (a fresh process per run, so a race in first-use set-up shows), the
    server answers resolve + tree + one range read a file, and 3 jobs beat 1 (the 6x goal is for
    200 repos at 50 ms; at this size start-up dominates, so the run may miss it and exit 1)."""
    out = tmp_path / "hub.json"
    script = BENCH.parent / "hub_many_repos.py"
    proc = subprocess.run([sys.executable, str(script), "--repos", "6", "--files", "2", "--latency-ms", "20",
                           "--jobs", "1,3", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    header = "| jobs | wall s | CPU s | peak RSS MB | files | requests | server requests | exit |"
    assert header in proc.stdout
    assert "| --jobs 3 vs --jobs 1 (wall) |" in proc.stdout and "| peak RSS (largest run) |" in proc.stdout
    results = json.loads(out.read_text())
    assert results["table"] in proc.stdout  # what run_bench.py appends to its results
    runs = {r["jobs"]: r for r in results["runs"]}
    assert set(runs) == {1, 3}
    for r in runs.values():
        assert "error" not in r, r
        assert r["exit_code"] == 0 and r["files"] == 12 and r["repo_errors"] == 0
        assert r["server_requests"] == 6 * (2 + 2) and r["requests"] == 12
        # Python, huggingface_hub and the scanner: tens of MB. (The bench process's own figure is not
        # checked: Linux keeps ru_maxrss across exec, so it starts at pytest's peak.)
        assert 15 < r["max_rss_mb"] and results["bench_rss_mb"] > 0
        # 24 requests at 20 ms each, one at a time, is the floor of the single-job run.
        assert r["wall_s"] > (0.48 if r["jobs"] == 1 else 0.16)
    # Whether more jobs are faster is the benchmark's verdict, not this test's (no timed asserts):
    # the test checks that the verdict is computed from the runs it reports.
    speedup = next(g for g in results["goals"] if g["goal"].startswith("--jobs 3"))
    assert speedup["value"] == pytest.approx(runs[1]["wall_s"] / runs[3]["wall_s"])
    assert speedup["met"] == (speedup["value"] >= 6) and (proc.returncode == 0) == all(
        g["met"] for g in results["goals"])
