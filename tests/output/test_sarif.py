"""SARIF 2.1.0 output: valid against the OASIS schema, within GitHub's code-scanning subset."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Dict

import pytest

from safemodel_ci import cli
from safemodel_ci.findings import HUB, FileResult, Finding, Location, ScanReport, Severity
from safemodel_ci.output import sarif as sarif_module
from safemodel_ci.output import writer
from safemodel_ci.rules import RULES

jsonschema = pytest.importorskip("jsonschema")


class Payload:
    """Pickling this writes a ``os.system`` call; only ever dumped, never loaded."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo x",))


def validate(log: Dict[str, Any], schema_path: Path) -> None:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def render(report: ScanReport, root: Path) -> Dict[str, Any]:
    return json.loads(writer("sarif", repo_root=str(root)).render(report))


def f(rule_id: str, severity: Severity, path: str, **kw: Any) -> Finding:
    return Finding(rule_id, severity, path, kw.pop("message", f"{rule_id} found"), "fix it", **kw)


@pytest.fixture
def sample(tmp_path: Path) -> ScanReport:
    odd = str(tmp_path / "models" / "a b%c#d?é:x.pkl")
    lfs = str(tmp_path / "big.safetensors")
    return ScanReport([
        FileResult(odd, findings=[
            f("pickle-dangerous-global", Severity.CRITICAL, odd, member="archive/data.pkl", offset=42,
              message="imports posix.system", details={"global": ["posix", "system"]}),
            f("pickle-unknown-global", Severity.HIGH, odd, member="archive/data.pkl", offset=99),
            f("zip-crc-mismatch", Severity.MEDIUM, odd, member="archive/data.pkl")]),
        FileResult(lfs, findings=[f("lfs-pointer-missing", Severity.HIGH, lfs, unscanned=True)]),
        FileResult(str(tmp_path / "x.bin"), findings=[
            f("unrecognized-format", Severity.INFO, str(tmp_path / "x.bin"))]),
    ], fail_on=Severity.HIGH, errors=[("org/missing", "repository not found")])


def test_valid_against_the_sarif_schema(sample: ScanReport, tmp_path: Path, sarif_schema_path: Path) -> None:
    validate(render(sample, tmp_path), sarif_schema_path)


def test_rules_follow_githubs_subset(sample: ScanReport, tmp_path: Path) -> None:
    run = render(sample, tmp_path)["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [r.id for r in RULES]  # one per rule id, in table order
    assert len(rules) <= 25_000
    for descriptor, rule in zip(rules, RULES):
        assert descriptor["shortDescription"]["text"] == rule.title
        assert descriptor["fullDescription"]["text"] == rule.description
        assert rule.remedy in descriptor["help"]["text"]
        props = descriptor["properties"]
        assert "security" in props["tags"] and len(props["tags"]) <= 10
        if rule.severity is Severity.INFO:
            assert "security-severity" not in props
        else:
            score = props["security-severity"]
            assert isinstance(score, str) and 0 < float(score) <= 10
    by_id = {r["id"]: r["properties"] for r in rules}
    assert float(by_id["pickle-dangerous-global"]["security-severity"]) >= 9.0   # critical
    assert 7.0 <= float(by_id["pickle-unknown-global"]["security-severity"]) < 9.0  # high


def test_results_locations_levels_and_properties(sample: ScanReport, tmp_path: Path) -> None:
    run = render(sample, tmp_path)["runs"][0]
    results = run["results"]
    rules = run["tool"]["driver"]["rules"]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"].endswith("/")
    by_rule = {r["ruleId"]: r for r in results}
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        region = r["locations"][0]["physicalLocation"]["region"]
        assert region == {"startLine": 1}
    dangerous = by_rule["pickle-dangerous-global"]
    artifact = dangerous["locations"][0]["physicalLocation"]["artifactLocation"]
    # Relative to the repo root, each character outside the URI's unreserved set percent-encoded.
    assert artifact == {"uri": "models/a%20b%25c%23d%3F%C3%A9%3Ax.pkl", "uriBaseId": "%SRCROOT%"}
    assert dangerous["level"] == "error"
    assert "archive/data.pkl" in dangerous["message"]["text"]
    assert dangerous["properties"]["member"] == "archive/data.pkl"
    assert dangerous["properties"]["offset"] == 42
    assert dangerous["properties"]["details"] == {"global": ["posix", "system"]}
    assert by_rule["zip-crc-mismatch"]["level"] == "warning"
    assert by_rule["unrecognized-format"]["level"] == "note"
    lfs = by_rule["lfs-pointer-missing"]
    assert lfs["level"] == "error" and lfs["properties"]["unscanned"] is True
    assert lfs["message"]["text"].startswith("Not fully scanned")
    # Worst first: errors before warnings before notes.
    levels = [r["level"] for r in results]
    assert levels == sorted(levels, key=["error", "warning", "note"].index)


def test_whole_target_errors_are_results_and_notifications(sample: ScanReport, tmp_path: Path) -> None:
    run = render(sample, tmp_path)["runs"][0]
    errors = [r for r in run["results"] if r["properties"].get("target") == "org/missing"]
    assert len(errors) == 1 and errors[0]["level"] == "error"
    assert errors[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "https://huggingface.co/org/missing"
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is False and invocation["exitCode"] == 1
    assert "repository not found" in invocation["toolExecutionNotifications"][0]["message"]["text"]


def test_fingerprints_tell_findings_in_one_file_apart_but_ignore_offsets(tmp_path: Path) -> None:
    path = str(tmp_path / "m.pkl")

    def prints(*findings: Finding) -> list:
        log = render(ScanReport([FileResult(path, findings=list(findings))]), tmp_path)
        return [r["partialFingerprints"]["safemodelFinding/v1"] for r in log["runs"][0]["results"]]

    a = f("pickle-unknown-global", Severity.HIGH, path, message="imports a.b", offset=1)
    b = f("pickle-unknown-global", Severity.HIGH, path, message="imports c.d", offset=2)
    first = prints(a, b)
    assert len(set(first)) == 2
    moved = prints(f("pickle-unknown-global", Severity.HIGH, path, message="imports a.b", offset=500))
    assert moved[0] == first[0]


def test_paths_outside_the_root_and_hub_files(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    outside = str(tmp_path / "elsewhere.pkl")
    hub = Location.in_repo(HUB, "org/name", "a" * 40, "sub dir/model.bin")  # as the Hub source places it
    log = render(ScanReport([
        FileResult(outside, findings=[f("pickle-unknown-global", Severity.HIGH, outside)]),
        FileResult(hub.display, location=hub,
                   findings=[f("pickle-unknown-global", Severity.HIGH, hub.display, location=hub)]),
    ]), root)
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in log["runs"][0]["results"]]
    assert uris[0].startswith("file:///") and uris[0].endswith("/elsewhere.pkl")
    assert uris[1] == "https://huggingface.co/org/name/blob/" + "a" * 40 + "/sub%20dir/model.bin"


def test_results_are_capped_at_githubs_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             sarif_schema_path: Path) -> None:
    monkeypatch.setattr(sarif_module, "MAX_RESULTS", 10)
    files = [FileResult(f"n{i}.pkl", findings=[f("zip-crc-mismatch", Severity.MEDIUM, f"n{i}.pkl")])
             for i in range(30)]
    files.append(FileResult("bad.pkl", findings=[f("pickle-dangerous-global", Severity.CRITICAL, "bad.pkl")]))
    log = render(ScanReport(files), tmp_path)
    run = log["runs"][0]
    assert len(run["results"]) == 10
    assert run["results"][0]["ruleId"] == "pickle-dangerous-global"  # the worst is never cut
    assert "21 lower-ranked results were left out" in \
        run["invocations"][0]["toolExecutionNotifications"][-1]["message"]["text"]
    validate(log, sarif_schema_path)


def test_cli_sarif_on_real_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 sarif_schema_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "evil model.pkl").write_bytes(pickle.dumps(Payload()))
    (models / "weights.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    (models / "big.bin").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:"
                                     + b"cd" * 32 + b"\nsize 99\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.sarif"
    code = cli.main(["scan", "models", "--format", "sarif", "--output", str(out),
                     "--repo-root", str(tmp_path)])
    assert code == 1
    log = json.loads(out.read_text(encoding="utf-8"))
    validate(log, sarif_schema_path)
    results = log["runs"][0]["results"]
    by_uri: Dict[str, set] = {}
    for r in results:
        uri = r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        by_uri.setdefault(uri, set()).add(r["ruleId"])
    assert "pickle-dangerous-global" in by_uri["models/evil%20model.pkl"]
    assert by_uri["models/big.bin"] == {"lfs-pointer-missing"}
    assert "models/weights.pkl" not in by_uri
