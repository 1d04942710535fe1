"""A small zoo of model files, benign and malicious, made with the real libraries where installed.

Used as seeds by the hardening tests (audit-hook run, mutation fuzzing, limits). Every malicious
payload would create a canary file if it were ever loaded; nothing here loads anything.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

MALICIOUS = "malicious"
BENIGN = "benign"


class _SystemPayload:
    """Pickles to ``os.system(cmd)``; dumping does not run it."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (self.cmd,))


def canary_command(canary: Path) -> str:
    return f"touch {canary}"


def _malicious_pickle(canary: Path, protocol: int) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0], "x": _SystemPayload(canary_command(canary))},
                        protocol=protocol)


def _zip_bytes(members: List[Tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _safetensors_bytes() -> bytes:
    header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "__metadata__": {"format": "pt"}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + struct.pack("<4f", 1, 2, 3, 4)


def _gguf_bytes(template: str) -> bytes:
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kv = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    kv += s("tokenizer.chat_template") + struct.pack("<I", 8) + s(template)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv


# ---- hand-encoded protobuf (what TensorFlow's saved_model.pb and keras_metadata.pb hold) ---------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_len(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _pb_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _node_def(name: str, op: str, attrs: Dict[str, bytes] = {},  # noqa: B006 - read only
              inputs: Tuple[str, ...] = ()) -> bytes:
    """tensorflow.NodeDef: name=1, op=2, input=3, attr=5 (map<string, AttrValue{s=2}>)."""
    body = _pb_len(1, name.encode()) + _pb_len(2, op.encode())
    body += b"".join(_pb_len(3, i.encode()) for i in inputs)
    for key, value in attrs.items():
        body += _pb_len(5, _pb_len(1, key.encode()) + _pb_len(2, _pb_len(2, value)))
    return body


def saved_model_bytes(extra_ops: Tuple[Tuple[str, str], ...] = ()) -> bytes:
    """saved_model.pb: SavedModel{schema=1, meta_graphs=2{meta_info_def=1{tags=4}, graph_def=2{
    node=1, library=2{function=1{signature=1{name=1}, node_def=3}}}, saver_def=3}}. The checkpoint
    ops sit in the saver's save/ scope and read its filename placeholder, as a TF1 Builder writes."""
    graph = b"".join(_pb_len(1, _node_def(n, op, inputs=i)) for n, op, i in (
        ("x", "Placeholder", ()), ("w", "VarHandleOp", ()), ("save/Const", "PlaceholderWithDefault", ()),
        ("save/SaveV2", "SaveV2", ("save/Const", "save/SaveV2/tensor_names")),
        ("save/RestoreV2", "RestoreV2", ("save/Const", "save/RestoreV2/tensor_names"))))
    graph += _pb_len(1, _node_def("call", "StatefulPartitionedCall"))
    fn_nodes = _pb_len(3, _node_def("matmul", "MatMul")) + _pb_len(3, _node_def("relu", "Relu"))
    for name, op in extra_ops:
        fn_nodes += _pb_len(3, _node_def(name, op, {"token": b"pyfunc_0"}))
    function = _pb_len(1, _pb_len(1, b"__inference_call_42")) + fn_nodes
    graph += _pb_len(2, _pb_len(1, function))
    saver = _pb_len(1, b"save/Const:0") + _pb_len(2, b"save/Identity:0") + _pb_len(3, b"save/restore_all")
    meta_graph = _pb_len(1, _pb_len(4, b"serve")) + _pb_len(2, graph) + _pb_len(3, saver)
    return _pb_int(1, 1) + _pb_len(2, meta_graph)


def keras_metadata_bytes(layer: Dict[str, object]) -> bytes:
    """keras_metadata.pb: SavedMetadata{nodes=1{node_id=2, node_path=3, identifier=4, metadata=5}}."""
    root = json.dumps({"name": "sequential", "class_name": "Sequential",
                       "config": {"name": "sequential", "layers": []}})
    out = _pb_len(1, _pb_int(2, 0) + _pb_len(3, b"root") + _pb_len(4, b"_tf_keras_sequential")
                  + _pb_len(5, root.encode()))
    out += _pb_len(1, _pb_int(2, 1) + _pb_len(3, b"root.layer-0") + _pb_len(4, b"_tf_keras_layer")
                   + _pb_len(5, json.dumps(layer).encode()))
    return out


def _keras_config(extra_layer: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    layers: List[Dict[str, object]] = [
        {"module": "keras.layers", "class_name": "InputLayer",
         "config": {"name": "input", "batch_shape": [None, 4], "dtype": "float32"}},
        {"module": "keras.layers", "class_name": "Dense",
         "config": {"name": "d", "units": 2, "activation": "relu"}}]
    if extra_layer:
        layers.append(extra_layer)
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": "s", "layers": layers}, "registered_name": None}


#: A layer whose class lives in a module outside Keras: loading the model imports that module.
_FOREIGN_LAYER = {"module": "evil_pkg.layers", "class_name": "Backdoor", "registered_name": "Backdoor",
                  "config": {"name": "b"}}


def _keras_zip(extra_layer: Optional[Dict[str, object]] = None) -> bytes:
    """A Keras 3 ``.keras`` file: zip of metadata.json, config.json and model.weights.h5."""
    meta = {"keras_version": "3.3.3", "date_saved": "2024-05-01@00:00:00"}
    return _zip_bytes([("metadata.json", json.dumps(meta).encode()),
                       ("config.json", json.dumps(_keras_config(extra_layer)).encode()),
                       ("model.weights.h5", b"")], zipfile.ZIP_DEFLATED)


def _tar_bytes(members: List[Tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000  # fixed: seeds must be byte-identical between runs
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _safetensors_index() -> bytes:
    return json.dumps({"metadata": {"total_size": 16},
                       "weight_map": {"w": "model-00001-of-00002.safetensors",
                                      "b": "model-00002-of-00002.safetensors"}}, indent=2).encode()


#: A Git LFS pointer as committed without its object (the content is not there to scan).
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
               b"size 12345\n")


def make_zoo(directory: Path, canary: Path) -> Dict[str, str]:
    """Write the zoo into ``directory``; returns file name -> expected verdict."""
    directory.mkdir(parents=True, exist_ok=True)
    expected: Dict[str, str] = {}

    def put(name: str, data: bytes, verdict: str) -> None:
        (directory / name).write_bytes(data)
        expected[name] = verdict

    for proto in (0, 2, 4, 5):
        put(f"evil_p{proto}.pkl", _malicious_pickle(canary, proto), MALICIOUS)
        put(f"plain_p{proto}.pkl", pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=proto),
            BENIGN)
    put("evil_renamed.txt", _malicious_pickle(canary, 2), MALICIOUS)
    put("evil_in_zip.zip", _zip_bytes([("archive/data.pkl", _malicious_pickle(canary, 2))]), MALICIOUS)
    put("evil_deflated.zip", _zip_bytes([("x/y.bin", _malicious_pickle(canary, 4))], zipfile.ZIP_DEFLATED),
        MALICIOUS)
    put("polyglot.pkl", _malicious_pickle(canary, 2) + _zip_bytes([("a.txt", b"hello")]), MALICIOUS)
    put("model.safetensors", _safetensors_bytes(), BENIGN)
    put("evil_tail.safetensors",
        _safetensors_bytes() + _zip_bytes([("archive/data.pkl", _malicious_pickle(canary, 2))]), MALICIOUS)
    put("chat.gguf", _gguf_bytes("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"),
        BENIGN)
    put("ssti.gguf", _gguf_bytes("{{ cycler.__init__.__globals__.os.popen('id').read() }}"), MALICIOUS)
    put("evil_in_tar.tar", _tar_bytes([("archive/data.pkl", _malicious_pickle(canary, 2)),
                                       ("archive/version", b"3\n")]), MALICIOUS)
    put("plain.tar", _tar_bytes([("a/config.txt", b"hello"),
                                 ("a/data.pkl", pickle.dumps([1, 2], protocol=2))]), BENIGN)
    put("model.safetensors.index.json", _safetensors_index(), BENIGN)
    put("chat_template.jinja", b"{% for message in messages %}<|{{ message['role'] }}|>\n"
                               b"{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}"
                               b"<|assistant|>\n{% endif %}", BENIGN)
    put("evil_template.jinja", b"{{ ''.__class__.__mro__[1].__subclasses__() }}"
                               b"{% for message in messages %}{{ message['content'] }}{% endfor %}",
        MALICIOUS)
    template = ("{{ self.__init__.__globals__.__builtins__ }}"
                "{% for m in messages %}{{ m.content }}{% endfor %}")
    put("tokenizer_config.json", json.dumps({"bos_token": "<s>", "chat_template": template}).encode(),
        MALICIOUS)
    put("config.json", json.dumps(_keras_config()).encode(), BENIGN)
    put("model.keras", _keras_zip(), BENIGN)
    put("evil_module.keras", _keras_zip(_FOREIGN_LAYER), MALICIOUS)
    put("saved_model.pb", saved_model_bytes(), BENIGN)
    put("evil_saved_model.pb", saved_model_bytes((("cb", "PyFunc"),)), MALICIOUS)
    put("keras_metadata.pb", keras_metadata_bytes({"name": "dense", "class_name": "Dense",
                                                   "config": {"name": "dense", "units": 2}}), BENIGN)
    put("weights.bin", LFS_POINTER, BENIGN)

    optional: List[Callable[[], None]] = []

    def numpy_files() -> None:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.arange(12, dtype=np.float32).reshape(3, 4))
        put("array.npy", buf.getvalue(), BENIGN)
        buf = io.BytesIO()
        np.save(buf, np.array([{"k": 1}, _SystemPayload(canary_command(canary))], dtype=object),
                allow_pickle=True)
        put("evil_object.npy", buf.getvalue(), MALICIOUS)
        buf = io.BytesIO()
        np.savez_compressed(buf, a=np.ones(5), b=np.zeros((2, 2)))
        put("arrays.npz", buf.getvalue(), BENIGN)

    def torch_files() -> None:
        import torch

        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        put("state_dict.pt", buf.getvalue(), BENIGN)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf, _use_new_zipfile_serialization=False)
        put("legacy.pt", buf.getvalue(), BENIGN)
        buf = io.BytesIO()
        torch.save({"sd": model.state_dict(), "hook": _SystemPayload(canary_command(canary))}, buf)
        put("evil_state_dict.pt", buf.getvalue(), MALICIOUS)

    def joblib_files() -> None:
        import joblib
        import numpy as np

        for compress in (0, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("xz", 3)):
            tag = compress[0] if compress else "raw"
            path = directory / f"est_{tag}.joblib"
            joblib.dump({"coef": np.arange(10.0), "x": _SystemPayload(canary_command(canary))}, path,
                        compress=compress)
            expected[path.name] = MALICIOUS
            path = directory / f"ok_{tag}.joblib"
            joblib.dump({"coef": np.arange(10.0)}, path, compress=compress)
            expected[path.name] = BENIGN

    def sklearn_file() -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipe = make_pipeline(StandardScaler(), LogisticRegression())
        pipe.fit([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.2, 0.9]], [0, 1, 1, 0])
        put("pipeline.pkl", pickle.dumps(pipe, protocol=4), BENIGN)

    def keras_h5() -> None:
        import h5py

        config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "relu"}}]}}
        with h5py.File(directory / "model.h5", "w") as f:
            f.attrs["model_config"] = json.dumps(config)
            f.attrs["keras_version"] = "2.15.0"
            f.attrs["backend"] = "tensorflow"
            f.create_group("model_weights")
        expected["model.h5"] = BENIGN

    def keras_h5_foreign() -> None:
        import h5py

        with h5py.File(directory / "evil_module.h5", "w") as f:
            f.attrs["model_config"] = json.dumps(_keras_config(_FOREIGN_LAYER))
            f.attrs["keras_version"] = "2.15.0"
            f.attrs["backend"] = "tensorflow"
            f.create_group("model_weights")
        expected["evil_module.h5"] = MALICIOUS

    def onnx_files() -> None:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        def model(location: Optional[str] = None) -> bytes:
            w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
            if location is not None:  # weights said to be in an external file
                w.ClearField("raw_data")
                w.data_location = TensorProto.EXTERNAL
                for key, value in (("location", location), ("offset", "0"), ("length", "64")):
                    w.external_data.add(key=key, value=value)
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")], "g",
                [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], [w])
            m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="zoo")
            return m.SerializeToString()

        put("model.onnx", model(), BENIGN)
        put("evil_external.onnx", model("../../../../etc/passwd"), MALICIOUS)

    def sevenzip() -> None:
        import py7zr

        with py7zr.SevenZipFile(directory / "evil.7z", "w") as z:
            z.writestr(_malicious_pickle(canary, 2), "model.pkl")
        expected["evil.7z"] = MALICIOUS

    optional += [numpy_files, torch_files, joblib_files, sklearn_file, keras_h5, keras_h5_foreign, onnx_files,
                 sevenzip]
    for make in optional:
        try:
            make()
        except ImportError:
            continue
    return expected
