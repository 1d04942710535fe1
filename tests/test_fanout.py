"""Many Hub repos across machines: ``hub --repos-file --shard K/N`` jobs and ``safemodel merge``.

The shard jobs run against the Hub-compatible test server with the real huggingface_hub client,
exactly as the workflow example in ``examples/hub-sharded-scan.yml`` runs them."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from safemodel_ci import fanout
from safemodel_ci.cli import main
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_USAGE

from hub_server import FakeHub, fake_hub_env
from model_files import malicious_torch_bin, safetensors_bytes

pytest.importorskip("huggingface_hub")


def test_every_repo_lands_in_exactly_one_shard_and_never_moves() -> None:
    repos = [f"org{i % 37}/model-{i}" for i in range(1000)]
    for n in (1, 2, 3, 8):
        shards = [fanout.select_shard(repos, k, n) for k in range(1, n + 1)]
        assert sorted(r for s in shards for r in s) == sorted(repos)
        assert all(len(s) > 1000 / n * 0.75 for s in shards), [len(s) for s in shards]
    # Adding repos (or naming a revision) moves no existing repo.
    more = repos + [f"new/repo-{i}" for i in range(200)]
    assert all(fanout.shard_of(r, 8) == fanout.shard_of(r, 8) for r in more)
    assert {r: fanout.shard_of(r, 8) for r in repos} == {r: fanout.shard_of(r, 8) for r in more[:1000]}
    assert fanout.shard_of("Org/Model@refs/pr/1", 8) == fanout.shard_of("org/model", 8)


def test_repos_file_syntax() -> None:
    text = "# nightly list\nacme/a\n\nacme/b@v1  # pinned\nacme/a\n"
    assert fanout.read_targets(io.StringIO(text)) == ["acme/a", "acme/b@v1"]
    with pytest.raises(fanout.FanoutError, match="line 1"):
        fanout.read_targets(io.StringIO("acme/a acme/b\n"))
    for bad in ("0/3", "4/3", "1-3", "a/b"):
        with pytest.raises(fanout.FanoutError):
            fanout.parse_shard(bad)


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from fake_hub_env(tmp_path, monkeypatch)


def _repos(hub: FakeHub) -> List[str]:
    names = []
    for i in range(7):
        files = {"config.json": b'{"model_type": "bert"}',
                 "model.safetensors": safetensors_bytes({"w": ("F32", [4], 16)})}
        if i == 3:
            files["pytorch_model.bin"] = malicious_torch_bin()
        hub.add_commit(f"acme/m{i}", files)
        names.append(f"acme/m{i}")
    return names


def test_sharded_hub_scan_merges_to_the_full_scan(hub: FakeHub, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  sarif_schema_path: Path) -> None:
    repos = _repos(hub)
    listing = tmp_path / "repos.txt"
    listing.write_text("# every model of acme\n" + "\n".join(repos) + "\n")
    full = tmp_path / "full.json"
    scan = ["hub", "--repos-file", str(listing), "--format", "json", "-q", "--no-cache"]
    assert main(scan + ["-o", str(full)]) == EXIT_FINDINGS
    shards = []
    for k in (1, 2, 3):
        out = tmp_path / f"shard-{k}.json"
        main(scan + ["--shard", f"{k}/3", "-o", str(out)])
        data = json.loads(out.read_text())
        assert data["extra"]["shard"] == f"{k}/3"
        assert {r["repo_id"] for r in data["extra"]["hub"]} == set(fanout.select_shard(repos, k, 3))
        shards.append(str(out))
    capsys.readouterr()
    merged = tmp_path / "merged.json"
    assert main(["merge", *shards, "--format", "json", "-o", str(merged)]) == EXIT_FINDINGS
    want, got = json.loads(full.read_text()), json.loads(merged.read_text())
    assert sorted(json.dumps(f, sort_keys=True) for f in got["files"]) == \
        sorted(json.dumps(f, sort_keys=True) for f in want["files"])
    assert got["summary"] == want["summary"] and got["errors"] == []
    assert {r["repo_id"] for r in got["extra"]["hub"]} == set(repos)
    # SARIF and the Markdown summary of the merged report.
    sarif = tmp_path / "merged.sarif"
    assert main(["merge", *shards, "--format", "sarif", "-o", str(sarif)]) == EXIT_FINDINGS
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(sarif.read_text()), json.loads(sarif_schema_path.read_text()))
    assert main(["merge", *shards, "--format", "markdown"]) == EXIT_FINDINGS
    assert "pickle-dangerous-global" in capsys.readouterr().out
    # A shard job that died: its repos were not scanned, and the merge says so.
    clean = [s for s in shards if json.loads(Path(s).read_text())["exit_code"] == 0]
    assert clean, "the malicious repo should leave at least one clean shard"
    assert main(["merge", clean[0], "--format", "json"]) == EXIT_INCOMPLETE
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert any("shard report missing" in e["message"] for e in errors)
    assert main(["merge", clean[0], clean[0], *shards, "--format", "json"]) >= EXIT_FINDINGS
    assert any("given 2 times" in e["message"] or "given 3 times" in e["message"]
               for e in json.loads(capsys.readouterr().out)["errors"])


def test_merge_refuses_what_is_not_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"files": []}')
    assert main(["merge", str(bad)]) == EXIT_USAGE
    assert "not a safemodel-ci JSON report" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "missing.json")]) == EXIT_USAGE


def test_repos_from_stdin_and_an_empty_list(hub: FakeHub, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    hub.add_commit("acme/one", {"model.safetensors": safetensors_bytes({"w": ("F32", [4], 16)})})
    monkeypatch.setattr("sys.stdin", io.StringIO("acme/one\n"))
    assert main(["hub", "--repos-file", "-", "--format", "json", "-q"]) == 0
    assert [r["repo_id"] for r in json.loads(capsys.readouterr().out)["extra"]["hub"]] == ["acme/one"]
    assert main(["hub"]) == EXIT_USAGE
    assert "at least one repo" in capsys.readouterr().err


def test_workflow_example_runs_these_commands() -> None:
    """The documented matrix + merge workflow: one job per shard 1..N, each passing --shard K/N with
    the same N, and a merge job that runs after all of them, even when one fails."""
    yaml = pytest.importorskip("yaml")
    example = Path(__file__).resolve().parent.parent / "examples" / "hub-sharded-scan.yml"
    flow = yaml.safe_load(example.read_text())
    count = int(flow["env"]["SHARDS"])
    scan, merge = flow["jobs"]["scan"], flow["jobs"]["merge"]
    assert scan["strategy"]["matrix"]["shard"] == list(range(1, count + 1))
    assert scan["strategy"]["fail-fast"] is False
    commands = " ".join(step.get("run", "") for step in scan["steps"])
    assert "--repos-file" in commands and "--shard ${{ matrix.shard }}/${{ env.SHARDS }}" in commands
    assert merge["needs"] == "scan" and merge["if"] == "always()"
    merged = [step["run"] for step in merge["steps"] if "run" in step and "safemodel merge" in step["run"]]
    assert merged[-1] == "safemodel merge shard-*.json"  # the last step carries the verdict


def test_readers_are_built_once_when_threads_ask_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hub --jobs N`` scans in threads; the reader list, built on first use, must be built once.
    Before: threads that found it empty each appended every reader, and every file scanned in a fresh
    process read as "valid as safetensors and as safetensors" (a false HIGH polyglot finding, exit 1)."""
    import importlib
    import threading
    import types

    from safemodel_ci import formats

    def slow_import(name: str) -> types.ModuleType:
        time.sleep(0.002)  # widen the window an unguarded check-then-fill leaves open
        return importlib.import_module(name)

    monkeypatch.setattr(formats, "_readers", [])
    monkeypatch.setattr(formats, "importlib", types.SimpleNamespace(import_module=slow_import))
    start = threading.Barrier(8)
    got: List[List[str]] = []

    def ask() -> None:
        start.wait()
        got.append([r.name for r in formats.readers()])

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    want = [getattr(importlib.import_module(f"safemodel_ci.formats.{row.module}"), row.cls).name
            for row in formats.ROWS]
    assert len(got) == 8 and all(names == want for names in got)


def test_jobs_scan_the_same_as_one_at_a_time(hub: FakeHub, tmp_path: Path) -> None:
    """``--jobs 4`` gives the report ``--jobs 1`` gives, repos in the order listed."""
    repos = _repos(hub)
    listing = tmp_path / "repos.txt"
    listing.write_text("\n".join(repos) + "\n")
    reports = []
    for jobs in (1, 4):
        out = tmp_path / f"j{jobs}.json"
        assert main(["hub", "--repos-file", str(listing), "--format", "json", "-q", "--no-cache",
                     "--jobs", str(jobs), "-o", str(out)]) == EXIT_FINDINGS
        reports.append(json.loads(out.read_text()))
    assert reports[0]["files"] == reports[1]["files"] and reports[0]["summary"] == reports[1]["summary"]
    assert [r["repo_id"] for r in reports[1]["extra"]["hub"]] == repos
