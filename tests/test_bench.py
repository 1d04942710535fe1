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
