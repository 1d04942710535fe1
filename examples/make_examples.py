"""Writes the example files that the README's first command scans (they are committed too).

- ``benign_model.pkl``: a plain pickle of weights, passes.
- ``malicious_model.pkl``: a pickle whose loading would run ``os.system('echo pwned')`` (harmless, but
  it is code execution): ``safemodel scan examples/`` reports it and exits 1.
- ``benign_model.safetensors``: a two-tensor safetensors file, passes.

Run ``python3 examples/make_examples.py``. Dumping a pickle never runs the payload; nothing is loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


class EchoPwned:
    """Pickles to ``os.system('echo pwned')``: what a malicious model file carries."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def safetensors_bytes() -> bytes:
    """A valid safetensors file built by hand (the format is an 8-byte length, JSON, raw data)."""
    weight = struct.pack("<4f", 0.5, -1.0, 2.0, 0.25)
    bias = struct.pack("<2f", 0.0, 1.0)
    header = {
        "__metadata__": {"format": "pt"},
        "bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, len(bias)]},
        "weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [len(bias), len(bias) + len(weight)]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bias + weight


def main() -> None:
    weights = {"layer1.weight": [[0.5, -1.0], [2.0, 0.25]], "layer1.bias": [0.0, 1.0], "epochs": 3}
    (HERE / "benign_model.pkl").write_bytes(pickle.dumps(weights, protocol=4))
    (HERE / "malicious_model.pkl").write_bytes(
        pickle.dumps({"layer1.weight": [[0.5, -1.0]], "config": EchoPwned()}, protocol=4))
    (HERE / "benign_model.safetensors").write_bytes(safetensors_bytes())


if __name__ == "__main__":
    main()
