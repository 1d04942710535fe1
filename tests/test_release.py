"""Release hygiene: one version, a license, a changelog, a security policy, and docs that only show
install commands that work today (no tag or PyPI package before the first release)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

import safemodel_ci

ROOT = Path(__file__).resolve().parent.parent


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_version_is_single_sourced_in_the_package() -> None:
    pyproject = read("pyproject.toml")
    assert re.search(r'^dynamic = \["version"\]$', pyproject, re.M)
    assert not re.search(r'^version = "', pyproject, re.M)
    assert 'version = { attr = "safemodel_ci.__version__" }' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+", safemodel_ci.__version__)
    out = subprocess.run([sys.executable, "-m", "safemodel_ci", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == f"safemodel-ci {safemodel_ci.__version__}"


def test_installed_metadata_carries_the_package_version_and_project_urls() -> None:
    from importlib import metadata

    try:
        dist = metadata.distribution("safemodel-ci")
    except metadata.PackageNotFoundError:
        pytest.skip("safemodel-ci is not installed (run from a clone without pip install)")
    if Path(str(dist.locate_file("safemodel_ci"))).resolve() != Path(safemodel_ci.__file__).parent.resolve():
        # another copy is installed; an editable install of this clone maps to the clone
        if not str(safemodel_ci.__file__).startswith(str(ROOT)):
            pytest.skip("the installed safemodel-ci is another copy")
    assert dist.version == safemodel_ci.__version__
    urls = dict(u.split(", ", 1) for u in dist.metadata.get_all("Project-URL") or [])
    assert {"Source", "Issues", "Changelog", "Security"} <= set(urls)
    classifiers = dist.metadata.get_all("Classifier") or []
    assert "License :: OSI Approved :: Apache Software License" in classifiers


def test_license_is_the_full_apache_2_text() -> None:
    text = read("LICENSE")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000
    assert 'license = { text = "Apache-2.0" }' in read("pyproject.toml")


def test_changelog_and_security_policy() -> None:
    changelog = read("CHANGELOG.md")
    assert f"## [{safemodel_ci.__version__}]" in changelog and "## [Unreleased]" in changelog
    security = read("SECURITY.md")
    assert "Report a vulnerability" in security and "bypass" in security
    releasing = read("RELEASING.md")
    assert "git tag -a vX.Y.Z" in releasing and "git tag -fa v1" in releasing


def released() -> bool:
    """Whether the current version's changelog entry carries a release date."""
    m = re.search(rf"^## \[{re.escape(safemodel_ci.__version__)}\] - (\S+)", read("CHANGELOG.md"), re.M)
    return bool(m and re.fullmatch(r"\d{4}-\d{2}-\d{2}", m.group(1)))


def user_docs() -> List[str]:
    """The README and every page under docs/: what users copy install commands from."""
    return ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))


def test_readme_installs_from_git_until_a_release_exists() -> None:
    if released():
        pytest.skip("released: tags and the PyPI package exist")
    assert len(user_docs()) > 1, "docs/ pages not found"
    from_pypi = []
    for name in user_docs():
        text = read(name)
        assert not re.search(r"^\s*rev: v\d", text, re.M), f"{name}: pre-commit rev: a tag not yet made"
        assert not re.search(r"uses: safemodel-ci/safemodel-ci@v\d", text), f"{name}: an Action tag to come"
        for line in text.splitlines():
            if "pip install" not in line:
                continue
            tokens = shlex.split(line.split("pip install", 1)[1].split("`")[0].split("&&")[0], comments=True)
            for i, token in enumerate(tokens):
                if re.fullmatch(r"safemodel-ci(\[[\w,]+\])?", token) and tokens[i + 1:i + 2] != ["@"]:
                    from_pypi.append(f"{name}: {line}")
    assert not from_pypi, f"pip install from PyPI before a release: {from_pypi}"
    assert "git+https://github.com/safemodel-ci/safemodel-ci@<commit-sha>" in read("README.md")


def test_ci_runs_the_readme_test_command_and_the_declared_hub_range() -> None:
    readme_lines = read("README.md").splitlines()
    test_line = next(line for line in readme_lines[:8] if line.endswith("# run the test suite"))
    command = test_line.split("#")[0].strip()
    ci = read(".ci/run")
    assert f'TEST_COMMAND="{command}"' in ci and 'eval "$TEST_COMMAND"' in ci
    oldest = re.search(r"^HF_OLDEST=(\S+)$", ci, re.M).group(1)  # type: ignore[union-attr]
    major = re.search(r"^HF_NEXT_MAJOR=(\S+)$", ci, re.M).group(1)  # type: ignore[union-attr]
    assert f'"huggingface_hub>={oldest},<{major}"' in read("pyproject.toml")
