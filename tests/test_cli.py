"""The command line: text line format, JSON against its schema, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest

from safemodel_ci.cli import main

SCHEMA = Path(__file__).resolve().parent.parent / "safemodel_ci" / "schemas" / "report-v1.json"
LINE = re.compile(r"^(?P<path>[^:]+)(?::(?P<member>.+?))?: (?P<sev>CRITICAL|HIGH|MEDIUM|LOW|INFO|UNSCANNED) "
                  r"(?P<rule>[a-z0-9]+(?:-[a-z0-9]+)*) (?P<msg>.+)$")


class _System:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


@pytest.fixture()
def files(tmp_path: Path) -> dict:
    out = {
        "evil": tmp_path / "evil.pkl",
        "benign": tmp_path / "benign.pkl",
        "truncated": tmp_path / "truncated.pkl",
        "text": tmp_path / "notes.txt",
        "unknown": tmp_path / "unknown.pkl",
    }
    out["evil"].write_bytes(pickle.dumps({"w": [1.0], "x": _System()}, protocol=4))
    out["benign"].write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    out["truncated"].write_bytes(pickle.dumps(list(range(50)), protocol=4)[:-10])
    out["text"].write_text("config\nfoo\n")
    import statistics

    class _Mean:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (statistics.mean, ([1, 2],))

    out["unknown"].write_bytes(pickle.dumps(_Mean(), protocol=2))
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_lines_have_the_documented_format(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "scan", "-q", str(files["evil"]))
    assert code == 1
    lines = out.splitlines()
    finding_lines = [ln for ln in lines if LINE.match(ln)]
    assert finding_lines, out
    m = LINE.match(finding_lines[0])
    assert m and m["path"] == str(files["evil"]) and m["sev"] == "CRITICAL"
    assert m["rule"] == "pickle-dangerous-global" and "system" in m["msg"]
    assert lines[-1].startswith("FAIL: scanned 1 file")


def test_member_is_shown_after_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_System(), protocol=2))
    code, out, _ = run(capsys, "scan", "-q", str(path))
    assert code == 1
    assert any((m := LINE.match(ln)) and m["member"] == "archive/data.pkl" for ln in out.splitlines()), out


def test_json_output_validates_against_the_schema(files: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    code, out, _ = run(capsys, "scan", "-q", "--format", "json", str(tmp_path))
    report = json.loads(out)
    jsonschema.validate(report, schema)
    assert code == report["exit_code"] == 1
    by_path = {Path(f["path"]).name: f for f in report["files"]}
    assert by_path["benign.pkl"]["findings"] == [] and by_path["benign.pkl"]["complete"]
    assert not by_path["truncated.pkl"]["complete"]
    evil = by_path["evil.pkl"]["findings"][0]
    assert evil["rule_id"] == "pickle-dangerous-global" and evil["offset"] is not None and evil["remedy"]


def test_json_to_a_file_keeps_the_verdict_on_stderr(files: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "report.json"
    code, out, err = run(capsys, "scan", "-q", "--format", "json", "-o", str(out_file), str(files["evil"]))
    assert code == 1 and out == "" and "FAIL" in err
    assert json.loads(out_file.read_text())["exit_code"] == 1


@pytest.mark.parametrize("key,expected", [("benign", 0), ("evil", 1), ("unknown", 1), ("truncated", 2),
                                          ("text", 0)])
def test_exit_codes(files: dict, key: str, expected: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "scan", "-q", str(files[key]))
    assert code == expected, out
    assert "Traceback" not in out + err


def test_fail_on_threshold(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "scan", "-q", "--fail-on", "critical", str(files["unknown"]))[0] == 0
    assert run(capsys, "scan", "-q", "--fail-on", "critical", str(files["evil"]))[0] == 1
    assert run(capsys, "scan", "-q", "--fail-on", "low", str(files["benign"]))[0] == 0


@pytest.mark.parametrize("argv", [
    ["scan", "/no/such/file.pkl"],
    ["scan", "--fail-on", "bogus", "."],
    ["scan"],
    ["frobnicate"],
    [],
])
def test_usage_errors_exit_3_without_traceback(argv: list, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits through SystemExit with our code
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert code == 3
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("content", [b"", b"\x80", b"\x80\x05", b"\x80\x05\x95" + b"\xff" * 20,
                                     os.urandom(4096), b"(" * 10000, b"\x80\x02" + b"(" * 100000])
def test_bad_input_gives_a_message_not_a_traceback(tmp_path: Path, content: bytes,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    code, out, err = run(capsys, "scan", "-q", str(path))
    assert code in (0, 1, 2)
    assert "Traceback" not in out + err
    assert out.splitlines()[-1].split(":")[0] in ("PASS", "FAIL", "INCOMPLETE")


def test_readme_example_directory_shows_one_real_finding(capsys: pytest.CaptureFixture[str]) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    code, out, err = run(capsys, "scan", "-q", "--format", "json", str(examples))
    report = json.loads(out)
    blocking = [(Path(r["path"]).name, f["rule_id"]) for r in report["files"] for f in r["findings"]
                if f["severity"] in ("HIGH", "CRITICAL")]
    assert code == 1 and blocking == [("malicious_model.pkl", "pickle-dangerous-global")]
