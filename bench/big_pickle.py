#!/usr/bin/env python3
"""Benchmark: one big raw pickle of millions of opcodes, ``safemodel scan`` against ``picklescan``.

    python3 bench/big_pickle.py [--repeat 3] [--picklescan PATH] [--no-big] [--json FILE] [--keep DIR]

Issue 20 item 4: a 24 MB pickle of about 5M opcodes; goal: safemodel at most 0.25x picklescan's time
on the same file, with memory independent of the file's size. The files (written with
``pickle.dumps``; nothing is ever loaded) are rows ``(int, float, str)`` in one list:

- ``p4 24MB``: ``pickle.dumps(rows, protocol=4)``: BININT, BINFLOAT, SHORT_BINUNICODE, TUPLE3,
  MEMOIZE after every str and tuple, APPENDS every 1000 rows, FRAMEs of 64 KiB;
- ``p2 24MB``: the same rows at protocol 2 (BINPUT/LONG_BINPUT instead of MEMOIZE, no frames);
- ``p0 24MB``: protocol 0 (text lines: INT, FLOAT, UNICODE, PUT), fewer rows for the same size;
- ``p4 240MB``: ONE protocol-4 pickle of ten times the opcodes of ``p4 24MB``: its opcodes (the frame
  contents of ``pickle.dumps(rows, protocol=4)``) repeated ten times between one PROTO/EMPTY_LIST
  and one STOP, without FRAMEs (optional at protocol 4), so MEMOIZE indices keep growing to ten
  times as many memo entries (``pickle.dumps`` of 8M rows would take GBs to build).

Each round runs, one after another and each in its own process: ``python -m safemodel_ci scan
--no-cache --format json FILE`` and ``picklescan -p FILE`` (``--picklescan``, default
``/work/venvs/pkl-ps/bin/picklescan``, a venv with only picklescan). Per run: wall time, CPU time
(user + system, ``wait4`` rusage of that child alone) and its peak RSS (``ru_maxrss`` of the same
rusage, so each run is measured alone, not the maximum over all children). The table gives the
fastest of ``--repeat`` rounds (the machine is shared: the minimum is the least disturbed) and the
ratio safemodel / picklescan for wall and for CPU time, against the 0.25x goal.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

GOAL = 0.25
DEFAULT_PICKLESCAN = "/work/venvs/pkl-ps/bin/picklescan"
#: Rows of the 24 MB protocol 4/2 files: 6 opcodes a row (5M opcodes), 28 bytes a row.
ROWS = 833_333
#: Rows of the protocol 0 file (text lines: about 52 bytes a row).
ROWS_P0 = 460_000
QUIET_ENV = {"SAFEMODEL_NO_CACHE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def rows(n: int) -> List[Tuple[int, float, str]]:
    """``n`` distinct (int, float, str) rows (no value repeats, so the pickler writes no GET)."""
    return [(i, i * 0.5, f"row{i:06d}") for i in range(n)]


def frame_contents(data: bytes) -> bytes:
    """The opcodes of a protocol-4 ``pickle.dumps`` output without its PROTO header and FRAMEs.

    Frames are walked by their lengths (each FRAME is ``\\x95`` and an 8-byte length), so nothing
    is parsed or loaded; data between frames (a payload over 64 KiB) is kept as it is.
    """
    assert data[:2] == b"\x80\x04", "protocol 4 expected"
    out = []
    pos = 2
    while pos < len(data):
        if data[pos] == 0x95:
            size = int.from_bytes(data[pos + 1:pos + 9], "little")
            out.append(data[pos + 9:pos + 9 + size])
            pos += 9 + size
        else:  # outside any frame: only the final opcodes of a stream without a last frame
            out.append(data[pos:])
            break
    return b"".join(out)


def build(work: Path, big: bool) -> Dict[str, Path]:
    """Write the benchmark files into ``work``; name -> path."""
    files: Dict[str, Path] = {}
    table = rows(ROWS)
    p4 = pickle.dumps(table, protocol=4)
    files["p4 24MB"] = work / "p4.pkl"
    files["p4 24MB"].write_bytes(p4)
    files["p2 24MB"] = work / "p2.pkl"
    files["p2 24MB"].write_bytes(pickle.dumps(table, protocol=2))
    del table
    files["p0 24MB"] = work / "p0.pkl"
    files["p0 24MB"].write_bytes(pickle.dumps(rows(ROWS_P0), protocol=0))
    if big:
        body = frame_contents(p4)
        # EMPTY_LIST MEMOIZE <MARK ... APPENDS>... STOP: keep the list's two opcodes once, repeat the rest.
        assert body[:2] == b"]\x94" and body[-1:] == b"."
        appends = body[2:-1]
        path = work / "p4x10.pkl"
        with open(path, "wb") as fh:
            fh.write(b"\x80\x04]\x94")
            for _ in range(10):
                fh.write(appends)
            fh.write(b".")
        files["p4 240MB"] = path
    return files


def timed(argv: Sequence[str], env: Dict[str, str]) -> Dict[str, Any]:
    """Run ``argv``; wall, CPU and peak RSS of that process alone (``wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, so Popen never waits for it
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "exit": proc.returncode, "stdout": stdout.decode("utf-8", "replace"),
            "stderr": stderr.decode("utf-8", "replace")}


def safemodel_summary(run: Dict[str, Any]) -> str:
    """The rule ids safemodel reported (from its JSON report)."""
    try:
        report = json.loads(run["stdout"])
        found = [f["rule_id"] for f in report["files"][0]["findings"]]
    except (ValueError, KeyError, IndexError):
        return "no report: " + run["stderr"].strip()[-200:]
    return ", ".join(sorted(set(found))) or "no findings"


def picklescan_summary(run: Dict[str, Any]) -> str:
    """picklescan's summary lines (scanned files, infected files, dangerous globals)."""
    lines = [line.strip() for line in run["stdout"].splitlines()
             if line.strip().startswith(("Scanned files", "Infected files", "Dangerous globals"))]
    return "; ".join(lines) or ("error: " + (run["stderr"] or run["stdout"]).strip()[-200:])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the table gives the fastest (default 3)")
    ap.add_argument("--picklescan", default=DEFAULT_PICKLESCAN, help="picklescan executable")
    ap.add_argument("--no-big", action="store_true", help="skip the 240 MB file")
    ap.add_argument("--only", action="append", help="run only these files (by name, repeatable)")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--keep", metavar="DIR", help="build the files in DIR and keep them (re-used if there)")
    args = ap.parse_args(argv)

    picklescan = args.picklescan if os.path.exists(args.picklescan) else shutil.which(args.picklescan)
    if not picklescan:
        print(f"picklescan not found at {args.picklescan}: python3 -m venv /work/venvs/pkl-ps && "
              "/work/venvs/pkl-ps/bin/pip install picklescan", file=sys.stderr)
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="safemodel-bigpickle-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **QUIET_ENV)
    try:
        t0 = time.perf_counter()
        names = ["p4 24MB", "p2 24MB", "p0 24MB"] + ([] if args.no_big else ["p4 240MB"])
        expected = {"p4 24MB": "p4.pkl", "p2 24MB": "p2.pkl", "p0 24MB": "p0.pkl", "p4 240MB": "p4x10.pkl"}
        if args.keep and all((work / expected[n]).is_file() for n in names):
            files = {n: work / expected[n] for n in names}
        else:
            # Built in a child process: Linux keeps a process's peak RSS across exec, so children
            # forked by a parent that held the rows (~300 MB) would all report at least that much.
            builder = multiprocessing.get_context("fork").Process(target=build, args=(work, not args.no_big))
            builder.start()
            builder.join()
            if builder.exitcode != 0:
                print(f"building the files failed (exit {builder.exitcode})", file=sys.stderr)
                return 2
            files = {n: work / expected[n] for n in names}
            print(f"built {len(files)} files in {time.perf_counter() - t0:.1f} s in {work}", file=sys.stderr)
        if args.only:
            files = {n: p for n, p in files.items() if n in args.only}
        scanners = {
            "safemodel": lambda p: [sys.executable, "-m", "safemodel_ci", "scan", "--no-cache", "--format",
                                    "json", str(p)],
            "picklescan": lambda p: [picklescan, "-p", str(p)],
        }
        # Warm: the page cache, and each scanner's modules compiled to .pyc as an install has them
        # (allowed to write them even where PYTHONDONTWRITEBYTECODE is set: else every run would
        # compile safemodel_ci from source, about 0.1 s of each run).
        warm_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        for make in scanners.values():
            timed(make(files[next(iter(files))]), warm_env)
        results: Dict[str, Dict[str, Any]] = {}
        for name, path in files.items():
            runs: Dict[str, List[Dict[str, Any]]] = {s: [] for s in scanners}
            for _ in range(args.repeat):
                for scanner, make in scanners.items():
                    runs[scanner].append(timed(make(path), env))
            entry: Dict[str, Any] = {"bytes": path.stat().st_size}
            for scanner, rs in runs.items():
                entry[scanner] = {
                    "wall": min(r["wall"] for r in rs), "cpu": min(r["cpu"] for r in rs),
                    "rss_mb": max(r["rss_mb"] for r in rs), "exit": rs[-1]["exit"],
                    "walls": [round(r["wall"], 3) for r in rs],
                    "summary": (safemodel_summary if scanner == "safemodel" else picklescan_summary)(rs[-1]),
                }
            results[name] = entry
            print(row(name, entry), file=sys.stderr)
        table = render(results, args.repeat)
        out = {"goal": GOAL, "files": results, "table": table,
               "load": os.getloadavg() if hasattr(os, "getloadavg") else None}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        print(table)
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def row(name: str, e: Dict[str, Any]) -> str:
    """One table row."""
    s, p = e["safemodel"], e["picklescan"]
    return (f"| {name} | {e['bytes'] / 1e6:.1f} | {s['wall']:.2f} | {p['wall']:.2f} | "
            f"{s['wall'] / p['wall']:.2f}x | {s['cpu']:.2f} | {p['cpu']:.2f} | {s['cpu'] / p['cpu']:.2f}x | "
            f"{s['rss_mb']:.0f} | {p['rss_mb']:.0f} | {s['exit']}: {s['summary']} | "
            f"{p['exit']}: {p['summary']} |")


def render(results: Dict[str, Dict[str, Any]], repeat: int) -> str:
    """The results as a Markdown table."""
    lines = [f"Big raw pickles (issue 20 item 4; goal: safemodel at most {GOAL}x picklescan, memory "
             f"independent of file size). Fastest of {repeat} rounds, each run its own process; "
             f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}.", "",
             "| file | MB | safemodel wall s | picklescan wall s | wall ratio | safemodel CPU s | "
             "picklescan CPU s | CPU ratio | safemodel RSS MB | picklescan RSS MB | safemodel exit | "
             "picklescan exit |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    lines += [row(name, e) for name, e in results.items()]
    small, big = results.get("p4 24MB"), results.get("p4 240MB")
    if small and big:
        lines += ["", f"Memory: safemodel's peak RSS {small['safemodel']['rss_mb']:.0f} MB on 24 MB, "
                  f"{big['safemodel']['rss_mb']:.0f} MB on 240 MB (x{big['bytes'] / small['bytes']:.0f} "
                  "the opcodes and memo entries)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
