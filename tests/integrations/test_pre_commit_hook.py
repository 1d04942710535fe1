"""The pre-commit adapter called the way pre-commit calls it: ``main([...files])`` from the repo root."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from safemodel_ci.hooks.pre_commit import MODEL_NAME_RE, main, scan_targets, select_files

REPO_ROOT = Path(__file__).resolve().parents[2]


class _SystemPayload:
    """Pickles to ``os.system(...)``; dumping it does not run anything."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


MALICIOUS = pickle.dumps({"weights": [0.5], "hook": _SystemPayload()}, protocol=2)
BENIGN = pickle.dumps({"weights": [0.5, 1.5], "epoch": 3}, protocol=2)
#: Protocol 0 pickle calling ``mypkg.layers.Custom()``: an import that is on no list (HIGH).
UNKNOWN_GLOBAL = b"cmypkg.layers\nCustom\n(tR."


@pytest.fixture()
def in_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pre-commit runs hooks with the repository root as the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_no_files_is_a_quiet_pass(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == ""


def test_malicious_pickle_fails_with_one_line_per_finding_and_what_to_do(
        in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "models").mkdir()
    (in_repo / "models" / "evil.pkl").write_bytes(MALICIOUS)
    (in_repo / "ok.pkl").write_bytes(BENIGN)
    assert main(["models/evil.pkl", "ok.pkl"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert re.match(r"^models/evil\.pkl: CRITICAL pickle-dangerous-global .*(os|posix)\.system", lines[0])
    assert not any(line.startswith("ok.pkl") for line in lines)
    assert "What to do:" in out and "safetensors" in out and "under ignore in .safemodel.yaml" in out
    assert lines[-1].startswith("FAIL: scanned 2 files, 1 blocking finding")


def test_benign_files_pass_silently(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "ok.pkl").write_bytes(BENIGN)
    assert main(["ok.pkl"]) == 0
    assert capsys.readouterr().out == ""


def test_benign_torch_checkpoint_and_safetensors_pass(in_repo: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = {"w": torch.ones(4, 4), "b": torch.zeros(4)}
    torch.save({"state_dict": weights}, "checkpoint.pth")
    safetensors_torch.save_file(weights, "model.safetensors")
    assert main(["checkpoint.pth", "model.safetensors"]) == 0


def test_fail_on_sets_the_blocking_threshold(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "custom.pkl").write_bytes(UNKNOWN_GLOBAL)
    assert main(["custom.pkl"]) == 1
    out = capsys.readouterr().out
    assert "custom.pkl: HIGH pickle-unknown-global" in out and "allow-globals" in out
    assert main(["--fail-on", "critical", "custom.pkl"]) == 0


def test_usage_error_exits_3(in_repo: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--fail-on", "info", "x.pkl"])
    assert exc.value.code == 3


def test_name_matched_non_models_are_skipped_quietly(
        in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A sentencepiece tokenizer.model, a data blob named .bin, a zip of documents.
    (in_repo / "tokenizer.model").write_bytes(b"\n\x0b\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02" * 8)
    (in_repo / "notes.bin").write_bytes(b"just some bytes, not a model\n" * 10)
    with zipfile.ZipFile(in_repo / "docs.zip", "w") as zf:
        zf.writestr("README.txt", "hello")
        zf.writestr("data/table.csv", "a,b\n1,2\n")
    assert main(["tokenizer.model", "notes.bin", "docs.zip"]) == 0
    assert capsys.readouterr().out == ""


def test_saved_model_pb_scans_its_directory(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sm = in_repo / "export" / "1"
    (sm / "variables").mkdir(parents=True)
    (sm / "assets").mkdir()
    (sm / "saved_model.pb").write_bytes(b"\x08\x01\x12\x00")
    (sm / "variables" / "variables.index").write_bytes(b"\x00" * 16)
    # Not named like a model, so pre-commit would never pass it on its own: the directory walk finds it.
    (sm / "assets" / "vocab.data").write_bytes(MALICIOUS)
    assert main(["export/1/saved_model.pb", "export/1/variables/variables.index"]) == 1
    assert "export/1/assets/vocab.data: CRITICAL pickle-dangerous-global" in capsys.readouterr().out


def test_scan_targets_expands_saved_models_once() -> None:
    assert scan_targets(["a.pkl", "a.pkl", "b.pt"]) == ["a.pkl", "b.pt"]


def test_scan_targets_drops_files_inside_a_walked_saved_model(in_repo: Path) -> None:
    (in_repo / "sm" / "variables").mkdir(parents=True)
    (in_repo / "sm" / "saved_model.pb").write_bytes(b"")
    (in_repo / "sm" / "variables" / "v.index").write_bytes(b"")
    (in_repo / "sm2.pb").write_bytes(b"")
    targets = scan_targets(["sm/variables/v.index", "sm/saved_model.pb", "sm2.pb"])
    assert sorted(targets) == sorted([os.path.join("sm", "saved_model.pb"),
                                      os.path.join("sm", "variables", "v.index"), "sm2.pb"])


def _lfs_pointer(data: bytes) -> bytes:
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def test_lfs_pointer_without_content_fails_closed(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["git", "init", "-q", str(in_repo)], check=True)
    (in_repo / "model.bin").write_bytes(_lfs_pointer(MALICIOUS))
    assert main(["model.bin"]) == 2
    out = capsys.readouterr().out
    assert "model.bin: UNSCANNED lfs-pointer-missing" in out
    assert out.splitlines()[-1].startswith("INCOMPLETE:")


def test_lfs_pointer_is_resolved_from_the_repos_object_store(
        in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["git", "init", "-q", str(in_repo)], check=True)
    oid = hashlib.sha256(MALICIOUS).hexdigest()
    store = in_repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
    store.mkdir(parents=True)
    (store / oid).write_bytes(MALICIOUS)
    (in_repo / "model.bin").write_bytes(_lfs_pointer(MALICIOUS))
    assert main(["model.bin"]) == 1
    assert re.search(r"^model\.bin.*: CRITICAL pickle-dangerous-global", capsys.readouterr().out, re.M)


def test_manifest_hooks_receive_every_file_and_select_by_name_or_content() -> None:
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    ids = {h["id"]: h for h in hooks}
    assert set(ids) == {"safemodel-scan", "safemodel-scan-strict", "safemodel-scan-all"}
    assert ids["safemodel-scan-strict"]["args"] == ["--fail-on", "medium"]
    assert ids["safemodel-scan-all"]["entry"] == "safemodel-pre-commit --every-file"
    for hook in hooks:
        assert hook["entry"].split()[0] == "safemodel-pre-commit" and hook["language"] == "python"
        assert "require_serial" not in hook
        # pre-commit ANDs files with types: any filter here would hide renamed models.
        assert not {"files", "types", "types_or"} & set(hook), hook["id"]
    for name in ["m.pkl", "m.PICKLE", "a/m.pt", "m.pth", "pytorch_model.bin", "m.ckpt", "m.joblib",
                 "m.joblib.gz", "x.npy", "x.npz", "m.h5", "m.hdf5", "m.keras", "m.safetensors",
                 "m.gguf", "m.onnx", "export/saved_model.pb", "flax_model.msgpack", "m.dill",
                 "m.sav", "tokenizer.model", "m.pt2", "m.ptl", "m.tar", "m.7z", "m.zip",
                 "model.safetensors.index.json", "sub/tokenizer_config.json", "chat_template.jinja",
                 "chat_template.json", "processor_config.json", "additional_chat_templates/rag.jinja"]:
        assert MODEL_NAME_RE.search(name), name
    for name in ["README.md", "config.json", "train.py", "my_tokenizer_config.json", "m.binx"]:
        assert not MODEL_NAME_RE.search(name), name


def test_files_with_other_names_are_selected_by_their_first_bytes(in_repo: Path) -> None:
    torch = pytest.importorskip("torch")
    files = {
        "weights.dat": MALICIOUS,  # protocol 2: binary
        "model_weights": pickle.dumps({"w": [1, 2]}, protocol=0),  # protocol 0: printable text
        "ckpt_blob": b"",
        "pointer.txt": _lfs_pointer(MALICIOUS),
        "image.png": bytes(range(256)),
        "train.py": b"import os\nclass Model:\n    pass\n",
        "index.html": b"<html>\n</html>\n",
        "notes.txt": b"(a note in parentheses)\n",
        "config.json": b'{"hidden_size": 4}\n',
        "c_like.txt": b"cos\nsystem\n",  # a GLOBAL opcode line pair and no more: not a pickle
    }
    for name, data in files.items():
        (in_repo / name).write_bytes(data)
    torch.save({"w": torch.ones(2)}, str(in_repo / "renamed_checkpoint"))
    names = sorted([*files, "renamed_checkpoint"])
    assert select_files(names) == ["image.png", "model_weights", "pointer.txt", "renamed_checkpoint",
                                   "weights.dat"]
    assert select_files(names, every_file=True) == names


def test_renamed_pickles_block_and_source_files_pass(in_repo: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "weights.dat").write_bytes(MALICIOUS)
    (in_repo / "model_weights").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    (in_repo / "train.py").write_text("import os\n")
    assert main(["train.py"]) == 0 and capsys.readouterr().out == ""
    assert main(["train.py", "weights.dat", "model_weights"]) == 1
    out = capsys.readouterr().out
    assert "weights.dat: CRITICAL pickle-dangerous-global" in out
    assert "model_weights: CRITICAL pickle-dangerous-global" in out
    assert "train.py" not in out
    # Every file by content: a text file is scanned too (and, being no model, passes quietly).
    assert main(["--every-file", "train.py"]) == 0 and capsys.readouterr().out == ""


def test_manifest_is_valid_for_pre_commit() -> None:
    pytest.importorskip("pre_commit")
    proc = subprocess.run([sys.executable, "-m", "pre_commit", "validate-manifest",
                           str(REPO_ROOT / ".pre-commit-hooks.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_allows_a_named_global(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "custom.pkl").write_bytes(UNKNOWN_GLOBAL)
    (in_repo / ".safemodel.yaml").write_text(
        "allow-globals:\n  - global: mypkg.layers.Custom\n    reason: our own layer, reviewed\n")
    assert main(["custom.pkl"]) == 0
    assert capsys.readouterr().out == ""


def test_config_ignore_by_sha256_accepts_exactly_that_file(
        in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "vendor.pkl").write_bytes(MALICIOUS)
    (in_repo / "other.pkl").write_bytes(MALICIOUS + b"\x00")  # different bytes: not covered
    cfg = in_repo / "ci" / "safemodel.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"ignore:\n  - sha256: {hashlib.sha256(MALICIOUS).hexdigest()}\n"
                   "    reason: vendor file, only loaded in the sandbox\n")
    assert main(["--config", str(cfg), "vendor.pkl"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["--config", str(cfg), "vendor.pkl", "other.pkl"]) == 1
    out = capsys.readouterr().out
    assert "other.pkl: CRITICAL" in out and "vendor.pkl" not in out


def test_invalid_config_is_a_usage_error(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / ".safemodel.yaml").write_text("allow-globals:\n  - os.system\n")
    (in_repo / "ok.pkl").write_bytes(BENIGN)
    assert main(["ok.pkl"]) == 3
    assert ".safemodel.yaml:2" in capsys.readouterr().err


def test_second_run_is_served_from_the_result_cache(
        in_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    import safemodel_ci.cache as cache_module

    monkeypatch.setenv("SAFEMODEL_CACHE_DIR", str(in_repo / "cache"))
    torch.save({"w": torch.ones(64, 64)}, "model.pt")
    (in_repo / "evil.pkl").write_bytes(MALICIOUS)
    assert main(["model.pt", "evil.pkl"]) == 1
    first = capsys.readouterr().out
    assert list((in_repo / "cache").rglob("*.json"))

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("scanned again although nothing changed")

    real_scan_source = cache_module.scan_source
    monkeypatch.setattr(cache_module, "scan_source", no_scan)
    assert main(["model.pt", "evil.pkl"]) == 1
    assert capsys.readouterr().out == first
    # A changed file is scanned again.
    monkeypatch.setattr(cache_module, "scan_source", real_scan_source)
    (in_repo / "evil.pkl").write_bytes(BENIGN)
    assert main(["model.pt", "evil.pkl"]) == 0


def test_no_cache_writes_nothing(in_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEMODEL_CACHE_DIR", str(in_repo / "cache"))
    (in_repo / "ok.pkl").write_bytes(BENIGN)
    assert main(["--no-cache", "ok.pkl"]) == 0
    assert not (in_repo / "cache").exists()


def test_saved_model_at_the_repo_root_is_shown_without_dot_prefix(
        in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_repo / "saved_model.pb").write_bytes(b"\x08\x01\x12\x00")
    (in_repo / "assets").mkdir()
    (in_repo / "assets" / "extra.data").write_bytes(MALICIOUS)
    assert main(["saved_model.pb"]) == 1
    assert capsys.readouterr().out.startswith("assets/extra.data: CRITICAL pickle-dangerous-global")


def test_a_sniffer_failure_selects_the_file(in_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safemodel_ci.formats.pickle as pickle_reader

    def broken(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("sniffer bug")

    (in_repo / "notes").write_text("import os\n")
    monkeypatch.setattr(pickle_reader, "looks_like_pickle", broken)
    assert select_files(["notes"]) == ["notes"]  # scanned, never passed over
