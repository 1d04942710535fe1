"""End to end: the real ``pre-commit`` executable runs the ``safemodel-scan`` hook in real git repos.

The hook repo is a snapshot of this working tree committed into a temporary git repo (so the
tests see uncommitted work; in CI the snapshot equals the clone). pre-commit builds the hook's
virtualenv once per session (``PRE_COMMIT_HOME`` is a session temp dir) with ``pip install .``,
offline, from a wheelhouse: ``$SAFEMODEL_WHEELHOUSE`` or ``.pytest_cache/d/safemodel-wheelhouse``,
filled from the package index on the first run only (see docs/development.md).
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
HOOK_ID = "safemodel-scan"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "safemodel test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "safemodel test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
}

if shutil.which("git") is None:  # pragma: no cover - git is part of every dev and CI machine
    pytest.skip("git is not installed", allow_module_level=True)


class _SystemPayload:
    """Pickles to ``os.system(...)``; dumping it does not run anything."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


MALICIOUS_PICKLE = pickle.dumps({"weights": [0.5, 1.5], "hook": _SystemPayload()}, protocol=2)


def _run(cmd: List[str], cwd: Path, env: Dict[str, str], check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}")
    return proc


def _snapshot_of_this_project(dest: Path, env: Dict[str, str]) -> str:
    """Copy the working tree (tracked and untracked, not ignored) into a fresh git repo; commit it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    dest.mkdir(parents=True)
    if listed.returncode == 0:
        for rel in filter(None, listed.stdout.decode().split("\0")):
            src = REPO_ROOT / rel
            if src.is_file():  # a tracked file deleted in the working tree is absent
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:  # an unpacked sdist: no git metadata
        shutil.copytree(REPO_ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    _run(["git", "init", "-q"], dest, env, check=True)
    _run(["git", "add", "-A"], dest, env, check=True)
    _run(["git", "commit", "-q", "--no-verify", "-m", "snapshot"], dest, env, check=True)
    return _run(["git", "rev-parse", "HEAD"], dest, env, check=True).stdout.strip()


def _fill_wheelhouse(wheelhouse: Path, project: Path) -> Optional[str]:
    """Wheels for the hook's dependencies and build backend; offline first. Returns an error or None."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
            "--wheel-dir", str(wheelhouse), "--find-links", str(wheelhouse)]
    wanted = ["setuptools>=61", "wheel", str(project)]
    error = None
    for extra in (["--no-index"], []):  # offline from the wheelhouse, else fill it from the index
        proc = subprocess.run(base + extra + wanted, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        if proc.returncode == 0:
            error = None
            break
        error = proc.stdout[-2000:]
    # pre-commit builds the project itself from the hook repo; a stale wheel of it must not linger.
    for stale in wheelhouse.glob("safemodel_ci-*.whl"):
        stale.unlink()
    return error


@pytest.fixture(scope="session")
def hook_env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Dict[str, str]:
    """Environment for git/pre-commit runs: isolated PRE_COMMIT_HOME with the hook env built once."""
    if shutil.which("pre-commit") is None and subprocess.run(
            [sys.executable, "-m", "pre_commit", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pre-commit is not installed")
    base = tmp_path_factory.mktemp("pre-commit-session")
    env = dict(os.environ, **GIT_IDENTITY)
    env.pop("GIT_DIR", None)
    env.pop("GIT_INDEX_FILE", None)
    project = base / "hook-repo"
    sha = _snapshot_of_this_project(project, env)

    configured = os.environ.get("SAFEMODEL_WHEELHOUSE")
    if configured:
        wheelhouse = Path(configured)
    elif getattr(request.config, "cache", None) is not None:
        wheelhouse = request.config.cache.mkdir("safemodel-wheelhouse")
    else:
        wheelhouse = base / "wheelhouse"
    error = _fill_wheelhouse(wheelhouse, project)
    if error:
        pytest.skip(f"hook dependencies not available offline and the package index failed: {error}")

    env.update({
        "PRE_COMMIT_HOME": str(base / "pre-commit-home"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "SAFEMODEL_TEST_HOOK_REPO": str(project),
        "SAFEMODEL_TEST_HOOK_REV": sha,
    })
    # Build the hook environment once, here, so every test below only runs it.
    warmup = base / "warmup"
    _init_repo(warmup, env)
    _run([sys.executable, "-m", "pre_commit", "install-hooks"], warmup, env, check=True)
    return env


def _init_repo(path: Path, env: Dict[str, str], hook_id: str = HOOK_ID) -> None:
    """A git repo whose .pre-commit-config.yaml uses this project's hook at the snapshot commit."""
    path.mkdir(parents=True, exist_ok=True)
    _run(["git", "init", "-q"], path, env, check=True)
    (path / ".pre-commit-config.yaml").write_text(
        "repos:\n"
        f"  - repo: {env['SAFEMODEL_TEST_HOOK_REPO']}\n"
        f"    rev: {env['SAFEMODEL_TEST_HOOK_REV']}\n"
        "    hooks:\n"
        f"      - id: {hook_id}\n", encoding="utf-8")


@pytest.fixture()
def repo(tmp_path: Path, hook_env: Dict[str, str]) -> Path:
    """A fresh repo with the hook installed as the git pre-commit hook and the config committed."""
    path = tmp_path / "project"
    _init_repo(path, hook_env)
    _run([sys.executable, "-m", "pre_commit", "install"], path, hook_env, check=True)
    _commit(path, hook_env, ".pre-commit-config.yaml", check=True)
    return path


def _commit(path: Path, env: Dict[str, str], *files: str, check: bool = False) -> subprocess.CompletedProcess:
    _run(["git", "add", "--", *files], path, env, check=True)
    return _run(["git", "commit", "-m", f"add {' '.join(files)}"], path, env, check=check)


def _committed(path: Path, env: Dict[str, str], name: str) -> bool:
    return _run(["git", "cat-file", "-e", f"HEAD:{name}"], path, env).returncode == 0


def _run_hook(path: Path, env: Dict[str, str], *files: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "pre_commit", "run", HOOK_ID, "--files", *files], path, env)


def test_run_files_names_the_malicious_pickle(repo: Path, hook_env: Dict[str, str]) -> None:
    (repo / "models").mkdir()
    (repo / "models" / "evil.pkl").write_bytes(MALICIOUS_PICKLE)
    proc = _run_hook(repo, hook_env, "models/evil.pkl")
    assert proc.returncode == 1, proc.stdout
    assert "models/evil.pkl: CRITICAL pickle-dangerous-global" in proc.stdout
    assert "Failed" in proc.stdout


def test_commit_of_malicious_pickle_is_blocked(repo: Path, hook_env: Dict[str, str]) -> None:
    (repo / "model.pt").write_bytes(MALICIOUS_PICKLE)
    proc = _commit(repo, hook_env, "model.pt")
    assert proc.returncode != 0, proc.stdout
    assert "model.pt: CRITICAL" in proc.stdout
    assert not _committed(repo, hook_env, "model.pt")


def test_benign_safetensors_and_torch_checkpoint_commit_cleanly(repo: Path, hook_env: Dict[str, str]) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = {"layer.weight": torch.randn(8, 4), "layer.bias": torch.zeros(8)}
    safetensors_torch.save_file(weights, str(repo / "model.safetensors"), metadata={"format": "pt"})
    torch.save({"state_dict": weights, "epoch": 3}, str(repo / "checkpoint.pt"))
    proc = _commit(repo, hook_env, "model.safetensors", "checkpoint.pt")
    assert proc.returncode == 0, proc.stdout
    assert "Passed" in proc.stdout
    assert _committed(repo, hook_env, "model.safetensors") and _committed(repo, hook_env, "checkpoint.pt")


def test_staged_malicious_content_blocks_despite_harmless_unstaged_edit(
        repo: Path, hook_env: Dict[str, str]) -> None:
    model = repo / "model.pkl"
    model.write_bytes(MALICIOUS_PICKLE)
    _run(["git", "add", "model.pkl"], repo, hook_env, check=True)
    harmless = pickle.dumps({"weights": [0.5, 1.5]}, protocol=2)
    model.write_bytes(harmless)  # unstaged: pre-commit must scan what is staged, not this
    proc = _run(["git", "commit", "-m", "add model"], repo, hook_env)
    assert proc.returncode != 0, proc.stdout
    assert "model.pkl: CRITICAL pickle-dangerous-global" in proc.stdout
    assert "Stashing unstaged files" in proc.stdout
    assert not _committed(repo, hook_env, "model.pkl")
    assert model.read_bytes() == harmless  # pre-commit put the unstaged edit back


def test_lfs_pointer_without_content_blocks(repo: Path, hook_env: Dict[str, str]) -> None:
    oid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
    (repo / "pytorch_model.bin").write_bytes(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 1048576\n".encode())
    proc = _commit(repo, hook_env, "pytorch_model.bin")
    assert proc.returncode != 0, proc.stdout
    assert "pytorch_model.bin: UNSCANNED lfs-pointer-missing" in proc.stdout
    assert not _committed(repo, hook_env, "pytorch_model.bin")


@pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
def test_lfs_tracked_malicious_file_blocks(repo: Path, hook_env: Dict[str, str]) -> None:
    _run(["git", "lfs", "install", "--local"], repo, hook_env, check=True)
    _run(["git", "lfs", "track", "*.pkl"], repo, hook_env, check=True)
    _commit(repo, hook_env, ".gitattributes", check=True)
    (repo / "evil.pkl").write_bytes(MALICIOUS_PICKLE)
    proc = _commit(repo, hook_env, "evil.pkl")
    assert proc.returncode != 0, proc.stdout
    assert "evil.pkl: CRITICAL pickle-dangerous-global" in proc.stdout
    # The index holds an LFS pointer; the object sits in the repo's LFS store.
    staged = _run(["git", "show", ":evil.pkl"], repo, hook_env, check=True).stdout
    assert staged.startswith("version https://git-lfs.github.com/spec/v1")
    # A working tree left with the pointer (a GIT_LFS_SKIP_SMUDGE clone): the object is read instead.
    (repo / "evil.pkl").write_text(staged)
    proc = _run_hook(repo, hook_env, "evil.pkl")
    assert proc.returncode == 1, proc.stdout
    assert "evil.pkl" in proc.stdout and "pickle-dangerous-global" in proc.stdout


def test_commit_of_renamed_pickles_is_blocked(repo: Path, hook_env: Dict[str, str]) -> None:
    """No model name: the binary pickle and the printable (protocol 0) one are found by content."""
    (repo / "weights.dat").write_bytes(MALICIOUS_PICKLE)
    (repo / "model_weights").write_bytes(pickle.dumps({"hook": _SystemPayload()}, protocol=0))
    (repo / "train.py").write_text("import torch\n")
    proc = _commit(repo, hook_env, "weights.dat", "model_weights", "train.py")
    assert proc.returncode != 0, proc.stdout
    assert "weights.dat: CRITICAL pickle-dangerous-global" in proc.stdout
    assert "model_weights: CRITICAL pickle-dangerous-global" in proc.stdout
    assert "(no files to check)" not in proc.stdout
    assert not _committed(repo, hook_env, "weights.dat") and not _committed(repo, hook_env, "model_weights")
    # Source files alone pass.
    _run(["git", "reset", "-q"], repo, hook_env, check=True)
    assert _commit(repo, hook_env, "train.py").returncode == 0


def test_scan_all_hook_scans_text_files_by_content(tmp_path: Path, hook_env: Dict[str, str]) -> None:
    path = tmp_path / "project"
    _init_repo(path, hook_env, hook_id="safemodel-scan-all")
    _run([sys.executable, "-m", "pre_commit", "install"], path, hook_env, check=True)
    _commit(path, hook_env, ".pre-commit-config.yaml", check=True)
    # A Keras model config saved under a text name: printable, no pickle, only a by-content scan sees it.
    (path / "arch.cfg").write_text(
        '{"module": "keras", "class_name": "Sequential", "registered_name": null, "config": {"name": "s", '
        '"layers": [{"module": "evil_pkg.layers", "class_name": "Backdoor", "registered_name": "Backdoor", '
        '"config": {"name": "b"}}]}}')
    proc = _commit(path, hook_env, "arch.cfg")
    assert proc.returncode != 0, proc.stdout
    assert "arch.cfg: HIGH keras-unsafe-module" in proc.stdout
    assert not _committed(path, hook_env, "arch.cfg")
