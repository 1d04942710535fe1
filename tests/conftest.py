"""Shared fixtures. The attack corpus lives in ../shared beside the clone (CI has it, users may not)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Test files live in sub-folders that mirror the package (tests/formats/, tests/sources/, ...); the
# helpers they share (hub_server, pickle_oracle, fixture_factory, ...) stay here, importable by name
# whatever pytest's import mode.
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
SHARED = REPO_ROOT.parent / "shared"
CORPUS = SHARED / "corpus" / "picklescan"
SARIF_SCHEMA = SHARED / "schemas" / "sarif-schema-2.1.0.json"
#: Malicious fixtures (tests/test_canary.py) create this file if they are ever loaded. One per pytest
#: process, so concurrent sessions do not see each other's; it must not exist when the session ends.
CANARY = Path(tempfile.gettempdir()) / f"safemodel-ci-canary-{os.getpid()}"


@pytest.fixture(scope="session")
def canary_path() -> Path:
    return CANARY


def pytest_sessionstart(session: pytest.Session) -> None:
    if CANARY.exists():
        CANARY.unlink()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if CANARY.exists():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"CANARY {CANARY} EXISTS: a scanned payload was executed", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not (CORPUS / "manifest.json").is_file():
        pytest.skip(f"attack corpus not found at {CORPUS} (it sits beside the clone in CI)")
    return CORPUS


@pytest.fixture(scope="session")
def sarif_schema_path() -> Path:
    if not SARIF_SCHEMA.is_file():
        pytest.skip(f"SARIF schema not found at {SARIF_SCHEMA} (it sits beside the clone in CI)")
    return SARIF_SCHEMA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the user's result cache, nor one another's (results would leak)."""
    monkeypatch.setenv("SAFEMODEL_CACHE_DIR", str(tmp_path_factory.mktemp("safemodel-cache")))
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def remove_deep_tree(top: str) -> None:
    """Delete a folder tree of any depth without recursion (shutil.rmtree and pytest's clean-up of
    old temporary folders recurse, and fail on trees nested deeper than the recursion limit)."""
    stack = [top]
    while stack:
        directory = stack[-1]
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            stack.pop()
            continue
        subdirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                os.unlink(e.path)
        if subdirs:
            stack.extend(subdirs)
        else:
            os.rmdir(directory)
            stack.pop()
