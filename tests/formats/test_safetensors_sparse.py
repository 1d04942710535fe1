"""A 10 GB (sparse) safetensors file validates reading only its header and a little of its tail."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from safemodel_ci.cli import main

BENCH = Path(__file__).resolve().parents[2] / "bench" / "safetensors_sparse.py"


def _bench_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("safetensors_sparse_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ten_gigabyte_sparse_file_reads_under_one_megabyte(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench_module()
    path = tmp_path / "huge.safetensors"
    try:
        bench.make_sparse_safetensors(str(path), 10 << 30, tensors=500)
    except OSError as exc:  # a filesystem without sparse files or large-file support
        pytest.skip(f"cannot make a 10 GB sparse file here: {exc}")
    assert os.path.getsize(path) == 10 << 30
    start = time.perf_counter()
    code = main(["scan", "--quiet", "--format", "json", str(path)])
    elapsed = time.perf_counter() - start
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    (result,) = report["files"]
    assert result["findings"] == [] and result["formats"] == ["safetensors"]
    assert result["bytes_read"] < 1 << 20, result["bytes_read"]
    assert elapsed < 10, elapsed  # generous for a shared CI machine; typically well under 0.2 s


def test_ten_gigabyte_sparse_file_one_byte_too_long_is_refused(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench_module()
    path = tmp_path / "huge.safetensors"
    try:
        bench.make_sparse_safetensors(str(path), 10 << 30, tensors=10)
        with open(path, "r+b") as fh:
            fh.truncate((10 << 30) + 1)
    except OSError as exc:
        pytest.skip(f"cannot make a 10 GB sparse file here: {exc}")
    assert main(["scan", "--quiet", "--format", "json", str(path)]) == 1
    (result,) = json.loads(capsys.readouterr().out)["files"]
    assert [f["rule_id"] for f in result["findings"]] == ["safetensors-data-coverage"]
    assert result["bytes_read"] < 1 << 20
