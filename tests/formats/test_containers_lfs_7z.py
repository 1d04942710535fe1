"""Git LFS pointers (real git + git-lfs in a tmp repo), 7z archives, and the attack corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from container_support import (
    assert_benign,
    assert_malicious,
    benign_pickle,
    evil_pickle,
    find,
    needs_vm,
    scan,
)

from safemodel_ci.formats.lfs import LfsPointerReader, parse_pointer
from safemodel_ci.source import BytesSource

OID = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
           b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
           b"size 12345\n")


def test_pointer_parsing() -> None:
    assert parse_pointer(POINTER) == (OID, 12345)
    assert parse_pointer(POINTER.replace(b"size 12345", b"size many")) is None
    assert parse_pointer(b"version https://example.com/spec\n" + POINTER.split(b"\n", 1)[1]) is None
    assert not LfsPointerReader().detect(BytesSource(POINTER + b"x" * 2000), POINTER)


def test_pointer_outside_a_repository_is_unscanned(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(POINTER)
    code, result = scan(tmp_path / "model.bin")
    assert code == 2
    missing = find(result, "lfs-pointer-missing")
    assert missing and "git lfs pull" in missing[0].message


def _git(cwd: Path, *args: str, env: "dict[str, str] | None" = None) -> str:
    full_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", **(env or {})}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=full_env).stdout


@pytest.fixture
def lfs_repo(tmp_path: Path) -> Path:
    """A repo whose model.bin (a malicious pickle) and ok.bin are in LFS, and pointers in the tree."""
    if shutil.which("git-lfs") is None:
        pytest.skip("git-lfs is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "lfs", "install", "--local")
    _git(repo, "lfs", "track", "*.bin")
    (repo / "model.bin").write_bytes(evil_pickle())
    (repo / "ok.bin").write_bytes(benign_pickle())
    _git(repo, "add", ".gitattributes", "model.bin", "ok.bin")
    _git(repo, "commit", "-q", "-m", "models")
    for name in ("model.bin", "ok.bin"):
        pointer = _git(repo, "lfs", "pointer", f"--file={name}")
        (repo / name).write_text(pointer)  # what a checkout without LFS smudging leaves
    return repo


@needs_vm
def test_pointer_with_local_object_is_scanned_in_its_place(lfs_repo: Path) -> None:
    result = assert_malicious(lfs_repo / "model.bin", member="<lfs object>")
    assert "lfs-pointer" in result.formats
    assert_benign(lfs_repo / "ok.bin")


@needs_vm
def test_tampered_object_is_reported(lfs_repo: Path) -> None:
    oid, _ = parse_pointer((lfs_repo / "ok.bin").read_bytes())  # type: ignore[misc]
    obj = lfs_repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    os.chmod(obj, 0o644)
    obj.write_bytes(evil_pickle())
    code, result = scan(lfs_repo / "ok.bin")
    assert code == 1
    assert "lfs-object-mismatch" in [f.rule_id for f in result.findings]


def test_clone_without_lfs_content_is_unscanned(lfs_repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(lfs_repo), str(clone), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert parse_pointer((clone / "model.bin").read_bytes()) is not None
    code, result = scan(clone / "model.bin")
    assert code == 2
    assert find(result, "lfs-pointer-missing")


# -- 7z ------------------------------------------------------------------------------------------

@needs_vm
def test_7z_members_are_scanned(tmp_path: Path) -> None:
    py7zr = pytest.importorskip("py7zr")
    with py7zr.SevenZipFile(tmp_path / "evil.7z", "w") as archive:
        archive.writestr(b"notes", "readme.txt")
        archive.writestr(evil_pickle(), "model/weights.bin")
    assert_malicious(tmp_path / "evil.7z", member="model/weights.bin")
    with py7zr.SevenZipFile(tmp_path / "ok.7z", "w") as archive:
        archive.writestr(benign_pickle(), "model.pkl")
    assert_benign(tmp_path / "ok.7z")


def test_7z_without_py7zr_is_unscanned(corpus_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "py7zr", None)
    code, result = scan(corpus_dir / "malicious1.7z")
    assert code == 2
    assert find(result, "unscanned-unsupported")


# -- the attack corpus ---------------------------------------------------------------------------

CORPUS_CONTAINERS = ["malicious1.zip", "malicious1_0x1.zip", "malicious1_0x20.zip", "malicious1_0x40.zip",
                     "malicious1_central_directory.zip", "malicious1_wrong_ext.zip",
                     "benign_password_protected.zip", "pytorch_model.bin", "new_pytorch_model.bin",
                     "pytorch_magic_bypass.pt", "malicious1.7z"]


@needs_vm
@pytest.mark.parametrize("name", CORPUS_CONTAINERS)
def test_corpus_containers_get_their_manifest_verdict(corpus_dir: Path, name: str) -> None:
    verdict = json.loads((corpus_dir / "manifest.json").read_text())[name]
    code, result = scan(corpus_dir / name)
    if verdict == "malicious":
        assert code == 1, [f.to_dict() for f in result.findings]
    elif verdict == "benign":
        assert code == 0, [f.to_dict() for f in result.findings]
    else:
        assert code != 1, [f.to_dict() for f in result.findings]


@needs_vm
def test_corpus_via_the_command_line(corpus_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "safemodel_ci", "scan", "--format", "json",
                           str(corpus_dir / "malicious1_0x1.zip")], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    hits = [f for f in report["files"][0]["findings"] if f["severity"] == "CRITICAL"]
    assert hits and hits[0]["member"] == "model/config.pkl" and hits[0]["offset"] is not None


# -- dill and cloudpickle (their code-building globals are in the pickle policy) ------------------

def _code_pickles(tmp_path: Path, module: str) -> Path:
    lib = pytest.importorskip(module)
    path = tmp_path / f"{module}.pkl"
    path.write_bytes(lib.dumps(lambda x: x + 1))  # a function is pickled as code
    return path


@needs_vm
@pytest.mark.parametrize("module", ["dill", "cloudpickle"])
def test_dill_and_cloudpickle_functions_are_critical(tmp_path: Path, module: str) -> None:
    path = _code_pickles(tmp_path, module)
    result = assert_malicious(path)
    assert any(f.severity.name == "CRITICAL" for f in result.findings)
    # The same pickle inside a zlib-compressed (joblib-style) file and inside a zip is found too.
    wrapped = tmp_path / f"{module}.joblib"
    wrapped.write_bytes(zlib.compress(path.read_bytes()))
    assert_malicious(wrapped, member="<zlib>")
    with zipfile.ZipFile(tmp_path / f"{module}.zip", "w") as zf:
        zf.write(path, "model/func.pkl")
    assert_malicious(tmp_path / f"{module}.zip", member="model/func.pkl")
