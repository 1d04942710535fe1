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
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

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

    def sevenzip() -> None:
        import py7zr

        with py7zr.SevenZipFile(directory / "evil.7z", "w") as z:
            z.writestr(_malicious_pickle(canary, 2), "model.pkl")
        expected["evil.7z"] = MALICIOUS

    optional += [numpy_files, torch_files, joblib_files, sklearn_file, keras_h5, sevenzip]
    for make in optional:
        try:
            make()
        except ImportError:
            continue
    return expected
