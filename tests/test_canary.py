"""Canary: fixtures whose payload would create the session's canary file if they were ever loaded,
scanned in every way the product offers. conftest.py fails the session if the file exists at the
end; each test also checks it right away."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path
from typing import Dict

import pytest

from safemodel_ci.cli import main
from safemodel_ci.context import ScanContext
from safemodel_ci.formats.pickle import PickleReader, scan_pickle_stream
from safemodel_ci.policy import Policy
from safemodel_ci.scanner import ScanOptions, scan_byte_source, scan_file
from safemodel_ci.source import BytesSource, FileSource


class _Call:
    def __init__(self, func, *args) -> None:  # type: ignore[no-untyped-def]
        self.func, self.args = func, args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (self.func, self.args)


def _payloads(canary: Path) -> Dict[str, bytes]:
    touch = _Call(os.system, f"touch {canary}")
    create = _Call(builtins.open, str(canary), "w")
    spawn = _Call(subprocess.call, ["touch", str(canary)])
    out: Dict[str, bytes] = {}
    for proto in range(6):
        out[f"system_p{proto}.pkl"] = pickle.dumps({"weights": [0.5], "x": touch}, protocol=proto)
        out[f"open_p{proto}.bin"] = pickle.dumps([create], protocol=proto)
    out["subprocess.pt"] = pickle.dumps(spawn, protocol=2)
    out["nested.pkl"] = pickle.dumps(_Call(pickle.loads, pickle.dumps(touch, protocol=4)), protocol=4)
    out["concatenated.pkl"] = pickle.dumps({"ok": 1}, protocol=4) + pickle.dumps(create, protocol=2)
    out["broken.pkl"] = pickle.dumps(touch, protocol=2)[:-1] + b"\xff\xfe"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": touch}, protocol=2))
        zf.writestr("archive/version", "3\n")
    out["torch_zip.pt"] = buf.getvalue()
    try:
        import joblib
        import numpy as np
    except ImportError:
        return out
    jb = io.BytesIO()
    joblib.dump([np.arange(64, dtype="f8"), touch], jb)
    out["after_array.joblib"] = jb.getvalue()
    return out


@pytest.fixture()
def canary_fixtures(tmp_path: Path, canary_path: Path) -> Dict[str, Path]:
    paths = {}
    for name, data in _payloads(canary_path).items():
        p = tmp_path / name
        p.write_bytes(data)
        paths[name] = p
    yield paths
    assert not canary_path.exists(), "a scanned payload was executed"


def test_cli_blocks_every_canary_fixture(canary_fixtures: Dict[str, Path], canary_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name, path in canary_fixtures.items():
        assert main(["scan", "-q", str(path)]) == 1, name
    directory = next(iter(canary_fixtures.values())).parent
    assert main(["scan", "-q", "--format", "json", str(directory)]) == 1
    capsys.readouterr()
    assert not canary_path.exists()


def test_library_entry_points_block_every_canary_fixture(canary_fixtures: Dict[str, Path],
                                                          canary_path: Path) -> None:
    for name, path in canary_fixtures.items():
        data = path.read_bytes()
        assert scan_file(str(path), ScanOptions()).blocking(3), name
        assert scan_byte_source(BytesSource(data), name, ScanOptions()).blocking(3), name
        if name.endswith((".pkl", ".bin")) or name == "subprocess.pt":
            ctx = ScanContext(name, Policy())
            scan_pickle_stream(BytesSource(data), ctx)
            assert any(f.severity >= 3 and not f.unscanned for f in ctx.findings), name
            ctx = ScanContext(name, Policy())
            with FileSource(path) as src:
                reader = PickleReader()
                assert reader.detect(src, src.head())
                reader.scan(src, ctx)
            assert ctx.findings, name
    assert not canary_path.exists()
