"""Benchmark: scan a ~1 GB pickle stream of numpy arrays and report wall time, peak RSS and bytes read.

The stream is written chunk by chunk (concatenated ``pickle.dumps`` of dicts of arrays, protocols 4
and 5, large and small arrays mixed), so this script never holds it in memory either. The scan runs
``safemodel scan --no-cache --format json`` in a child process; its peak RSS comes from
``getrusage(RUSAGE_CHILDREN).ru_maxrss``. Target: under 150 MB.

    python3 bench/pickle_rss.py [--size-mb 1024] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_stream(path: str, size_mb: int) -> int:
    """Write concatenated pickles of numpy arrays until ``size_mb`` MiB; returns the byte count."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal(1 << 20).astype("f4")          # 4 MiB: above the in-memory cap
    medium = rng.standard_normal(1 << 16).astype("f8")       # 512 KiB: kept until the budget is spent
    small = rng.integers(0, 100, 4096, dtype="i4")           # 16 KiB
    target = size_mb << 20
    written = 0
    i = 0
    with open(path, "wb") as fh:
        while written < target:
            chunk = {f"layer{i}.weight": big + i, f"layer{i}.stats": medium * i,
                     **{f"layer{i}.idx{k}": small + k for k in range(8)}}
            data = pickle.dumps(chunk, protocol=4 if i % 2 else 5)
            fh.write(data)
            written += len(data)
            i += 1
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()

    fd, path = tempfile.mkstemp(suffix=".pkl", prefix="safemodel-bench-")
    os.close(fd)
    try:
        t0 = time.monotonic()
        size = write_stream(path, args.size_mb)
        print(f"wrote {size / 2**20:.0f} MiB in {time.monotonic() - t0:.1f}s: {path}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.monotonic()
        argv = [sys.executable, "-m", "safemodel_ci", "scan", "-q", "--no-cache", "--format", "json", path]
        proc = subprocess.run(argv, capture_output=True, text=True)
        wall = time.monotonic() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        report = json.loads(proc.stdout)
        result = report["files"][0]
        print(f"exit code      {proc.returncode} (findings: "
              f"{[f['rule_id'] for f in result['findings']] or 'none'})")
        print(f"wall time      {wall:.1f}s ({size / 2**20 / wall:.0f} MiB/s)")
        print(f"peak RSS       {peak_kib / 1024:.1f} MiB (child; before: {before / 1024:.1f} MiB)")
        print(f"bytes read     {result['bytes_read'] / 2**20:.1f} MiB of {size / 2**20:.0f} MiB")
        return 0 if peak_kib < 150 * 1024 and proc.returncode == 0 else 1
    finally:
        if not args.keep:
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
