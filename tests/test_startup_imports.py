"""Start-up guard (issue 20, "the hook's start"): one small file imports only what its scan needs.

``safemodel scan one.pkl`` and the pre-commit hook on one small model run in a fresh interpreter
started with ``-S`` (no ``site``: no ``.pth`` file can import modules before the command, as this
machine's do, which would hide an import of ours), the project and the site-packages directories on
``sys.path``. A finder placed first on ``sys.meta_path`` records every module the command asks for,
including ones whose import fails (an optional dependency caught by ``except ImportError`` still
costs its lookup, and would cost its import where it is installed); ``importlib.util.find_spec``
only locating a module (the result cache's key names h5py's file) is not an import. With each module
it records our files on the stack when it was asked for, so a test can tell an import the command's
own path makes from one another reader makes. Nothing is loaded: the fixtures are made with
``pickle.dumps``.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Set

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
causes = {}

def _cause():
    # Our files on the stack, innermost first: which of our modules' imports led here, directly or
    # through a library or another of our modules.
    chain, frame = [], sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(root + "/") and name[len(root) + 1:] not in chain:
            chain.append(name[len(root) + 1:])
        frame = frame.f_back
    return chain

class Recorder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        # importlib.util.find_spec only locates a module (the result cache stats h5py's file for its
        # key): not an import. Everything else reaching here is an import statement's lookup.
        caller = sys._getframe(2)
        where = caller.f_code.co_filename.replace("/", ".")
        if not (caller.f_code.co_name == "find_spec" and "importlib.util" in where):
            asked.append(name)
            causes.setdefault(name, _cause())
        return None

before = set(sys.modules)
sys.meta_path.insert(0, Recorder)
module, func = entry.split(":")
code = 0
try:
    getattr(__import__(module, fromlist=[func]), func)(args)
except SystemExit as exc:
    code = exc.code
new = sorted(set(asked) | (set(sys.modules) - before))
# Our modules that hold something of dataclasses' (the module, its decorator or a dataclass they
# define): whichever imported it first, each one that uses it is named.
users = []
for mod_name, mod in list(sys.modules.items()):
    if mod_name.split(".")[0] == "safemodel_ci" and mod is not None:
        for value in list(vars(mod).values()):
            if getattr(value, "__name__", None) == "dataclasses" or \
                    getattr(value, "__module__", None) == "dataclasses" or \
                    ("__dataclass_fields__" in getattr(value, "__dict__", {})
                     and getattr(value, "__module__", None) == mod_name):
                users.append(mod_name)
                break
with open(out, "w") as fh:
    fh.write(repr({"exit": code, "modules": new, "causes": causes, "users": sorted(users)}))  # not json
"""


def _run(tmp_path: Path, entry: str, args: List[str], cwd: Path) -> Dict[str, Any]:
    out = tmp_path / "modules.txt"
    proc = subprocess.run([sys.executable, "-S", "-c", _WRAPPER, str(ROOT), str(out), entry] + args,
                          cwd=str(cwd), capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "SAFEMODEL_CACHE_DIR": str(tmp_path / "cache"),
                               "HOME": str(tmp_path)})
    assert out.exists(), proc.stderr
    data = ast.literal_eval(out.read_text())
    assert data["exit"] == 0, (proc.stdout, proc.stderr)
    return data


def _imported(tmp_path: Path, entry: str, args: List[str], cwd: Path) -> Set[str]:
    return set(_run(tmp_path, entry, args, cwd)["modules"])


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


#: What only the result cache needs (its keys, MACs, entries and key file): a scan with --no-cache
#: imports none of them (hashlib alone loads OpenSSL, ~2-4 ms).
CACHE_ONLY = ("hashlib", "_hashlib", "hmac", "json", "base64", "secrets", "array")


def _reader(chain: List[str]) -> bool:
    """Imported for a format reader other than the pickle one (each imports what its format needs)."""
    return any(f.startswith("safemodel_ci/formats/") and not f.startswith(_PICKLE_PATH) for f in chain)


#: The registry, the reader interface and the pickle reader (a module or a package).
_PICKLE_PATH = ("safemodel_ci/formats/__init__.py", "safemodel_ci/formats/interface.py",
                "safemodel_ci/formats/pickle")


def test_scan_without_cache_imports_no_hashing_or_json(tmp_path: Path, small_model: Path) -> None:
    """No module on the path of a pickle scan imports hashlib, json, hmac, base64 or secrets when
    the cache is off; other readers may (while every reader is imported at the first scan)."""
    data = _run(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "model.pkl"], small_model)
    causes = data["causes"]
    wrong = {m: causes.get(m) for m in CACHE_ONLY if m in data["modules"] and not _reader(causes.get(m, []))}
    assert wrong == {}


def test_scan_with_cache_imports_no_pool_or_hub(tmp_path: Path, small_model: Path) -> None:
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "model.pkl"], small_model)
    assert "safemodel_ci.cache" in modules
    assert _forbidden(modules) == []


def test_hook_on_one_small_model_imports_only_what_it_needs(tmp_path: Path, small_model: Path) -> None:
    data = _run(tmp_path, "safemodel_ci.hooks.pre_commit:main", ["model.pkl"], small_model)
    modules = set(data["modules"])
    assert "safemodel_ci.formats.pickle" in modules
    assert "hashlib" in modules  # the result cache is on
    # A small file is hashed whole from one read: no read log (array) is made.
    assert "array" not in modules or _reader(data["causes"].get("array", [])), data["causes"].get("array")
    assert _forbidden(modules) == []
    # The converter's advice is only for a failing commit.
    assert "safemodel_ci.convert" not in modules
    # argparse's help formatter is given the terminal's width (no shutil), and the result is stored
    # through a private file made without tempfile (which imports shutil and random).
    assert "shutil" not in modules, data["causes"].get("shutil")
    assert "tempfile" not in modules, data["causes"].get("tempfile")
    # typing only for type checkers: importing it and compiling its forward references (a TypeVar's
    # bound, a NamedTuple's field annotations: the process's first compile()) is ~3 ms.
    assert "typing" not in modules, data["causes"].get("typing")


def test_config_file_does_import_its_parser(tmp_path: Path, small_model: Path) -> None:
    """The guard above is not vacuous: with a .safemodel.yaml present, yaml is asked for."""
    (small_model / ".safemodel.yaml").write_text("fail-on: high\n")
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "model.pkl"], small_model)
    assert "yaml" in modules


def test_cache_key_does_not_parse_the_allowlist() -> None:
    """The result-cache key hashes the allowlist file without parsing it (~10 ms a cached run), once
    per process (the Hub commands key every file), and gives the same version string as the parsed
    table's hash."""
    code = ("from safemodel_ci import pickle_policy as p\n"
            "v = p.tables_version()\n"
            "assert p._TABLE is None, 'tables_version parsed the table'\n"
            "real, p.DATA_FILE = p.DATA_FILE, '/nonexistent/allowlist.json'\n"
            "assert p.tables_version() == v, 'the file was read again'\n"
            "p.DATA_FILE = real\n"
            "p.load_table()\n"
            "assert p._TABLE is not None and p.tables_version() == v, (v, p.tables_version())\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_startup_bench_runs_every_row(tmp_path: Path) -> None:
    """bench/startup.py measures each command (every run exits 0) beside the reference, one round."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "startup.py"), "--runs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr  # 1: over the goal (a timing, not a failure)
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")][2:]  # head, rule
    labels = [r[1].strip() for r in rows]
    assert labels == ["python -c pass (reference)", "safemodel scan tiny.pkl",
                      "safemodel scan small.safetensors", "pre-commit hook, 1 small model, empty cache",
                      "pre-commit hook, 1 new small model, cache in use",
                      "pre-commit hook, 1 small model, warm cache"]
    assert all(r[-2].strip() == "0" for r in rows), proc.stdout  # exit codes: every scan passed


def test_startup_bench_safetensors_fixture_is_what_the_library_writes(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import startup
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    startup._safetensors(ours)
    st.save_file({"layer.weight": np.arange(256, dtype=np.float32).reshape(16, 16) / 256,
                  "layer.bias": np.arange(16, dtype=np.float32)}, str(theirs))
    assert ours.read_bytes() == theirs.read_bytes()


def test_escape_surrogates_without_a_compiled_pattern_at_import() -> None:
    """The surrogate escape (compiled on first use since start-up) still escapes what it did."""
    import os

    from safemodel_ci.output.interface import escape_surrogates

    name = os.fsdecode(b"models/w\xffeights\xe9.pkl")
    assert escape_surrogates(name) == "models/w\\xffeights\\xe9.pkl"
    assert escape_surrogates(name, in_json=True) == "models/w\\\\xffeights\\\\xe9.pkl"
    assert escape_surrogates("\ud800x") == "\\ud800x"
    assert escape_surrogates("plain.pkl") == "plain.pkl" and escape_surrogates("modèle.pkl") == "modèle.pkl"


def test_scan_of_one_pickle_imports_only_the_pickle_reader(tmp_path: Path) -> None:
    """Issue 20 item 3: detection asks the detector table's gates first, and imports a reader's
    module only when its gate passes; a 40-byte pickle (bench/startup.py's) needs the pickle reader
    alone among the formats."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "tiny.pkl").write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=4))
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "tiny.pkl"], work)
    formats = sorted(m for m in modules if m.startswith("safemodel_ci.formats"))
    # the pickle reader is a package (formats/pickle/): its modules are the pickle reader's
    readers = sorted({m.split(".")[2] for m in formats if m.count(".") >= 2})
    assert readers == ["interface", "pickle"], formats
    assert "safemodel_ci.formats" in formats


def test_gate_passing_imports_that_reader(tmp_path: Path) -> None:
    """The other side: a file whose gate passes imports its reader (the guard above is not vacuous)."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "model.gguf").write_bytes(b"GGUF" + bytes(20))
    modules = _imported(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "-q", "model.gguf"], work)
    assert "safemodel_ci.formats.gguf" in modules
    assert "safemodel_ci.formats.zip" not in modules and "safemodel_ci.formats.onnx" not in modules


#: Our modules on a small pickle's path may not make dataclasses: they use the plain records of
#: ``safemodel_ci/record.py`` (``dataclasses`` imports ``inspect``, ``ast``, ``dis`` and ``tokenize``:
#: ~6 ms, and each dataclass costs 0.2-0.8 ms to create). The pickle reader (the package
#: formats/pickle/) is held to it like the CLI, the context and the findings; only the other readers,
#: whose gates a small pickle may pass (protobuf's is lax), are allowed one until their owners convert
#: them (:func:`_other_reader`).
PICKLE_READER = "safemodel_ci.formats.pickle"


def _other_reader(module: str) -> bool:
    """A reader module other than the pickle one (a gate may pass on a pickle: protobuf is lax)."""
    return module.startswith("safemodel_ci.formats.") and not module.startswith(
        (PICKLE_READER, "safemodel_ci.formats.interface"))


def _other_reader_file(chain: List[str]) -> bool:
    """Whether an import chain (our files, innermost first) goes through another reader's file."""
    return any(f.startswith("safemodel_ci/formats/") and not f.startswith("safemodel_ci/formats/pickle/")
               and f not in ("safemodel_ci/formats/__init__.py", "safemodel_ci/formats/interface.py")
               for f in chain)


@pytest.mark.parametrize("command", ["scan-tiny", "scan-model", "scan-safetensors", "hook"])
def test_scan_and_hook_path_use_no_dataclasses(tmp_path: Path, small_model: Path, command: str) -> None:
    """Issue 20 item 3: a --no-cache scan of a small pickle and the hook on a small model make no
    dataclass and import neither ``dataclasses`` nor ``inspect`` for any module of ours but the
    reader modules other than the pickle one (see :data:`PICKLE_READER`)."""
    (small_model / "tiny.pkl").write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=4))
    header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'  # bench/startup.py's layout
    (small_model / "small.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    entry, args = {
        "scan-tiny": ("safemodel_ci.cli:main", ["scan", "--no-cache", "tiny.pkl"]),
        "scan-model": ("safemodel_ci.cli:main", ["scan", "--no-cache", "model.pkl"]),
        "scan-safetensors": ("safemodel_ci.cli:main", ["scan", "--no-cache", "small.safetensors"]),
        "hook": ("safemodel_ci.hooks.pre_commit:main", ["model.pkl"]),
    }[command]
    data = _run(tmp_path, entry, args, small_model)
    assert "safemodel_ci.findings" in data["modules"] and "safemodel_ci.formats.pickle" in data["modules"]
    # The pickle reader makes none, and neither do the readers these files' gates let in (safetensors,
    # json-config's Keras walker): no module of ours is a user at all.
    assert [m for m in data["users"] if m.startswith(PICKLE_READER)] == []
    assert data["users"] == []
    if command != "scan-safetensors":
        # The small model's first bytes pass the protobuf gate: the SavedModel reader's detect runs,
        # but its graph walker (savedmodel, keras_config: ~10 ms) is imported only to scan one.
        assert "safemodel_ci.formats.savedmodel" not in data["modules"]
        assert "safemodel_ci.formats.keras_config" not in data["modules"]
    for name in ("dataclasses", "inspect"):
        if name in data["modules"]:
            assert _other_reader_file(data["causes"].get(name, [])), (name, data["causes"].get(name))


def test_path_without_the_reader_imports_no_dataclasses(tmp_path: Path) -> None:
    """Everything the CLI, the hook, settings, config, policy, findings, the context, the scanner
    and the worker plan import, without scanning a file: no ``dataclasses``, no ``inspect``."""
    code = ("import sys, importlib.util\n"
            # safemodel_ci.hooks is installed from hooks/ (as in _WRAPPER)
            "spec = importlib.util.spec_from_file_location('safemodel_ci.hooks', sys.argv[1] + "
            "'/hooks/__init__.py', submodule_search_locations=[sys.argv[1] + '/hooks'])\n"
            "hooks = importlib.util.module_from_spec(spec); spec.loader.exec_module(hooks)\n"
            "sys.modules['safemodel_ci.hooks'] = hooks\n"
            "import safemodel_ci.cli, safemodel_ci.hooks.pre_commit, safemodel_ci.scanner, "
            "safemodel_ci.parallel, safemodel_ci.config, safemodel_ci.settings, safemodel_ci.cache, "
            "safemodel_ci.loader_names, safemodel_ci.formats\n"
            "bad = sorted({'dataclasses', 'inspect', 'ast', 'dis', 'tokenize'} & set(sys.modules))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path[:0] = [sys.argv[1]]\n" + code,
                           str(ROOT)], cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_guard_sees_a_dataclass(tmp_path: Path) -> None:
    """The guard above is not vacuous: a reader that still makes a dataclass (the zip container's, on
    a torch-style zip holding a pickle) is named as a user, and ``dataclasses`` is traced to a reader's
    file; the pickle reader it runs on the member is not named."""
    import zipfile

    work = tmp_path / "repo"
    work.mkdir()
    with zipfile.ZipFile(work / "model.pt", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": [1, 2, 3]}, protocol=2))
        zf.writestr("archive/version", "3\n")
    data = _run(tmp_path, "safemodel_ci.cli:main", ["scan", "--no-cache", "model.pt"], work)
    assert any(_other_reader(m) for m in data["users"]), data["users"]
    assert not any(m.startswith(PICKLE_READER) for m in data["users"]), data["users"]
    assert "dataclasses" in data["modules"] and _other_reader_file(data["causes"]["dataclasses"])


def test_parser_of_the_running_command_is_the_full_parser_s() -> None:
    """``safemodel scan ...`` builds only the scan sub-command's parser (~1.5 ms of 2 ms): each
    sub-command's help, and what a command line parses to, are the full parser's."""
    import argparse

    from safemodel_ci import cli

    def sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]

    full = cli.build_parser()
    for name in cli.COMMANDS:
        one = cli.build_parser(name)
        assert sub(one, name).format_help() == sub(full, name).format_help()
        assert cli._command([name, "x"]) == name
    lines = [["scan", "--no-cache", "-f", "json", "-j", "2", "a.pkl"], ["rules", "--format", "json"],
             ["merge", "-o", "out.sarif", "r.json"], ["hub", "--shard", "1/2", "org/name"]]
    for words in lines:
        assert vars(cli.build_parser(words[0]).parse_args(words)) == vars(full.parse_args(words))
    assert cli._command(["--help", "scan"]) is None and cli._command(["sca"]) is None
    assert cli._command([]) is None
