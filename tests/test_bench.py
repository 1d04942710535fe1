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
                           "--tools", "safemodel", "--timeout", "120"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert "| small | safemodel |" in table and "| small | safemodel (cached) |" in table
    assert "| safemodel | 40 | 16 | 0 | 0 | 24 |" in table  # every malicious file caught, no false alarm
    results = json.loads((tmp_path / "results.json").read_text())
    small = [r for r in results["runs"] if r["tool"] == "safemodel" and r["target"] == "small"]
    assert small and small[0]["exit_code"] == 1 and 0 < small[0]["max_rss_mb"] < 150


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
