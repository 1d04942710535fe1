"""Benchmark: scan a ~2 GB torch.save checkpoint; report wall time, peak RSS and bytes read.

    python3 bench/torch_checkpoint.py [--size-gb 2] [--legacy] [--keep DIR]

The checkpoint is written once with the real ``torch.save`` (a few big tensors), then
``safemodel scan --format json`` runs in a subprocess, so the peak RSS measured (``wait4``) is the
scanner's alone. The JSON report's ``bytes_read`` says how much of the file the scan touched.
Target: well under 1 s and under 100 MB peak RSS, whatever the checkpoint size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_checkpoint(path: Path, size_gb: float, legacy: bool) -> None:
    import torch

    n_tensors = 8
    per_tensor = int(size_gb * (1 << 30) / n_tensors / 4)  # float32 elements
    state = {f"layer{i}.weight": torch.empty(per_tensor, dtype=torch.float32).fill_(i * 0.5)
             for i in range(n_tensors)}
    state["layer0.bias"] = torch.zeros(16)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


def scan_in_subprocess(path: Path) -> dict:
    cmd = [sys.executable, "-m", "safemodel_ci", "scan", "--format", "json", str(path)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_chunks = []
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(65536), b""):  # type: ignore[union-attr]
        out_chunks.append(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    report = json.loads(b"".join(out_chunks))
    file = report["files"][0]
    return {
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "file_bytes": file["size"],
        "bytes_read": file["bytes_read"],
        "formats": file["formats"],
        "findings": [f["rule_id"] for f in file["findings"]],
    }


_TIMED_SCAN = """
import sys, time
from safemodel_ci.scanner import ScanOptions, scan_file
options = ScanOptions()
start = time.perf_counter()
scan_file(sys.argv[1], options)
print(time.perf_counter() - start)
"""


def scan_time_in_process(path: Path) -> float:
    """The scan alone (imports done, no interpreter start-up), timed inside a fresh process."""
    done = subprocess.run([sys.executable, "-c", _TIMED_SCAN, str(path)], check=True, capture_output=True,
                          text=True)
    return round(float(done.stdout.strip().splitlines()[-1]), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--legacy", action="store_true", help="legacy (non-zip) torch.save format")
    parser.add_argument("--keep", metavar="DIR", help="write the checkpoint here and keep it")
    parser.add_argument("--write-only", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        write_checkpoint(Path(args.write_only), args.size_gb, args.legacy)
        return 0
    directory = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="safemodel-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ("legacy.pt" if args.legacy else "checkpoint.pt")
    try:
        if not path.exists():
            t = time.perf_counter()
            # In a child process: the tensors must not inflate this process, whose children the
            # RSS measurement inherits pages from at fork.
            cmd = [sys.executable, __file__, "--write-only", str(path), "--size-gb", str(args.size_gb)]
            subprocess.run(cmd + (["--legacy"] if args.legacy else []), check=True)
            print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.1f}s",
                  file=sys.stderr)
        # Interpreter start-up alone, for reference: the scan's own cost is the difference.
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import safemodel_ci.cli"], check=True)
        startup = time.perf_counter() - t
        result = scan_in_subprocess(path)
        result["python_startup_seconds"] = round(startup, 3)
        result["scan_seconds_in_process"] = scan_time_in_process(path)
        print(json.dumps(result, indent=2))
        return 0 if result["exit_code"] == 0 else 1
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            directory.rmdir()


if __name__ == "__main__":
    sys.exit(main())
