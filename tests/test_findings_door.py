"""Findings through one door (issue 21): every finding, whoever makes it, comes from the rules table
through ``Policy.finding`` and is judged by the policy: the CLI's own notices, the worker pool's,
the Hub source's and the Hugging Face cache source's, not only those readers report.

``severity-overrides`` of a rule that means "not fully scanned" are refused by the config (they
would change nothing), so for those findings the policy is built in code: what is checked is that
the finding passes the policy at all.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Iterator, List

import pytest

import safemodel_ci
from safemodel_ci import cli, parallel
from safemodel_ci.config import Config, IgnoredFile
from safemodel_ci.findings import FileResult, Severity
from safemodel_ci.parallel import ScanPlan, scan_paths
from safemodel_ci.policy import Policy
from safemodel_ci.scanner import ScanOptions

PACKAGE = Path(safemodel_ci.__file__).resolve().parent


def write_config(directory: Path, body: str) -> Path:
    path = directory / ".safemodel.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def findings_of(report: dict) -> List[dict]:
    return [g for f in report["files"] for g in f["findings"]]


# ---- the CLI's own finding ---------------------------------------------------------------------------

def test_a_severity_override_reaches_the_clis_own_finding(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A link to a directory the walk scans anyway is a ``skipped-not-regular`` notice that the
    CLI makes itself (no reader sees it)."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "model.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    (tree / "again").symlink_to(tree / "sub", target_is_directory=True)
    config = write_config(tmp_path, "severity-overrides:\n  skipped-not-regular: medium\n")
    cli.main(["scan", "--no-cache", "--config", str(config), "--format", "json", str(tree)])
    report = json.loads(capsys.readouterr().out)
    skipped = [g for g in findings_of(report) if g["rule_id"] == "skipped-not-regular"]
    assert [(g["path"], g["severity"]) for g in skipped] == [(str(tree / "again"), "MEDIUM")]
    assert report["summary"]["by_severity"]["MEDIUM"] == 1


# ---- the worker pool ---------------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", [1, 2])
def test_a_severity_override_reaches_the_ignore_note(jobs: int, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``ignored-by-config`` (made where ignores are applied, in this process or a worker) is
    judged like any other finding: a project may raise it to keep accepted files in view."""
    monkeypatch.setattr(parallel, "MIN_FILES_FOR_PROCESSES", 1)
    paths = []
    for i in range(4):
        path = tmp_path / f"junk{i}.bin"
        path.write_bytes(b"not a model at all " * (i + 1))
        paths.append(str(path))
    digest = hashlib.sha256(Path(paths[2]).read_bytes()).hexdigest()
    config = Config(root=str(tmp_path), ignores=(IgnoredFile(digest, "reviewed", origin="cfg:1"),),
                    severity_overrides=(("unrecognized-format", Severity.HIGH),
                                        ("ignored-by-config", Severity.LOW)))
    plan = ScanPlan(options=ScanOptions(policy=config.policy()), config=config)
    results = list(scan_paths(paths, plan, jobs=jobs))
    note = results[2].findings
    assert [(f.rule_id, f.severity) for f in note] == [("ignored-by-config", Severity.LOW)]
    assert [(f.rule_id, f.severity) for f in results[0].findings] == [("unrecognized-format", Severity.HIGH)]


def test_a_worker_crash_finding_passes_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [tmp_path / f"f{i}.pt" for i in range(parallel.MIN_FILES_FOR_PROCESSES + 2)]
    for p in files:
        p.write_bytes(b"junk")
    monkeypatch.setattr(parallel, "_scan_batch", _die)
    policy = Policy(severity_overrides={"scanner-error": Severity.CRITICAL})
    results = list(scan_paths([str(p) for p in files], ScanPlan(options=ScanOptions(policy=policy)), jobs=2))
    assert [r.path for r in results] == [str(p) for p in files]
    for result in results:
        assert not result.complete
        assert [(f.rule_id, f.severity) for f in result.findings] == [("scanner-error", Severity.CRITICAL)]
        assert result.findings[0].location == result.location


def _die(paths: List[str]) -> List[FileResult]:
    os._exit(3)


# ---- the Hub source ----------------------------------------------------------------------------------

@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator["object"]:
    pytest.importorskip("huggingface_hub")
    from hub_server import fake_hub_env

    yield from fake_hub_env(tmp_path, monkeypatch)


def test_a_severity_override_reaches_every_hub_finding(hub, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The loader-choice finding (made by the Hub source) and a reader's finding alike."""
    sha = hub.add_commit("acme/weights", {"pytorch_model.bin": pickle.dumps({"w": 1}, protocol=2),
                                          "notes.bin": b"not a model " * 4})
    config = write_config(tmp_path, "severity-overrides:\n  repo-loader-picks-pickle: high\n"
                                    "  unrecognized-format: medium\n")
    cli.main(["hub", "--no-cache", "--config", str(config), "--format", "json", "acme/weights"])
    report = json.loads(capsys.readouterr().out)
    got = {(g["path"], g["rule_id"]): g["severity"] for g in findings_of(report)}
    assert got[(f"acme/weights@{sha}:pytorch_model.bin", "repo-loader-picks-pickle")] == "HIGH"
    assert got[(f"acme/weights@{sha}:notes.bin", "unrecognized-format")] == "MEDIUM"
    assert report["exit_code"] == 1


def test_the_hub_listing_limit_finding_passes_the_policy(hub) -> None:  # type: ignore[no-untyped-def]
    from safemodel_ci.context import Limits
    from safemodel_ci.sources.hub import HubClientConfig, HubRepoScanner

    sha = hub.add_commit("acme/many", {f"f{i}.txt": b"x" for i in range(5)})
    policy = Policy(severity_overrides={"unscanned-limit": Severity.CRITICAL})
    options = ScanOptions(policy=policy, limits=Limits(hub_max_tree_entries=2))
    scan = HubRepoScanner(HubClientConfig.from_environment(), options).scan("acme/many")
    (limit,) = [r for r in scan.files if any(f.rule_id == "unscanned-limit" for f in r.findings)]
    assert limit.path == f"acme/many@{sha}"
    assert [(f.rule_id, f.severity) for f in limit.findings] == [("unscanned-limit", Severity.CRITICAL)]
    from safemodel_ci.findings import HUB  # (issue 21: locations are data)

    assert (limit.location.kind, limit.location.repo, limit.location.revision) == (HUB, "acme/many", sha)


# ---- the Hugging Face cache source -------------------------------------------------------------------

def _filled_cache(hub, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    from huggingface_hub import hf_hub_download

    hub.add_commit("acme/cached", {"config.json": b'{"v": 1}', "model.bin": b"not a model " * 4})
    cache = tmp_path / "cache"
    for name in ("config.json", "model.bin"):
        hf_hub_download("acme/cached", name, cache_dir=cache, endpoint=hub.endpoint, token=False)
    return cache


def test_a_severity_override_reaches_every_cache_finding(hub, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A finding of the cache source (a blob not named by its hash) and a reader's finding alike."""
    cache = _filled_cache(hub, tmp_path)
    snapshot = next((cache / "models--acme--cached" / "snapshots").iterdir())
    link = snapshot / "config.json"
    plain = tmp_path / "plain-blob"  # a blob not named by a hash: its content cannot be checked
    plain.write_bytes(Path(os.path.realpath(link)).read_bytes())
    link.unlink()
    link.symlink_to(plain)
    config = write_config(tmp_path, "severity-overrides:\n  cache-blob-unverified: critical\n"
                                    "  unrecognized-format: medium\n")
    cli.main(["cache", "--no-cache", "--cache-dir", str(cache), "--config", str(config), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    got = {(g["path"].rsplit(":", 1)[1], g["rule_id"]): g["severity"] for g in findings_of(report)}
    assert got[("config.json", "cache-blob-unverified")] == "CRITICAL"
    assert got[("model.bin", "unrecognized-format")] == "MEDIUM"


def test_a_cache_finding_made_before_any_scan_passes_the_policy(hub, tmp_path: Path  # type: ignore[no-untyped-def]
                                                                ) -> None:
    """A snapshot file resolving to a fifo is never opened: the cache source alone reports it."""
    from safemodel_ci.sources.hfcache import scan_cache

    cache = _filled_cache(hub, tmp_path)
    snapshot = next((cache / "models--acme--cached" / "snapshots").iterdir())
    blob = Path(os.path.realpath(snapshot / "model.bin"))
    blob.unlink()
    os.mkfifo(blob)
    policy = Policy(severity_overrides={"unscanned-unreadable": Severity.CRITICAL})
    result = scan_cache(str(cache), ScanOptions(policy=policy))
    (fifo,) = [r for r in result.files if r.path.endswith(":model.bin")]
    assert [(f.rule_id, f.severity) for f in fifo.findings] == [("unscanned-unreadable", Severity.CRITICAL)]
    from safemodel_ci.findings import HF_CACHE  # (issue 21: locations are data)

    where = fifo.location
    assert (where.kind, where.repo, where.path) == (HF_CACHE, "acme/cached", "model.bin")


# ---- one door ----------------------------------------------------------------------------------------

def test_findings_are_constructed_in_one_place() -> None:
    """``Finding(...)`` is called only by the rules table's constructor (``Rule.finding``) and by
    ``Finding.from_dict`` (a report read back); everything else goes through ``Policy.finding``."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else (
                    node.func.attr if isinstance(node.func, ast.Attribute) else "")
                if name == "Finding":
                    calls.append(f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno}")
    assert [c.split(":")[0] for c in calls] == ["rules.py"], calls


# ---- locations are data ------------------------------------------------------------------------------

def test_a_location_formats_every_kind_of_place() -> None:
    from safemodel_ci.findings import HF_CACHE, HUB, LOCAL, Location

    local = Location.local("models/m.pt").inside("archive/data.pkl").inside("inner.pkl")
    assert (local.kind, local.display, local.member) == (LOCAL, "models/m.pt", "archive/data.pkl:inner.pkl")
    assert str(local) == "models/m.pt:archive/data.pkl:inner.pkl"
    assert local.file == Location.local("models/m.pt")
    hub = Location.in_repo(HUB, "datasets/acme/x", "f" * 40, "sub/model.bin")
    assert str(hub.inside("data.pkl")) == f"datasets/acme/x@{'f' * 40}:sub/model.bin:data.pkl"
    assert Location.in_repo(HUB, "acme/x", None).display == "acme/x"
    cached = Location.in_repo(HF_CACHE, "acme/x", "e" * 40, "config.json")
    assert cached.display == f"acme/x@{'e' * 40}:config.json" and cached.repo is not None
    # A finding follows its location; placing a result moves every finding, member chains kept.
    finding = Policy().finding("pickle-unknown-global", local, "imports a.b", offset=7)
    assert (finding.path, finding.member, finding.offset) == ("models/m.pt", "archive/data.pkl:inner.pkl", 7)
    placed = FileResult("models/m.pt", findings=[finding]).placed(hub)
    assert placed.path == hub.display and placed.findings[0].path == hub.display
    assert placed.findings[0].location == hub.inside("archive/data.pkl").inside("inner.pkl")


def test_writers_format_locations_and_parse_no_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local file whose name reads like a Hub file is a local file (at fe36ae4 SARIF linked it to
    the Hub when it did not exist any more); a cache file links to its Hub page."""
    from safemodel_ci.findings import HF_CACHE, Location, ScanReport
    from safemodel_ci.output import writer

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    odd = "acme/x@" + "a" * 40 + ":gone.pkl"  # a relative local path, absent
    cached = Location.in_repo(HF_CACHE, "acme/x", "b" * 40, "sub dir/m.pkl")
    policy = Policy()
    report = ScanReport([
        FileResult(odd, findings=[policy.finding("pickle-unknown-global", Location.local(odd), "x")]),
        FileResult(cached.display, location=cached,
                   findings=[policy.finding("pickle-unknown-global", cached, "y")]),
    ])
    log = json.loads(writer("sarif", repo_root=str(tmp_path)).render(report))
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"] for r in log["runs"][0]["results"]]
    assert uris[0]["uri"].startswith("file:///") and uris[0]["uri"].endswith("%3Agone.pkl")
    assert uris[1] == {"uri": f"https://huggingface.co/acme/x/blob/{'b' * 40}/sub%20dir/m.pkl"}
    annotations = writer("github", repo_root=str(tmp_path)).render(report)
    assert "file=" not in annotations.splitlines()[1]  # the cache file: no checkout path to annotate


def test_a_report_read_back_from_json_keeps_hub_locations(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Report schema v1 carries names: reading one back (safemodel merge, the Action) is the one place
    a name is taken apart, and a name that exists as a local path stays local."""
    from safemodel_ci.findings import HUB, LOCAL, Location

    sha = "c" * 40
    policy = Policy()
    hub = Location.in_repo(HUB, "spaces/acme/app", sha, "weights/m.pkl")
    original = FileResult(hub.display, location=hub,
                          findings=[policy.finding("pickle-unknown-global", hub.inside("data.pkl"), "z")])
    back = FileResult.from_dict(json.loads(json.dumps(original.to_dict())))
    assert back.location == hub and back.findings[0].location == hub.inside("data.pkl")
    assert back.to_dict() == original.to_dict()
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / f"name@{sha}:m.pkl").write_bytes(b"x")  # a local file named like a Hub file
    monkeypatch.chdir(tmp_path)
    assert Location.parse(f"org/name@{sha}:m.pkl") == Location.local(f"org/name@{sha}:m.pkl")
    assert Location.parse(f"org/other@{sha}:m.pkl") == Location.in_repo(HUB, "org/other", sha, "m.pkl")
    assert Location.parse("org/name@" + sha).kind == LOCAL  # a file name, not a target
    assert Location.parse("org/name@" + sha, target=True) == Location.in_repo(HUB, "org/name", sha)
    assert Location.parse("not a repo/x@y:z").kind == LOCAL
