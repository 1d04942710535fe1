"""Start-up guard (issue 20, "the hook's start"): one small file imports only what its scan needs.

``safemodel scan one.pkl`` and the pre-commit hook on one small model run in a fresh interpreter
started with ``-S`` (no ``site``: no ``.pth`` file can import modules before the command, as this
machine's do, which would hide an import of ours), the project and the site-packages directories on
``sys.path``. A finder placed first on ``sys.meta_path`` records every module the command asks for,
including ones whose import fails (an optional dependency caught by ``except ImportError`` still
costs its lookup, and would cost its import where it is installed); ``importlib.util.find_spec``
only locating a module (the result cache's key names h5py's file) is not an import. Nothing is loaded: the
fixtures are made with ``pickle.dumps``.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Modules a scan of one small pickle (or the hook on one) never needs: the Hub client, the config
#: parser when there is no config file, optional format libraries, the process pool, other formats'
#: container libraries, temporary files (no store with --no-cache), subprocesses.
FORBIDDEN = ("huggingface_hub", "yaml", "tomllib", "tomli", "h5py", "jinja2", "multiprocessing",
             "concurrent", "zipfile", "tarfile", "py7zr", "lz4", "numpy", "torch", "onnx", "gguf",
             "safetensors", "subprocess", "select", "signal")

_WRAPPER = r"""
import sys
root, out, entry = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
import site  # under -S: not run, only asked where site-packages are (no .pth file is processed)
sys.path[:0] = [root]
sys.path += site.getsitepackages() + site.getsitepackages([sys.base_prefix])
import importlib.util
# safemodel_ci.hooks is installed from hooks/ (pyproject's package-dir): map it the same way.
spec = importlib.util.spec_from_file_location(
    "safemodel_ci.hooks", root + "/hooks/__init__.py", submodule_search_locations=[root + "/hooks"])
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)
sys.modules["safemodel_ci.hooks"] = hooks
asked = []

class Recorder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        # importlib.util.find_spec only locates a module (the result cache stats h5py's file for its
        # key): not an import. Everything else reaching here is an import statement's lookup.
        caller = sys._getframe(2)
        where = caller.f_code.co_filename.replace("/", ".")
        if not (caller.f_code.co_name == "find_spec" and "importlib.util" in where):
            asked.append(name)
        return None

before = set(sys.modules)
sys.meta_path.insert(0, Recorder)
import json
module, func = entry.split(":")
code = 0
try:
    getattr(__import__(module, fromlist=[func]), func)(args)
except SystemExit as exc:
    code = exc.code
new = sorted(set(asked) | (set(sys.modules) - before))
with open(out, "w") as fh:
    json.dump({"exit": code, "modules": new}, fh)
"""


def _imported(tmp_path: Path, entry: str, args: List[str], cwd: Path) -> Set[str]:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-S", "-c", _WRAPPER, str(ROOT), str(out), entry] + args,
                          cwd=str(cwd), capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "SAFEMODEL_CACHE_DIR": str(tmp_path / "cache"),
                               "HOME": str(tmp_path)})
    assert out.exists(), proc.stderr
    data = json.loads(out.read_text())
    assert data["exit"] == 0, (proc.stdout, proc.stderr)
    return set(data["modules"])


def _forbidden(modules: Set[str]) -> List[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


@pytest.fixture()
def small_model(tmp_path: Path) -> Path:
    """A directory holding one small model pickle and no config file."""
    work = tmp_path / "repo"
    work.mkdir()
    state = {f"layer{i}.weight": [float(j) / 7 for j in range(64)] for i in range(4)}
    (work / "model.pkl").write_bytes(pickle.dumps({"state_dict": state, "epoch": 3}, protocol=4))
    return work


def test_scan_of_one_pickle_imports_only_what_it_needs(tmp_path: Path, small_model: Path) -> None:
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "model.pkl"], small_model)
    assert "safemodel_ci.formats.pickle" in modules  # the wrapper saw the scan itself
    assert _forbidden(modules) == []
    assert "tempfile" not in modules  # --no-cache: nothing is stored


def test_scan_with_cache_imports_no_pool_or_hub(tmp_path: Path, small_model: Path) -> None:
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "model.pkl"], small_model)
    assert "safemodel_ci.cache" in modules
    assert _forbidden(modules) == []


def test_hook_on_one_small_model_imports_only_what_it_needs(tmp_path: Path, small_model: Path) -> None:
    modules = _imported(tmp_path, "safemodel_ci.hooks.pre_commit:main", ["model.pkl"], small_model)
    assert "safemodel_ci.formats.pickle" in modules
    assert _forbidden(modules) == []
    # The converter's advice is only for a failing commit.
    assert "safemodel_ci.convert" not in modules


def test_config_file_does_import_its_parser(tmp_path: Path, small_model: Path) -> None:
    """The guard above is not vacuous: with a .safemodel.yaml present, yaml is asked for."""
    (small_model / ".safemodel.yaml").write_text("fail-on: high\n")
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "model.pkl"], small_model)
    assert "yaml" in modules


def test_scan_of_one_pickle_imports_only_the_pickle_reader(tmp_path: Path) -> None:
    """Issue 20 item 3: detection asks the detector table's gates first, and imports a reader's
    module only when its gate passes; a 40-byte pickle (bench/startup.py's) needs the pickle reader
    alone among the formats."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "tiny.pkl").write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=4))
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "tiny.pkl"], work)
    formats = sorted(m for m in modules if m.startswith("safemodel_ci.formats"))
    assert formats == ["safemodel_ci.formats", "safemodel_ci.formats.interface", "safemodel_ci.formats.pickle"]


def test_gate_passing_imports_that_reader(tmp_path: Path) -> None:
    """The other side: a file whose gate passes imports its reader (the guard above is not vacuous)."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "model.gguf").write_bytes(b"GGUF" + bytes(20))
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "-q", "model.gguf"], work)
    assert "safemodel_ci.formats.gguf" in modules
    assert "safemodel_ci.formats.zip" not in modules and "safemodel_ci.formats.onnx" not in modules
