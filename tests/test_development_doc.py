"""docs/development.md's example reader works as the page says: its code, taken from the page as
written, is installed as ``safemodel_ci.formats.ar`` with the page's row added to the detector
table, and a real ``ar`` archive (made by GNU ar) holding a malicious pickle is scanned. Nothing is
loaded: the pickle is made with ``pickle.dumps`` and only read by the scanner."""

from __future__ import annotations

import ast
import os
import pickle
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Tuple

import pytest

from conftest import REPO_ROOT
from safemodel_ci import formats, scanner
from safemodel_ci.scanner import ScanOptions, scan_file
from test_architecture import HELPER_UNITS, LOW_MODULES

DOC = REPO_ROOT / "docs" / "development.md"


def _example() -> Tuple[str, str, str]:
    """(module code, row code, module path) as the page shows them."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Adding a format reader"):]
    module = re.search(r"<!-- example-reader: (\S+) -->\n```python\n(.*?)^```", section, re.S | re.M)
    row = re.search(r"<!-- example-row -->\n```python\n(.*?)^```", section, re.S | re.M)
    assert module and row, "the example blocks are marked in docs/development.md"
    return module.group(2), row.group(1), module.group(1)


class _Payload:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (self.cmd,))


@pytest.fixture()
def example_reader(monkeypatch: pytest.MonkeyPatch) -> str:
    code, row_code, path = _example()
    assert path == "safemodel_ci/formats/ar.py"
    module = types.ModuleType("safemodel_ci.formats.ar")
    module.__package__ = "safemodel_ci.formats"
    module.__file__ = str(REPO_ROOT / path)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, path, "exec"), module.__dict__)  # noqa: S102 - the page's own code
    row = eval(row_code.strip().rstrip(","), vars(formats))  # noqa: S307 - the page's own row
    monkeypatch.setattr(formats, "ROWS", formats.ROWS + (row,))
    monkeypatch.setattr(formats, "_loaded", dict(formats._loaded))
    monkeypatch.setattr(scanner, "_tiny_detected", {})
    return code


def test_example_is_about_thirty_lines_and_keeps_to_the_contract() -> None:
    code, _, _ = _example()
    lines = [line for line in code.splitlines() if line.strip()]
    assert 25 <= len(lines) <= 45, len(lines)
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = ("safemodel_ci." if node.level == 2 else "safemodel_ci.formats.") + (node.module or "")
            unit = target.split(".")[2] if target.startswith("safemodel_ci.formats.") else ""
            assert target in LOW_MODULES or unit in HELPER_UNITS, target


@pytest.mark.skipif(shutil.which("ar") is None, reason="GNU ar (binutils) is not installed")
def test_example_reader_finds_what_the_page_says(example_reader: str, tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    said = re.search(r"report `([a-z-]+)`\s+at `bundle\.a:([^`]+)`", text)
    cut = re.search(r"cut short reports `([a-z-]+)`", text)
    assert said and cut, "the page states the findings"
    rule_id, member = said.groups()
    (tmp_path / "notes.txt").write_text("weights for the demo\n")
    (tmp_path / "payload.pkl").write_bytes(
        pickle.dumps({"w": [1.0], "x": _Payload(f"touch {tmp_path / 'canary'}")}, protocol=2))
    subprocess.run(["ar", "rc", "bundle.a", "notes.txt", "payload.pkl"], cwd=tmp_path, check=True)
    bundle = tmp_path / "bundle.a"

    result = scan_file(str(bundle), ScanOptions())
    assert "ar" in result.formats and "payload.pkl=pickle" in result.formats, result.formats
    hits = [f for f in result.findings if f.rule_id == rule_id]
    assert hits and all(f.member == member for f in hits), result.findings
    assert result.blocking(3)

    data = bundle.read_bytes()
    truncated = tmp_path / "cut.a"
    truncated.write_bytes(data[:len(data) - 7])
    cut_result = scan_file(str(truncated), ScanOptions())
    assert any(f.rule_id == cut.group(1) for f in cut_result.findings), cut_result.findings
    assert not (tmp_path / "canary").exists()


def test_without_its_row_the_archive_is_not_read(tmp_path: Path) -> None:
    """The row is what registers the reader: without it an ar archive matches no format."""
    data = b"!<arch>\n" + b"x.pkl/          0           0     0     644     3         `\n" + b"N.\n\n"
    (tmp_path / "bundle.a").write_bytes(data)
    result = scan_file(str(tmp_path / "bundle.a"), ScanOptions())
    assert "ar" not in result.formats
