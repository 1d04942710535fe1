"""Command-line conventions: --exclude, ``scan -``, a URL given to scan, rules as JSON, cache --repo,
hub --jobs, progress with totals and bytes. Real files, the real CLI entry point."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from safemodel_ci.cli import main
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from safemodel_ci.rules import RULES
from safemodel_ci.settings import Settings

from hub_server import FakeHub, fake_hub_env
from model_files import _SystemPayload, safetensors_bytes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture()
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """models/good.safetensors, models/fixtures/evil.pkl (an os.system pickle); cwd is tmp_path."""
    (tmp_path / "models" / "fixtures").mkdir(parents=True)
    (tmp_path / "models" / "good.safetensors").write_bytes(safetensors_bytes({"w": ("F32", [2], 8)}))
    (tmp_path / "models" / "fixtures" / "evil.pkl").write_bytes(
        pickle.dumps(_SystemPayload("echo pwned"), protocol=2))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAFEMODEL_NO_CACHE", "1")
    return tmp_path


def scan_json(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, dict, str]:
    code = main(["scan", *args, "--format", "json", "--jobs", "1"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def test_exclude_on_the_command_line_uses_the_config_syntax(
        tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = scan_json(["models"], capsys)
    assert code == EXIT_FINDINGS
    code, report, _ = scan_json(["models", "--exclude", "models/fixtures/**"], capsys)
    assert code == EXIT_OK and [f["path"] for f in report["files"]] == ["models/good.safetensors"]
    code, report, _ = scan_json(["models", "--exclude", "*.pkl", "--exclude", "nothing"], capsys)
    assert code == EXIT_OK  # a pattern without / matches a name at any depth, as in the config
    code, _, err = scan_json(["models", "--exclude", " "], capsys)
    assert code == EXIT_USAGE and "--exclude" in err


def test_scan_dash_reads_paths_from_standard_input(
        tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("models/good.safetensors\n\nmodels/fixtures/evil.pkl\n"))
    code, report, _ = scan_json(["-"], capsys)
    assert code == EXIT_FINDINGS
    assert [f["path"] for f in report["files"]] == ["models/good.safetensors", "models/fixtures/evil.pkl"]


@pytest.mark.parametrize("url", ["https://huggingface.co/org/name", "hf://org/name",
                                 "huggingface.co/org/name"])
def test_scan_of_a_url_says_to_use_hub(tree: Path, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["scan", url])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "safemodel hub" in err and url in err


def test_rules_as_json_list_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--format", "json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [r.id for r in RULES]
    first = listed[0]
    assert set(first) == {"id", "severity", "unscanned", "code_execution", "title", "description", "remedy"}
    assert {r["id"]: r["unscanned"] for r in listed}["unscanned-limit"] is True


def test_scan_progress_shows_done_total_and_bytes(
        tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(Settings, "show_progress", lambda self: True)
    main(["scan", "models", "--jobs", "1"])
    err = capsys.readouterr().err
    size = sum(p.stat().st_size for p in (tree / "models").rglob("*") if p.is_file())
    assert "scanned 1/2 files" in err and f"scanned 2/2 files, {size} B" in err


def test_summary_says_one_file(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan", "models/good.safetensors"])
    assert "scanned 1 file," in capsys.readouterr().out


# ---- hub and cache ---------------------------------------------------------------------------------

@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    pytest.importorskip("huggingface_hub")
    yield from fake_hub_env(tmp_path, monkeypatch)


def test_hub_jobs_scans_repos_at_once_in_the_order_given(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    repos = [f"acme/r{i}" for i in range(4)]
    for i, repo in enumerate(repos):
        files = {"config.json": b"{}"}
        if i == 2:
            files["model.pkl"] = pickle.dumps(_SystemPayload("echo pwned"), protocol=2)
        hub.add_commit(repo, files)
    reports = []
    for jobs in ("1", "3"):
        code = main(["hub", *repos, "--jobs", jobs, "--format", "json", "--no-cache"])
        reports.append((code, json.loads(capsys.readouterr().out)))
    (code1, one), (code3, three) = reports
    assert code1 == code3 == EXIT_FINDINGS
    assert [f["path"] for f in one["files"]] == [f["path"] for f in three["files"]]
    assert [r["repo_id"] for r in three["extra"]["hub"]] == repos
    with pytest.raises(SystemExit) as exc:  # argparse: a usage error, exit 3
        main(["hub", "acme/r0", "--jobs", "0"])
    assert exc.value.code == EXIT_USAGE


def test_cache_repo_scans_one_repo(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "cache"
    shas = {}
    for repo in ("acme/one", "acme/two"):
        shas[repo] = hub.add_commit(repo, {"config.json": b"{}"})
        hf_hub_download(repo, "config.json", cache_dir=cache, endpoint=hub.endpoint, token=False)
    code = main(["cache", "--cache-dir", str(cache), "--repo", "acme/two", "--format", "json", "--no-cache"])
    report = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    assert [f["path"] for f in report["files"]] == [f"acme/two@{shas['acme/two']}:config.json"]
    assert report["extra"]["cache"]["repos"] == 1
    code = main(["cache", "--cache-dir", str(cache), "--repo", "acme/absent"])
    assert code == EXIT_USAGE and "acme/absent: not in the cache" in capsys.readouterr().err


def test_cache_progress_shows_done_and_total(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "cache"
    hub.add_commit("acme/p", {"a.json": b"{}", "b.json": b"[]"})
    for name in ("a.json", "b.json"):
        hf_hub_download("acme/p", name, cache_dir=cache, endpoint=hub.endpoint, token=False)
    monkeypatch.setattr(Settings, "show_progress", lambda self: True)
    main(["cache", "--cache-dir", str(cache), "--no-cache"])
    err = capsys.readouterr().err
    assert "cache: 1/2 files, 1 blob scanned" in err and "cache: 2/2 files, 2 blobs scanned" in err
