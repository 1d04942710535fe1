"""Benchmark: CPU time of the pickle VM on streams of 1.5 to 5 million opcodes.

Cases: ``N0`` pairs (the dispatch loop alone), a protocol-2 pickle of a list of (int, float, str)
tuples (binary arguments, memo), and the same list at protocol 0 (text argument lines: INT,
FLOAT, STRING/UNICODE, PUT/GET). Each case runs ``--repeat`` times in this process and the
fastest CPU time (``time.process_time``) is printed, with the opcode count.

    python3 bench/pickle_opcodes.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import pickle
import pickletools
import sys
import time

from safemodel_ci.formats.pickle import _PickleVM
from safemodel_ci.source import BytesSource


def cases() -> dict:
    """name -> stream; each 1.5 to 5 million opcodes."""
    rows = [(i, i * 0.5, f"s{i}") for i in range(300_000)]
    return {
        "N0 x 2.5M": b"\x80\x02" + b"N0" * 2_500_000 + b"N.",
        "proto2 tuples": pickle.dumps(rows, protocol=2),
        "proto0 tuples": pickle.dumps(rows[:250_000], protocol=0),
    }


def count_ops(data: bytes) -> int:
    """Opcodes in ``data`` (pickletools, so independent of the VM being measured)."""
    return sum(1 for _ in pickletools.genops(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for name, data in cases().items():
        best = float("inf")
        for _ in range(args.repeat):
            vm = _PickleVM(BytesSource(data), None, 0, None, silent=True)
            t0 = time.process_time()
            result = vm.run()
            best = min(best, time.process_time() - t0)
            assert result.complete, result.error
        print(f"{name:16s} {count_ops(data):>9,} opcodes  {len(data):>11,} bytes  cpu {best:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
