"""The allowlist/denylist policy that judges every import a pickle makes."""

from __future__ import annotations

import pytest

from safemodel_ci.findings import Severity
from safemodel_ci.pickle_policy import SAFE_GLOBALS, TABLES_VERSION, classify_global
from safemodel_ci.policy import Policy


def verdict(path: str, allow: frozenset = frozenset()):  # type: ignore[no-untyped-def]
    module, name = path.rsplit(".", 1)
    return classify_global(module, name, allow)


def test_what_torch_weights_only_allows_is_allowed() -> None:
    torch_unpickler = pytest.importorskip("torch._weights_only_unpickler")
    allowed = torch_unpickler._get_allowed_globals()
    assert len(allowed) > 100
    refused = [name for name in allowed if verdict(name).rule_id is not None]
    assert refused == []


@pytest.mark.parametrize("path", [
    "collections.OrderedDict", "collections.defaultdict", "builtins.set", "builtins.frozenset",
    "builtins.complex", "builtins.slice", "builtins.range", "builtins.bytearray", "datetime.datetime",
    "argparse.Namespace", "_codecs.encode",
    "copyreg._reconstructor", "copyreg.__newobj__", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar", "numpy.dtype",
    "numpy.ndarray", "joblib.numpy_pickle.NumpyArrayWrapper", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter", "torch.FloatStorage", "torch.Size", "torch.device",
    "torch.nn.modules.linear.Linear", "torch.nn.modules.container.Sequential",
    "sklearn.pipeline.Pipeline", "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._tree.Tree", "sklearn.neighbors._kd_tree.newObj", "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier",
    # pandas 2.x/3.x public paths, private scikit-learn classes, numpy ufuncs (issue 15)
    "pandas.DataFrame", "pandas.Index", "pandas.RangeIndex", "pandas.Categorical",
    "pandas._libs.internals._unpickle_block", "pandas.core.frame.DataFrame",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper", "numpy.log1p", "numpy.exp",
    "numpy.core.multiarray._reconstruct", "scipy.sparse._csr.csr_matrix",
])
def test_model_globals_are_allowed(path: str) -> None:
    v = verdict(path)
    assert v.rule_id is None, v.reason


@pytest.mark.parametrize("path", [
    "builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__", "builtins.vars",
    "builtins.open", "os.system", "posix.system", "nt.system", "os.path.join", "subprocess.Popen",
    "runpy._run_code", "pty.spawn", "socket.create_connection", "ctypes.CDLL", "importlib.import_module",
    "pkgutil.resolve_name", "operator.attrgetter", "_operator.methodcaller", "functools.partial",
    "marshal.loads", "types.CodeType", "types.FunctionType", "pickle.loads", "_pickle.loads",
    "dill._dill._create_code", "cloudpickle.cloudpickle._make_function", "shutil.rmtree", "sys.exit",
    "code.InteractiveInterpreter", "pdb.run", "bdb.Bdb", "pydoc.pipepager", "timeit.timeit",
    "cProfile.run", "profile.run", "trace.Trace", "doctest.debug_script", "idlelib.pyshell.main",
    "lib2to3.main.main", "ensurepip._run_pip", "venv.create", "pip.main",
    "multiprocessing.util.spawnv_passfds",
    "webbrowser.open", "urllib.request.urlopen", "http.client.HTTPSConnection", "ftplib.FTP",
    "smtplib.SMTP", "ssl.get_server_certificate", "uuid._get_command_stdout", "logging.FileHandler",
    "_io.FileIO", "io.open", "numpy.testing._private.utils.runstring", "numpy.f2py.crackfortran.getlincoef",
    "torch._inductor.codecache.compile_file", "torch.utils.collect_env.run", "torch.jit.load",
    "torch._dynamo.guards.GuardBuilder", "torch.fx.experimental.symbolic_shapes.ShapeEnv",
    "torch.serialization.load", "torch.load", "numpy.load", "joblib.load",
    # submodules of dangerous packages (CVE-2025-10157)
    "asyncio.unix_events._UnixSubprocessTransport._start",
    "distutils.file_util.write_file", "_osx_support._read_output", "imaplib.IMAP4_stream",
    "test.support.script_helper.assert_python_ok", "copyreg.add_extension",
    # joblib < 0.10 wrappers load a separate file named inside the pickle (np.load, allow_pickle)
    "joblib.numpy_pickle_compat.NDArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper",
    # re-exported into a scikit-learn module (issue 15), and numpy < 1.20's ufunc import gadget
    "sklearn.callback._transport.Listener", "sklearn.callback._transport.Client",
    "numpy.core._ufunc_reconstruct",
])
def test_dangerous_globals_are_critical(path: str) -> None:
    v = verdict(path)
    assert v.rule_id == "pickle-dangerous-global", v
    assert v.severity is Severity.CRITICAL


@pytest.mark.parametrize("module,name", [
    ("pathlib", "os.system"),                 # attribute path into a dangerous module
    ("torch", "serialization.pickle.loads"),
    ("builtins", "print.__self__"),           # dunder in the path
    ("numpy", "__builtins__"),
    ("collections", "OrderedDict.__init__.__globals__"),
    ("builtins", "dict.__class__"),
])
def test_attribute_paths_are_judged_whole(module: str, name: str) -> None:
    v = classify_global(module, name, frozenset())
    assert v.rule_id == "pickle-dangerous-global", v


def test_attribute_path_on_an_allowed_class_is_not_allowed() -> None:
    assert classify_global("collections", "OrderedDict.fromkeys", frozenset()).rule_id \
        == "pickle-unknown-global"
    assert classify_global("torch.nn.modules.linear", "Linear.forward", frozenset()).rule_id \
        == "pickle-unknown-global"


@pytest.mark.parametrize("path", [
    "mymodule.MyModel", "decimal.Context", "collections.UserDict", "builtins.print",
    "torch.nn.modules.module.register_module_forward_hook",  # function, not a class
    "sklearn.utils.validation.check_array",                   # sklearn function, not a class
    "numpy.frombuffer", "statistics.mean",
    # pathlib is not on the table: a user who needs paths in a checkpoint allows them by name
    "pathlib.PosixPath", "pathlib.WindowsPath",
    # a class family pattern no longer admits what a library module merely imports
    "sklearn.utils.validation.Real",
])
def test_anything_else_is_blocked_as_unknown(path: str) -> None:
    v = verdict(path)
    assert v.rule_id == "pickle-unknown-global"
    assert v.severity is Severity.HIGH
    assert path in v.reason and "allow-globals" in v.reason


def test_sklearn_test_helpers_are_not_allowed_as_classes() -> None:
    assert verdict("sklearn.utils._testing.TempMemmap").rule_id == "pickle-dangerous-global"
    assert verdict("sklearn.externals.joblib.Parallel").rule_id == "pickle-dangerous-global"
    assert verdict("sklearn.datasets._base.Bunch").rule_id == "pickle-dangerous-global"


def test_config_allows_exact_names_and_module_wildcards() -> None:
    assert verdict("mymodule.MyModel", frozenset({"mymodule.MyModel"})).rule_id is None
    assert verdict("mymodule.sub.Thing", frozenset({"mymodule.*"})).rule_id is None
    assert verdict("othermodule.Thing", frozenset({"mymodule.*"})).rule_id == "pickle-unknown-global"


def test_wildcard_never_lowers_a_dangerous_global_but_an_exact_entry_does() -> None:
    assert verdict("os.system", frozenset({"os.*"})).rule_id == "pickle-dangerous-global"
    assert verdict("builtins.eval", frozenset({"builtins.*"})).rule_id == "pickle-dangerous-global"
    assert verdict("os.system", frozenset({"os.system"})).rule_id is None


def test_policy_object_uses_the_tables_and_fingerprints_them() -> None:
    policy = Policy(allow_globals=frozenset({"mymodule.MyModel"}))
    assert policy.classify_global("mymodule", "MyModel").rule_id is None
    assert policy.classify_global("os", "system").rule_id == "pickle-dangerous-global"
    assert TABLES_VERSION and policy.fingerprint() != Policy().fingerprint()


def test_allowlist_holds_no_callable_of_the_dangerous_families_by_accident() -> None:
    # Exact entries are deliberate exceptions inside dangerous packages; list them to keep them few.
    from safemodel_ci.pickle_policy import dangerous_reason

    exceptions = sorted(p for p in SAFE_GLOBALS if dangerous_reason(*p.rsplit(".", 1)))
    assert exceptions == ["copyreg.__newobj__", "copyreg.__newobj_ex__", "copyreg._reconstructor",
                          "joblib.numpy_pickle.NumpyArrayWrapper",
                          "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
                          "torch.serialization._get_layout", "types.SimpleNamespace"]
