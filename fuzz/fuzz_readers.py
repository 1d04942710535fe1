"""Coverage-guided fuzzing of the readers with atheris (longer runs than the hypothesis tests).

    python3 fuzz/fuzz_readers.py --seeds DIR [--reader NAME] [libFuzzer flags, e.g. -max_total_time=600]

``--seeds`` is a directory of seed files (``python3 fuzz/fuzz_readers.py --make-seeds DIR`` writes the
test suite's fixture zoo there). With ``--reader``, only inputs that reader detects are driven into
it, so each parser can be fuzzed on its own. A crash is any exception that escapes a reader (the
driver reports it as ``scanner-error``) or a scan of one input taking over 2 seconds of CPU time
(CPU, not wall time, so that a run at low priority beside other work does not report false hangs;
a reader stuck waiting without using the CPU is caught by the scanner's own time limits). An input
over the limit is timed again in a plain interpreter (instrumented code runs several times slower)
and counts only if it is slow there too.

``--oracle``: inputs that start with a pickle opcode are also collected and, every 256 of them, run
through CPython's own unpicklers made inert (``tests/pickle_oracle.py``, in a resource-limited child
process); a disagreement with the pickle VM (CPython reaches STOP and the VM does not, a global
CPython resolves that the VM does not report, or a stream CPython refuses that the VM passes clean)
is a crash, and the streams of that batch are written to ``oracle-mismatch-*.pkl``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cputime import cpu_seconds  # noqa: E402

from safemodel_ci.context import ScanContext  # noqa: E402
from safemodel_ci.formats import readers  # noqa: E402
from safemodel_ci.scanner import ScanOptions, scan_byte_source  # noqa: E402
from safemodel_ci.source import BytesSource  # noqa: E402

OPTIONS = ScanOptions()


class ReaderCrash(Exception):
    pass


def one_input(data: bytes, reader_name: str = "", max_seconds: float = 2.0, retime: bool = False) -> None:
    """Scan one input; ``retime``: the code is instrumented, so a slow input is timed again plain."""
    source = BytesSource(data, name="fuzz")
    start = cpu_seconds()
    if reader_name:
        reader = next(r for r in readers() if r.name == reader_name)
        if not reader.detect(source, source.head(4096)):
            return
        ctx = ScanContext("fuzz", OPTIONS.policy, OPTIONS.limits)
        reader.scan(source, ctx)  # exceptions escape: that is what the fuzzer looks for
    else:
        result = scan_byte_source(source, "fuzz", OPTIONS)
        for f in result.findings:
            if f.rule_id == "scanner-error":
                raise ReaderCrash(f.message)
    elapsed = cpu_seconds() - start
    if elapsed > max_seconds and retime:
        elapsed = _plain_cpu_seconds(data, reader_name)
    if elapsed > max_seconds:
        raise ReaderCrash(f"scan of {len(data)} bytes took {elapsed:.2f} s of CPU time "
                          f"(limit {max_seconds:g} s)")


def _plain_cpu_seconds(data: bytes, reader_name: str) -> float:
    """CPU seconds one scan of ``data`` takes in a fresh, uninstrumented interpreter."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="safemodel-slow-", delete=False) as fh:
        fh.write(data)
    try:
        proc = subprocess.run([sys.executable, __file__, "--time-one", fh.name, "--reader", reader_name],
                              capture_output=True, text=True, timeout=600)
        return float(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return float("inf")
    finally:
        os.unlink(fh.name)


def _time_one(path: Path, reader_name: str) -> None:
    data = path.read_bytes()
    one_input(data, reader_name, float("inf"))  # warm the lazy imports
    start = cpu_seconds()
    one_input(data, reader_name, float("inf"))
    print(f"{cpu_seconds() - start:.3f}")


def instrument_package(atheris) -> None:  # type: ignore[no-untyped-def]
    """Instrument the functions of ``safemodel_ci`` only (``instrument_all`` takes minutes)."""
    import gc
    import types

    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and (obj.__module__ or "").startswith("safemodel_ci"):
            try:
                atheris.instrument_func(obj)
                count += 1
            except Exception as exc:  # noqa: BLE001 - an uninstrumented function only loses coverage
                print(f"INFO: not instrumented: {obj.__qualname__}: {exc}", file=sys.stderr)
    print(f"INFO: instrumented {count} safemodel_ci functions", file=sys.stderr)


_ORACLE_BATCH: List[bytes] = []
_PICKLE_FIRST = frozenset(b"(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])G\x80\x81\x82\x83\x84\x85\x86\x87\x88"
                          b"\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98BC")


def oracle_input(data: bytes, batch: int = 256) -> None:
    """Collect pickle-looking inputs; check a full batch against the CPython oracle."""
    if not data or data[0] not in _PICKLE_FIRST or len(data) > 1 << 20:
        return
    _ORACLE_BATCH.append(bytes(data))
    if len(_ORACLE_BATCH) < batch:
        return
    from pickle_oracle import run_oracle, violations

    streams = _ORACLE_BATCH[:]
    del _ORACLE_BATCH[:]
    problems, _counts = violations(streams, run_oracle(streams))
    if problems:
        import hashlib

        for stream in streams:
            Path(f"oracle-mismatch-{hashlib.sha1(stream).hexdigest()[:12]}.pkl").write_bytes(stream)
        raise ReaderCrash(f"{len(problems)} disagreements with the CPython oracle in the last {len(streams)} "
                          f"pickle inputs (written to oracle-mismatch-*.pkl): {problems[0][:500]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=Path)
    parser.add_argument("--reader", default="", help="fuzz only this reader (" +
                        ", ".join(r.name for r in readers()) + ")")
    parser.add_argument("--make-seeds", type=Path, metavar="DIR")
    parser.add_argument("--max-seconds", type=float, default=2.0,
                        help="a scan slower than this is a failure (default 2; instrumented code runs "
                             "several times slower than the plain scanner)")
    parser.add_argument("--instrument", choices=("package", "all"), default="package",
                        help="coverage of safemodel_ci's own functions only (default: starts in seconds) "
                             "or of every loaded module, stdlib zipfile/tarfile/json included (minutes)")
    parser.add_argument("--oracle", action="store_true",
                        help="also check pickle inputs against CPython's unpicklers (tests/pickle_oracle.py)")
    parser.add_argument("--time-one", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.time_one:
        _time_one(args.time_one, args.reader)
        return
    if args.make_seeds:
        from fixture_factory import make_zoo

        make_zoo(args.make_seeds, args.make_seeds / "CANARY")
        print(f"seeds written to {args.make_seeds}")
        return
    import atheris

    # Warm lazy imports before instrumentation starts.
    for seed in sorted(args.seeds.iterdir()) if args.seeds else []:
        scan_byte_source(BytesSource(seed.read_bytes()), seed.name, OPTIONS)
    argv = [sys.argv[0], *rest] + ([str(args.seeds)] if args.seeds else [])
    if args.instrument == "all":
        atheris.instrument_all()
    else:
        instrument_package(atheris)
    def test_one(data: bytes) -> None:
        one_input(data, args.reader, args.max_seconds, retime=True)
        if args.oracle:
            oracle_input(data)

    atheris.Setup(argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
