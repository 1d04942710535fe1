"""Every file of the picklescan attack corpus gets the verdict its manifest states, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CORPUS
from safemodel_ci.cli import main
from safemodel_ci.loader_names import binding_for_name


def _manifest() -> dict:
    path = CORPUS / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.mark.parametrize("name,expected", sorted(_manifest().items()) or [("<no corpus>", "")])
def test_corpus_file_gets_its_manifest_verdict(corpus_dir: Path, name: str, expected: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["scan", "-q", "--format", "json", str(corpus_dir / name)])
    report = json.loads(capsys.readouterr().out)
    found = [(f["rule_id"], f["severity"], f["member"]) for r in report["files"] for f in r["findings"]]
    if expected == "malicious":
        assert code == 1, found
    elif expected == "benign":
        assert code == 0, found
    elif binding_for_name(name) is not None:
        # Not a model, but named for a loader that would read it (bad_pytorch.pt is a PNG header):
        # the file is not what its name says (issue 18), which blocks.
        assert expected == "not-a-model"
        assert code == 1 and ("name-format-mismatch", "HIGH", None) in found, found
    else:
        assert expected == "not-a-model"
        assert code != 1, found


def test_whole_corpus_directory_fails(corpus_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "-q", str(corpus_dir)]) == 1
    out = capsys.readouterr().out
    assert "pickle-dangerous-global" in out and out.splitlines()[-1].startswith("FAIL")
