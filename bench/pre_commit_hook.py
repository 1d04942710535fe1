"""Benchmark: the pre-commit hook on a ~1 GB torch.save checkpoint, first run and cached re-run.

    python3 bench/pre_commit_hook.py [--size-gb 1] [--keep DIR]

The checkpoint is written with the real ``torch.save`` (random tensors) into a fresh git repo;
then ``safemodel-pre-commit checkpoint.pt`` runs from the repo root, as pre-commit runs it, in a
subprocess with an empty result cache (first run), and again (cached). Wall times include the
Python start-up each hook run pays. The file is in the page cache for both runs (it was just
written), so the first run measures the scan, not the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_checkpoint(path: Path, size_gb: float) -> None:
    import torch

    n_tensors = 4
    per_tensor = int(size_gb * (1 << 30) / n_tensors / 4)  # float32 elements
    gen = torch.Generator().manual_seed(0)
    state = {f"layer{i}.weight": torch.randn(per_tensor, generator=gen) for i in range(n_tensors)}
    state["layer0.bias"] = torch.zeros(16)
    torch.save({"state_dict": state, "epoch": 1}, path)


def run_hook(repo: Path, env: dict) -> "tuple[float, float, int, str]":
    """One hook run in a fresh interpreter: (wall seconds, seconds inside main(), exit code, output)."""
    code = ("import sys, time; from safemodel_ci.hooks.pre_commit import main; t = time.perf_counter(); "
            "rc = main(sys.argv[1:]); sys.stderr.write(f'@main {time.perf_counter() - t:.6f}\\n'); "
            "sys.exit(rc)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "checkpoint.pt"], cwd=str(repo), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    inside = [float(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("@main ")]
    return wall, inside[0] if inside else float("nan"), proc.returncode, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="safemodel-bench-"))
    try:
        repo = work / "repo"
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        ckpt = repo / "checkpoint.pt"
        t0 = time.perf_counter()
        write_checkpoint(ckpt, args.size_gb)
        print(f"wrote {ckpt.stat().st_size / (1 << 30):.2f} GiB in {time.perf_counter() - t0:.1f}s")
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        env = dict(os.environ, SAFEMODEL_CACHE_DIR=str(cache), PRE_COMMIT="1")
        env.pop("SAFEMODEL_NO_CACHE", None)
        runs = [("first run (empty cache)", env)] + [("cached re-run", env)] * 3
        runs += [("uncached (SAFEMODEL_NO_CACHE=1)", dict(env, SAFEMODEL_NO_CACHE="1"))] * 2
        for label, run_env in runs:
            wall, inside, rc, out = run_hook(repo, run_env)
            print(f"{label}: {wall:.3f}s wall, {inside:.3f}s in main(), exit {rc}" +
                  (f"\n{out}" if out.strip() else ""))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
