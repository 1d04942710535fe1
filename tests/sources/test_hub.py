"""``safemodel hub``: the real huggingface_hub client against a Hub-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from safemodel_ci.cli import main
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK

from hub_server import FakeHub, fake_hub_env
from model_files import _SystemPayload, malicious_torch_bin, safetensors_bytes

pytest.importorskip("huggingface_hub")

SCHEMA = Path(__file__).resolve().parents[2] / "safemodel_ci" / "schemas" / "report-v1.json"


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from fake_hub_env(tmp_path, monkeypatch)


def run_json(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, dict, str]:
    code = main(args + ["--format", "json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def by_path(report: dict) -> Dict[str, dict]:
    return {f["path"]: f for f in report["files"]}


def test_malicious_pytorch_bin_is_found_reading_only_what_is_needed(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    evil = malicious_torch_bin()
    sha = hub.add_commit("acme/evil-bert", {
        "config.json": b'{"model_type": "bert"}',
        "pytorch_model.bin": evil,
        "model.safetensors": safetensors_bytes({"w": ("F32", [4], 16)}),
    })
    code, report, _ = run_json(["hub", "acme/evil-bert"], capsys)
    files = by_path(report)
    name = f"acme/evil-bert@{sha}:pytorch_model.bin"
    assert set(files) == {f"acme/evil-bert@{sha}:{p}"
                          for p in ("config.json", "pytorch_model.bin", "model.safetensors")}
    rules = {f["rule_id"] for f in files[name]["findings"]}
    assert "repo-pickle-beside-safetensors" in rules  # loaders pick safetensors; the pickle is still reported
    [repo] = report["extra"]["hub"]
    assert repo["sha"] == sha and repo["error"] is None and repo["files"] == 3
    # What the client counted is what the server sent, and the 1 MiB tensor storage was not fetched.
    assert repo["bytes_fetched"] == hub.served_bytes("acme/evil-bert")
    assert hub.served_bytes("acme/evil-bert", "pytorch_model.bin") < len(evil) / 2
    assert code == EXIT_FINDINGS
    dangerous = [f for f in files[name]["findings"] if f["rule_id"] == "pickle-dangerous-global"]
    assert dangerous and dangerous[0]["severity"] == "CRITICAL"
    assert dangerous[0]["member"].endswith("data.pkl")


def test_two_gigabyte_safetensors_validated_with_under_one_megabyte_fetched(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_len = 2 << 30
    header = {"embed.weight": {"dtype": "F32", "shape": [data_len // 4], "data_offsets": [0, data_len]},
              "__metadata__": {"format": "pt"}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    big = tmp_path / "model.safetensors"
    with open(big, "wb") as fh:  # sparse: header written, the 2 GiB of zeros are a hole
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + data_len)
    sha = hub.add_commit("acme/big", {"model.safetensors": (big, "0" * 64), "config.json": b"{}"})

    code, report, _ = run_json(["hub", "acme/big"], capsys)
    served = hub.served_bytes("acme/big", "model.safetensors")
    assert 0 < served < 1 << 20, served
    result = by_path(report)[f"acme/big@{sha}:model.safetensors"]
    assert result["size"] == 8 + len(raw) + data_len
    assert report["extra"]["hub"][0]["bytes_fetched"] < 1 << 20
    assert "safetensors" in result["formats"]
    assert result["complete"] and code == EXIT_OK
    assert [f for f in result["findings"] if f["severity"] != "INFO"] == []

    # The same bytes through a HubFileSource directly: the header arrives by range reads.
    from huggingface_hub import hf_hub_url

    from safemodel_ci.sources.hub import HubClientConfig, HubFileSource

    config = HubClientConfig.from_environment()
    url = hf_hub_url("acme/big", "model.safetensors", revision=sha, endpoint=config.endpoint)
    before = hub.served_bytes("acme/big", "model.safetensors")
    source = HubFileSource(url, 8 + len(raw) + data_len, "big", headers={})
    (n,) = struct.unpack("<Q", source.read_exact(0, 8))
    assert json.loads(source.read_exact(8, n)) == header
    assert source.read_exact(8 + len(raw) + data_len - 4, 4) == b"\0" * 4  # the tail, for polyglot checks
    assert hub.served_bytes("acme/big", "model.safetensors") - before == source.bytes_fetched <= 2 * 16384


def test_missing_repo_and_server_error_exit_2_while_other_repos_are_scanned(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    sha = hub.add_commit("acme/good", {"model.safetensors": safetensors_bytes({"w": ("F32", [2], 8)})})
    hub.add_commit("acme/broken", {"config.json": b"{}"})
    hub.fail_status["acme/broken"] = 500
    hub.add_commit("acme/busy", {"config.json": b"{}"})
    hub.fail_status["acme/busy"] = 429

    code = main(["hub", "acme/missing", "acme/broken", "acme/busy", "acme/good"])
    out, err = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert "acme/missing: ERROR repository not found (HTTP 404)" in out
    assert "acme/broken: ERROR Hub server error (HTTP 500)" in out
    assert "acme/busy: ERROR rate limited by the Hub (HTTP 429); retry after 1 s" in out
    assert f"acme/good@{sha}: 1 file, " in out  # the notes line with bytes fetched
    assert "fetched" in out

    code, report, _ = run_json(["hub", "acme/missing", "acme/broken", "acme/good"], capsys)
    assert code == EXIT_INCOMPLETE
    assert [e["target"] for e in report["errors"]] == ["acme/missing", "acme/broken"]
    assert f"acme/good@{sha}:model.safetensors" in by_path(report)
    assert [r["sha"] for r in report["extra"]["hub"]] == [None, None, sha]


def test_server_error_while_reading_files_is_unscanned_not_clean(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    sha = hub.add_commit("acme/flaky", {"a.safetensors": safetensors_bytes({"w": ("F32", [2], 8)}),
                                        "b.bin": b"\x80\x02}q\x00."})
    hub.fail_resolve["acme/flaky"] = 503
    code, report, _ = run_json(["hub", "acme/flaky"], capsys)
    assert code == EXIT_INCOMPLETE
    for path in ("a.safetensors", "b.bin"):
        result = by_path(report)[f"acme/flaky@{sha}:{path}"]
        assert not result["complete"]
        assert any(f["rule_id"] == "unscanned-unreadable" and "HTTP 503" in f["message"]
                   for f in result["findings"])


def test_gated_repo_needs_a_token_and_the_token_is_never_printed(
        hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    token = "hf_testSecretToken1234567890"
    sha = hub.add_commit("acme/gated", {"config.json": b"{}"}, gated=True)
    hub.valid_token = token
    code = main(["hub", "acme/gated"])
    out, err = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert "acme/gated: ERROR gated repository (HTTP 401)" in out and "HF_TOKEN" in out

    monkeypatch.setenv("HF_TOKEN", token)
    code, report, err = run_json(["hub", "acme/gated"], capsys)
    assert code == EXIT_OK and report["errors"] == []
    assert f"acme/gated@{sha}:config.json" in by_path(report)
    assert token not in json.dumps(report) and token not in err
    sent = [{k.lower(): v for k, v in h.items()}.get("authorization")
            for method, path, h in hub.requests if "/resolve/" in path]
    assert sent and all(a == f"Bearer {token}" for a in sent)


def test_revision_is_resolved_to_its_commit_and_reported(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    old = hub.add_commit("acme/versions", {"config.json": b'{"v": 1}'}, refs=("v1",))
    new = hub.add_commit("acme/versions", {"config.json": b'{"v": 2}', "extra.json": b"{}"}, refs=("main",))
    assert old != new
    code = main(["hub", "acme/versions", "--revision", "v1"])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    assert f"acme/versions@{old} (revision v1): 1 file, " in out
    code, report, _ = run_json(["hub", "acme/versions"], capsys)
    assert set(by_path(report)) == {f"acme/versions@{new}:config.json", f"acme/versions@{new}:extra.json"}
    code, report, _ = run_json(["hub", "acme/versions@v1", "acme/versions", "--revision", "main"], capsys)
    assert [r["sha"] for r in report["extra"]["hub"]] == [old, new]
    assert [r["revision"] for r in report["extra"]["hub"]] == ["v1", "main"]
    code = main(["hub", "acme/versions", "--revision", "no-such-branch"])
    out, _ = capsys.readouterr()
    assert code == EXIT_INCOMPLETE and "revision 'no-such-branch' not found" in out


def test_dataset_repos_are_prefixed(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    sha = hub.add_commit("acme/data", {"data/train.pkl": b"\x80\x02]q\x00."}, repo_type="dataset")
    code, report, _ = run_json(["hub", "acme/data", "--repo-type", "dataset"], capsys)
    assert f"datasets/acme/data@{sha}:data/train.pkl" in by_path(report)
    assert report["errors"] == []


def test_report_matches_the_json_schema(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    hub.add_commit("acme/schema", {"pytorch_model.bin": b"\x80\x02}q\x00.", "config.json": b"{}"})
    code, report, _ = run_json(["hub", "acme/schema", "acme/absent"], capsys)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert code == EXIT_INCOMPLETE


def test_index_checks_can_open_shards_through_range_reads(
        hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ctx.open_sibling`` on a Hub file opens other files of the same commit, and nothing outside it."""
    from safemodel_ci.scanner import ScanOptions
    from safemodel_ci.sources import hub as hub_module

    shard = safetensors_bytes({"w": ("F32", [2], 8)})
    index = {"weight_map": {"w": "model-00001-of-00001.safetensors"}}
    hub.add_commit("acme/sharded", {"sub/model.safetensors.index.json": json.dumps(index).encode(),
                                    "sub/model-00001-of-00001.safetensors": shard,
                                    "secret.bin": b"not a sibling of sub/"})
    seen: Dict[str, object] = {}
    real_scan = hub_module.scan_byte_source

    def spying_scan(source, path, options, siblings=None, real_path=None):  # type: ignore[no-untyped-def]
        if str(path).endswith("index.json"):  # a Location (the Hub file) or a name
            opened = siblings("model-00001-of-00001.safetensors")
            seen["shard_head"] = opened.read_at(0, 8) if opened else None
            seen["escape"] = siblings("../secret.bin")
            seen["absent"] = siblings("model-00002-of-00002.safetensors")
        return real_scan(source, path, options, siblings=siblings, real_path=real_path)

    monkeypatch.setattr(hub_module, "scan_byte_source", spying_scan)
    config = hub_module.HubClientConfig.from_environment()
    scan = hub_module.HubRepoScanner(config, ScanOptions()).scan("acme/sharded")
    assert scan.error is None and len(scan.files) == 3
    assert seen == {"shard_head": shard[:8], "escape": None, "absent": None}


def test_block_cache_turns_many_small_reads_into_few_requests(hub: FakeHub) -> None:
    from huggingface_hub import hf_hub_url

    from safemodel_ci.sources.hub import BlockCache, FetchStats, HubFileSource

    data = bytes(range(256)) * 4096  # 1 MiB
    sha = hub.add_commit("acme/blocks", {"blob.bin": data})
    url = hf_hub_url("acme/blocks", "blob.bin", revision=sha, endpoint=hub.endpoint)
    cache, stats = BlockCache(max_blocks=4), FetchStats()
    source = HubFileSource(url, len(data), "blob.bin", headers={}, cache=cache, stats=stats,
                           block_size=4096)
    for off in range(0, 4096, 16):  # 256 reads inside one block
        assert source.read_at(off, 16) == data[off:off + 16]
    assert stats.requests == 1
    assert source.read_at(4000, 10000) == data[4000:14000]  # spans blocks: one request for the missing run
    assert stats.requests == 2
    assert source.read_at(len(data) - 100, 1000) == data[-100:]
    assert len(cache) <= 4
    big = source.read_at(100_000, 600_000)  # longer than the cache: fetched directly, not cached
    assert big == data[100_000:700_000] and len(cache) <= 4
    assert stats.bytes_fetched == hub.served_bytes("acme/blocks", "blob.bin") == source.bytes_fetched


def test_loader_choice_findings_per_folder() -> None:
    from safemodel_ci.findings import HUB, Location
    from safemodel_ci.policy import Policy
    from safemodel_ci.sources.hub import loader_choice_findings

    found = loader_choice_findings(
        ["pytorch_model.bin", "model.safetensors", "unet/diffusion_pytorch_model.bin",
         "vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.safetensors", "training_args.bin"],
        lambda p: Location.in_repo(HUB, "r", "s", p), Policy())
    assert {p: [f.rule_id for f in fs] for p, fs in found.items()} == {
        "pytorch_model.bin": ["repo-pickle-beside-safetensors"],
        "unet/diffusion_pytorch_model.bin": ["repo-loader-picks-pickle"],
        "vae/diffusion_pytorch_model.bin": ["repo-pickle-beside-safetensors"],
    }
    assert found["pytorch_model.bin"][0].path == "r@s:pytorch_model.bin"


def test_unreachable_endpoint_is_a_per_repo_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    code = main(["hub", "acme/a", "acme/b"])
    out, _ = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert out.count("ERROR network error reaching") == 2


def test_hdf5_attributes_are_read_through_range_requests(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h5py = pytest.importorskip("h5py")
    np = pytest.importorskip("numpy")
    path = tmp_path / "tf_model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = '{"class_name": "Sequential", "config": {"layers": []}}'
        for i in range(20):
            f.create_dataset(f"w{i}", data=np.zeros((256, 256), dtype=np.float32))
    sha = hub.add_commit("acme/keras", {"tf_model.h5": path})
    code, report, _ = run_json(["hub", "acme/keras"], capsys)
    result = by_path(report)[f"acme/keras@{sha}:tf_model.h5"]
    assert "hdf5" in result["formats"] and result["complete"]
    assert hub.served_bytes("acme/keras") < path.stat().st_size / 10


def test_second_scan_of_the_same_commit_comes_from_the_result_cache(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SAFEMODEL_CACHE_DIR", str(tmp_path / "results"))
    sha = hub.add_commit("acme/nightly", {"pytorch_model.bin": malicious_torch_bin(), "config.json": b"{}"})
    first_code, first, _ = run_json(["hub", "acme/nightly"], capsys)
    fetched = hub.served_bytes("acme/nightly", "pytorch_model.bin")
    assert first_code == EXIT_FINDINGS and fetched > 0
    code, second, _ = run_json(["hub", "acme/nightly"], capsys)
    def without_bytes_read(report: dict) -> List[dict]:
        return [{k: v for k, v in f.items() if k != "bytes_read"} for f in report["files"]]

    assert code == first_code and without_bytes_read(second) == without_bytes_read(first)
    assert hub.served_bytes("acme/nightly", "pytorch_model.bin") == fetched  # LFS file not fetched again
    assert second["extra"]["hub"][0]["from_cache"] == 1 and second["extra"]["hub"][0]["sha"] == sha
    run_json(["hub", "acme/nightly", "--no-cache"], capsys)
    assert hub.served_bytes("acme/nightly", "pytorch_model.bin") == 2 * fetched


def test_progress_on_a_terminal_only(hub: FakeHub, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from safemodel_ci.settings import Settings

    hub.add_commit("acme/progress", {"a.json": b"{}", "b.json": b"[]"})
    main(["hub", "acme/progress"])  # captured stderr is not a terminal: quiet, as in CI
    assert "files scanned" not in capsys.readouterr().err
    monkeypatch.setattr(Settings, "show_progress", lambda self: True)
    main(["hub", "acme/progress"])
    err = capsys.readouterr().err
    assert "acme/progress: 2/2 files scanned" in err and "fetched" in err


# ---- a hostile endpoint: every loop bounded (time, pages, entries, bytes) ------------------------------

def limits_config(tmp_path: Path, **limits: object) -> str:
    path = tmp_path / "limits.safemodel.yaml"
    path.write_text("limits:\n" + "".join(f"  {k}: {v}\n" for k, v in limits.items()))
    return str(path)


def test_slow_loris_file_body_stops_at_the_time_budget(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    evil = malicious_torch_bin()
    files = {"pytorch_model.bin": evil, "config.json": b"{}", "a.safetensors": safetensors_bytes(
        {"w": ("F32", [2], 8)}), "b.pkl": b"\x80\x02}q\x00."}
    sha = hub.add_commit("acme/loris", files)
    hub.trickle_resolve["acme/loris"] = 0.05  # a byte every 50 ms: each socket read succeeds
    config = limits_config(tmp_path, **{"max-seconds-per-file": 1.5})
    start = time.monotonic()
    code, report, _ = run_json(["hub", "acme/loris", "--config", config], capsys)
    elapsed = time.monotonic() - start
    # One budget of 1.5 s for the first file, then the repo's other files fail at once: the server
    # would keep trickling for 20 s per file.
    assert elapsed < 5, elapsed
    assert code == EXIT_INCOMPLETE
    results = by_path(report)
    first, *later = sorted(files)
    assert any(f["rule_id"] in ("unscanned-limit", "unscanned-unreadable") and "time budget" in f["message"]
               for f in results[f"acme/loris@{sha}:{first}"]["findings"])
    for path in later:
        result = results[f"acme/loris@{sha}:{path}"]
        assert not result["complete"]
        assert any("the server stalled past the time budget on" in f["message"] for f in result["findings"])


def test_trickled_api_headers_end_the_repo_at_the_time_budget(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The status line arrives a byte at a time: socket timeouts never fire, the deadline does."""
    import time

    hub.add_commit("acme/slowapi", {"config.json": b"{}"})
    good = hub.add_commit("acme/fine", {"config.json": b"{}"})
    hub.trickle_api["acme/slowapi"] = 0.01
    config = limits_config(tmp_path, **{"max-seconds-per-file": 1})
    start = time.monotonic()
    code, report, _ = run_json(["hub", "acme/slowapi", "acme/fine", "--config", config], capsys)
    assert time.monotonic() - start < 6
    assert code == EXIT_INCOMPLETE
    [error] = report["errors"]
    assert error["target"] == "acme/slowapi" and "time budget" in error["message"]
    assert f"acme/fine@{good}:config.json" in by_path(report)  # the next repo is scanned as usual


def test_endless_tree_pagination_stops_at_the_page_limit(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sha = hub.add_commit("acme/endless", {"config.json": b"{}"})
    hub.endless_tree["acme/endless"] = 3
    config = limits_config(tmp_path, **{"hub-max-tree-pages": 5})
    code, report, _ = run_json(["hub", "acme/endless", "--config", config], capsys)
    assert code == EXIT_INCOMPLETE
    assert hub.tree_pages["acme/endless"] == 5
    limit = by_path(report)[f"acme/endless@{sha}"]
    assert [f["rule_id"] for f in limit["findings"]] == ["unscanned-limit"]
    assert "hub-max-tree-pages" in limit["findings"][0]["message"]
    assert limit["findings"][0]["details"] == {"entries": 15, "pages": 5}
    # The 15 files listed on those pages were scanned (each answers 404 here: unscanned too).
    assert len(report["files"]) == 16


def test_million_entry_tree_stops_at_the_entry_limit_with_bounded_memory(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults: 200,000 entries. The listing is kept compact and page by page, never whole."""
    import tracemalloc

    sha = hub.add_commit("acme/million", {"config.json": b"{}"})
    hub.huge_tree["acme/million"] = 1_000_000
    tracemalloc.start()
    try:
        code, report, _ = run_json(["hub", "acme/million"], capsys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == EXIT_INCOMPLETE
    assert hub.tree_pages["acme/million"] == 201  # 200 pages of 1,000, then the limit on the next one
    limit = by_path(report)[f"acme/million@{sha}"]
    assert "hub-max-tree-entries" in limit["findings"][0]["message"]
    assert limit["findings"][0]["details"]["entries"] == 200_000
    assert peak < 64 << 20, peak  # one page of 1,000 folders at a time; folders are not kept


def test_api_answers_are_asked_uncompressed_and_a_gzip_one_is_still_read(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    sha = hub.add_commit("acme/zipped", {"config.json": b"{}", "sub/model.pkl": b"\x80\x02}q\x00."})
    hub.gzip_api.add("acme/zipped")  # a server (or proxy) that compresses anyway
    code, report, _ = run_json(["hub", "acme/zipped"], capsys)
    assert code == EXIT_OK and report["errors"] == []
    assert set(by_path(report)) == {f"acme/zipped@{sha}:config.json", f"acme/zipped@{sha}:sub/model.pkl"}
    api = [{k.lower(): v for k, v in h.items()} for _, path, h in hub.requests if path.startswith("/api/")]
    assert api and all(h.get("accept-encoding") == "identity" for h in api)


def test_encoded_file_bytes_are_refused_not_scanned_as_the_file(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that gzips a range although identity was asked: offsets would not be the file's."""
    sha = hub.add_commit("acme/gz", {"model.pkl": pickle.dumps(_SystemPayload("echo pwned"), protocol=2)})
    hub.gzip_resolve.add("acme/gz")
    code, report, _ = run_json(["hub", "acme/gz"], capsys)
    result = by_path(report)[f"acme/gz@{sha}:model.pkl"]
    assert code == EXIT_INCOMPLETE and not result["complete"]
    assert any(f["rule_id"] == "unscanned-unreadable" and "gzip-encoded" in f["message"]
               for f in result["findings"])


def test_one_huge_tree_page_is_cut_at_the_answer_size_bound(
        hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    from safemodel_ci.sources.hub import MAX_API_BODY_BYTES

    sha = hub.add_commit("acme/hugepage", {"config.json": b"{}"})
    hub.huge_page["acme/hugepage"] = MAX_API_BODY_BYTES + (8 << 20)
    code, report, _ = run_json(["hub", "acme/hugepage"], capsys)
    assert code == EXIT_INCOMPLETE
    limit = by_path(report)[f"acme/hugepage@{sha}"]
    assert "answer larger than 32.0 MiB" in limit["findings"][0]["message"]
