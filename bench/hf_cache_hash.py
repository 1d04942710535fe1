#!/usr/bin/env python3
"""Benchmark: ``safemodel cache`` hashing every blob, against ``sha256sum`` on the same blobs.

    python3 bench/hf_cache_hash.py [--size-gb 2.5] [--repeat 3] [--cold] [--json FILE] [--keep DIR]

A Hugging Face cache of about ``--size-gb`` GB is built under /tmp with huggingface_hub's layout
(``<repo>/blobs/<sha256 or git sha1>``, ``snapshots/<rev>/<file>`` relative symlinks,
``refs/main``) from real files: sharded safetensors checkpoints written by the ``safetensors``
library with their index json, a ``torch.save`` ``pytorch_model.bin``, tokenizer/config json and a
vocab file; a second revision of one repo shares most blobs with the first (each blob is hashed
once however many revisions link to it). The cache is deleted afterwards (unless ``--keep``).

Each round runs, one after another, as separate processes:

- ``cat`` of every blob file to /dev/null: reading alone, the speed of the disk (or page cache);
- ``sha256sum`` on every blob file (the reference: one process, coreutils' own sha256);
- ``openssl dgst -sha256`` on the same files when ``openssl`` is installed: one thread of the
  library hashlib uses (with the CPU's SHA instructions where it has them), the single-core
  ceiling;
- ``safemodel cache --cache-dir DIR --no-cache`` (scan and hash every blob against its name);
- the same with ``SAFEMODEL_HASH_THREADS=1`` (one hashing thread: what the second core adds);
- ``safemodel cache --cache-dir DIR --no-cache --no-verify`` (scan only).

Per run: wall time, CPU time (user + system of the process and its threads, ``wait4`` rusage) and
throughput = blob bytes / wall. The table gives the median of ``--repeat`` rounds and the ratio of
safemodel's throughput to ``sha256sum``'s, against the 0.8x goal (issue 20). The machine may be
shared, so the load average is printed with the results and the CPU throughput (bytes per CPU
second) is given too: it does not depend on other processes' load. By default the blobs are in the
page cache (just written: the runs measure hashing, not the disk); ``--cold`` evicts this cache's
blobs (``posix_fadvise(DONTNEED)``, these files only) before every run so each reads from the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

GOAL = 0.8
QUIET_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1",
             "SAFEMODEL_NO_CACHE": "1"}


# ---- the cache -----------------------------------------------------------------------------------

class CacheBuilder:
    """Writes blobs named by their hash and links them from snapshots, as ``hf_hub_download`` does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs: Dict[str, int] = {}  # blob path -> size

    def add(self, repo: str, revision: str, filename: str, data_path: Path, lfs: bool) -> None:
        """Move ``data_path`` into ``repo``'s blobs (named by sha256 when ``lfs``, else by its git
        sha1) and link it from ``snapshots/<revision>/<filename>``."""
        repo_dir = self.root / f"models--{repo.replace('/', '--')}"
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        name = _file_hash(data_path, "sha256" if lfs else "git-sha1")
        blob = repo_dir / "blobs" / name
        if blob.exists():
            data_path.unlink()
        else:
            os.replace(data_path, blob)
        self.blobs[str(blob)] = blob.stat().st_size
        link = repo_dir / "snapshots" / revision / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))

    def ref(self, repo: str, ref: str, revision: str) -> None:
        refs = self.root / f"models--{repo.replace('/', '--')}" / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        (refs / ref).write_text(revision)


def _file_hash(path: Path, algorithm: str) -> str:
    digest = hashlib.sha256() if algorithm == "sha256" else hashlib.sha1()  # noqa: S324 - git object id
    if algorithm != "sha256":
        digest.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _rev(n: int) -> str:
    return hashlib.sha1(f"revision {n}".encode()).hexdigest()  # noqa: S324 - a made-up commit id


def build_cache(root: Path, size_gb: float, log: Any) -> CacheBuilder:
    """About ``size_gb`` GB of blobs in three repos (see the module docstring)."""
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tmp = root / ".incoming"
    tmp.mkdir(parents=True)
    cache = CacheBuilder(root)
    total = size_gb * (1 << 30)

    def tensors(nbytes: float, count: int, prefix: str = "model") -> Dict[str, "np.ndarray"]:
        per = max(1, int(nbytes / count / 4))
        return {f"{prefix}.layers.{i}.weight": rng.random(per, dtype=np.float32) for i in range(count)}

    def safetensors_file(nbytes: float, count: int, prefix: str = "model") -> Path:
        path = tmp / "st"
        save_file(tensors(nbytes, count, prefix), str(path), metadata={"format": "pt"})
        return path

    def json_file(obj: object) -> Path:
        path = tmp / "json"
        path.write_text(json.dumps(obj, indent=2))
        return path

    vocab = {f"tok{i}": i for i in range(60_000)}
    tokenizer = {"version": "1.0", "model": {"type": "BPE", "vocab": vocab,
                                             "merges": [f"t{i} o{i}" for i in range(30_000)]}}
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "model_type": "llama"}

    # Repo 1: a sharded checkpoint (55%), revision 2 changes the last shard and the config.
    llama, shards = "bench/llama-like", 3
    rev1, rev2 = _rev(1), _rev(2)
    weight_map = {}
    snapshots = cache.root / f"models--{llama.replace('/', '--')}" / "snapshots"
    for i in range(1, shards + 1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        cache.add(llama, rev1, name, safetensors_file(0.55 * total / (shards + 1), 8, f"shard{i}"), lfs=True)
        weight_map.update({f"shard{i}.layers.{k}.weight": name for k in range(8)})
        log(f"built {llama} {name}")
        if i < shards:  # shared by revision 2: the same blob
            link = snapshots / rev2 / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(os.path.realpath(snapshots / rev1 / name), link.parent))
    cache.add(llama, rev2, f"model-{shards:05d}-of-{shards:05d}.safetensors",
              safetensors_file(0.55 * total / (shards + 1), 8, f"shard{shards}"), lfs=True)
    for rev, cfg in ((rev1, config), (rev2, dict(config, rope_theta=500000.0))):
        total_size = shards * 8 * 4 * max(1, int(0.55 * total / (shards + 1) / 8 / 4))  # as tensors() makes
        cache.add(llama, rev, "model.safetensors.index.json",
                  json_file({"metadata": {"total_size": total_size}, "weight_map": weight_map}), lfs=False)
        cache.add(llama, rev, "config.json", json_file(cfg), lfs=False)
        cache.add(llama, rev, "tokenizer.json", json_file(tokenizer), lfs=False)
        cache.add(llama, rev, "generation_config.json", json_file({"do_sample": True}), lfs=False)
    cache.ref(llama, "main", rev2)

    # Repo 2: a torch.save checkpoint (30%) and its safetensors conversion (15%).
    bert, rev3 = "bench/bert-like", _rev(3)
    path = tmp / "bin"
    torch.save({k: torch.from_numpy(v) for k, v in tensors(0.30 * total, 12).items()}, path)
    cache.add(bert, rev3, "pytorch_model.bin", path, lfs=True)
    log(f"built {bert} pytorch_model.bin")
    cache.add(bert, rev3, "model.safetensors", safetensors_file(0.15 * total, 12), lfs=True)
    cache.add(bert, rev3, "config.json", json_file({"model_type": "bert", "hidden_size": 768}), lfs=False)
    vocab_txt = tmp / "vocab"
    vocab_txt.write_text("\n".join(vocab) + "\n")
    cache.add(bert, rev3, "vocab.txt", vocab_txt, lfs=False)
    cache.ref(bert, "main", rev3)

    # Repo 3: many small files (a tiny model and its configs, in a few revisions).
    tiny = "bench/tiny"
    for n in range(4, 10):
        rev = _rev(n)
        cache.add(tiny, rev, "model.safetensors", safetensors_file(64 << 10, 2), lfs=True)
        for i in range(10):
            cache.add(tiny, rev, f"configs/c{i}.json", json_file({"revision": n, "i": i}), lfs=False)
        cache.ref(tiny, "main", rev)
    tmp.rmdir()
    return cache


# ---- measuring -----------------------------------------------------------------------------------

def timed(cmd: Sequence[str], env: Dict[str, str], stdout: Optional[Path] = None) -> Tuple[float, float, int]:
    """(wall s, CPU s of the process and its threads, exit code): ``wait4`` rusage of that child."""
    with open(stdout or os.devnull, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def evict(paths: Sequence[str]) -> None:
    """Drop these files (only) from the page cache, so the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run(size_gb: float, repeat: int, cold: bool, keep: Optional[str], log: Any) -> Dict[str, Any]:
    """Build the cache, run every round, remove the cache; the results as a dict."""
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="safemodel-hfcache-", dir="/tmp"))
    try:
        cache_dir = work / "hub"
        t0 = time.perf_counter()
        builder = build_cache(cache_dir, size_gb, log)
        blobs = sorted(builder.blobs)
        total = sum(builder.blobs.values())
        log(f"cache: {len(blobs)} blobs, {total / 1e9:.2f} GB in {time.perf_counter() - t0:.0f}s")
        env = dict(os.environ, **QUIET_ENV)
        safemodel = [sys.executable, "-m", "safemodel_ci", "cache", "--cache-dir", str(cache_dir),
                     "--no-cache", "--format", "json", "--output"]
        one_thread = dict(env, SAFEMODEL_HASH_THREADS="1")
        commands: Dict[str, Tuple[List[str], Optional[Path], Dict[str, str]]] = {
            "cat (read only)": (["cat", "--"] + blobs, None, env),
            "sha256sum": (["sha256sum", "--"] + blobs, None, env)}
        if shutil.which("openssl"):
            commands["openssl dgst -sha256"] = (["openssl", "dgst", "-sha256"] + blobs, None, env)
        commands.update({
            "safemodel cache": (safemodel + [str(work / "verify.json")], work / "verify.json", env),
            "safemodel cache, 1 hash thread": (safemodel + [str(work / "verify1.json")],
                                               work / "verify1.json", one_thread),
            "safemodel cache --no-verify": (safemodel + [str(work / "noverify.json"), "--no-verify"],
                                            work / "noverify.json", env),
        })
        samples: Dict[str, List[Tuple[float, float]]] = {k: [] for k in commands}
        reports: Dict[str, Dict[str, Any]] = {}
        timed([sys.executable, "-m", "safemodel_ci", "--help"], env)  # .pyc written before timing
        for round_no in range(repeat):
            for label, (cmd, report, cmd_env) in commands.items():
                if cold:
                    evict(blobs)
                wall, cpu, code = timed(cmd, cmd_env)
                if code != 0:
                    _fail(f"{label} exited {code}")
                samples[label].append((wall, cpu))
                if report is not None:
                    reports[label] = json.loads(report.read_text())["extra"]["cache"]
                log(f"round {round_no + 1}: {label:31} wall {wall:6.2f}s  CPU {cpu:6.2f}s  "
                    f"{total / wall / 1e6:7.0f} MB/s")
        load = os.getloadavg()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = {}
    for label, got in samples.items():
        wall = statistics.median(w for w, _ in got)
        cpu = statistics.median(c for _, c in got)
        rows[label] = {"walls": [w for w, _ in got], "cpus": [c for _, c in got], "wall": wall, "cpu": cpu,
                       "mb_per_s": total / wall / 1e6, "mb_per_cpu_s": total / cpu / 1e6}
    ref = rows["sha256sum"]
    for row in rows.values():
        row["ratio"] = row["mb_per_s"] / ref["mb_per_s"]
        row["cpu_ratio"] = row["mb_per_cpu_s"] / ref["mb_per_cpu_s"]
    verify, noverify = reports["safemodel cache"], reports["safemodel cache --no-verify"]
    for label in ("safemodel cache", "safemodel cache, 1 hash thread"):
        if not reports[label]["verified"] or reports[label]["bytes_hashed"] != total:  # each blob, once
            _fail(f"{label}: not every blob hashed once: {reports[label]}")
    if noverify["verified"] or noverify["bytes_hashed"] != 0:
        _fail(f"--no-verify hashed: {noverify}")
    return {"blobs": len(blobs), "bytes": total, "repeat": repeat, "cold": cold, "cpus": os.cpu_count(),
            "loadavg_after": load, "rows": rows, "goal": GOAL,
            "verified": {k: verify[k] for k in ("blobs_scanned", "blobs_hashed", "bytes_hashed", "files")},
            "ok": rows["safemodel cache"]["ratio"] >= GOAL}


def _fail(message: str) -> None:
    """A broken run (exit 2), told apart from a goal not met (exit 1)."""
    print(f"[hf-cache] FAILED: {message}", file=sys.stderr)
    raise SystemExit(2)


def render(result: Dict[str, Any]) -> str:
    """The results as a Markdown table with the conditions they were measured in."""
    rows = result["rows"]
    lines = [f"HF cache hashing: {result['blobs']} blobs, {result['bytes'] / 1e9:.2f} GB "
             f"({'evicted from the page cache before each run' if result['cold'] else 'in the page cache'}); "
             f"median of {result['repeat']} rounds; {result['cpus']} CPUs, load average after "
             f"{result['loadavg_after'][0]:.1f}.", "",
             "| command | wall s | CPU s | MB/s (wall) | x sha256sum | MB per CPU s | goal |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, row in rows.items():
        goal = ""
        if label == "safemodel cache":
            goal = f"{'met' if row['ratio'] >= GOAL else 'NOT met'} (>= {GOAL}x sha256sum)"
        lines.append(f"| `{label}` | {row['wall']:.2f} | {row['cpu']:.2f} | {row['mb_per_s']:.0f} | "
                     f"{row['ratio']:.2f} | {row['mb_per_cpu_s']:.0f} | {goal} |")
    v = result["verified"]
    lines += ["", f"`safemodel cache` verified {v['blobs_hashed']} of {v['blobs_scanned']} blobs "
                  f"({v['bytes_hashed'] / 1e9:.2f} GB, each once) for {v['files']} snapshot files; "
                  "`--no-verify` hashed 0 bytes."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=2.5, help="size of the cache to build (default 2.5)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the table gives medians (default 3)")
    ap.add_argument("--cold", action="store_true",
                    help="evict the blobs from the page cache before every run (reads from the disk)")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--keep", metavar="DIR", help="build the cache in DIR and keep it (default: a temp dir "
                                                  "under /tmp, removed)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[hf-cache] {msg}", file=sys.stderr, flush=True)

    result = run(args.size_gb, max(1, args.repeat), args.cold, args.keep, log)
    table = render(result)
    result["table"] = table
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(table)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
