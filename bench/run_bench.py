#!/usr/bin/env python3
"""Benchmark safemodel against modelscan, picklescan and modelaudit on the same files.

    python3 bench/run_bench.py                   # build the corpus (once) under bench/out/, run, report
    python3 bench/run_bench.py --install-tools   # first put the other scanners in bench/out/tools-venv

The corpus: a few thousand small files (benign and malicious pickles, PyTorch zips, sklearn and
joblib pickles, npy files, plain zips) with known verdicts, a 2 GB PyTorch checkpoint, a 10 GB
sparse safetensors file and a 1 GB joblib file. Every run is a separate process; the table gives
its wall time, peak RSS (``wait4`` rusage of that process and the children it reaped) and bytes
read (``rchar`` of /proc/self/io, which includes reaped children, minus what the same tool reads
to start up and scan one tiny file), then each scanner's time as a ratio to safemodel's, and how
the verdicts on the small corpus agree with the truth. A scanner whose projected time on the full
small corpus exceeds the per-run budget is measured on a sample and marked so.

Nothing here loads a model: fixtures are made with pickle.dumps / torch.save / joblib.dump / np.save.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CORPUS_VERSION = "4"
TOOLS = ("safemodel", "picklescan", "modelscan", "modelaudit")
#: What a scanner's exit code says beyond pass/fail, shown in the table.
EXIT_NOTES = {("modelscan", 3): "nothing scanned: format not supported", ("modelscan", 2): "scan errors",
              ("picklescan", 2): "scan error", ("modelaudit", 2): "scan errors",
              ("safemodel", 2): "incomplete scan"}
#: Issue 20: a scan of one small file under this multiple of the bare interpreter's start-up.
STARTUP_GOAL = 1.6
#: Environment for every scanner: no telemetry, no network lookups, no progress bars.
QUIET_ENV = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
             "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "CI": "1", "TQDM_DISABLE": "1"}


# ---- corpus -------------------------------------------------------------------------------------

class _Call:
    """Pickles as ``func(*args)``: what a malicious model does (dumping it runs nothing)."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> Tuple[Callable[..., object], Tuple[object, ...]]:
        return self.func, self.args


def _payloads() -> List[Tuple[str, object]]:
    import builtins
    import importlib
    import pydoc
    import shutil as sh
    import subprocess as sp
    import timeit
    import webbrowser

    return [
        ("os-system", _Call(os.system, "echo pwned")),
        ("exec", _Call(builtins.exec, "print('pwned')")),
        ("eval", _Call(builtins.eval, "1+1")),
        ("popen", _Call(sp.Popen, ["echo", "pwned"])),
        ("webbrowser", _Call(webbrowser.open, "http://127.0.0.1/")),
        ("pipepager", _Call(pydoc.pipepager, "x", "sh -c id")),
        ("rmtree", _Call(sh.rmtree, "/tmp/nothing-here")),
        ("timeit", _Call(timeit.timeit, "print('pwned')")),
        ("import", _Call(importlib.import_module, "os")),
    ]


def _global_call_proto0(module: str, name: str, arg: str) -> bytes:
    """A protocol-0 pickle calling ``module.name(arg)``, written opcode by opcode."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def build_small(root: Path, count: int) -> Dict[str, bool]:
    """``count`` small files under ``root``; returns relative path -> malicious."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    x = rng.random((40, 4))
    y = np.array([0, 1] * 20)
    models = [LogisticRegression().fit(x, y), DecisionTreeClassifier(max_depth=3).fit(x, y)]
    payloads = _payloads()
    truth: Dict[str, bool] = {}
    for i in range(count):
        sub = root / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        kind = i % 10
        payload_name, payload = payloads[i % len(payloads)]
        if kind == 0:
            name, data, bad = f"state{i}.pkl", pickle.dumps({"step": i, "lr": 0.1, "w": [0.5] * (i % 50)},
                                                           protocol=i % 6), False
        elif kind == 1:
            arr = rng.random(16 + i % 64).astype("float32")
            name, data, bad = f"array{i}.pkl", pickle.dumps({"emb": arr, "ids": list(range(i % 9))}), False
        elif kind == 2:
            name, data, bad = f"sk{i}.pkl", pickle.dumps(models[i % 2], protocol=4), False
        elif kind == 3:
            buf = io.BytesIO()
            torch.save({"weight": torch.zeros(4 + i % 8), "bias": torch.ones(2)}, buf)
            name, data, bad = f"ckpt{i}.pt", buf.getvalue(), False
        elif kind == 4:
            buf = io.BytesIO()
            np.save(buf, rng.random((3, 4 + i % 5)))
            name, data, bad = f"arr{i}.npy", buf.getvalue(), False
        elif kind == 5:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("README.txt", f"model card {i}")
                zf.writestr("config.json", json.dumps({"layers": i % 7}))
            name, data, bad = f"bundle{i}.zip", buf.getvalue(), False
        elif kind == 6:
            name = f"evil-{payload_name}{i}.pkl"
            data, bad = pickle.dumps({"w": [0.1] * (i % 30), "x": payload}, protocol=i % 5 + 1), True
        elif kind == 7:
            buf = io.BytesIO()
            torch.save({"weight": torch.zeros(4), "hook": payload}, buf)
            name, data, bad = f"evil-{payload_name}{i}.pt", buf.getvalue(), True
        elif kind == 8:
            # A hand-written protocol-0 stream (no PROTO header, still a pickle to pickle.load).
            name, data, bad = f"evil-proto0-{i}.pkl", _global_call_proto0("os", "system", "id"), True
        else:
            import joblib

            buf = io.BytesIO()
            joblib.dump({"model": payload, "n": i}, buf)
            name, data, bad = f"evil-joblib-{payload_name}{i}.joblib", buf.getvalue(), True
        (sub / name).write_bytes(data)
        truth[f"{sub.name}/{name}"] = bad
    return truth


def build_torch_2g(path: Path) -> None:
    import torch

    tensors = {f"layers.{i}.weight": torch.zeros(8 << 20) for i in range(64)}  # 64 x 32 MiB = 2 GiB
    torch.save(tensors, path)


def build_safetensors_10g(path: Path) -> None:
    """A 10 GiB safetensors file whose tensor data is a hole: no disk space, real header."""
    n, per = 80, 128 << 20  # 80 x 128 MiB
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i in range(n):
        header[f"model.layers.{i}.weight"] = {"dtype": "F32", "shape": [per // 4],
                                              "data_offsets": [i * per, (i + 1) * per]}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.truncate(8 + len(blob) + n * per)


def build_joblib_1g(path: Path) -> None:
    import joblib
    import numpy as np

    joblib.dump({"embeddings": np.zeros(1 << 27, dtype="float64"), "vocab": ["a", "b"]}, path)


def build_corpus(root: Path, small: int, log: Callable[[str], None],
                 big_files: bool = True) -> Dict[str, object]:
    """The corpus under ``root``, built once: the small part again only when its size changes."""
    stamp = root / "corpus.json"
    meta: Dict[str, object] = {}
    if stamp.is_file():
        meta = json.loads(stamp.read_text())
    if meta.get("version") != CORPUS_VERSION or meta.get("small") != small:
        for part in ("small", "sample"):
            shutil.rmtree(root / part, ignore_errors=True)
        t = time.time()
        truth = build_small(root / "small", small)
        sample = root / "sample"
        sample.mkdir(parents=True)
        names = sorted(truth)
        picked = names[:: max(1, len(names) // 50)]
        for rel in picked:
            os.link(root / "small" / rel, sample / rel.replace("/", "_"))
        log(f"small corpus: {len(truth)} files ({sum(truth.values())} malicious) in {time.time() - t:.1f}s")
        meta = {"version": CORPUS_VERSION, "small": small, "truth": truth,
                "sample": {rel.replace("/", "_"): truth[rel] for rel in picked}}
    big = root / "big"
    big.mkdir(parents=True, exist_ok=True)
    builders = (("checkpoint-2g.pt", build_torch_2g), ("model-10g.safetensors", build_safetensors_10g),
                ("vectors-1g.joblib", build_joblib_1g))
    for name, build in builders if big_files else ():
        if (big / name).is_file():
            continue
        t = time.time()
        partial = big / (name + ".partial")
        build(partial)
        partial.rename(big / name)
        log(f"{name}: {(big / name).stat().st_size / 2**30:.1f} GiB in {time.time() - t:.1f}s")
    (root / "tiny.pkl").write_bytes(pickle.dumps(1))
    stamp.write_text(json.dumps(meta))
    return meta


# ---- running one scanner process ----------------------------------------------------------------

@dataclass
class Run:
    tool: str
    target: str
    wall: float = 0.0
    #: User + system CPU seconds of the process and the children it reaped.
    cpu: float = 0.0
    max_rss_mb: float = 0.0
    rchar: int = 0
    exit_code: Optional[int] = None
    timed_out: bool = False
    output: str = ""
    stderr_tail: str = ""
    files: int = 0
    #: safemodel only: bytes its report says it read.
    reported_bytes: Optional[int] = None
    note: str = ""
    verdicts: Dict[str, bool] = field(default_factory=dict)
    #: Wall times of every repetition (``--repeat``); ``wall`` is their median.
    walls: List[float] = field(default_factory=list)


def _rchar() -> int:
    try:
        with open("/proc/self/io") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd: Sequence[str], timeout: float, env: Dict[str, str], stdout_path: Path) -> Run:
    """Run ``cmd`` alone; its wall time, peak RSS and bytes read (process and reaped children)."""
    run = Run(tool="", target="")
    before = _rchar()
    with open(stdout_path, "wb") as out, open(str(stdout_path) + ".err", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, start_new_session=True)
        killer = threading.Timer(timeout, lambda: _kill(proc.pid, run))
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        run.wall = time.perf_counter() - start
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    run.rchar = _rchar() - before
    run.exit_code = proc.returncode
    run.max_rss_mb = usage.ru_maxrss / 1024.0
    run.cpu = usage.ru_utime + usage.ru_stime
    run.output = stdout_path.read_text(errors="replace")
    run.stderr_tail = Path(str(stdout_path) + ".err").read_text(errors="replace")[-2000:]
    return run


def _kill(pid: int, run: Run) -> None:
    run.timed_out = True
    try:
        os.killpg(pid, 9)
    except OSError:
        pass


# ---- scanners: command lines and verdicts -------------------------------------------------------

def find_tool(name: str, tools_bin: Optional[Path]) -> Optional[str]:
    if name == "safemodel":
        return sys.executable  # run as "python -m safemodel_ci": no shell shims in the timing
    if tools_bin is not None and (tools_bin / name).exists():
        return str(tools_bin / name)
    return shutil.which(name)


def command(tool: str, exe: str, target: Path, report: Path, extra: Sequence[str] = ()) -> List[str]:
    if tool == "safemodel":
        return [exe, "-m", "safemodel_ci", "scan", "--format", "json", "--output", str(report), *extra,
                str(target)]
    if tool == "picklescan":
        return [exe, "--path", str(target)]
    if tool == "modelscan":
        return [exe, "scan", "--path", str(target), "--reporting-format", "json",
                "--output-file", str(report)]
    if tool == "modelaudit":
        return [exe, "scan", "--format", "json", "--no-cache", "--output", str(report), str(target)]
    raise ValueError(tool)


def _file_of(location: str, root: Path) -> str:
    """The corpus file a finding's location names (strip member, position, root)."""
    loc = location.split(" (pos")[0]
    root_s = str(root).rstrip("/") + "/"
    if loc.startswith(root_s):
        loc = loc[len(root_s):]
    return loc.split(":")[0]


def verdicts(tool: str, run: Run, report: Path, root: Path) -> Dict[str, bool]:
    """Relative path -> flagged, for every file the scanner flagged (errors count as flagged)."""
    flagged: Dict[str, bool] = {}
    try:
        if tool == "safemodel":
            data = json.loads(report.read_text())
            run.reported_bytes = sum(f.get("bytes_read", 0) for f in data["files"])
            run.files = len(data["files"])
            for f in data["files"]:
                bad = (not f["complete"]) or any(x["severity"] in ("HIGH", "CRITICAL") for x in f["findings"])
                if bad:
                    flagged[_file_of(f["path"], root)] = True
        elif tool == "picklescan":
            for line in run.output.splitlines():
                if " import " in line and line.rstrip().endswith("FOUND") or line.startswith("ERROR"):
                    path = line.split(": ", 1)[0].replace("ERROR: parsing pickle in ", "")
                    flagged[_file_of(path, root)] = True
                if line.startswith("Scanned files:"):
                    run.files = int(line.split(":")[1])
        elif tool == "modelscan":
            data = json.loads(report.read_text())
            run.files = data.get("summary", {}).get("scanned", {}).get("total_scanned", 0)
            for issue in data.get("issues", []):
                flagged[_file_of(issue.get("source", ""), Path("."))] = True
            for error in data.get("errors", []):
                if error.get("source"):
                    flagged[_file_of(error["source"], Path("."))] = True
        elif tool == "modelaudit":
            data = json.loads(report.read_text())
            run.files = int(data.get("files_scanned", 0))
            for issue in data.get("issues", []):
                if issue.get("severity") in ("critical", "warning", "error"):
                    flagged[_file_of(issue.get("location") or "", root)] = True
    except (OSError, ValueError, KeyError) as exc:
        run.note = f"could not read its report: {exc}"
    return flagged


# ---- the benchmark ------------------------------------------------------------------------------

def agreement(truth: Dict[str, bool], flagged: Dict[str, bool]) -> Dict[str, int]:
    out = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for rel, bad in truth.items():
        hit = flagged.get(rel, False)
        out["tp" if bad and hit else "fn" if bad else "fp" if hit else "tn"] += 1
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="work directory (default: bench/out)")
    ap.add_argument("--small", type=int, default=2000, help="files in the small corpus (default 2000)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per scanner run")
    ap.add_argument("--tools-bin", type=Path, default=None,
                    help="directory holding picklescan/modelscan/modelaudit (default: "
                         "bench/out/tools-venv/bin if present, else PATH)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated scanners to run")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--startup-runs", type=int, default=21,
                    help="rounds of bench/startup.py (the scan and the hook beside the interpreter; "
                         "0: skipped)")
    ap.add_argument("--skip-big", action="store_true", help="only the small corpus (a quick check)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each scanner on the small corpus; the table gives the median and the "
                         "best (default 3: single runs on a shared 2-CPU machine vary by 20-30%%)")
    ap.add_argument("--hf-cache-gb", type=float, default=2.5,
                    help="size of the Hugging Face cache for the 'safemodel cache' vs sha256sum benchmark "
                         "(bench/hf_cache_hash.py; built under /tmp and removed; 0 or --skip-big: skipped)")
    ap.add_argument("--hub-repos", type=int, default=200,
                    help="repos for the 'safemodel hub --jobs 1' vs '--jobs 8' benchmark against the test "
                         "Hub server at 50 ms a request (bench/hub_many_repos.py; 0 or --skip-big: skipped)")
    ap.add_argument("--install-tools", action="store_true",
                    help="pip install picklescan, modelscan, modelaudit into bench/out/tools-venv first")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    venv = out / "tools-venv"
    if args.install_tools:
        install_tools(venv, log)
    tools_bin = args.tools_bin or (venv / "bin" if (venv / "bin").is_dir() else None)
    t0 = time.time()
    if args.build_only:
        build_corpus(out / "corpus", args.small, log, big_files=not args.skip_big)
        return 0
    # Built in a child process: a fork of a process that held a 2 GB tensor would report that
    # memory as every scanner's peak RSS (ru_maxrss survives exec).
    subprocess.run([sys.executable, __file__, "--build-only", "--out", str(out), "--small", str(args.small)] +
                   (["--skip-big"] if args.skip_big else []), check=True)
    meta = json.loads((out / "corpus" / "corpus.json").read_text())
    corpus = out / "corpus"
    truth: Dict[str, bool] = meta["truth"]  # type: ignore[assignment]
    sample_truth: Dict[str, bool] = meta["sample"]  # type: ignore[assignment]
    env = dict(os.environ, **QUIET_ENV)
    env["SAFEMODEL_CACHE_DIR"] = str(out / "safemodel-cache")
    shutil.rmtree(out / "safemodel-cache", ignore_errors=True)
    reports = out / "reports"
    reports.mkdir(exist_ok=True)

    # A pip install writes bytecode; an editable install run with PYTHONDONTWRITEBYTECODE=1 never
    # does, and would pay to compile every module on each start (about 0.1 s). The other scanners
    # were pip-installed, so compile ours too before timing.
    import compileall

    import safemodel_ci

    compileall.compile_dir(str(Path(safemodel_ci.__file__).parent), quiet=1)

    runs: List[Run] = []
    missing: List[str] = []
    # The floor under every Python scanner's startup: the interpreter starting and exiting.
    floor = Run(tool="python3 -c pass", target="interpreter")
    floor_runs = sorted((measure([sys.executable, "-c", "pass"], args.timeout, env,
                                 reports / "interpreter.stdout") for _ in range(5)), key=lambda r: r.wall)
    floor.walls = [r.wall for r in floor_runs]
    floor.wall = floor.walls[2]
    floor.cpu = sorted(r.cpu for r in floor_runs)[2]  # median CPU, beside the scanners' startup CPU
    runs.append(floor)
    targets = [("small", corpus / "small")]
    if not args.skip_big:
        targets += [("2 GB torch", corpus / "big" / "checkpoint-2g.pt"),
                    ("10 GB safetensors", corpus / "big" / "model-10g.safetensors"),
                    ("1 GB joblib", corpus / "big" / "vectors-1g.joblib")]
    for tool in args.tools.split(","):
        exe = find_tool(tool, tools_bin)
        if exe is None:
            missing.append(tool)
            continue
        extra = ["--no-cache"] if tool == "safemodel" else []

        def one(label: str, target: Path, extra_args: Sequence[str] = (), suffix: str = "",
                tool: str = tool, exe: str = exe, timeout: float = args.timeout) -> Run:
            report = reports / f"{tool}{suffix}-{label.replace(' ', '_')}.json"
            report.unlink(missing_ok=True)
            run = measure(command(tool, exe, target, report, extra_args), timeout, env,
                          reports / f"{tool}{suffix}-{label.replace(' ', '_')}.stdout")
            run.tool, run.target = tool + suffix, label
            run.verdicts = verdicts(tool, run, report, target if target.is_dir() else target.parent)
            run.note = run.note or EXIT_NOTES.get((tool, run.exit_code), "")
            if run.timed_out:
                run.note = f"killed after {timeout:.0f}s"
            log(f"{run.tool:18} {label:18} {run.wall:7.2f}s {run.max_rss_mb:7.0f} MB "
                f"exit {run.exit_code}{' TIMEOUT' if run.timed_out else ''}")
            return run

        def repeated(label: str, target: Path, extra_args: Sequence[str] = (), suffix: str = "") -> Run:
            """``--repeat`` runs; the median one is kept, with every wall time in ``walls``."""
            tries = [one(label, target, extra_args, suffix) for _ in range(max(1, args.repeat))]
            tries.sort(key=lambda r: r.wall)
            kept = tries[(len(tries) - 1) // 2]
            kept.walls = [r.wall for r in tries]
            return kept

        baseline = one("baseline", corpus / "tiny.pkl", extra)
        # The sample decides whether the whole small corpus fits the budget: give it more time.
        sample = one("sample", corpus / "sample", extra, timeout=2 * args.timeout)
        runs += [baseline, sample]
        per_file = max(sample.wall - baseline.wall, 0.0) / max(1, len(sample_truth))
        projected = baseline.wall + per_file * len(truth)
        for label, target in targets:
            if label == "small" and projected > args.timeout:
                run = Run(tool=tool, target=label, wall=projected,
                          note=f"projected from the {len(sample_truth)}-file sample "
                               f"(> {args.timeout:.0f}s budget)")
                run.max_rss_mb, run.rchar = sample.max_rss_mb, sample.rchar
                run.verdicts = sample.verdicts
                run.timed_out = True
                runs.append(run)
                log(f"{tool:18} {label:18} skipped: projected {projected:.0f}s")
                continue
            runs.append(repeated(label, target, extra) if label == "small" else one(label, target, extra))
            runs[-1].rchar = max(0, runs[-1].rchar - baseline.rchar)
        if tool == "safemodel":
            # The same scans again through the result cache: first fills it, second re-uses it.
            for label, target in targets:
                one(label, target, (), "-fill")
                runs.append(repeated(label, target, (), " (cached)") if label == "small"
                            else one(label, target, (), " (cached)"))
                runs[-1].rchar = max(0, runs[-1].rchar - baseline.rchar)
            runs.append(repeated("small", corpus / "small", ("--no-cache", "--jobs", "1"), " --jobs 1"))

    results = {"runs": [dict(asdict(r), output="", verdicts=len(r.verdicts)) for r in runs],
               "missing": missing, "elapsed": time.time() - t0}
    table = render(runs, truth, sample_truth, missing, meta, args.timeout)
    def side_benchmark(key: str, script: str, options: List[str], what: str) -> str:
        """Run one of the other bench scripts in its own process; its table, or "" if it failed."""
        log(what)
        target = out / f"{key}.json"
        target.unlink(missing_ok=True)
        subprocess.run([sys.executable, str(HERE / script), *options, "--json", str(target)], env=env)
        if not target.is_file():
            return ""
        results[key] = json.loads(target.read_text())
        return "\n" + str(results[key]["table"])

    if args.startup_runs > 0 and "safemodel" in args.tools.split(","):
        # Issue 20 item 3: the scan of one small file and the pre-commit hook on one small model, each
        # beside the bare interpreter (medians of 21 rounds; the small-corpus table's startup column
        # has 5 only).
        table += side_benchmark("startup", "startup.py", ["--runs", str(args.startup_runs)],
                                f"Start-up benchmark (scan and hook beside the interpreter, "
                                f"{args.startup_runs} rounds)")
    if args.hf_cache_gb > 0 and not args.skip_big and "safemodel" in args.tools.split(","):
        # Issue 20 item 2: its own process (it builds and removes a cache of a few GB under /tmp).
        table += side_benchmark("hf_cache", "hf_cache_hash.py", ["--size-gb", str(args.hf_cache_gb)],
                                f"HF cache hashing benchmark ({args.hf_cache_gb} GB)")
    if args.hub_repos > 0 and not args.skip_big and "safemodel" in args.tools.split(","):
        # Issue 20 item 1: its own process (it runs the test Hub server on 127.0.0.1).
        table += side_benchmark("hub", "hub_many_repos.py", ["--repos", str(args.hub_repos)],
                                f"Hub benchmark ({args.hub_repos} repos, --jobs 1 and 8)")
    picklescan = find_tool("picklescan", tools_bin)
    if picklescan and not args.skip_big and "safemodel" in args.tools.split(","):
        # Issue 20 item 4: a 24 MB pickle of 5M opcodes (and a 232 MB one) against picklescan.
        table += side_benchmark("big_pickle", "big_pickle.py", ["--picklescan", picklescan, "--repeat", "1"],
                                "Big raw pickle benchmark (24 MB and 232 MB, against picklescan)")
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table)
    log(f"done in {time.time() - t0:.0f}s; results in {out / 'results.md'}")
    return 0


def render(runs: List[Run], truth: Dict[str, bool], sample_truth: Dict[str, bool], missing: List[str],
           meta: Dict[str, object], timeout: float) -> str:
    def fmt_bytes(n: Optional[int]) -> str:
        if n is None:
            return "-"
        for unit in ("B", "KB", "MB", "GB"):
            if n < 1024 or unit == "GB":
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            n /= 1024  # type: ignore[assignment]
        return str(n)

    lines = [f"Corpus: {len(truth)} small files ({sum(truth.values())} malicious), a 2 GB torch checkpoint, "
             "a 10 GB sparse safetensors file, a 1 GB joblib file. One process per run; "
             f"{os.cpu_count()} CPUs.", ""]
    base = {r.target: r for r in runs if r.tool == "safemodel"}
    lines.append("| target | scanner | wall s | best s | x safemodel | CPU s | peak RSS MB | bytes read | "
                 "exit | note |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for target in ("small", "2 GB torch", "10 GB safetensors", "1 GB joblib"):
        for r in runs:
            if r.target != target:
                continue
            ratio = r.wall / base[target].wall if target in base and base[target].wall else 0
            read = (fmt_bytes(r.rchar) if r.rchar >= 65536 else "< 64 KB") + (
                f" (report: {fmt_bytes(r.reported_bytes)})"
                                         if r.reported_bytes is not None else "")
            best = f"{min(r.walls):.2f}" if len(r.walls) > 1 else ""
            lines.append(f"| {target} | {r.tool} | {r.wall:.2f}{'+' if r.timed_out else ''} | {best} | "
                         f"{ratio:.1f} | {f'{r.cpu:.2f}' if r.cpu else '-'} | "
                         f"{r.max_rss_mb:.0f} | {read} | {r.exit_code if r.exit_code is not None else '-'} | "
                         f"{r.note} |")
    small_runs = [r for r in runs if r.target == "small" and len(r.walls) > 1]
    if small_runs:
        lines += ["", f"Small corpus: wall is the median of {len(small_runs[0].walls)} runs, best the "
                  "fastest; x safemodel compares medians."]
    lines += ["", "Startup (one tiny pickle) beside the interpreter alone, and the 50-file sample "
              f"(goal for safemodel: under {STARTUP_GOAL}x the interpreter; bench/startup.py measures it "
              "with more runs):", "",
              "| scanner | startup s | x interpreter | startup CPU s | sample s | sample per-file ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    floor = next((r for r in runs if r.target == "interpreter"), None)
    if floor is not None:
        lines.append("| (`python3 -c pass`: the interpreter alone, median of 5, best "
                     f"{min(floor.walls):.3f}) | {floor.wall:.3f} | 1.00 | {floor.cpu:.3f} | | |")
    for tool in TOOLS:
        b = next((r for r in runs if r.tool == tool and r.target == "baseline"), None)
        s = next((r for r in runs if r.tool == tool and r.target == "sample"), None)
        if b and s:
            ratio = f"{b.wall / floor.wall:.2f}" if floor is not None and floor.wall else "-"
            lines.append(f"| {tool} | {b.wall:.2f} | {ratio} | {b.cpu:.3f} | {s.wall:.2f} | "
                         f"{1000 * max(0.0, s.wall - b.wall) / max(1, len(sample_truth)):.1f} |")
    lines += ["", "Verdicts on the small corpus (malicious = imports a callable that runs code; "
              "flagged = HIGH/CRITICAL, error or unscanned):", "",
              "| scanner | files | caught (TP) | missed (FN) | false alarms (FP) | clean (TN) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        if r.target != "small" or r.tool.endswith("(cached)") or "--jobs" in r.tool:
            continue
        t = sample_truth if "sample" in r.note else truth
        a = agreement(t, r.verdicts)
        label = r.tool + (" (sample)" if t is sample_truth else "")
        sample_run = next((x for x in runs if x.tool == r.tool and x.target == "sample"), None)
        if t is sample_truth and sample_run is not None and sample_run.timed_out:
            lines.append(f"| {label} | {len(t)} | no report: killed after {2 * timeout:.0f}s | | | |")
            continue
        lines.append(f"| {label} | {len(t)} | {a['tp']} | {a['fn']} | {a['fp']} | {a['tn']} |")
    if missing:
        lines += ["", "Not installed (skipped): " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def install_tools(venv: Path, log: Callable[[str], None]) -> None:
    if not (venv / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    for package in ("picklescan", "modelscan", "modelaudit"):
        proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", package], capture_output=True,
                              text=True)
        log(f"pip install {package}: {'ok' if proc.returncode == 0 else 'FAILED: ' + proc.stderr[-300:]}")


if __name__ == "__main__":
    raise SystemExit(main())
