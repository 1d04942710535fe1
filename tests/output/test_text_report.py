"""Signal in the reports (issue 18, item 3): text lists LOW and above plus one line counting the
files; ``--show-info``/``-v`` lists INFO; ``--min-severity`` filters every format without changing
the verdict; a run without a model file says "no model files found"."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import List, Tuple

import pytest

from safemodel_ci.cli import main
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_OK

EVIL = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


def run(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A source tree like site-packages: this project's own code, two junk .bin files, one pickle,
    a symlink out of the tree and a file the config excludes."""
    root = tmp_path / "tree"
    shutil.copytree(Path(__file__).resolve().parents[2] / "safemodel_ci", root / "pkg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    (root / "data" / "a.bin").write_bytes(b"not a model")
    (root / "data" / "b.bin").write_bytes(b"not a model either")
    (root / "model.pkl").write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    (root / "vendored.pkl").write_bytes(EVIL)
    os.symlink("/etc/hostname", root / "outside")
    (tmp_path / ".safemodel.yaml").write_text("exclude:\n  - tree/vendored.pkl\n")
    return root


def _cfg(tree: Path) -> List[str]:
    return ["--no-cache", "--config", str(tree.parent / ".safemodel.yaml"), "-j", "1"]


def test_text_lists_low_and_above_and_counts_the_files(tree: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    code, out = run(["scan", *_cfg(tree), "tree"], capsys)
    assert code == EXIT_OK
    lines = out.splitlines()
    n_files = sum(1 for _ in tree.rglob("*")) - sum(1 for p in tree.rglob("*") if p.is_dir())
    assert n_files > 50
    # the config's exclusion note, the files line and the verdict
    assert ": INFO " not in out and len(lines) == 3, out
    assert lines[0].startswith("1 file not scanned: excluded by ")
    assert lines[0].endswith("(tree/vendored.pkl)")
    # model.pkl is a model (the package's JSON schemas are not); the excluded file is skipped; the
    # link out of the tree is scanned at its target (what a loader would read) and is not a model.
    assert lines[1] == (f"Files: 1 file scanned as models, {n_files - 2:,} not models, 1 skipped "
                        "(1 excluded by the config); 2 INFO findings not shown (--show-info lists them)")
    assert lines[2] == f"PASS: scanned {n_files - 1} files, 0 blocking findings (fail-on high)"


@pytest.mark.parametrize("flag", ["--show-info", "-v"])
def test_show_info_lists_the_notices(tree: Path, flag: str, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    code, out = run(["scan", *_cfg(tree), flag, "tree"], capsys)
    assert code == EXIT_OK
    info = [line for line in out.splitlines() if " INFO " in line]
    shown = sorted(line.split(":")[0] for line in info)
    assert shown == ["tree/data/a.bin", "tree/data/b.bin"]  # the link is read at its target
    assert "not shown" not in out


def test_no_model_files_found_in_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "README.md").write_text("hello\n")
    (tmp_path / "x.bin").write_bytes(b"junk")
    code, out = run(["scan", "--no-cache", str(tmp_path)], capsys)
    assert code == EXIT_OK
    assert out.splitlines()[-1] == \
        "PASS: scanned 2 files, 0 blocking findings (fail-on high); no model files found"
    (tmp_path / "m.pkl").write_bytes(pickle.dumps([1]))
    _, out = run(["scan", "--no-cache", str(tmp_path)], capsys)
    assert "no model files found" not in out


def test_json_and_sarif_keep_every_finding_unless_asked(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.bin").write_bytes(b"junk")
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    code, out = run(["scan", "--no-cache", "-f", "json", str(tmp_path)], capsys)
    assert code == EXIT_FINDINGS
    rules = [f["rule_id"] for r in json.loads(out)["files"] for f in r["findings"]]
    assert "unrecognized-format" in rules and "pickle-dangerous-global" in rules
    code, out = run(["scan", "--no-cache", "-f", "sarif", str(tmp_path)], capsys)
    assert {r["ruleId"] for r in json.loads(out)["runs"][0]["results"]} >= {"unrecognized-format",
                                                                            "pickle-dangerous-global"}
    # --min-severity filters every format; the verdict and the counts stay the run's.
    for fmt in ("json", "sarif", "text", "github"):
        code, out = run(["scan", "--no-cache", "-f", fmt, "--min-severity", "low", str(tmp_path)], capsys)
        assert code == EXIT_FINDINGS
        if fmt == "sarif":  # the rule descriptors list every rule: look at the results
            out = json.dumps(json.loads(out)["runs"][0]["results"])
        assert "unrecognized-format" not in out and "pickle-dangerous-global" in out, fmt
    code, out = run(["scan", "--no-cache", "-f", "json", "--min-severity", "low", str(tmp_path)], capsys)
    assert json.loads(out)["summary"]["by_severity"]["INFO"] == 1
    # Text with --min-severity info lists everything, like --show-info.
    _, out = run(["scan", "--no-cache", "--min-severity", "info", str(tmp_path)], capsys)
    assert "INFO unrecognized-format" in out


def test_min_severity_never_hides_what_decides_the_exit_code(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "evil.pkl").write_bytes(EVIL)  # CRITICAL
    (tmp_path / "custom.pkl").write_bytes(b"cmypkg.layers\nCustom\n(tR.")  # HIGH: unknown global
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(list(range(100)), protocol=2)[:-5])  # unscanned
    code, out = run(["scan", "--no-cache", "--min-severity", "critical", str(tmp_path)], capsys)
    assert code == EXIT_FINDINGS
    assert "evil.pkl: CRITICAL" in out and "custom.pkl: HIGH" in out  # blocking at fail-on high
    assert "cut.pkl: UNSCANNED" in out
    code, out = run(["scan", "--no-cache", "--fail-on", "critical", "--min-severity", "critical",
                     str(tmp_path)], capsys)
    assert code == EXIT_FINDINGS and "custom.pkl" not in out.split("What to do")[0]
    assert "HIGH finding not shown (--min-severity)" in out


def test_min_severity_rejects_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scan", "--min-severity", "loud", "."])
    assert exc.value.code == 3
