#!/usr/bin/env python3
"""Benchmark: ``safemodel hub --repos-file`` on many repos, ``--jobs 1`` against ``--jobs N``.

    python3 bench/hub_many_repos.py [--repos 200] [--files 5] [--latency-ms 50] [--jobs 1,8] [--json FILE]

The test Hub server (``tests/hub_server.py``: ``FakeHub``, a ``ThreadingHTTPServer`` on 127.0.0.1
that the real huggingface_hub client talks to) runs in this process with ``--latency-ms`` of delay
injected before every answer, as a distant Hub would have. It serves ``--repos`` repos of ``--files``
files each, made by the real libraries: a small ``model.safetensors`` (``safetensors``),
``config.json``, ``tokenizer.json``, ``tokenizer_config.json`` and a small ``pytorch_model.bin``
(``torch.save``; a plain pickle of a dict of lists when torch does not import). Nothing is loaded.

Each ``--jobs`` value is one child process, run one after another:
``python -m safemodel_ci hub --repos-file FILE --no-cache --format json -o REPORT --jobs N``, with
``HF_ENDPOINT`` pointing at the server, telemetry off, no token and ``HF_HOME`` in a temporary folder.
Per run: wall time, CPU time and peak RSS of the child (``wait4`` rusage), the files and requests
the report counts and the requests the server answered. The table gives them beside the goals of
issue 20: the largest ``--jobs`` at least 6x faster than ``--jobs 1`` (wall time), peak RSS under
300 MB. The exit code is 1 when a goal is missed (or a run failed), else 0.

Bounded: the server listens on loopback only, each run has a timeout (``--timeout``), the repos are
held in memory (a few KB each) and the temporary folder is removed afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hub_server import FakeHub  # noqa: E402 - the test server, importable once tests/ is on the path

#: Issue 20's goals for 200 repos of 5 files at 50 ms per request.
GOAL_SPEEDUP = 6.0
GOAL_RSS_MB = 300.0


# ---- the repos ---------------------------------------------------------------------------------

def _safetensors_bytes() -> bytes:
    """A small safetensors file: the ``safetensors`` library's own writer, else its format by hand."""
    try:
        import numpy as np
        from safetensors.numpy import save

        return save({"embed.weight": np.arange(64, dtype=np.float32).reshape(8, 8),
                     "head.bias": np.zeros(8, dtype=np.float32)})
    except ImportError:
        data = bytes(256)
        header = json.dumps({"embed.weight": {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, 256]}})
        raw = header.encode() + b" " * (-len(header) % 8)
        return len(raw).to_bytes(8, "little") + raw + data


def _torch_bin_bytes() -> bytes:
    """A small ``pytorch_model.bin`` from ``torch.save``; a protocol-2 pickle of plain data without torch."""
    try:
        import torch

        buf = io.BytesIO()
        torch.save({"embed.weight": torch.arange(64, dtype=torch.float32).reshape(8, 8),
                    "head.bias": torch.zeros(8)}, buf)
        return buf.getvalue()
    except ImportError:
        return pickle.dumps({"embed.weight": [[float(i * 8 + j) for j in range(8)] for i in range(8)],
                             "head.bias": [0.0] * 8}, protocol=2)


def repo_files(n_files: int) -> Dict[str, bytes]:
    """``n_files`` files of a typical model repo; past five, the kinds repeat under numbered names."""
    tokenizer = {"version": "1.0", "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1}}}
    kinds = [
        ("model", ".safetensors", _safetensors_bytes()),
        ("config", ".json", json.dumps({"model_type": "bert", "hidden_size": 8, "num_layers": 1}).encode()),
        ("tokenizer", ".json", json.dumps(tokenizer).encode()),
        ("tokenizer_config", ".json", json.dumps({"model_max_length": 512, "do_lower_case": True}).encode()),
        ("pytorch_model", ".bin", _torch_bin_bytes()),
    ]
    files: Dict[str, bytes] = {}
    for i in range(n_files):
        stem, suffix, data = kinds[i % len(kinds)]
        name = stem + suffix if i < len(kinds) else f"{stem}-{i // len(kinds)}{suffix}"
        files[name] = data
    return files


def made_in_child(n_files: int, work: Path) -> Dict[str, bytes]:
    """:func:`repo_files`, made in a child process and read back from ``work``.

    Linux counts the RSS of the process that spawns a child in that child's ``ru_maxrss`` (the
    address space it replaces at ``exec`` is the parent's): a benchmark process that imported torch
    (about 220 MB) would report that much for every ``safemodel hub`` run. So torch and numpy are only
    ever imported in this short-lived child, and this process stays small.
    """
    out = work / "files"
    out.mkdir()
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[1]); import hub_many_repos as h\n"
            "for name, data in h.repo_files(int(sys.argv[2])).items():\n"
            "    (pathlib.Path(sys.argv[3]) / name).write_bytes(data)\n")
    subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(n_files), str(out)],
                   check=True, timeout=300)
    made = {p.name: p.read_bytes() for p in out.iterdir()}
    return made


# ---- one run -----------------------------------------------------------------------------------

def run_hub(jobs: int, repos_file: Path, report: Path, env: Dict[str, str], timeout: float) -> Dict[str, Any]:
    """One ``safemodel hub`` child: wall s, CPU s and peak RSS (``wait4``), exit code, report counts."""
    cmd = [sys.executable, "-m", "safemodel_ci", "hub", "--repos-file", str(repos_file), "--no-cache",
           "--format", "json", "-o", str(report), "--jobs", str(jobs)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    # wait4 (not Popen.wait) reaps the child, so its own rusage is read; a timer kills it at the timeout.
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if wall >= timeout:
        return {"jobs": jobs, "error": f"killed after the {timeout:.0f} s timeout"}
    row: Dict[str, Any] = {"jobs": jobs, "exit_code": code, "wall_s": round(wall, 3),
                           "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                           "max_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # Linux: KiB
    if code not in (0, 1) or not report.exists():
        row["error"] = f"exit {code}: {err.decode(errors='replace')[-800:]}"
        return row
    data = json.loads(report.read_text())
    hub = data.get("hub") or data.get("extra", {}).get("hub") or []
    row["files"] = len(data.get("files", []))
    row["repo_errors"] = len(data.get("errors", []))
    row["requests"] = sum(int((h.get("stats") or h).get("requests", 0)) for h in hub if isinstance(h, dict))
    return row


def run(n_repos: int, n_files: int, latency_ms: float, jobs_list: Sequence[int], timeout: float,
        log: Any) -> Dict[str, Any]:
    """Start the server, make the repos, run each ``--jobs`` value; the results as a dict."""
    work = Path(tempfile.mkdtemp(prefix="safemodel-hubbench-", dir="/tmp"))
    hub = FakeHub(latency=latency_ms / 1000.0)
    try:
        files = made_in_child(n_files, work)
        names = [f"bench-org/model-{i:04d}" for i in range(n_repos)]
        for name in names:
            hub.add_commit(name, dict(files))
        repos_file = work / "repos.txt"
        repos_file.write_text("".join(n + "\n" for n in names))
        endpoint = hub.start()
        home = work / "hf-home"
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE")}
        env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                    "HF_HUB_OFFLINE": "0", "TQDM_DISABLE": "1", "SAFEMODEL_NO_CACHE": "1",
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
        rows: List[Dict[str, Any]] = []
        for jobs in jobs_list:
            before = len(hub.requests)
            row = run_hub(jobs, repos_file, work / f"report-j{jobs}.json", env, timeout)
            row["server_requests"] = len(hub.requests) - before
            rows.append(row)
            print(f"  --jobs {jobs}: {row.get('wall_s', '-')} s wall, {row.get('max_rss_mb', '-')} MB"
                  + (f"  ({row['error']})" if "error" in row else ""), file=log, flush=True)
        return {"repos": n_repos, "files_per_repo": n_files, "latency_ms": latency_ms,
                "bench_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "bytes_per_repo": sum(len(b) for b in files.values()), "runs": rows,
                "loadavg": os.getloadavg()}
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


def verdict(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The goals: each with the measured figure, the goal and whether it is met."""
    runs = [r for r in results["runs"] if "error" not in r]
    goals: List[Dict[str, Any]] = []
    base = next((r for r in runs if r["jobs"] == 1), None)
    top = max((r for r in runs if r["jobs"] > 1), key=lambda r: r["jobs"], default=None)
    if base is not None and top is not None:
        speedup = base["wall_s"] / top["wall_s"] if top["wall_s"] > 0 else float("inf")
        goals.append({"goal": f"--jobs {top['jobs']} vs --jobs 1 (wall)", "measured": f"{speedup:.2f}x",
                      "target": f">= {GOAL_SPEEDUP:g}x", "met": speedup >= GOAL_SPEEDUP, "value": speedup})
    if runs:
        rss = max(r["max_rss_mb"] for r in runs)
        goals.append({"goal": "peak RSS (largest run)", "measured": f"{rss:.1f} MB",
                      "target": f"< {GOAL_RSS_MB:g} MB", "met": rss < GOAL_RSS_MB, "value": rss})
    return goals


def table(results: Dict[str, Any], goals: Sequence[Dict[str, Any]]) -> str:
    """The runs and the goals as Markdown tables."""
    n_expected = results["repos"] * results["files_per_repo"]
    lines = [f"{results['repos']} repos x {results['files_per_repo']} files "
             f"({results['bytes_per_repo']} bytes a repo), {results['latency_ms']:g} ms per request, "
             f"load average {results['loadavg'][0]:.2f}; "
             f"this process's peak RSS {results['bench_rss_mb']} MB "
             "(a floor for the children's: Linux counts the spawning process's RSS in theirs)", "",
             "| jobs | wall s | CPU s | peak RSS MB | files | requests | server requests | exit |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        if "error" in r:
            lines.append(f"| {r['jobs']} | failed: {r['error'][:200]} |  |  |  |  |  |  |")
            continue
        lines.append(f"| {r['jobs']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['max_rss_mb']:.1f} | "
                     f"{r['files']}/{n_expected} | {r['requests']} | {r['server_requests']} | "
                     f"{r['exit_code']} |")
    lines += ["", "| goal | measured | target | met |", "|---|---:|---:|---|"]
    for g in goals:
        lines.append(f"| {g['goal']} | {g['measured']} | {g['target']} | {'yes' if g['met'] else 'NO'} |")
    return "\n".join(lines)


def _jobs_list(value: str) -> List[int]:
    try:
        jobs = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {value!r}") from None
    if not jobs or any(j < 1 or j > 64 for j in jobs):
        raise argparse.ArgumentTypeError("each --jobs value must be between 1 and 64")
    return jobs


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark, print its table; 1 when a goal is missed or a run failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repos", type=int, default=200, help="repos on the server (default 200)")
    ap.add_argument("--files", type=int, default=5, help="files per repo (default 5)")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="delay before every answer (default 50)")
    ap.add_argument("--jobs", type=_jobs_list, default=[1, 8],
                    help="comma-separated --jobs values (default 1,8)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run at most (default 900)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.repos <= 5000 or not 1 <= args.files <= 100 or not 0 <= args.latency_ms <= 2000:
        ap.error("--repos 1..5000, --files 1..100, --latency-ms 0..2000")
    results = run(args.repos, args.files, args.latency_ms, args.jobs, args.timeout, sys.stderr)
    goals = verdict(results)
    results["goals"] = goals
    results["table"] = table(results, goals)
    print(results["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    failed = any("error" in r for r in results["runs"])
    expected = results["repos"] * results["files_per_repo"]
    short = [r for r in results["runs"] if "error" not in r and r["files"] < expected]
    return 1 if failed or short or not all(g["met"] for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
