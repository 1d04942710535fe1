"""Model files the Hub, cache and CLI tests share: made with pickle.dumps / torch.save, never loaded."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from typing import Dict, List, Tuple

import pytest


class _SystemPayload:
    """Pickles to ``os.system(cmd)``; dumping does not run it."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (self.cmd,))


def safetensors_bytes(tensors: Dict[str, Tuple[str, List[int], int]]) -> bytes:
    """A small valid safetensors file: name -> (dtype, shape, nbytes), zero-filled data."""
    header: Dict[str, object] = {}
    offset = 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


def malicious_torch_bin() -> bytes:
    """A real torch.save zip of a 1 MiB state dict whose data.pkl was swapped for an os.system reduce."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(1 << 18)}, buf)  # 1 MiB of tensor storage
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps(_SystemPayload("echo pwned > /tmp/safemodel-hub-canary"), protocol=2)
            dst.writestr(info.filename, data)
    return out.getvalue()
