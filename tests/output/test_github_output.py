"""Workflow-command annotations and the job summary: escaping, levels, limits, injection attempts."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import List

import pytest

from safemodel_ci import cli
from safemodel_ci.findings import FileResult, Finding, ScanReport, Severity
from safemodel_ci.output import writer
from safemodel_ci.output.github import (
    LFS_RULE,
    annotation_lines,
    escape_data,
    escape_property,
    finding_level,
    workflow_command,
)
from safemodel_ci.output.job_summary import md_text, render_job_summary

from workflow_commands import process

#: A file name built to break out of an annotation: %-escapes, CR/LF, "::" and "##[" commands.
CRAFTED = "e%0Avil%25\n::warning::x\r::error file=a.py::pwned\n##[add-mask]secret,b:c <b>|x|.pkl"

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:" + b"ab" * 32 + b"\nsize 12345\n")


class Payload:
    """Pickling this writes a ``os.system`` call; only ever dumped, never loaded."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo x",))


def finding(rule_id: str, severity: Severity, path: str, **kw) -> Finding:  # type: ignore[no-untyped-def]
    return Finding(rule_id, severity, path, kw.pop("message", f"{rule_id} here"),
                   kw.pop("remedy", "do the thing"), **kw)


def report_of(*files: FileResult, fail_on: Severity = Severity.HIGH, errors=()) -> ScanReport:  # type: ignore[no-untyped-def]
    return ScanReport(list(files), fail_on=fail_on, errors=list(errors))


# ---- escaping --------------------------------------------------------------------------------

def test_escaping_matches_the_actions_toolkit() -> None:
    # command.ts: escapeData: % -> %25, \r -> %0D, \n -> %0A; escapeProperty: also : -> %3A, , -> %2C
    assert escape_data("a%b\r\nc::d,e") == "a%25b%0D%0Ac::d,e"
    assert escape_property("a%b\r\nc::d,e") == "a%25b%0D%0Ac%3A%3Ad%2Ce"
    # % first: a literal "%0A" in a name survives the round trip instead of becoming a newline.
    assert escape_data("%0A") == "%250A"


def test_workflow_command_leaves_out_empty_properties() -> None:
    line = workflow_command("error", {"file": "", "line": None, "title": "t"}, "m")
    assert line == "::error title=t::m"
    assert workflow_command("notice", {}, "m") == "::notice::m"


def test_crafted_file_name_stays_inside_its_own_annotation(tmp_path: Path) -> None:
    path = str(tmp_path / CRAFTED)
    report = report_of(FileResult(path, findings=[
        finding("pickle-dangerous-global", Severity.CRITICAL, path, member="a/data.pkl", offset=7,
                message=f"imports {CRAFTED}")]))
    lines = annotation_lines(report, repo_root=str(tmp_path))
    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0]
    commands = process("\n".join(lines) + "\n")
    assert [c.name for c in commands] == ["error"]
    assert commands[0].properties["file"] == CRAFTED       # unescapes to the real repo-relative name
    assert CRAFTED in commands[0].data
    assert set(commands[0].properties) == {"file", "line", "title"}


def test_every_line_of_the_github_format_is_an_expected_command(tmp_path: Path) -> None:
    path = str(tmp_path / CRAFTED)
    report = report_of(
        FileResult(path, findings=[finding("pickle-unknown-global", Severity.HIGH, path)]),
        FileResult(str(tmp_path / "x,y:z.bin"), findings=[finding("unrecognized-format", Severity.INFO,
                                                                   str(tmp_path / "x,y:z.bin"))]),
        errors=[(f"org/{CRAFTED}", f"failed {CRAFTED}")])
    text = writer("github", repo_root=str(tmp_path)).render(report)
    commands = process(text)
    assert sorted(c.name for c in commands) == ["error", "error", "notice"]
    for line in re.split(r"\r\n|\r|\n", text):
        if line.lstrip().startswith("::"):
            assert re.match(r"::(error|warning|notice)( [a-z]+=[^,:]*(,[a-z]+=[^,:]*)*)?::", line), line


# ---- levels and grouping ----------------------------------------------------------------------

@pytest.mark.parametrize("severity, unscanned, fail_on, level", [
    (Severity.CRITICAL, False, Severity.HIGH, "error"),
    (Severity.HIGH, False, Severity.HIGH, "error"),
    (Severity.HIGH, False, Severity.CRITICAL, "warning"),
    (Severity.MEDIUM, False, Severity.HIGH, "warning"),
    (Severity.MEDIUM, False, Severity.MEDIUM, "error"),
    (Severity.LOW, False, Severity.HIGH, "notice"),
    (Severity.LOW, False, Severity.LOW, "error"),
    (Severity.INFO, False, Severity.LOW, "notice"),
    (Severity.HIGH, True, Severity.CRITICAL, "error"),  # unscanned content always fails visibly
])
def test_level_is_relative_to_fail_on(severity: Severity, unscanned: bool, fail_on: Severity,
                                      level: str) -> None:
    f = finding("x", severity, "m.pkl", unscanned=unscanned)
    assert finding_level(f, fail_on) == level


def test_one_annotation_per_file_errors_first_and_capped(tmp_path: Path) -> None:
    files: List[FileResult] = []
    for i in range(60):
        p = str(tmp_path / f"n{i:02}.bin")
        files.append(FileResult(p, findings=[finding("zip-crc-mismatch", Severity.MEDIUM, p)]))
    bad = str(tmp_path / "bad.pkl")
    files.append(FileResult(bad, findings=[finding("pickle-unknown-global", Severity.HIGH, bad,
                                                   message=f"global {i}") for i in range(30)]))
    lines = annotation_lines(report_of(*files), repo_root=str(tmp_path), limit=50)
    commands = process("\n".join(lines))
    assert commands[0].name == "error" and commands[0].properties["file"] == "bad.pkl"
    assert "and 29 more" in commands[0].properties["title"]
    assert "... and 10 more" in commands[0].data          # 20 listed, the summary has the rest
    assert len(commands) == 51 and commands[-1].name == "warning"
    assert "11 more files" in commands[-1].data


def test_lfs_pointer_tells_to_set_lfs_true(tmp_path: Path) -> None:
    p = str(tmp_path / "model.safetensors")
    report = report_of(FileResult(p, findings=[finding(LFS_RULE, Severity.HIGH, p, unscanned=True)]))
    assert report.exit_code == 2
    commands = process("\n".join(annotation_lines(report, repo_root=str(tmp_path))))
    assert [c.name for c in commands] == ["error", "error"]
    assert "lfs: true" in commands[0].properties["title"]
    assert all("lfs: true" in c.data for c in commands)
    summary = render_job_summary(report)
    assert "Git LFS content missing" in summary and "`lfs: true`" in summary


# ---- job summary ------------------------------------------------------------------------------

def test_md_text_makes_names_inert() -> None:
    out = md_text("<img src=x onerror=alert(1)>|*a*_b_[l](http://x)@team\n`c`")
    assert "<" not in out and ">" not in out and "\n" not in out
    assert re.search(r"(?<!\\)[|*_\[\]()@`]", out) is None  # every markup character is escaped
    assert "\\x0a" in out
    assert md_text("<path>;") == "&lt;path&gt;\\;"  # entities stay intact (no escaped ";" inside them)


def test_summary_table_keeps_its_columns_with_hostile_names(tmp_path: Path) -> None:
    path = str(tmp_path / CRAFTED)
    report = report_of(FileResult(path, findings=[
        finding("pickle-dangerous-global", Severity.CRITICAL, path, member="x|y", offset=3,
                message="imports <script>alert(1)</script> | os.system")]))
    summary = render_job_summary(report)
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 2  # header + one finding: the CR/LF in the name did not split the row
    for row in rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == 6
    assert "<script>" not in summary and "FAIL" in summary
    assert "`pickle-dangerous-global`" in summary and "What to do" in summary


def test_summary_is_cut_to_the_limit_with_a_note() -> None:
    findings = [finding("pickle-unknown-global", Severity.HIGH, f"models/m{i}.pkl", message="x" * 300)
                for i in range(5000)]
    report = report_of(*[FileResult(f.path, findings=[f]) for f in findings])
    summary = render_job_summary(report, limit=64 * 1024)
    assert len(summary.encode("utf-8")) <= 64 * 1024
    match = re.search(r"_(\d+) more findings not shown", summary)
    assert match is not None
    shown = len([line for line in summary.splitlines() if line.startswith("| models")])
    assert shown + int(match.group(1)) == 5000
    full = render_job_summary(report)
    assert len(full.encode("utf-8")) <= 1024 * 1024


# ---- the CLI with real files --------------------------------------------------------------------

def test_cli_github_format_on_a_crafted_lfs_pointer_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / CRAFTED).write_bytes(LFS_POINTER)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["scan", "--format", "github", "--repo-root", str(tmp_path), "."])
    out = capsys.readouterr().out
    assert code == 2
    commands = process(out)
    assert [c.name for c in commands] == ["error", "error"]
    assert commands[1].properties["file"] == CRAFTED
    assert "lfs: true" in commands[0].properties["title"]


def test_cli_github_format_on_a_malicious_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    (tmp_path / CRAFTED).write_bytes(pickle.dumps(Payload()))
    (tmp_path / "weights.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["scan", "--format", "github", "--repo-root", str(tmp_path), "."])
    out = capsys.readouterr().out
    assert code == 1
    commands = process(out)
    assert [c.name for c in commands] == ["error"]
    assert commands[0].properties["file"] == CRAFTED
    assert "pickle-dangerous-global" in commands[0].properties["title"]
    assert "system" in commands[0].data
