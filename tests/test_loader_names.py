"""Names that bind a loader (issue 18, item 1).

Every loader-binding name gets content that loader refuses (exit 1, HIGH: the file is not what its
name says, or the reference's own ``safetensors-*`` rule) and content it reads, made by the real
library (exit 0, scanned as that format). Ambiguous names keep "content decides".
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from safemodel_ci.cli import main as cli_main
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK
from safemodel_ci.loader_names import BINDINGS, binding_for_name

np = pytest.importorskip("numpy")


def scan_json(path: Path, capsys: pytest.CaptureFixture[str]) -> Tuple[int, Dict]:
    code = cli_main(["scan", "--no-cache", "-q", "-f", "json", str(path)])
    out = capsys.readouterr().out
    return code, json.loads(out)["files"][0]


def rules_of(result: Dict) -> List[str]:
    return [f["rule_id"] for f in result["findings"]]


# ---- content each loader would read, made by the real libraries -------------------------------

def _safetensors(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.int64)}, str(path))


def _npy(path: Path) -> None:
    with open(path, "wb") as fh:  # np.save would append .npy to a name without it
        np.save(fh, np.arange(12, dtype=np.float32).reshape(3, 4))


def _npz(path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, a=np.arange(5), b=np.ones(2))


def _hdf5(path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.ones((2, 2)))


def _onnx(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _gguf(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("w", np.ones((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _keras_zip(path: Path) -> None:
    # Keras is not installed here; this is the layout keras.saving writes (zip of three members).
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "s", "layers": [{"module": "keras.layers", "class_name": "Dense",
                                                  "config": {"name": "d", "units": 2}}]}}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"")


def _torch(path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2, 2), "epoch": 3}, str(path))


def _pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": [0.5, 1.5], "epoch": 3}, protocol=4))


def _pickle0(path: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": [0.5, 1.5]}, protocol=0))


def _joblib(path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    joblib.dump({"w": [1, 2, 3]}, str(path), compress=3)


def _dill(path: Path) -> None:
    dill = pytest.importorskip("dill")
    path.write_bytes(dill.dumps({"w": [1.0, 2.0]}))


VALID: List[Tuple[str, Callable[[Path], None]]] = [
    ("model.safetensors", _safetensors),
    ("model-00001-of-00002.safetensors", _safetensors),
    ("x.npy", _npy), ("x.npz", _npz),
    ("model.h5", _hdf5), ("model.hdf5", _hdf5),
    ("model.onnx", _onnx), ("model.gguf", _gguf),
    ("model.keras", _keras_zip), ("legacy.keras", _hdf5),
    ("model.pt", _torch), ("model.pth", _torch), ("last.ckpt", _torch), ("torch_saved.pkl", _torch),
    ("model.pkl", _pickle), ("model.pickle", _pickle0), ("model.sav", _pickle),
    ("model.joblib", _joblib), ("joblib_compressed.pkl", _joblib), ("model.dill", _dill),
    ("pickled.npy", _pickle),  # np.load(allow_pickle=True) reads a pickle under any name
]


def test_every_binding_is_covered() -> None:
    named = {os.path.splitext(name)[1] for name, _ in VALID}
    assert named == set(BINDINGS)


@pytest.mark.parametrize("name,make", VALID, ids=[n for n, _ in VALID])
def test_content_the_loader_reads_is_scanned_and_passes(tmp_path: Path, name: str,
                                                        make: Callable[[Path], None],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    make(path)
    code, result = scan_json(path, capsys)
    assert code == EXIT_OK, result
    assert result["formats"], "scanned as a format, not passed over"
    assert set(BINDINGS[path.suffix].accepts) & {f.split("=")[0] for f in result["formats"]}
    assert "name-format-mismatch" not in rules_of(result)


# ---- content each loader would refuse ---------------------------------------------------------

def _junk_text(path: Path) -> None:
    path.write_text("this is a README, not a model\n")


def _random(path: Path) -> None:
    path.write_bytes(bytes((i * 131 + 7) % 256 for i in range(3000)))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _other_format(path: Path) -> None:
    """Valid content of a different format than the name binds (GGUF, else a safetensors file)."""
    if path.suffix == ".gguf":
        _safetensors(path)
    else:
        _gguf(path)


REFUSED_CONTENT = [("text", _junk_text), ("random", _random), ("empty", _empty), ("other", _other_format)]
# Text named .pth is a site-packages path file (tested below), not a disguised checkpoint.
REFUSED = [(suffix, label, make) for suffix in sorted(BINDINGS) for label, make in REFUSED_CONTENT
           if (suffix, label) != (".pth", "text")]


@pytest.mark.parametrize("suffix,label,make", REFUSED, ids=[f"{s}-{lbl}" for s, lbl, _ in REFUSED])
def test_content_the_loader_refuses_blocks(tmp_path: Path, suffix: str, label: str,
                                           make: Callable[[Path], None],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"model{suffix}"
    make(path)
    code, result = scan_json(path, capsys)
    assert code == EXIT_FINDINGS, result
    blocking = [f for f in result["findings"] if f["severity"] in ("HIGH", "CRITICAL")]
    assert blocking, result
    if suffix == ".safetensors":
        assert all(f["rule_id"].startswith("safetensors-") for f in blocking), result
    else:
        assert "name-format-mismatch" in rules_of(result)
    assert "unrecognized-format" not in rules_of(result)


@pytest.mark.parametrize("content,rule", [
    (struct.pack("<Q", 0), "safetensors-header-not-json"),  # header length 0
    (struct.pack("<Q", 5) + b"hello", "safetensors-header-not-json"),  # a 13-byte file
    (struct.pack("<Q", 2) + b"[]", "safetensors-header-not-object"),  # a JSON array
    (struct.pack("<Q", 8) + b'"string"', "safetensors-header-not-object"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "safetensors-header-not-utf8"),
    (b"\x05\x00", "safetensors-too-small"),
    (struct.pack("<Q", 1 << 40) + b"{}", "safetensors-header-too-large"),
    (struct.pack("<Q", 64) + b"{}", "safetensors-header-length"),
])
def test_safetensors_name_gets_the_reference_rule(tmp_path: Path, content: bytes, rule: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorError):  # the reference refuses it too (it is not a pickle loader)
        load_file(str(path))
    code, result = scan_json(path, capsys)
    assert code == EXIT_FINDINGS
    assert rule in rules_of(result) and "unrecognized-format" not in rules_of(result)


def test_a_pickle_named_file_that_is_no_pickle_keeps_what_runs_before_the_break(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Protocol 0: an import of os.system, then bytes no pickle opcode starts with.
    path = tmp_path / "weights.pt"
    path.write_bytes(b"cos\nsystem\n\xff\xff\xff junk")
    code, result = scan_json(path, capsys)
    assert code == EXIT_FINDINGS
    rules = rules_of(result)
    assert "name-format-mismatch" in rules
    assert any(r.startswith("pickle-") and r != "pickle-broken-stream" for r in rules), rules


def test_a_pickle_in_a_safetensors_name_is_scanned_and_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    code, result = scan_json(path, capsys)
    assert code == EXIT_FINDINGS
    assert "pickle" in result["formats"]
    assert any(r.startswith("safetensors-") for r in rules_of(result))


@pytest.mark.parametrize("name", ["model.bin", "spm.model", "graph.pb", "a.zip", "b.tar", "flax.msgpack"])
def test_ambiguous_names_keep_content_decides(tmp_path: Path, name: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert binding_for_name(name) is None
    path = tmp_path / name
    _junk_text(path)
    code, result = scan_json(path, capsys)
    assert code == EXIT_OK
    assert rules_of(result) == ["unrecognized-format"]


def test_an_lfs_pointer_is_not_a_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32
                     + b"\nsize 4096\n")
    code, result = scan_json(path, capsys)
    assert code == EXIT_INCOMPLETE
    assert rules_of(result) == ["lfs-pointer-missing"]


def test_the_lfs_object_is_bound_by_the_pointer_name(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    content = b"not safetensors at all"
    oid = hashlib.sha256(content).hexdigest()
    obj = tmp_path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    obj.parent.mkdir(parents=True)
    obj.write_bytes(content)
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + oid.encode() +
                     f"\nsize {len(content)}\n".encode())
    code, result = scan_json(path, capsys)
    assert code == EXIT_FINDINGS
    bad = [f for f in result["findings"] if f["rule_id"].startswith("safetensors-")]
    assert bad and bad[0]["member"] == "<lfs object>"


def test_a_shard_named_by_a_safetensors_index_is_bound(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _safetensors(tmp_path / "shard-1.safetensors")
    (tmp_path / "shard-2.bin").write_bytes(pickle.dumps({"w": 1}, protocol=2))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"w": "shard-1.safetensors", "b": "shard-1.safetensors",
                                        "x": "shard-2.bin"}}))
    index = tmp_path / "model.safetensors.index.json"
    code = cli_main(["scan", "--no-cache", "-q", "-f", "json", str(index)])
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_FINDINGS
    found = [f for f in out["files"][0]["findings"] if f["rule_id"] == "safetensors-index-shard-invalid"]
    assert found and found[0]["details"]["shard"] == "shard-2.bin"


def test_text_of_a_mismatch_says_what_and_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.gguf"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "x")
    path.write_bytes(buf.getvalue())
    assert cli_main(["scan", "--no-cache", "-q", str(path)]) == EXIT_FINDINGS
    out = capsys.readouterr().out
    assert "HIGH name-format-mismatch named .gguf" in out and "content read as zip" in out


def test_other_kinds_of_file_with_the_same_suffix_are_not_disguises(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # site-packages path configuration files are .pth too (this one is setuptools').
    site_pth = tmp_path / "distutils-precedence.pth"
    site_pth.write_text("import os; var = 'SETUPTOOLS_USE_DISTUTILS'; "
                        "enabled = os.environ.get(var, 'local') == 'local'\n/opt/lib/extra\n")
    code, result = scan_json(site_pth, capsys)
    assert code == EXIT_OK and rules_of(result) == ["unrecognized-format"]
    # IDL save files (scipy.io.readsav) and SPSS files are .sav too; a real one from scipy if present.
    scipy_io = pytest.importorskip("scipy.io")
    idl = Path(scipy_io.__file__).parent / "tests" / "data" / "scalar_float32.sav"
    if not idl.is_file():
        pytest.skip("scipy's IDL test data is not installed")
    assert scipy_io.readsav(str(idl))  # it is what scipy reads
    code, result = scan_json(idl, capsys)
    assert code == EXIT_OK and rules_of(result) == ["unrecognized-format"]
    spss = tmp_path / "survey.sav"
    spss.write_bytes(b"$FL2@(#) SPSS DATA FILE MS Windows 22.0.0.0" + bytes(200))
    code, result = scan_json(spss, capsys)
    assert code == EXIT_OK
    # The same bytes under a pickle name without another use are refused.
    (tmp_path / "survey.pkl").write_bytes(spss.read_bytes())
    code, result = scan_json(tmp_path / "survey.pkl", capsys)
    assert code == EXIT_FINDINGS and "name-format-mismatch" in rules_of(result)
