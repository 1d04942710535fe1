"""Benchmark: what the content-selecting pre-commit hook costs on a commit of source files only.

    python3 bench/pre_commit_source_commit.py [--files 1000] [--runs 5] [--before REV] [--wheelhouse DIR]

Two hook repositories are built: "before" is this project at ``--before`` (a revision whose hook
matched model names in the manifest, so pre-commit skipped it on a source-only commit), "after" is
the working tree (the hooks receive every staged file and select by name or first bytes). A fresh
git repo gets ``--files`` staged source files (Python, Markdown, JSON, YAML, text: what a code
commit holds; most start with a letter that is also a pickle opcode, the costly case for the
sniffer), and ``pre-commit run HOOK`` (what ``git commit`` runs: the staged files) is timed for
each hook, ``--runs`` times, after one warm-up. Reported: wall seconds and CPU seconds of
pre-commit and its hook processes (user + system of the waited-for children), median of the runs.

The hook environments are built by the real pre-commit with ``pip install .`` offline from a
wheelhouse (the one ``tests/integrations/test_pre_commit_e2e.py`` fills:
``.pytest_cache/d/safemodel-wheelhouse``).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def run(cmd: List[str], cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc


def hook_repo_at(rev: str, dest: Path, env: Dict[str, str]) -> str:
    """A git repo holding this project at ``rev`` ("WORKTREE": the working tree); returns its HEAD."""
    dest.mkdir(parents=True)
    if rev == "WORKTREE":
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=str(ROOT), stdout=subprocess.PIPE, check=True).stdout.decode()
        for rel in filter(None, listed.split("\0")):
            if (ROOT / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=str(ROOT), stdout=subprocess.PIPE,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "--no-verify", "-m", "snapshot"], dest, env)
    return run(["git", "rev-parse", "HEAD"], dest, env).stdout.strip()


def source_files(repo: Path, n: int) -> List[str]:
    """``n`` text files of a code commit, 1-6 KB each (seeded: the same files every time)."""
    rng = random.Random(0)
    words = ["model", "layer", "weights", "config", "train", "batch", "loss", "tensor", "shape", "eval"]
    names: List[str] = []
    for i in range(n):
        kind = i % 10
        body = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(rng.randint(15, 80)))
        if kind < 6:
            name = f"src/pkg{i % 20}/mod{i}.py"
            text = f'import os\nfrom typing import List\n\n\nclass C{i}:\n    """{body}"""\n'
        elif kind == 6:
            name, text = f"docs/page{i}.md", f"# Page {i}\n\n{body}\n"
        elif kind == 7:
            name = f"configs/c{i}.json"
            text = '{"name": "c%d", "text": "%s"}\n' % (i, body.replace("\n", " "))
        elif kind == 8:
            name, text = f"configs/c{i}.yaml", f"name: c{i}\nlayers: 4\ntext: >\n  {body[:500]}\n"
        else:
            name, text = f"data/notes{i}.txt", f"{body}\n"
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        names.append(name)
    return names


def timed(cmd: List[str], cwd: Path, env: Dict[str, str]) -> Tuple[float, float, str]:
    """(wall s, CPU s of the children), output; children are pre-commit and the hooks it ran."""
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if proc.returncode != 0:
        raise SystemExit(f"hook failed on source files:\n{proc.stdout[-3000:]}")
    return wall, cpu, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", default="e8ebabc", help="revision of today's (name-matched) hook")
    ap.add_argument("--wheelhouse", default=str(ROOT / ".pytest_cache" / "d" / "safemodel-wheelhouse"))
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="safemodel-bench-"))
    env = dict(os.environ, **IDENTITY, PRE_COMMIT_HOME=str(work / "pre-commit-home"), PIP_NO_INDEX="1",
               PIP_FIND_LINKS=args.wheelhouse, PIP_DISABLE_PIP_VERSION_CHECK="1", SAFEMODEL_NO_CACHE="1")
    for var in ("GIT_DIR", "GIT_INDEX_FILE", "CI"):
        env.pop(var, None)
    try:
        hooks = [("before: safemodel-scan", args.before, "safemodel-scan"),
                 ("after: safemodel-scan", "WORKTREE", "safemodel-scan"),
                 ("after: safemodel-scan-all", "WORKTREE", "safemodel-scan-all")]
        revs = {rev: hook_repo_at(rev, work / f"hook-{i}", env) for i, rev in enumerate(dict.fromkeys(
            rev for _, rev, _ in hooks))}
        repo = work / "project"
        repo.mkdir()
        run(["git", "init", "-q"], repo, env)
        names = source_files(repo, args.files)
        run(["git", "add", "-A"], repo, env)
        results = []
        for label, rev, hook_id in hooks:
            path = work / f"hook-{list(revs).index(rev)}"
            (repo / ".pre-commit-config.yaml").write_text(
                f"repos:\n  - repo: {path}\n    rev: {revs[rev]}\n    hooks:\n      - id: {hook_id}\n")
            run(["git", "add", ".pre-commit-config.yaml"], repo, env)
            run([sys.executable, "-m", "pre_commit", "install-hooks"], repo, env)
            cmd = [sys.executable, "-m", "pre_commit", "run", hook_id]
            _, _, out = timed(cmd, repo, env)  # warm-up (page cache, pre-commit's own caches)
            walls, cpus = [], []
            for _ in range(args.runs):
                wall, cpu, out = timed(cmd, repo, env)
                walls.append(wall)
                cpus.append(cpu)
            status = out.strip().splitlines()[-1] if out.strip() else ""
            results.append((label, statistics.median(walls), statistics.median(cpus), status))
        print(f"{len(names)} staged source files, {sum((repo / n).stat().st_size for n in names):,} bytes; "
              f"median of {args.runs} runs of `pre-commit run HOOK`")
        base_wall, base_cpu = results[0][1], results[0][2]
        for label, wall, cpu, status in results:
            print(f"{label:28} wall {wall:.3f} s (+{wall - base_wall:.3f})  CPU {cpu:.3f} s "
                  f"(+{cpu - base_cpu:.3f})  [{status.strip()}]")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
