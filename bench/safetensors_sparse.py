"""Validate a 10 GB sparse safetensors file and print wall time, peak RSS and bytes read.

The file is a header (a few tensors of correct offsets) followed by a hole up to 10 GiB, made
with ``truncate`` semantics so it takes no disk space. Run: ``python3 bench/safetensors_sparse.py``.
The scan runs in a fresh subprocess so that its peak RSS is not mixed with this script's.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

#: Default size: 10 GiB.
SIZE = 10 << 30


def make_sparse_safetensors(path: str, size: int = SIZE, tensors: int = 1000) -> None:
    """Write a header describing ``tensors`` tensors that fill ``size`` bytes, then extend sparsely."""
    header: dict = {"__metadata__": {"format": "pt"}}
    # First compute the header length with placeholder offsets of the final width, then fill in.
    raw_len = -1
    for _ in range(5):  # offsets change the header's length: iterate until it is stable
        previous = raw_len
        raw_len = len(json.dumps(header, separators=(",", ":")).encode())
        raw_len += -raw_len % 8
        if raw_len == previous:
            break
        data = size - 8 - raw_len
        per = (data // tensors) // 4 * 4
        offset = 0
        header = {"__metadata__": {"format": "pt"}}
        for i in range(tensors):
            nbytes = per if i < tensors - 1 else data - offset
            header[f"layers.{i}.weight"] = {"dtype": "U8" if i == tensors - 1 else "F32",
                                             "shape": [nbytes] if i == tensors - 1 else [nbytes // 4],
                                             "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    if 8 + len(raw) + offset != size:
        raise AssertionError("header length changed between passes")
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(size)


_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from safemodel_ci.scanner import ScanOptions, scan_file
t1 = time.perf_counter()
result = scan_file(sys.argv[1], ScanOptions())
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "scan_s": t2 - t1, "bytes_read": result.bytes_read,
                  "findings": [f.rule_id for f in result.findings], "formats": result.formats,
                  "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure(path: str) -> dict:
    """Scan ``path`` in a fresh interpreter; wall time includes interpreter start and imports."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, path], check=True, capture_output=True, text=True)
    stats = json.loads(out.stdout)
    stats["wall_s"] = time.perf_counter() - start
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=SIZE, help="file size in bytes (default 10 GiB)")
    parser.add_argument("--tensors", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sparse.safetensors")
        make_sparse_safetensors(path, args.size, args.tensors)
        st = os.stat(path)
        stats = measure(path)
    print(f"file: {args.size:,} bytes ({args.tensors} tensors), {st.st_blocks * 512:,} bytes on disk")
    print(f"scan: {stats['scan_s'] * 1000:.1f} ms (imports {stats['import_s'] * 1000:.0f} ms, "
          f"process wall {stats['wall_s'] * 1000:.0f} ms)")
    print(f"peak RSS: {stats['max_rss_kib'] / 1024:.1f} MiB; bytes read: {stats['bytes_read']:,}")
    print(f"findings: {stats['findings'] or 'none'}; formats: {stats['formats']}")
    return 0 if not stats["findings"] else 1


if __name__ == "__main__":
    sys.exit(main())
