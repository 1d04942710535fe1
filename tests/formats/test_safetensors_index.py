"""Sharded checkpoints: a real index written by huggingface_hub passes; each inconsistency is reported."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from safemodel_ci.formats.safetensors_index import shard_name_problem
from safemodel_ci.scanner import ScanOptions, scan_file
from safemodel_ci.sources.paths import iter_paths

INDEX = "model.safetensors.index.json"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


@pytest.fixture()
def sharded(tmp_path: Path) -> Path:
    """A sharded checkpoint written by the real huggingface_hub serializer (tied weights included)."""
    torch = pytest.importorskip("torch")
    hub = pytest.importorskip("huggingface_hub")
    state = {f"layer.{i}.weight": torch.randn(64, 64) for i in range(4)}
    state["layer.0.bias"] = torch.zeros(64, dtype=torch.bfloat16)
    state["tied"] = state["layer.0.weight"]
    hub.save_torch_state_dict(state, str(tmp_path), max_shard_size=40000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SHARD1, SHARD2, INDEX]
    return tmp_path


def scan_dir(directory: Path) -> Dict[str, List[Any]]:
    """Findings of every file of a directory, by file name."""
    out: Dict[str, List[Any]] = {}
    for path in iter_paths([str(directory)]):
        result = scan_file(path, ScanOptions())
        out[Path(path).name] = result.findings
        if Path(path).name == INDEX:
            assert "safetensors-index" in result.formats
    return out


def index_rules(directory: Path) -> List[str]:
    return [f.rule_id for f in scan_dir(directory)[INDEX]]


def edit_index(directory: Path, **changes: Any) -> Dict[str, Any]:
    index = json.loads((directory / INDEX).read_text())
    for key, value in changes.items():
        index[key] = value
    (directory / INDEX).write_text(json.dumps(index))
    return index


def write_shard(path: Path, tensors: Dict[str, int]) -> None:
    """A valid safetensors shard with F32 vectors of the given lengths."""
    header, offset = {}, 0
    for name, count in tensors.items():
        header[name] = {"dtype": "F32", "shape": [count], "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_consistent_sharded_checkpoint_passes(sharded: Path) -> None:
    findings = scan_dir(sharded)
    assert findings == {INDEX: [], SHARD1: [], SHARD2: []}


def test_index_alone_without_directory_context_checks_names_only(sharded: Path) -> None:
    # Scanned as a member (no sibling opener): existence cannot be judged, so nothing is claimed.
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(sharded / INDEX, INDEX)
    bundle = sharded / "bundle.zip"
    bundle.write_bytes(buf.getvalue())
    result = scan_file(str(bundle), ScanOptions())
    assert [f.rule_id for f in result.findings] == []
    assert f"{INDEX}=safetensors-index" in result.formats


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors",
                                  "..\\model.safetensors", "C:model.safetensors", "..", ""])
def test_shard_path_that_is_not_a_plain_name(sharded: Path, name: str) -> None:
    index = json.loads((sharded / INDEX).read_text())
    index["weight_map"]["layer.3.weight"] = name
    (sharded / INDEX).write_text(json.dumps(index))
    rules = index_rules(sharded)
    assert "safetensors-index-shard-path" in rules
    assert "safetensors-index-shard-missing" not in rules  # never opened


def test_plain_names_are_accepted() -> None:
    for name in ("model.safetensors", "a..b.safetensors", "pytorch_model-00001-of-00002.bin"):
        assert shard_name_problem(name) is None


def test_missing_shard(sharded: Path) -> None:
    (sharded / SHARD2).unlink()
    findings = scan_dir(sharded)[INDEX]
    assert [f.rule_id for f in findings] == ["safetensors-index-shard-missing"]
    assert SHARD2 in findings[0].message


def test_mapped_tensor_missing_from_its_shard(sharded: Path) -> None:
    index = json.loads((sharded / INDEX).read_text())
    index["weight_map"]["ghost.weight"] = SHARD1
    (sharded / INDEX).write_text(json.dumps(index))
    findings = scan_dir(sharded)[INDEX]
    rules = [f.rule_id for f in findings]
    assert "safetensors-index-tensor-missing" in rules
    assert any("ghost.weight" in f.message for f in findings)


def test_shard_tensor_not_in_map(sharded: Path) -> None:
    index = json.loads((sharded / INDEX).read_text())
    moved = next(k for k, v in index["weight_map"].items() if v == SHARD2)
    del index["weight_map"][moved]
    (sharded / INDEX).write_text(json.dumps(index))
    findings = scan_dir(sharded)[INDEX]
    assert "safetensors-index-tensor-unmapped" in [f.rule_id for f in findings]
    assert any(moved in f.message for f in findings)


def test_tensor_in_two_shards(sharded: Path) -> None:
    index = json.loads((sharded / INDEX).read_text())
    write_shard(sharded / "model-extra.safetensors", {"layer.1.weight": 4})
    index["weight_map"]["extra.weight"] = "model-extra.safetensors"
    (sharded / INDEX).write_text(json.dumps(index))
    rules = index_rules(sharded)
    assert "safetensors-index-tensor-in-two-shards" in rules


def test_total_size_mismatch(sharded: Path) -> None:
    index = json.loads((sharded / INDEX).read_text())
    true_size = index["metadata"]["total_size"]
    index["metadata"]["total_size"] = true_size + 4
    (sharded / INDEX).write_text(json.dumps(index))
    findings = scan_dir(sharded)[INDEX]
    assert [f.rule_id for f in findings] == ["safetensors-index-total-size"]
    assert findings[0].details == {"total_size": true_size + 4, "tensor_bytes": true_size}


def test_total_size_not_integer(sharded: Path) -> None:
    edit_index(sharded, metadata={"total_size": "big"})
    assert index_rules(sharded) == ["safetensors-index-invalid"]


def test_duplicate_keys_in_index(sharded: Path) -> None:
    text = (sharded / INDEX).read_text()
    text = text.replace('"weight_map": {', f'"weight_map": {{\n    "layer.0.weight": "{SHARD2}",', 1)
    (sharded / INDEX).write_text(text)
    rules = index_rules(sharded)
    assert "safetensors-index-duplicate-key" in rules


def test_index_not_json(sharded: Path) -> None:
    (sharded / INDEX).write_text('{"weight_map": {"a": "model.safetensors",}}')
    assert index_rules(sharded) == ["safetensors-index-invalid"]


def test_weight_map_value_not_a_name(sharded: Path) -> None:
    index = json.loads((sharded / INDEX).read_text())
    index["weight_map"]["layer.0.weight"] = ["a", "b"]
    (sharded / INDEX).write_text(json.dumps(index))
    assert "safetensors-index-invalid" in index_rules(sharded)


def test_invalid_shard_is_reported_by_the_index_and_on_its_own(sharded: Path) -> None:
    with open(sharded / SHARD2, "ab") as fh:
        fh.write(b"PK trailing junk")
    findings = scan_dir(sharded)
    assert [f.rule_id for f in findings[INDEX]] == ["safetensors-index-shard-invalid"]
    assert "safetensors-data-coverage" in findings[INDEX][0].message
    assert [f.rule_id for f in findings[SHARD2]] == ["safetensors-data-coverage"]


def test_shard_named_safetensors_that_is_not(sharded: Path) -> None:
    (sharded / SHARD2).write_bytes(b"\x80\x02}q\x00.")
    assert "safetensors-index-shard-invalid" in index_rules(sharded)


def test_pytorch_bin_index_checks_names_and_existence(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"a": torch.zeros(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.zeros(2)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    index = {"metadata": {"total_size": 16},
             "weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    result = scan_file(str(tmp_path / "pytorch_model.bin.index.json"), ScanOptions())
    assert result.findings == []
    index["weight_map"]["c"] = "../pytorch_model-00003-of-00003.bin"
    index["weight_map"]["d"] = "pytorch_model-00004-of-00004.bin"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    result = scan_file(str(tmp_path / "pytorch_model.bin.index.json"), ScanOptions())
    assert sorted(f.rule_id for f in result.findings) == ["safetensors-index-shard-missing",
                                                          "safetensors-index-shard-path"]


def test_json_that_is_not_an_index_is_not_claimed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    result = scan_file(str(tmp_path / "config.json"), ScanOptions())
    assert "safetensors-index" not in result.formats


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Hub-compatible server on 127.0.0.1 (tests/hub_server.py) for the real huggingface_hub client."""
    pytest.importorskip("huggingface_hub")
    from hub_server import fake_hub_env

    yield from fake_hub_env(tmp_path, monkeypatch)


def test_index_checks_on_a_hub_repository(hub: Any, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real huggingface_hub client: shards are opened by range reads beside the index."""
    from safemodel_ci.cli import main

    write_shard(tmp_path / "s1.safetensors", {"a": 2, "b": 2})
    index = {"metadata": {"total_size": 16},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                            "c": "model-00002-of-00002.safetensors"}}
    sha = hub.add_commit("acme/sharded", {INDEX: json.dumps(index).encode(),
                                          SHARD1: (tmp_path / "s1.safetensors").read_bytes()})
    main(["hub", "acme/sharded", "--quiet", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    files = {f["path"]: f for f in report["files"]}
    rules = [f["rule_id"] for f in files[f"acme/sharded@{sha}:{INDEX}"]["findings"]]
    assert rules == ["safetensors-index-shard-missing"]
    assert files[f"acme/sharded@{sha}:{SHARD1}"]["findings"] == []
