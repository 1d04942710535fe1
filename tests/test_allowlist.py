"""The generated pickle allowlist (issue 15): made from the real libraries, judged by resolved identity.

Pickles here are *written* with the real libraries (pickle.dumps, joblib.dump, DataFrame.to_pickle,
torch.save) and scanned; nothing is ever loaded.
"""

from __future__ import annotations

import importlib
import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from safemodel_ci import cli
from safemodel_ci.pickle_policy import DANGEROUS_PREFIXES, _prefix_match, classify_global, load_table

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "tools" / "gen_allowlist.py"

#: Modules no admitted name may resolve into (issue 15), besides the whole dangerous table.
FORBIDDEN = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "_posixsubprocess",
    "socket",
    "_socket",
    "multiprocessing",
    "_multiprocessing",
    "threading",
    "_thread",
    "ctypes",
    "_ctypes",
    "importlib",
    "pickle",
    "_pickle",
    "shutil",
    "pathlib",
    "io",
    "_io",
    "builtins",
    "runpy",
    "code",
    "pty",
)
SAFE_BUILTINS = {
    "set",
    "frozenset",
    "complex",
    "slice",
    "range",
    "bytearray",
    "bytes",
    "list",
    "dict",
    "tuple",
    "int",
    "float",
    "bool",
    "str",
    "object",
    "Ellipsis",
    "NotImplemented",
}
#: Admitted entries inside a package of the dangerous table: deliberate, each with a reason in
#: tools/gen_allowlist.py (DANGEROUS_TABLE_EXCEPTIONS); kept short and exact here.
EXCEPTIONS = {
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    "copyreg._reconstructor",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    "torch.serialization._get_layout",
    "types.SimpleNamespace",
}
#: The C base classes of torch's tensor and storage types (torch._C is on the dangerous table).
SAFE_BASES = {"torch._C.TensorBase", "torch._C._TensorBase", "torch._C.StorageBase"}


def _gen() -> Any:
    sys.path.insert(0, str(GENERATOR.parent))
    try:
        return importlib.import_module("gen_allowlist")
    finally:
        sys.path.remove(str(GENERATOR.parent))


def _forbidden(ident: str) -> str:
    """Why the identity ``module.qualname`` may not be admitted ('' when it may)."""
    if ident in EXCEPTIONS:
        return ""
    module, _, name = ident.rpartition(".")
    top = ident.split(".")[0]
    if top in ("builtins", "__builtin__"):
        return "" if ident.count(".") == 1 and name in SAFE_BUILTINS else "a builtin that is not a safe type"
    if top in FORBIDDEN:
        return f"from {top}"
    hit = _prefix_match(ident, DANGEROUS_PREFIXES)
    return f"on the dangerous table ({hit})" if hit else ""


def run_cli(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str]:
    code = cli.main(args)
    out, _ = capsys.readouterr()
    return code, out


# ---- the table itself ------------------------------------------------------------------------


def test_table_is_sorted_versioned_and_one_entry_per_line() -> None:
    text = (REPO / "safemodel_ci" / "data" / "allowlist.json").read_text()
    data = json.loads(text)
    assert list(data["allow"]) == sorted(data["allow"]) and list(data["dangerous"]) == sorted(
        data["dangerous"]
    )
    assert len(data["environments"]) >= 3
    for versions in data["environments"].values():
        assert {"python", "numpy", "scipy", "scikit-learn", "pandas"} <= set(versions)
    # at least two numpy, pandas and scikit-learn versions, with numpy 1.x and 2.x
    for lib in ("numpy", "pandas", "scikit-learn"):
        assert len({v[lib] for v in data["environments"].values()}) >= 3, lib
    assert any(v["numpy"].startswith("1.") for v in data["environments"].values())
    assert any(v.get("torch", "").startswith("2.") for v in data["environments"].values())
    lines = text.splitlines()
    assert sum(1 for line in lines if line.startswith('    "')) >= len(data["allow"]) + len(data["dangerous"])
    table = load_table()
    assert not set(table.allow) & set(table.dangerous)


def test_no_admitted_name_or_target_is_dangerous_or_from_a_forbidden_module() -> None:
    table = load_table()
    bad = {}
    for name, (kind, target) in table.allow.items():
        assert kind in ("class", "ufunc", "function", "constant"), (name, kind)
        for ident in {name, target} if kind != "constant" else {name}:
            why = _forbidden(ident)
            if why:
                bad[name] = f"{ident}: {why}"
    assert bad == {}


def test_functions_are_only_the_listed_pure_ones() -> None:
    gen = _gen()
    table = load_table()
    for name, (kind, target) in table.allow.items():
        if kind == "function":
            assert (
                target in gen.PURE_FUNCTIONS
                or target in gen.DANGEROUS_TABLE_EXCEPTIONS
                or target.rsplit(".", 1)[-1].startswith("__pyx_unpickle_")
            ), name


def _resolve(path: str) -> Tuple[bool, Any]:
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj: Any = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - a module of another version
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


def _identities(obj: Any) -> List[str]:
    """The identities an object stands for: itself, its classes' MRO, the function it wraps."""
    np = pytest.importorskip("numpy")
    if isinstance(obj, np.ufunc):
        return [f"{pickle.whichmodule(obj, obj.__name__)}.{obj.__name__}"]
    out = []
    items = list(obj.__mro__) if isinstance(obj, type) else [obj, getattr(obj, "__wrapped__", None)]
    if not isinstance(obj, type) and not callable(obj):
        items = list(type(obj).__mro__)
    for item in items:
        if item is None or item is object:
            continue
        module = getattr(item, "__module__", None)
        owner = getattr(item, "__self__", None)
        if isinstance(owner, type):
            module = owner.__module__
        qual = getattr(item, "__qualname__", None) or getattr(item, "__name__", "?")
        out.append(f"{module}.{qual}")
    return out


def test_every_admitted_name_resolves_to_nothing_dangerous_in_this_environment() -> None:
    """Resolve each admitted name with the installed libraries: no object, base class or wrapped
    function may come from the dangerous table or the forbidden modules."""
    table = load_table()
    resolved, missing, bad, moved = 0, [], {}, []
    for name, (kind, target) in sorted(table.allow.items()):
        ok, obj = _resolve(name)
        if not ok:
            missing.append(name)
            continue
        resolved += 1
        if kind == "class" and f"{obj.__module__}.{obj.__qualname__}" != target:
            moved.append(name)
        for ident in _identities(obj):
            if ident in SAFE_BASES or ident.startswith("builtins.") and kind == "constant":
                continue
            why = _forbidden(ident)
            if why:
                bad[name] = f"{ident}: {why}"
        if isinstance(obj, type) and issubclass(obj, type):
            bad[name] = "a metaclass"
    assert bad == {}
    data = json.loads((REPO / "safemodel_ci" / "data" / "allowlist.json").read_text())
    # Names that do not resolve here must belong to other library versions (tagged with envs).
    # Legacy aliases (old files' paths) are judged as their target, which must resolve.
    legacy = _gen().LEGACY_ALIASES
    untagged = [
        n
        for n in missing
        if "envs" not in data["allow"][n] and n.split(".")[0] in sys.modules and n not in legacy
    ]
    assert untagged == []
    for name, target in legacy.items():
        if name in table.allow and target.split(".")[0] in sys.modules:
            assert _resolve(target)[0] and table.allow[name] == table.allow[target]
    assert resolved > 1500
    # Targets are the newest environment's identities: with its versions installed, they are exact.
    gen = _gen()
    last = list(table.environments)[-1]
    if table.environments[last] == gen.versions():
        assert [n for n in moved if last in data["allow"][n].get("envs", [last])] == []


def _environment_of(versions: Dict[str, str], table: Any) -> str:
    for env, vers in table.environments.items():
        if vers == versions:
            return env
    return ""


@pytest.mark.slow
def test_committed_table_is_what_the_generator_makes_here(tmp_path: Path) -> None:
    """Run the generator in this environment; the committed entries of an environment with the same
    versions must be exactly what it produces (other versions' entries may differ)."""
    out = tmp_path / "part.json"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", str(GENERATOR), "collect", "--env", "here", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    part = json.loads(out.read_text())
    table = load_table()
    env = _environment_of(part["versions"], table)
    if not env:
        pytest.skip(
            f"the committed table was generated for other versions than {part['versions']}; "
            "regenerate it (docs/formats.md: The pickle allowlist)"
        )
    data = json.loads((REPO / "safemodel_ci" / "data" / "allowlist.json").read_text())
    last_env = list(table.environments)[-1]
    committed = {
        n: (e["kind"], e.get("target", n)) for n, e in data["allow"].items() if env in e.get("envs", [env])
    }
    produced = {n: tuple(v) for n, v in part["allow"].items()}
    # A name dangerous in another version is not admitted in any (the merge's rule).
    produced = {n: v for n, v in produced.items() if n not in table.dangerous}
    assert set(committed) == set(produced)
    assert {n: v[0] for n, v in committed.items()} == {n: v[0] for n, v in produced.items()}
    if env == last_env:
        assert committed == produced
    committed_dangerous = {n for n, e in data["dangerous"].items() if env in e.get("envs", [env])}
    assert committed_dangerous == set(part["dangerous"])


# ---- real pickles of each library pass ---------------------------------------------------------


def _scan_dir(directory: Path, capsys: pytest.CaptureFixture[str]) -> Tuple[int, Dict[str, Any]]:
    code, out = run_cli(["scan", "--no-cache", "-f", "json", str(directory)], capsys)
    return code, json.loads(out)


def _assert_clean(directory: Path, capsys: pytest.CaptureFixture[str], at_least: int) -> None:
    code, report = _scan_dir(directory, capsys)
    problems = [
        (f["path"], f["rule_id"], f["message"][:200])
        for r in report["files"]
        for f in r["findings"]
        if f["severity"] != "INFO" or f["unscanned"]
    ]
    assert problems == [] and code == 0
    assert len(report["files"]) >= at_least


def _dump_all(directory: Path, objects: Dict[str, Any]) -> None:
    for label, obj in objects.items():
        for proto in (2, 4, 5):
            (directory / f"{label}.p{proto}.pkl").write_bytes(pickle.dumps(obj, protocol=proto))


def test_real_scikit_learn_models_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
    )
    from sklearn.feature_selection import SelectKBest
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, SplineTransformer, StandardScaler

    rng = np.random.RandomState(1)
    X = rng.rand(40, 3)
    y = (X[:, 0] > 0.5).astype(int)
    frame = pd.DataFrame({"a": rng.rand(40), "b": rng.choice(["x", "y"], 40), "c": rng.rand(40)})
    pipe = Pipeline(
        [
            (
                "ct",
                ColumnTransformer(
                    [
                        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["a", "c"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["b"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, y)
    objects = {
        "hgb_clf": HistGradientBoostingClassifier(max_iter=3).fit(X, y),
        "hgb_reg": HistGradientBoostingRegressor(max_iter=3).fit(X, X[:, 1]),
        "column_transformer_pipeline": pipe,
        "log1p": FunctionTransformer(np.log1p).fit(X),
        "exp_log": FunctionTransformer(np.exp, inverse_func=np.log).fit(X),
        "forest": RandomForestClassifier(n_estimators=2).fit(X, y),
        "knn_kdtree": KNeighborsClassifier(algorithm="kd_tree").fit(X, y),
        "select_k_best": SelectKBest(k=2).fit(X, y),
        "splines": SplineTransformer().fit(X),
    }
    _dump_all(tmp_path, objects)
    for label, obj in objects.items():
        joblib.dump(obj, tmp_path / f"{label}.joblib")
    _assert_clean(tmp_path, capsys, at_least=4 * len(objects))


def test_real_pandas_frames_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    dates = pd.date_range("2021-01-01", periods=3)
    frame = pd.DataFrame(
        {
            "n": [1, 2, 3],
            "f": [0.5, np.nan, 2.0],
            "cat": pd.Categorical(["a", "b", "a"]),
            "when": dates,
            "utc": dates.tz_localize("UTC"),
            "s": pd.array(["x", None, "z"], dtype="string"),
            "o": ["p", "q", None],
        }
    )
    frames = {
        "range_index": frame,
        "categorical_index": frame.set_index("cat"),
        "datetime_index": frame.set_index("when"),
        "string_index": frame.set_index("s"),
        "multi_index": frame.set_index(["n", "o"]),
        "series": frame["f"],
        "period_index": frame.set_index(pd.period_range("2021-01", periods=3, freq="M")),
    }
    for label, obj in frames.items():
        obj.to_pickle(tmp_path / f"{label}.pkl")  # what DataFrame.to_pickle writes
    _dump_all(tmp_path, frames)
    _assert_clean(tmp_path, capsys, at_least=4 * len(frames))


def test_real_scipy_sparse_matrices_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np = pytest.importorskip("numpy")
    sparse = pytest.importorskip("scipy.sparse")
    m = np.eye(4)
    objects = {
        name: getattr(sparse, name)(m)
        for name in (
            "csr_matrix",
            "csc_matrix",
            "coo_matrix",
            "lil_matrix",
            "dok_matrix",
            "bsr_matrix",
            "dia_matrix",
            "csr_array",
            "csc_array",
            "coo_array",
        )
        if hasattr(sparse, name)
    }
    _dump_all(tmp_path, objects)
    _assert_clean(tmp_path, capsys, at_least=3 * len(objects))


def test_every_public_ufunc_pickled_by_its_library_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pickle writes a ufunc under pickle.whichmodule's name (scipy 1.17: scipy.special.expit is
    scipy.special._special_ufuncs.expit; numpy.strings.* under numpy._core._multiarray_umath): that
    name is admitted, as the public one is (a sklearn FunctionTransformer(func=expit) holds one)."""
    np = pytest.importorskip("numpy")
    special = pytest.importorskip("scipy.special")
    objects = {}
    for mod in (np, special, getattr(np, "strings", None)):
        if mod is None:
            continue
        for attr in sorted(dir(mod)):
            value = getattr(mod, attr, None)
            if isinstance(value, np.ufunc) and not attr.startswith("_"):
                objects[f"{mod.__name__}.{attr}"] = value
    assert len(objects) > 300
    (tmp_path / "ufuncs.pkl").write_bytes(pickle.dumps(list(objects.values()), protocol=4))
    _assert_clean(tmp_path, capsys, at_least=1)


def test_real_xgboost_and_lightgbm_estimators_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np = pytest.importorskip("numpy")
    joblib = pytest.importorskip("joblib")
    rng = np.random.RandomState(2)
    X = rng.rand(40, 3)
    y = (X[:, 0] > 0.5).astype(int)
    objects: Dict[str, Any] = {}
    try:
        import xgboost as xgb

        objects["xgb_clf"] = xgb.XGBClassifier(n_estimators=2).fit(X, y)
        objects["xgb_reg"] = xgb.XGBRegressor(n_estimators=2).fit(X, X[:, 1])
        objects["xgb_booster"] = objects["xgb_clf"].get_booster()
    except ImportError:
        pass
    try:
        import lightgbm as lgb

        objects["lgb_clf"] = lgb.LGBMClassifier(n_estimators=2, verbose=-1).fit(X, y)
        objects["lgb_booster"] = objects["lgb_clf"].booster_
    except ImportError:
        pass
    if not objects:
        pytest.skip("neither xgboost nor lightgbm is installed")
    _dump_all(tmp_path, objects)
    for label, obj in objects.items():
        joblib.dump(obj, tmp_path / f"{label}.joblib")
    _assert_clean(tmp_path, capsys, at_least=4 * len(objects))


def test_real_catboost_estimators_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np = pytest.importorskip("numpy")
    cb = pytest.importorskip("catboost")
    X = np.random.RandomState(3).rand(30, 3)
    objects = {
        "cb_clf": cb.CatBoostClassifier(iterations=2, verbose=False, allow_writing_files=False).fit(
            X, (X[:, 0] > 0.5).astype(int)
        ),
        "cb_reg": cb.CatBoostRegressor(iterations=2, verbose=False, allow_writing_files=False).fit(
            X, X[:, 1]
        ),
    }
    _dump_all(tmp_path, objects)
    _assert_clean(tmp_path, capsys, at_least=3 * len(objects))


def test_real_torch_checkpoints_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Dropout(0.1), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    step = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 2)
    scaler = torch.amp.GradScaler("cpu")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step_scheduler": step.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": 7,
        },
        tmp_path / "checkpoint.pt",
    )
    torch.save(model, tmp_path / "whole_model.pt")
    torch.save(nn.TransformerEncoderLayer(8, 2, 16), tmp_path / "encoder_layer.pt")
    _assert_clean(tmp_path, capsys, at_least=3)


# ---- re-exports of dangerous objects -------------------------------------------------------------


def _reduce_pickle(module: str, name: str, proto: int = 2) -> bytes:
    """``module.name()`` as a pickle: GLOBAL (protocol 2) or STACK_GLOBAL (protocol 4)."""
    if proto < 4:
        return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    m, n = module.encode(), name.encode()
    return b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93)R."


def test_every_recorded_dangerous_reexport_is_critical() -> None:
    table = load_table()
    assert len(table.dangerous) > 500
    wrong = []
    for path in table.dangerous:
        module, name = path.rsplit(".", 1)
        v = classify_global(module, name, frozenset({module + ".*"}))  # a wildcard cannot lower it
        if v.rule_id != "pickle-dangerous-global":
            wrong.append(path)
    assert wrong == []
    assert (
        table.dangerous.get("sklearn.callback._transport.Listener", "multiprocessing.connection.Listener")
        == "multiprocessing.connection.Listener"
    )


def test_reexported_listener_and_client_are_critical_through_every_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Find, in the installed libraries, every module attribute that *is* a dangerous object the issue
    names, and scan a pickle importing it through that module: CRITICAL every time."""
    mpc = importlib.import_module("multiprocessing.connection")
    targets = {id(mpc.Listener): "Listener", id(mpc.Client): "Client"}
    gen = _gen()
    paths = []
    for top in ("sklearn", "pandas", "scipy", "numpy", "xgboost", "lightgbm"):
        if importlib.util.find_spec(top) is None:
            continue
        for mod in gen._walk_modules(top, lambda _s: None):
            for attr, value in list(vars(mod).items()):
                if id(value) in targets:
                    paths.append((mod.__name__, attr))
    for i, (module, attr) in enumerate(paths):
        for proto in (2, 4):
            (tmp_path / f"reexport{i}.p{proto}.pkl").write_bytes(_reduce_pickle(module, attr, proto))
    (tmp_path / "recorded.pkl").write_bytes(_reduce_pickle("sklearn.callback._transport", "Listener"))
    code, report = _scan_dir(tmp_path, capsys)
    assert code == 1
    for result in report["files"]:
        assert any(
            f["rule_id"] == "pickle-dangerous-global" and f["severity"] == "CRITICAL"
            for f in result["findings"]
        ), result


def test_reexport_of_an_admitted_class_is_judged_as_its_target() -> None:
    table = load_table()
    aliases = {n: t for n, (k, t) in table.allow.items() if k == "class" and n != t}
    assert aliases, "pandas 3 pickles pandas.DataFrame, an alias of the class"
    assert all(t in table.allow or t in aliases.values() for t in aliases.values())


# ---- allowed-by-config ---------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_exact_allow_of_a_dangerous_global_leaves_an_info_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(_reduce_pickle("posix", "system"))
    args = ["scan", "--no-cache", str(model)]
    code, _ = run_cli(args, capsys)
    assert code == 1
    cfg = _write(
        tmp_path / ".safemodel.yaml",
        "allow-globals:\n  - global: posix.system\n    reason: fixture of the red-team suite\n",
    )
    base = ["scan", "--no-cache", "--config", str(cfg)]
    code, text = run_cli([*base, str(model)], capsys)
    assert code == 0
    assert "INFO allowed-by-config" in text and "posix.system" in text
    assert "fixture of the red-team suite" in text and ".safemodel.yaml:2" in text
    assert "pickle-dangerous-global (CRITICAL)" in text  # what it turned off

    code, out = run_cli([*base, "-f", "json", str(model)], capsys)
    (finding,) = json.loads(out)["files"][0]["findings"]
    assert code == 0 and finding["rule_id"] == "allowed-by-config" and finding["severity"] == "INFO"
    assert finding["details"]["entry"] == "posix.system"
    assert finding["details"]["turned_off"] == "pickle-dangerous-global"
    assert "fixture of the red-team suite" in finding["message"]

    code, out = run_cli([*base, "-f", "sarif", str(model)], capsys)
    sarif = json.loads(out)
    (result,) = sarif["runs"][0]["results"]
    assert result["ruleId"] == "allowed-by-config" and result["level"] == "note"
    assert "fixture of the red-team suite" in result["message"]["text"]
    rule_ids = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert "allowed-by-config" in rule_ids


def test_wildcard_allow_leaves_one_info_per_entry_and_nothing_for_builtin_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # mypkg.models.Net and mypkg.layers.Block (classes of the user's own package), and an
    # OrderedDict, which the built-in table admits anyway.
    body = b"\x80\x02cmypkg.models\nNet\n)\x81cmypkg.layers\nBlock\n)\x81ccollections\nOrderedDict\n)R\x87."
    model = tmp_path / "m.pkl"
    model.write_bytes(body)
    cfg = _write(
        tmp_path / ".safemodel.yaml",
        "allow-globals:\n  - global: mypkg.*\n    reason: our own model classes\n"
        "  - global: collections.OrderedDict\n    reason: redundant\n",
    )
    code, out = run_cli(["scan", "--no-cache", "--config", str(cfg), "-f", "json", str(model)], capsys)
    assert code == 0
    findings = json.loads(out)["files"][0]["findings"]
    assert [(f["rule_id"], f["details"]["entry"]) for f in findings] == [("allowed-by-config", "mypkg.*")]
    assert findings[0]["details"]["occurrences"] == 2
    assert "our own model classes" in findings[0]["message"]
    assert findings[0]["details"]["turned_off"] == "pickle-unknown-global"


def test_wildcard_allow_cannot_turn_off_a_reexported_dangerous_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = load_table()
    path = next(iter(sorted(table.dangerous)))
    module, name = path.rsplit(".", 1)
    model = tmp_path / "m.pkl"
    model.write_bytes(_reduce_pickle(module, name))
    top = module.split(".")[0]
    cfg = _write(tmp_path / ".safemodel.yaml", f"allow-globals:\n  - global: {top}.*\n    reason: x\n")
    code, out = run_cli(["scan", "--no-cache", "--config", str(cfg), "-f", "json", str(model)], capsys)
    assert code == 1
    assert [f["rule_id"] for f in json.loads(out)["files"][0]["findings"]] == ["pickle-dangerous-global"]


def test_merging_the_committed_table_again_reproduces_it_byte_for_byte() -> None:
    """The committed file carries everything needed to merge it with a new environment's part."""
    gen = _gen()
    path = REPO / "safemodel_ci" / "data" / "allowlist.json"
    text = path.read_text()
    assert gen.dumps(gen.merge([json.loads(text)])) == text


def test_attribute_paths_through_a_reexported_dangerous_module_are_critical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``import subprocess as sp`` inside a library module: ``module`` + ``sp.Popen`` reaches Popen."""
    table = load_table()
    aliases = {p: t.partition(" (")[0] for p, t in table.dangerous.items() if t.endswith("(a module)")}
    assert len(aliases) > 300
    for path in aliases:
        module, attr = path.rsplit(".", 1)
        v = classify_global(module, f"{attr}.anything", frozenset({module + ".*"}))
        assert v.rule_id == "pickle-dangerous-global" and path in v.reason, (path, v)
    # end to end, through the first alias of os (or subprocess) the installed libraries have
    path = next((p for p, t in sorted(aliases.items()) if t in ("os", "subprocess")), None)
    if path is None:
        pytest.skip("no library module here imports os or subprocess under a name")
    module, attr = path.rsplit(".", 1)
    model = tmp_path / "m.pkl"
    callee = f"{attr}.system" if aliases[path] == "os" else f"{attr}.Popen"
    model.write_bytes(_reduce_pickle(module, callee, 4))
    code, report = _scan_dir(tmp_path, capsys)
    assert code == 1
    assert [f["severity"] for f in report["files"][0]["findings"]] == ["CRITICAL"]
