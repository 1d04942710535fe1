#!/usr/bin/env python3
"""Generate ``safemodel_ci/data/allowlist.json``: the pickle allowlist, by resolved identity.

The scanner never imports a model library; it reads only the data file this script writes. The
script imports the real libraries, makes real pickles of their objects (fitted estimators, data
frames, sparse matrices, torch checkpoints ...), collects every global those pickles import by
walking their opcodes (the pickles are never loaded), adds every class defined in the libraries'
modules, resolves each name to the object it denotes and judges *that object*:

- admitted: a class defined inside a family module in scope, a numpy ufunc, a constant of an
  admitted class (``torch.float32``), or a function on the explicit ``PURE_FUNCTIONS`` list (plus
  Cython's generated ``__pyx_unpickle_*`` helpers) -- and neither it nor any base class, nor the
  hooks unpickling calls on it (``__new__``, ``__init__``, ``__setstate__`` ...), is on the
  scanner's dangerous table;
- dangerous: a name in a family module that denotes something on the dangerous table (a
  re-export such as ``multiprocessing.connection.Listener`` imported into a scikit-learn module,
  or a class subclassing one): recorded with its real target, so the scanner reports it CRITICAL
  through whichever module path a pickle uses;
- anything else is left out (the scanner reports it HIGH, "not on the allowlist").

Versions: pickled paths differ between library versions (``numpy.core`` / ``numpy._core``, pandas
1.5 / 2.x / 3.x, scikit-learn's private modules), so the table is the union of several
environments. Each environment runs ``collect`` and the parts are merged; an entry found in only
some environments lists them in ``envs``. To regenerate (see docs/formats.md, "The pickle allowlist")::

    # in every environment (one venv per library set), from the repository root:
    VENV/bin/python tools/gen_allowlist.py collect --env NAME --out /tmp/NAME.json
    # then merge (the committed file keeps the environments not collected again):
    python tools/gen_allowlist.py merge safemodel_ci/data/allowlist.json /tmp/*.json \
        --out safemodel_ci/data/allowlist.json

``python tools/gen_allowlist.py update --env NAME`` does both for the running interpreter.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import contextlib
import functools
import importlib
import inspect
import io
import json
import os
import pickle
import pickletools
import pkgutil
import re
import sys
import time
import types
import warnings
import zipfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from safemodel_ci.pickle_policy import DANGEROUS_PREFIXES, _prefix_match, dangerous_reason  # noqa: E402

DATA_FILE = os.path.join(ROOT, "safemodel_ci", "data", "allowlist.json")
FORMAT = 1

# ---------------------------------------------------------------------------------------------
# Scope: which modules of each family may define admitted classes. A class defined elsewhere in the
# family (or anywhere else) is not admitted. Exclusions carry their reason.

FAMILIES: Dict[str, Tuple[str, ...]] = {
    "numpy": ("numpy",),
    "scipy": (
        "scipy.sparse",
        "scipy.stats",
        "scipy.spatial",
        "scipy.interpolate",
        "scipy.optimize",
        "scipy.linalg",
        "scipy.signal",
        "scipy.special",
        "scipy.cluster",
        "scipy.ndimage",
        "scipy.fft",
        "scipy.fftpack",
        "scipy.constants",
        "scipy.integrate",
        "scipy._lib._bunch",
    ),
    "sklearn": ("sklearn",),
    "xgboost": ("xgboost.sklearn", "xgboost.core", "xgboost.callback"),
    "lightgbm": ("lightgbm.sklearn", "lightgbm.basic", "lightgbm.callback"),
    "catboost": ("catboost.core",),
    # scikit-learn 1.5's loss module reports its Cython classes' module as plain "_loss", so its
    # HistGradientBoosting pickles import _loss.CyHalfBinomialLoss (resolved by that version only).
    "sklearn-1.5-loss": ("_loss=",),
    "pandas": ("pandas",),
    # torch: the model, optimiser, scheduler, AMP, distribution and quantisation classes that
    # checkpoints hold; "torch" itself only for the classes torch defines at its top level.
    "torch": (
        "torch=",
        "torch.cuda=",
        "torch.cuda.sparse=",
        "torch.nn",
        "torch.optim",
        "torch.amp",
        "torch.cuda.amp",
        "torch.cpu.amp",
        "torch.distributions",
        "torch.ao.nn",
        "torch.ao.quantization",
        "torch.quantization",
        "torch.storage",
        "torch._tensor",
        "torch._utils",
        "torch.types",
        "torch.return_types",
        "torch.sparse",
        "torch.masked",
        "torch.nested",
        "torch.autograd",
        "torch.utils.hooks",
        "torch.utils.data.dataset",
        "torch.utils.data.sampler",
        "torch.random",
        "torch.torch_version",
        "torch._tensor_str",
        "torch.serialization=",
    ),
}

EXCLUDED: Dict[str, str] = {
    "numpy._core._internal": "ctypes helpers (numpy's _ctypes wrapper)",
    "numpy.core._internal": "ctypes helpers (numpy's _ctypes wrapper)",
    "numpy._core._dtype_ctypes": "ctypes conversions",
    "numpy.core._dtype_ctypes": "ctypes conversions",
    "numpy.lib._datasource": "DataSource opens local files and URLs",
    # numpy < 2.2: an instance's __call__ runs getattr(numpy, <the name it was made with>)(...), so
    # _fromnxfunction_single('load') reaches numpy.load, memmap ... without importing them
    **{f"numpy.ma.extras._fromnxfunction{s}": "calls getattr(numpy, name) for the name it holds"
       for s in ("", "_single", "_args", "_allargs", "_seq")},
    "numpy.lib._datasource_impl": "DataSource opens local files and URLs",
    "numpy.lib.format": "reads and writes .npy files",
    "numpy.random._examples": "cffi / numba examples",
    "numpy._pyinstaller": "packaging hooks",
    "numpy.compat": "file helpers (open_latin1 ...)",
    "numpy._utils": "internal helpers",
    "numpy.lib._utils_impl": "source inspection and printing helpers",
    "numpy.typing": "typing only",
    "numpy._typing": "typing only",
    "scipy._lib._util": "MapWrapper starts a multiprocessing pool",
    "scipy._lib.messagestream": "creates temporary files",
    "scipy._lib._ccallback": "LowLevelCallable wraps native function pointers",
    "scipy._lib._testutils": "test helpers",
    "scipy.io": "reads and writes files (netcdf_file, FortranFile ...)",
    "scipy.datasets": "downloads data",
    "sklearn.utils._testing": "test helpers",
    "sklearn.externals": "vendored code",
    "sklearn.datasets": "downloads and reads files",
    "sklearn.utils._show_versions": "prints the environment",
    "sklearn.utils.parallel": "joblib parallelism",
    "sklearn.utils._joblib": "joblib re-exports",
    "sklearn.utils.fixes": "compatibility shims",
    "sklearn.__check_build": "build checks",
    "sklearn.experimental": "import-time switches",
    "sklearn.utils._estimator_html_repr": "HTML output",
    "sklearn.utils._repr_html": "HTML output",
    "sklearn.utils._mocking": "test helpers",
    "sklearn.utils.estimator_checks": "test helpers",
    "sklearn._build_utils": "build helpers",
    "sklearn.utils._openmp_helpers": "build helpers",
    "sklearn.utils.discovery": "imports modules by name",
    "sklearn._min_dependencies": "packaging",
    "sklearn.conftest": "test helpers",
    "pandas.io": "readers and writers of files",
    "pandas.plotting": "imports a plotting backend by name",
    "pandas._config": "option registry",
    "pandas.compat": "pickle compatibility loader",
    "pandas.core.config_init": "option registry",
    "pandas.core.interchange": "dataframe interchange protocol",
    "pandas.conftest": "test helpers",
    "pandas.core.computation": "eval / query engines",
    "pandas._version": "packaging",
    "pandas.core.arrays.arrow": "needs pyarrow",
    "pandas.util": "test and versioning helpers",
    "pandas._libs.parsers": "CSV parser over a file", "pandas._libs.sas": "SAS file parser",
    "sklearn.callback._transport": "sockets between processes (multiprocessing.connection)",
    "torch.nn.attention": "attention backend registries (load kernels)",
    "xgboost.core.DMatrix": "reads a data file or URI given as argument",
    "xgboost.core.QuantileDMatrix": "reads data from an iterator / files",
    "xgboost.core.ExtMemQuantileDMatrix": "external-memory cache files",
    "xgboost.core.DataIter": "writes cache files",
    "xgboost.core._ProxyDMatrix": "data plumbing",
    "lightgbm.basic.Dataset": "reads a data file given by path",
    "lightgbm.basic._TempFile": "temporary files",
    "lightgbm.basic._InnerPredictor": "reads a model file given by path",
    "catboost.core.Pool": "reads a data file given by path",
    "catboost.core._StreamLikeWrapper": "wraps a callable",
    "catboost.core._CustomLoggersStack": "redirects output streams",
    "catboost.core._TrainCallbacksWrapper": "wraps callables",
    "catboost.core.BatchMetricCalcer": "writes files",
    "torch.nn.parallel.distributed": "DistributedDataParallel (process groups)",
    "torch.autograd.profiler": "profilers write traces",
    "torch.autograd.profiler_legacy": "profilers",
    "torch.autograd.profiler_util": "profilers",
    "torch.ao.quantization.fx": "generates code (torch.fx)",
    "torch.ao.quantization.quantize_fx": "torch.fx",
    "torch.ao.quantization.pt2e": "torch.export",
    "torch.ao.quantization.quantizer": "torch.export",
    "torch.ao.quantization._pt2e": "torch.export",
    "torch.ao.nn.quantized.reference": "torch.fx based",
    "torch.nn.attention.flex_attention": "compiles",
    "torch.nn.utils._named_member_accessor": "swaps module attributes",
    "torch.utils.hooks.BackwardHook": "hook plumbing",
    "torch.autograd.graph": "saved-tensor hooks (run callables on every tensor)",
    "torch.autograd.forward_ad": "dual-level context managers",
    "torch.autograd.anomaly_mode": "global switches",
    "torch.autograd.grad_mode": "global switches (set_grad_enabled ...)",
    "torch.serialization": "loader (only the names listed in PURE_FUNCTIONS)",
}

#: Modules whose classes are admitted only by name: torch's top level also holds TorchScript, stream,
#: compile-wrapper and executor types; only the tensor, storage and dtype-like data classes are needed.
_TORCH_DATA = re.compile(
    r"(Tensor|Size|dtype|device|layout|memory_format|qscheme|finfo|iinfo|Generator|"
    r"[A-Za-z0-9]*Storage|[A-Za-z0-9]*Tensor|TypedStorage|UntypedStorage)\Z")
CLASS_FILTERS = {"torch": _TORCH_DATA, "torch.cuda": _TORCH_DATA, "torch.cuda.sparse": _TORCH_DATA}

#: Module-name segments that mark test code, never part of a model.
TEST_SEGMENTS = {"tests", "test", "testing", "_testing", "conftest", "benchmarks", "_test"}

#: Functions that pickles of the families call and that only build an object from their arguments:
#: no files, processes, imports, attribute lookups by name, or calls of arbitrary callables (a
#: callable they are given is itself an import of the same pickle, judged on its own).
PURE_FUNCTIONS: Dict[str, str] = {
    # numpy array and scalar reconstruction
    "numpy._core.multiarray._reconstruct": "ndarray.__reduce__",
    "numpy.core.multiarray._reconstruct": "ndarray.__reduce__ (numpy 1.x)",
    "numpy._core.multiarray.scalar": "scalar.__reduce__",
    "numpy.core.multiarray.scalar": "scalar.__reduce__ (numpy 1.x)",
    "numpy._core.numeric._frombuffer": "ndarray.__reduce_ex__(5)",
    "numpy.core.numeric._frombuffer": "ndarray.__reduce_ex__(5) (numpy 1.x)",
    "numpy.ma.core._mareconstruct": "MaskedArray.__reduce__",
    "numpy.random._pickle.__randomstate_ctor": "RandomState.__reduce__ (looks up a bit generator class)",
    "numpy.random._pickle.__generator_ctor": "Generator.__reduce__",
    "numpy.random._pickle.__bit_generator_ctor": "BitGenerator.__reduce__",
    # torch tensor reconstruction (what torch.load(weights_only=True) allows)
    **{
        f"torch._utils.{fn}": "tensor reconstruction (weights-only loader)"
        for fn in (
            "_rebuild_device_tensor_from_cpu_tensor",
            "_rebuild_device_tensor_from_numpy",
            "_rebuild_meta_tensor_no_storage",
            "_rebuild_nested_tensor",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_qtensor",
            "_rebuild_sparse_tensor",
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_wrapper_subclass",
            "_rebuild_xla_tensor",
            "_rebuild_mtia_tensor",
        )
    },
    "torch._tensor._rebuild_from_type_v2": "tensor subclass reconstruction (weights-only loader)",
    "torch.serialization._get_layout": "looks a layout up among torch's layouts (weights-only loader)",
    "torch.storage._load_from_bytes": "torch.save bytes inside a pickle (scanned as a nested file)",
    "torch.amp.grad_scaler._refresh_per_optimizer_state": "GradScaler's per-optimizer state factory",
    "torch.cuda.amp.grad_scaler._refresh_per_optimizer_state": "GradScaler state factory (old path)",
    # activations stored as attributes of whole-module checkpoints (TransformerEncoderLayer.activation)
    **{
        f"torch.nn.functional.{fn}": "tensor activation function"
        for fn in (
            "relu",
            "gelu",
            "silu",
            "tanh",
            "sigmoid",
            "softmax",
            "log_softmax",
            "leaky_relu",
            "elu",
            "mish",
            "hardswish",
            "hardtanh",
            "relu6",
            "softplus",
            "glu",
            "logsigmoid",
        )
    },
    "torch._VariableFunctionsClass.relu": "tensor activation (torch.relu)",
    "torch._VariableFunctionsClass.tanh": "tensor activation (torch.tanh)",
    "torch._VariableFunctionsClass.sigmoid": "tensor activation (torch.sigmoid)",
    "torch._C._nn.gelu": "tensor activation",
    "torch._C._nn.silu": "tensor activation",
    # pandas unpickle helpers
    "pandas.core.indexes.base._new_Index": "Index.__reduce__ (calls the pickled Index class)",
    "pandas.core.indexes.datetimes._new_DatetimeIndex": "DatetimeIndex.__reduce__",
    "pandas.core.indexes.period._new_PeriodIndex": "PeriodIndex.__reduce__",
    "pandas.core.indexes.multi._new_MultiIndex": "MultiIndex.__reduce__",
    "pandas._libs.internals._unpickle_block": "Block.__reduce__",
    "pandas.core.internals.blocks.new_block": "Block.__reduce__ (pandas 1.x/2.x)",
    "pandas._libs.tslibs.timestamps._unpickle_timestamp": "Timestamp.__reduce__",
    "pandas._libs.tslibs.timedeltas._timedelta_unpickle": "Timedelta.__reduce__",
    "pandas._libs.tslibs.nattype.__nat_unpickle": "NaT.__reduce__",
    "pandas._libs.tslibs.nattype._nat_unpickle": "NaT.__reduce__ (pandas 3)",
    "pandas.core.indexes.interval._new_IntervalIndex": "IntervalIndex.__reduce__",
    "pandas.core.indexes.timedeltas._new_TimedeltaIndex": "TimedeltaIndex.__reduce__",
    "pandas._libs.sparse.__pyx_unpickle_IntIndex": "sparse index",
    "pandas._libs.sparse.__pyx_unpickle_BlockIndex": "sparse index",
    "pandas.core.arrays.interval._new_IntervalArray": "IntervalArray.__reduce__",
    "pandas.core.internals.managers._unpickle_block_manager": "BlockManager.__reduce__",
    # scipy's BSpline keeps its array namespace's asarray (a fitted SplineTransformer holds BSplines)
    "scipy._lib.array_api_compat.numpy._aliases.asarray": "numpy.asarray through scipy's array API shim",
    # scikit-learn: BinaryTree.__reduce__ returns (newObj, (type(self),), state); newObj is cls.__new__(cls)
    "sklearn.neighbors._kd_tree.newObj": "BinaryTree.__reduce__",
    "sklearn.metrics._dist_metrics.newObj": "DistanceMetric.__reduce__",
    # default score functions of SelectKBest / SelectPercentile ...: statistics on arrays
    **{
        f"sklearn.feature_selection._univariate_selection.{fn}": "default score_func of feature selectors"
        for fn in ("f_classif", "f_regression", "chi2", "r_regression", "f_oneway")
    },
    **{
        f"sklearn.feature_selection._mutual_info.{fn}": "score_func of feature selectors"
        for fn in ("mutual_info_classif", "mutual_info_regression")
    },
    "sklearn.neighbors._ball_tree.newObj": "BinaryTree.__reduce__",
    "sklearn.neighbors._binary_tree.newObj": "BinaryTree.__reduce__",
    # standard library pieces that protocol 0-2 pickles of everything use
    "_codecs.encode": "protocol 2 bytes (str -> bytes with latin-1); the scanner follows the result",
    "copyreg._reconstructor": "protocol 0/1 object reconstruction (the scanner treats it as a call of its "
    "class argument)",
    "copyreg.__newobj__": "protocol 2 object reconstruction (cls.__new__)",
    "copyreg.__newobj_ex__": "protocol 2 object reconstruction (cls.__new__ with keywords)",
    "pytz.tzinfo.unpickler": "pytz time zones (pytz._p); looks the zone up among pytz's known names",
    "pytz._UTC": "pytz's UTC singleton",
    "zoneinfo.ZoneInfo._unpickle": "ZoneInfo.__reduce__; reads only the time-zone database",
    "re._compile": "compiled regular expressions (tokenizers); compiling a pattern runs no code",
}

#: Public modules whose ufuncs are admitted under that module's name too (``scipy.special.expit``), as
#: well as where ``pickle.whichmodule`` finds them.
UFUNC_MODULES = ("numpy", "scipy.special", "numpy._core.umath", "numpy.core.umath", "scipy.special._ufuncs")

#: Standard-library classes that checkpoints hold (resolved and checked like the rest).
STDLIB_CLASSES = (
    "collections.OrderedDict",
    "collections.Counter",
    "collections.defaultdict",
    "collections.deque",
    "builtins.set",
    "builtins.frozenset",
    "builtins.complex",
    "builtins.slice",
    "builtins.range",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.list",
    "builtins.dict",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.str",
    "builtins.object",
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "datetime.tzinfo",
    "decimal.Decimal",
    "fractions.Fraction",
    "uuid.UUID",
    "argparse.Namespace",
    "types.SimpleNamespace",
    "enum.Enum",
    "zoneinfo.ZoneInfo",
    "re.Pattern",
    # third-party classes in pandas' pickles (DateOffset state, pytz/dateutil time zones)
    "dateutil.relativedelta.relativedelta",
    "dateutil.tz.tz.tzutc",
    "dateutil.tz.tz.tzoffset",
    "dateutil.tz.tz.tzlocal",
    "pytz.tzinfo.DstTzInfo",
    "pytz.tzinfo.StaticTzInfo",
    "pytz.UTC",
)
#: The builtin types an admitted class may derive from (plain data).
DATA_BUILTINS = {
    "object",
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
}

#: Singletons of the standard library, admitted as constants.
STDLIB_CONSTANTS = ("builtins.Ellipsis", "builtins.NotImplemented")

#: Entries inside a package of the dangerous table that are admitted anyway, each for a reason
#: (the tests keep this list short and exact).
DANGEROUS_TABLE_EXCEPTIONS: Dict[str, str] = {
    "copyreg.__newobj__": PURE_FUNCTIONS["copyreg.__newobj__"],
    "copyreg.__newobj_ex__": PURE_FUNCTIONS["copyreg.__newobj_ex__"],
    "copyreg._reconstructor": PURE_FUNCTIONS["copyreg._reconstructor"],
    "joblib.numpy_pickle.NumpyArrayWrapper": "how joblib stores arrays; the scanner reads them as data",
    "torch.serialization._get_layout": PURE_FUNCTIONS["torch.serialization._get_layout"],
    "types.SimpleNamespace": "attribute bag (argparse-like configs)",
}

#: Names that no installed version defines any more but old files still use, as aliases of the
#: object they denoted (recorded when the target is admitted). joblib < 0.10's NDArrayWrapper and
#: ZNDArrayWrapper are *not* here: they load a separate file named inside the pickle
#: (np.load(..., allow_pickle=True)).
LEGACY_ALIASES: Dict[str, str] = {
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper": "joblib.numpy_pickle.NumpyArrayWrapper",
}

#: Segments like ``__globals__``: the scanner treats them as interpreter internals; never admitted.
_DUNDER = re.compile(r"__[A-Za-z0-9_]+__\Z")

#: Methods unpickling calls on a class (REDUCE/NEWOBJ/BUILD/APPEND/SETITEM): none may come from a
#: dangerous module.
HOOKS = (
    "__new__",
    "__init__",
    "__setstate__",
    "__reduce__",
    "__reduce_ex__",
    "__call__",
    "__getattr__",
    "__setattr__",
    "__setitem__",
    "append",
    "extend",
)

#: C base classes of admitted torch classes (torch.Tensor's base is torch._C.TensorBase): the
#: torch._C *module* is on the dangerous table for its functions, these bases are the tensor type.
SAFE_BASES = ("torch._C.TensorBase", "torch._C._TensorBase", "torch._C._TensorMeta", "torch._C.StorageBase")


# ---------------------------------------------------------------------------------------------
# Judging one object.


def identity(obj: Any) -> Optional[str]:
    """``module.qualname`` of a class, function or ufunc (what pickle would write for it)."""
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(module, str) or not isinstance(qual, str):
        return None
    return f"{module}.{qual}"


def _test_module(module: str) -> bool:
    return any(seg in TEST_SEGMENTS or seg.startswith("test_") for seg in module.split("."))


def _excluded(path: str) -> str:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        reason = EXCLUDED.get(".".join(parts[:i]))
        if reason:
            return reason
    return ""


def in_scope(module: str) -> bool:
    """True when a class defined in ``module`` may be admitted."""
    if _test_module(module) or _excluded(module) or dangerous_reason(*_split(module + ".x")):
        return False
    for prefixes in FAMILIES.values():
        for p in prefixes:
            if p.endswith("="):
                if module == p[:-1]:
                    return True
            elif module == p or module.startswith(p + "."):
                return True
    return False


def _split(path: str) -> Tuple[str, str]:
    module, _, name = path.rpartition(".")
    return module, name


def danger_of(path: str) -> str:
    """The dangerous-table entry a resolved identity falls under, '' if none (exceptions count as safe).

    Identities are matched against the table's package prefixes only: a qualname like
    ``typing.Any.__new__`` is an identity, not an attribute path a pickle walks.
    """
    if path in DANGEROUS_TABLE_EXCEPTIONS:
        return ""
    hit = _prefix_match(path, DANGEROUS_PREFIXES)
    return f"{hit} is on the dangerous table" if hit else ""


def class_danger(cls: type) -> str:
    """Why a class is dangerous: itself, a base, or an unpickling hook from a dangerous module."""
    for base in cls.__mro__:
        ident = identity(base)
        if ident and ident not in SAFE_BASES and danger_of(ident):
            return f"subclasses {ident}" if base is not cls else danger_of(ident)
    if issubclass(cls, type) and identity(cls) not in SAFE_BASES:
        return "a metaclass (subclasses builtins.type)"
    # Methods written in the body of a class of the MRO belong to that class (judged above); a hook
    # taken from elsewhere (``__init__ = os.system``, a wrapper of a dangerous function) does not.
    own = tuple(f"{identity(base)}." for base in cls.__mro__ if identity(base))
    for hook in HOOKS:
        fn = inspect.getattr_static(cls, hook, None)
        fn = getattr(fn, "__func__", fn)
        if fn is None or isinstance(fn, (types.WrapperDescriptorType, types.MethodWrapperType)):
            continue
        mod = getattr(fn, "__module__", None)
        ident = identity(fn)
        if isinstance(mod, str) and ident and danger_of(ident) and not ident.startswith(own):
            return f"its {hook} is {ident}"
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None and identity(wrapped) and danger_of(identity(wrapped) or ""):
            return f"its {hook} wraps {identity(wrapped)}"
    return ""


#: Top-level packages of the families.
FAMILY_TOPS = {"numpy", "scipy", "sklearn", "xgboost", "lightgbm", "catboost", "pandas", "torch", "joblib"}


def defining_modules(cls: type) -> Set[str]:
    """The modules whose code makes up ``cls``: its ``__module__`` and its own methods' modules."""
    mods = {cls.__module__}
    for value in vars(cls).values():
        fn = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
        # only functions written in the class body (DataFrame.hist is pandas.plotting.hist_frame)
        # (decorated ones carry their wrapper's module: skipped)
        if isinstance(fn, types.FunctionType) and isinstance(fn.__module__, str) and \
                fn.__qualname__.startswith(cls.__qualname__ + ".") and not hasattr(fn, "__wrapped__") and \
                not fn.__module__.startswith("namedtuple_"):  # collections.namedtuple's generated __new__
            mods.add(fn.__module__)
    return mods


def _is_ufunc(obj: Any) -> bool:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, np.ufunc)


Verdict = Tuple[str, str, str]  # (kind, target, note); kind in class/ufunc/function/constant/dangerous/""


def judge(obj: Any, admitted_classes: Set[str]) -> Verdict:
    """How the table treats ``obj``: admitted kind, dangerous, or '' (left out)."""
    if isinstance(obj, types.ModuleType):
        reason = danger_of(obj.__name__ + ".x")
        return ("dangerous", obj.__name__, reason) if reason else ("", obj.__name__, "a module")
    if isinstance(obj, type):
        ident = identity(obj)
        if ident is None:
            return ("", repr(obj), "no identity")
        reason = class_danger(obj)
        if reason:
            return ("dangerous", ident, reason)
        module = obj.__module__
        for real in sorted(defining_modules(obj) - {module}):
            # pandas relabels classes (HDFStore.__module__ == "pandas"): judge where the code lives
            if danger_of(real + ".x"):
                return ("dangerous", ident, f"defined in {real}")
            # stdlib helpers (namedtuple's _replace, dataclass methods) are not a relabelled home
            if real.split(".")[0] in FAMILY_TOPS and not in_scope(real) and ident not in STDLIB_CLASSES:
                return ("", ident, f"defined in {real}, outside the families' scope")
        name_filter = CLASS_FILTERS.get(module)
        if name_filter is not None and not name_filter.match(obj.__qualname__):
            return ("", ident, f"not one of the data classes of {module}")
        other = [
            b.__name__ for b in obj.__mro__ if b.__module__ == "builtins" and b.__name__ not in DATA_BUILTINS
        ]
        if other and ident not in DANGEROUS_TABLE_EXCEPTIONS:
            # exceptions, warnings, property ...: no model needs them, and the table stays plain data
            return ("", ident, f"subclasses builtins.{other[0]}")
        if (
            ident in STDLIB_CLASSES
            or ident in DANGEROUS_TABLE_EXCEPTIONS
            or (in_scope(module) and not _excluded(ident))
        ):
            return ("class", ident, "")
        return ("", ident, "class outside the families' scope")
    if _is_ufunc(obj):
        name = getattr(obj, "__name__", "?")
        return ("ufunc", f"{pickle.whichmodule(obj, name)}.{name}", "")
    if callable(obj):
        ident = identity(obj)
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, type) and isinstance(getattr(obj, "__name__", None), str):
            ident = f"{identity(owner)}.{obj.__name__}"  # a classmethod (ZoneInfo._unpickle)
        if isinstance(obj, functools.partial):
            # A library's pre-bound partial (scipy 1.14's array-API asarray) only ever calls its
            # func: judged by that func. Not admitted either way (pickle writes partials by value).
            inner = judge(obj.func, admitted_classes)
            if inner[0] == "dangerous":
                return inner
            return ("", identity(obj.func) or repr(obj), "a functools.partial of a non-dangerous function")
        if ident is None:  # other callable instances
            tident = identity(type(obj))
            reason = danger_of(tident or "") if tident else ""
            return ("dangerous", tident or repr(type(obj)), reason) if reason else ("", repr(obj), "callable")
        wrapped = inspect.unwrap(obj) if hasattr(obj, "__wrapped__") else obj
        for candidate in (ident, identity(wrapped) or ident):
            reason = danger_of(candidate)
            if reason and candidate not in DANGEROUS_TABLE_EXCEPTIONS:
                return ("dangerous", candidate, reason)
        if ident in PURE_FUNCTIONS or ident in DANGEROUS_TABLE_EXCEPTIONS:
            return ("function", ident, "")
        name = ident.rsplit(".", 1)[-1]
        if name.startswith("__pyx_unpickle_") and in_scope(obj.__module__):
            return ("function", ident, "")  # Cython's generated Class.__new__ + __setstate__ helper
        return ("", ident, "function not on the pure list")
    tident = identity(type(obj))
    if tident and tident in admitted_classes and not callable(obj):
        return ("constant", tident, "")
    return ("", tident or repr(type(obj)), "not a class, ufunc or pure function")


# ---------------------------------------------------------------------------------------------
# Collecting names from the families' own pickles.

_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}


def pickle_globals(data: bytes) -> Iterator[Tuple[str, str]]:
    """The ``(module, name)`` of every GLOBAL/INST/STACK_GLOBAL in ``data`` (never loaded), with
    Python 2 names mapped as the loader maps them (``__builtin__.set`` -> ``builtins.set``)."""
    for module, name in _raw_pickle_globals(data):
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        yield module, name


def _raw_pickle_globals(data: bytes) -> Iterator[Tuple[str, str]]:
    memo: Dict[int, Any] = {}
    recent: List[Any] = []
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            mod, _, attr = str(arg).partition(" ")
            yield mod, attr
            recent.append(None)
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and isinstance(recent[-2], str) and isinstance(recent[-1], str):
                yield recent[-2], recent[-1]
            recent.append(None)
        elif name in _STRING_OPS:
            recent.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))
        elif name in ("FRAME", "PROTO"):
            continue
        else:
            recent.append(None)
        if len(recent) > 64:
            del recent[:32]


def _torch_archive_globals(data: bytes) -> Iterator[Tuple[str, str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".pkl"):
                yield from pickle_globals(zf.read(info))


def _joblib_globals(obj: Any) -> List[Tuple[str, str]]:
    """joblib writes array bytes inside its pickle stream: record globals as its pickler writes them."""
    from joblib import numpy_pickle

    seen: List[Tuple[str, str]] = []

    class Recorder(numpy_pickle.NumpyPickler):  # type: ignore[misc, name-defined]
        def save_global(self, obj: Any, name: Optional[str] = None) -> None:
            qual = name or getattr(obj, "__qualname__", None) or obj.__name__
            seen.append((pickle.whichmodule(obj, qual), qual))
            super().save_global(obj, name)

    buf = io.BytesIO()
    Recorder(buf).dump(obj)
    return seen


def _sample_objects() -> Iterator[Tuple[str, Callable[[], Any]]]:
    """(label, factory) of real objects of every family; factories that fail are skipped."""

    def np_objects() -> Any:
        import numpy as np

        rng = np.random.default_rng(0)
        dt = np.dtype([("a", "<i4"), ("b", "<f8", (2,)), ("c", "S3")])
        return [
            np.ones((2, 3), dtype=t)
            for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "c8", "c16", "?")
        ] + [
            np.array(["a", "bc"]),
            np.array([b"a"]),
            np.array([1, "x"], dtype=object),
            np.array(["2020-01-01"], dtype="datetime64[ns]"),
            np.array([1], dtype="timedelta64[s]"),
            np.zeros(2, dtype=dt),
            np.float64(1.5),
            np.int64(3),
            np.bool_(True),
            np.str_("s"),
            np.ma.masked_array([1, 2], mask=[0, 1]),
            np.matrix([[1, 2]]),
            np.rec.array([(1, 2.0)]),
            np.random.RandomState(0),
            rng,
            np.random.Generator(np.random.MT19937(1)),
            np.random.Generator(np.random.Philox(1)),
            np.random.Generator(np.random.SFC64(1)),
            np.random.SeedSequence(1),
            np.log1p,
            np.exp,
            np.sqrt,
            np.float32,
            np.dtype("f8"),
            np.longdouble(1),
            np.clongdouble(1),
            np.void(b"ab"),
            np.array([np.nan]),
            np.ma.masked_array(np.zeros((2, 2)), mask=np.eye(2)),
            np.dtype(dt),
        ]

    def pandas_objects() -> Any:
        import numpy as np
        import pandas as pd

        dates = pd.date_range("2020-01-01", periods=3, freq="D")
        df = pd.DataFrame(
            {
                "i": [1, 2, 3],
                "f": [1.0, 2.5, np.nan],
                "o": ["a", "b", None],
                "cat": pd.Categorical(["x", "y", "x"]),
                "dt": dates,
                "tz": dates.tz_localize("UTC"),
                "td": pd.to_timedelta([1, 2, 3], unit="s"),
                "s": pd.array(["a", None, "c"], dtype="string"),
                "I": pd.array([1, None, 3], dtype="Int64"),
                "b": pd.array([True, None, False], dtype="boolean"),
                "F": pd.array([1.0, None, 2.0], dtype="Float64"),
                "p": pd.period_range("2020", periods=3, freq="M"),
                "iv": pd.IntervalIndex.from_breaks([0, 1, 2, 3]),
                "bool": [True, False, True],
                "sp": pd.arrays.SparseArray([0, 0, 1]),
            }
        )
        out = [
            df,
            df.set_index("cat"),
            df.set_index("dt"),
            df.set_index("s"),
            df.set_index(["i", "o"]),
            df.set_index("p"),
            df.set_index("iv"),
            df.set_index("td"),
            df.set_index("tz"),
            pd.Series([1, 2], index=pd.RangeIndex(2)),
            pd.Series(["a"], dtype="category"),
            pd.Timestamp("2020-01-01", tz="UTC"),
            pd.Timedelta(1, "s"),
            pd.NaT,
            pd.NA,
            pd.Index([1.5]),
            pd.Index([1], dtype="int64"),
            pd.Index(["a"]),
            pd.Index([True]),
            pd.CategoricalIndex(["a"]),
            pd.Period("2020", freq="M"),
            pd.Interval(0, 1),
            pd.DateOffset(days=1),
            pd.offsets.Day(2),
            pd.offsets.MonthEnd(),
            pd.offsets.BDay(),
            pd.DataFrame(np.zeros((2, 2)), columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])),
            pd.Series([1], index=pd.Index(["x"], dtype="string")),
            df.dtypes,
            pd.CategoricalDtype(["a"]),
        ]
        try:
            out.append(pd.DataFrame({"s": pd.array(["a"], dtype="str")}))
        except Exception:  # noqa: BLE001 - older pandas without the "str" dtype alias
            pass
        return out

    def scipy_objects() -> Any:
        import numpy as np
        from scipy import sparse, spatial, stats

        m = np.eye(3)
        out: List[Any] = [
            f(m)
            for f in (
                sparse.csr_matrix,
                sparse.csc_matrix,
                sparse.coo_matrix,
                sparse.lil_matrix,
                sparse.dok_matrix,
                sparse.bsr_matrix,
                sparse.dia_matrix,
            )
        ]
        for name in (
            "csr_array",
            "csc_array",
            "coo_array",
            "lil_array",
            "dok_array",
            "bsr_array",
            "dia_array",
        ):
            if hasattr(sparse, name):
                out.append(getattr(sparse, name)(m))
        out += [stats.norm(0, 1), stats.gamma(2.0), stats.norm, spatial.cKDTree(m), spatial.KDTree(m)]
        return out

    def sklearn_objects() -> Any:
        import numpy as np
        import pandas as pd
        from sklearn import (
            calibration,
            cluster,
            compose,
            decomposition,
            discriminant_analysis,
            ensemble,
            feature_extraction,
            feature_selection,
            impute,
            kernel_approximation,
            linear_model,
            mixture,
            model_selection,
            naive_bayes,
            neighbors,
            neural_network,
            pipeline,
            preprocessing,
            svm,
            tree,
        )

        rng = np.random.RandomState(0)
        X = rng.rand(60, 4)
        y = (X[:, 0] > 0.5).astype(int)
        yr = X[:, 1] * 3.0
        frame = pd.DataFrame(
            {"num": rng.rand(60), "cat": rng.choice(["a", "b", "c"], 60), "num2": rng.rand(60)}
        )
        frame.loc[0, "num"] = np.nan
        ct = compose.ColumnTransformer(
            [
                (
                    "num",
                    pipeline.make_pipeline(impute.SimpleImputer(), preprocessing.StandardScaler()),
                    ["num", "num2"],
                ),
                ("cat", preprocessing.OneHotEncoder(handle_unknown="ignore"), ["cat"]),
                ("ord", preprocessing.OrdinalEncoder(), ["cat"]),
            ]
        )
        makers: List[Callable[[], Any]] = [
            lambda: pipeline.Pipeline([("ct", ct), ("lr", linear_model.LogisticRegression())]).fit(frame, y),
            lambda: preprocessing.FunctionTransformer(np.log1p).fit(X),
            lambda: preprocessing.FunctionTransformer(np.exp, inverse_func=np.log).fit(X),
            lambda: ensemble.HistGradientBoostingClassifier(max_iter=5).fit(X, y),
            lambda: ensemble.HistGradientBoostingRegressor(max_iter=5).fit(X, yr),
            lambda: ensemble.RandomForestClassifier(n_estimators=3).fit(X, y),
            lambda: ensemble.RandomForestRegressor(n_estimators=3).fit(X, yr),
            lambda: ensemble.ExtraTreesClassifier(n_estimators=3).fit(X, y),
            lambda: ensemble.GradientBoostingClassifier(n_estimators=3).fit(X, y),
            lambda: ensemble.GradientBoostingRegressor(n_estimators=3).fit(X, yr),
            lambda: ensemble.AdaBoostClassifier(n_estimators=3).fit(X, y),
            lambda: ensemble.IsolationForest(n_estimators=3).fit(X),
            lambda: ensemble.VotingClassifier(
                [("a", linear_model.LogisticRegression()), ("b", naive_bayes.GaussianNB())]
            ).fit(X, y),
            lambda: ensemble.StackingClassifier([("a", tree.DecisionTreeClassifier())]).fit(X, y),
            lambda: tree.DecisionTreeClassifier().fit(X, y),
            lambda: tree.DecisionTreeRegressor().fit(X, yr),
            lambda: linear_model.LinearRegression().fit(X, yr),
            lambda: linear_model.Ridge().fit(X, yr),
            lambda: linear_model.Lasso().fit(X, yr),
            lambda: linear_model.ElasticNet().fit(X, yr),
            lambda: linear_model.SGDClassifier().fit(X, y),
            lambda: linear_model.SGDRegressor().fit(X, yr),
            lambda: svm.SVC(probability=True).fit(X, y),
            lambda: svm.LinearSVC().fit(X, y),
            lambda: svm.SVR().fit(X, yr),
            lambda: neighbors.KNeighborsClassifier(algorithm="kd_tree").fit(X, y),
            lambda: neighbors.KNeighborsClassifier(algorithm="ball_tree").fit(X, y),
            lambda: neighbors.NearestNeighbors().fit(X),
            lambda: neighbors.KDTree(X),
            lambda: neighbors.BallTree(X),
            lambda: cluster.KMeans(n_clusters=2, n_init=1).fit(X),
            lambda: cluster.MiniBatchKMeans(n_clusters=2, n_init=1).fit(X),
            lambda: cluster.DBSCAN().fit(X),
            lambda: mixture.GaussianMixture(2).fit(X),
            lambda: decomposition.PCA(2).fit(X),
            lambda: decomposition.TruncatedSVD(2).fit(X),
            lambda: decomposition.NMF(2).fit(X),
            lambda: preprocessing.StandardScaler().fit(X),
            lambda: preprocessing.MinMaxScaler().fit(X),
            lambda: preprocessing.RobustScaler().fit(X),
            lambda: preprocessing.QuantileTransformer(n_quantiles=10).fit(X),
            lambda: preprocessing.PowerTransformer().fit(X),
            lambda: preprocessing.PolynomialFeatures().fit(X),
            lambda: preprocessing.KBinsDiscretizer(n_bins=3).fit(X),
            lambda: preprocessing.SplineTransformer().fit(X),
            lambda: preprocessing.LabelEncoder().fit(["a", "b"]),
            lambda: preprocessing.LabelBinarizer().fit(y),
            lambda: preprocessing.MultiLabelBinarizer().fit([["a"], ["b"]]),
            lambda: naive_bayes.GaussianNB().fit(X, y),
            lambda: naive_bayes.MultinomialNB().fit(X, y),
            lambda: discriminant_analysis.LinearDiscriminantAnalysis().fit(X, y),
            lambda: neural_network.MLPClassifier(max_iter=5).fit(X, y),
            lambda: neural_network.MLPRegressor(max_iter=5).fit(X, yr),
            lambda: feature_extraction.text.TfidfVectorizer().fit(["alpha beta gamma", "beta gamma delta"]),
            lambda: feature_extraction.text.CountVectorizer().fit(["alpha beta gamma"]),
            lambda: feature_extraction.text.HashingVectorizer(),
            lambda: feature_extraction.DictVectorizer().fit([{"a": 1}]),
            lambda: feature_selection.SelectKBest(k=2).fit(X, y),
            lambda: feature_selection.VarianceThreshold().fit(X),
            lambda: impute.KNNImputer().fit(X),
            lambda: kernel_approximation.RBFSampler().fit(X),
            lambda: calibration.CalibratedClassifierCV(linear_model.LogisticRegression(), cv=2).fit(X, y),
            lambda: model_selection.GridSearchCV(linear_model.Ridge(), {"alpha": [1.0, 2.0]}, cv=2).fit(
                X, yr
            ),
            lambda: model_selection.KFold(2),
            lambda: model_selection.StratifiedKFold(2),
            lambda: compose.TransformedTargetRegressor(
                regressor=linear_model.Ridge(), func=np.log1p, inverse_func=np.expm1
            ).fit(X, yr + 1),
        ]
        fitted: List[Any] = []
        for make in makers:
            try:
                fitted.append(make())
            except Exception as exc:  # noqa: BLE001 - an estimator missing in this version
                print(f"  sklearn: skipped one estimator ({type(exc).__name__}: {exc})", file=sys.stderr)
        try:
            fitted.append(preprocessing.TargetEncoder().fit(frame[["cat"]], y))
        except Exception:  # noqa: BLE001 - scikit-learn < 1.3
            pass
        try:
            from sklearn.experimental import enable_iterative_imputer  # noqa: F401

            fitted.append(impute.IterativeImputer(max_iter=2).fit(X))
        except Exception:  # noqa: BLE001
            pass
        return fitted

    def boosting_objects() -> Any:
        import numpy as np

        rng = np.random.RandomState(0)
        X = rng.rand(50, 3)
        y = (X[:, 0] > 0.5).astype(int)
        out: List[Any] = []
        try:
            import xgboost as xgb

            out += [
                xgb.XGBClassifier(n_estimators=2).fit(X, y),
                xgb.XGBRegressor(n_estimators=2).fit(X, y),
                xgb.XGBRanker(n_estimators=2).fit(X, y, qid=np.zeros(50, dtype=int)),
            ]
            out.append(out[0].get_booster())
        except ImportError:
            pass
        try:
            import lightgbm as lgb

            out += [
                lgb.LGBMClassifier(n_estimators=2, verbose=-1).fit(X, y),
                lgb.LGBMRegressor(n_estimators=2, verbose=-1).fit(X, y),
            ]
            out.append(out[-1].booster_)
        except ImportError:
            pass
        try:
            import catboost as cb

            out += [
                cb.CatBoostClassifier(iterations=2, verbose=False, allow_writing_files=False).fit(X, y),
                cb.CatBoostRegressor(iterations=2, verbose=False, allow_writing_files=False).fit(X, y),
            ]
        except ImportError:
            pass
        return out

    def torch_objects() -> Any:
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Conv2d(1, 2, 3),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.LazyLinear(4) if False else nn.Linear(8, 4),
            nn.Dropout(),
            nn.LayerNorm(4),
            nn.GELU(),
            nn.Embedding(3, 4),
            nn.LSTM(4, 4),
            nn.GRU(4, 4),
            nn.TransformerEncoderLayer(4, 2, 8),
            nn.MultiheadAttention(4, 2),
        )
        opts = [
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            torch.optim.Adam(model.parameters()),
            torch.optim.AdamW(model.parameters()),
            torch.optim.RMSprop(model.parameters()),
        ]
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        for o in opts:
            o.step()
        scheds = [
            torch.optim.lr_scheduler.StepLR(opts[0], 1),
            torch.optim.lr_scheduler.CosineAnnealingLR(opts[1], 10),
            torch.optim.lr_scheduler.OneCycleLR(opts[2], 0.1, total_steps=10),
            torch.optim.lr_scheduler.ReduceLROnPlateau(opts[3]),
        ]
        scaler = torch.amp.GradScaler("cpu") if hasattr(torch, "amp") else None
        tensors = [
            torch.zeros(2, dtype=dt)
            for dt in (
                torch.float32,
                torch.float16,
                torch.bfloat16,
                torch.float64,
                torch.int8,
                torch.int16,
                torch.int32,
                torch.int64,
                torch.uint8,
                torch.bool,
                torch.complex64,
            )
        ]
        tensors += [
            torch.zeros(2, 2).to_sparse(),
            torch.eye(2).to_sparse_csr(),
            nn.Parameter(torch.ones(2)),
            torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.quint8),
            torch.Size([2, 3]),
            torch.device("cpu"),
            torch.float32,
            torch.strided,
            torch.contiguous_format,
        ]
        ckpt = {
            "model": model.state_dict(),
            "optimizers": [o.state_dict() for o in opts],
            "schedulers": [s.state_dict() for s in scheds],
            "scaler": scaler.state_dict() if scaler else {},
            "epoch": 3,
            "tensors": tensors,
            "rng": torch.get_rng_state(),
        }
        return {
            "checkpoint": ckpt,
            "module": model,
            "optim": opts,
            "scaler": scaler,
            "scheds": scheds,
            "tensors": tensors,
            "dist": torch.distributions.Normal(0.0, 1.0),
        }

    def stdlib_objects() -> Any:
        import argparse
        import collections
        import datetime
        import decimal
        import fractions
        import uuid

        return [
            collections.OrderedDict(a=1),
            collections.Counter("ab"),
            collections.defaultdict(list),
            collections.deque([1]),
            {1, 2},
            frozenset([1]),
            1j,
            slice(1, 2),
            range(3),
            bytearray(b"x"),
            b"x",
            datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
            datetime.date(2020, 1, 1),
            datetime.timedelta(1),
            decimal.Decimal("1.5"),
            fractions.Fraction(1, 3),
            uuid.UUID(int=1),
            argparse.Namespace(lr=0.1),
            types.SimpleNamespace(a=1),
            Ellipsis,
            NotImplemented,
        ]

    yield from (
        ("numpy", np_objects),
        ("pandas", pandas_objects),
        ("scipy", scipy_objects),
        ("sklearn", sklearn_objects),
        ("boosting", boosting_objects),
        ("torch", torch_objects),
        ("stdlib", stdlib_objects),
    )


def collect_pickled_names(log: Callable[[str], None]) -> Set[str]:
    """Every global the families' own pickles import (protocols 2, 4 and 5; torch.save; joblib.dump)."""
    names: Set[str] = set()
    for label, factory in _sample_objects():
        try:
            objs = factory()
        except ImportError as exc:
            log(f"  {label}: not installed ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001 - an API of another version: say so, go on
            log(f"  {label}: FAILED to build samples ({type(exc).__name__}: {exc})")
            continue
        items = list(objs.values()) if isinstance(objs, dict) else list(objs)
        done = 0
        for obj in items:
            for proto in (2, 4, 5):
                try:
                    data = pickle.dumps(obj, protocol=proto)
                except Exception:  # noqa: BLE001 - some objects refuse to pickle (torch wrappers)
                    continue
                names.update(f"{m}.{n}" for m, n in pickle_globals(data))
                done += 1
        if label == "torch":
            import torch

            for obj in items:
                buf = io.BytesIO()
                try:
                    torch.save(obj, buf)
                except Exception:  # noqa: BLE001
                    continue
                names.update(f"{m}.{n}" for m, n in _torch_archive_globals(buf.getvalue()))
        if label in ("numpy", "sklearn", "boosting"):
            try:
                for obj in items:
                    names.update(f"{m}.{n}" for m, n in _joblib_globals(obj))
            except ImportError:
                pass
        log(f"  {label}: {len(items)} objects, {done} pickles")
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        names.update(k for k in _get_allowed_globals() if "." in k)
    except ImportError:
        pass
    return names


# ---------------------------------------------------------------------------------------------
# Walking the families' modules.


def _walk_modules(package: str, log: Callable[[str], None]) -> Iterator[types.ModuleType]:
    try:
        pkg = importlib.import_module(package)
    except Exception as exc:  # noqa: BLE001 - a family that is not installed
        log(f"  {package}: not importable ({type(exc).__name__})")
        return
    yield pkg
    # pkgutil.walk_packages imports every subpackage to look inside it; this walk imports only the
    # modules it keeps (test code and packages of the dangerous table are never imported).
    todo = [pkg]
    while todo:
        parent = todo.pop()
        for info in pkgutil.iter_modules(getattr(parent, "__path__", None) or [], parent.__name__ + "."):
            name = info.name
            if (
                _test_module(name)
                or dangerous_reason(*_split(name + ".x"))
                or ".__" in name
                or "._vendor" in name
            ):
                continue
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    mod = importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001 - optional dependencies, platform modules
                if isinstance(exc, KeyboardInterrupt):
                    raise
                continue
            yield mod
            if info.ispkg:
                todo.append(mod)


def resolve(path: str) -> Tuple[bool, Any]:
    """Import the longest module prefix of ``path`` and walk the rest as attributes."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        modname = ".".join(parts[:i])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj: Any = importlib.import_module(modname)
        except Exception:  # noqa: BLE001
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except Exception:  # noqa: BLE001
            return False, None
        return True, obj
    return False, None


def versions() -> Dict[str, str]:
    """Versions of Python and the families in this interpreter."""
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for dist, mod in (
        ("numpy", "numpy"),
        ("scipy", "scipy"),
        ("scikit-learn", "sklearn"),
        ("pandas", "pandas"),
        ("torch", "torch"),
        ("xgboost", "xgboost"),
        ("lightgbm", "lightgbm"),
        ("catboost", "catboost"),
        ("joblib", "joblib"),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[dist] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return out


def collect(env: str, log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """The part of the table this interpreter's libraries give."""
    started = time.process_time()
    allow: Dict[str, Tuple[str, str]] = {}
    dangerous: Dict[str, str] = {}
    rejected: Dict[str, str] = {}

    # 1. every module of the families, and every class defined in one in scope
    modules: List[types.ModuleType] = []
    for top in ("numpy", "scipy", "sklearn", "xgboost", "lightgbm", "catboost", "pandas", "torch"):
        before = len(modules)
        modules.extend(_walk_modules(top, log))
        log(f"  {top}: {len(modules) - before} modules")
    classes: Dict[str, type] = {}
    for mod in modules:
        for value in list(vars(mod).values()):
            if isinstance(value, type):
                ident = identity(value)
                if ident and value.__module__ == mod.__name__ and in_scope(value.__module__):
                    classes.setdefault(ident, value)
                    for inner in vars(value).values():  # nested classes (Outer.Inner)
                        if isinstance(inner, type) and identity(inner) and inner.__module__ == mod.__name__:
                            classes.setdefault(identity(inner) or "", inner)
    for name in STDLIB_CLASSES:
        ok, obj = resolve(name)
        if ok and isinstance(obj, type):
            classes[name] = obj
    admitted_classes: Set[str] = set()
    for ident, cls in sorted(classes.items()):
        ok, obj = resolve(ident)
        if not ok or obj is not cls:  # not reachable under its own name: pickle could not write it
            continue
        kind, target, note = judge(cls, admitted_classes)
        if kind == "class":
            allow[ident] = ("class", target)
            admitted_classes.add(target)
        elif kind == "dangerous":
            dangerous[ident] = f"{target} ({note})" if note and not note.startswith(target) else target

    # 2. the names the families' own pickles import, plus the explicit lists
    seeds = collect_pickled_names(log)
    seeds.update(PURE_FUNCTIONS)
    seeds.update(STDLIB_CONSTANTS)
    seeds.update(DANGEROUS_TABLE_EXCEPTIONS)
    for name in sorted(seeds):
        ok, obj = resolve(name)
        if not ok:
            if name in DANGEROUS_TABLE_EXCEPTIONS or name in PURE_FUNCTIONS:
                continue  # not in this version
            rejected[name] = "does not resolve"
            continue
        kind, target, note = judge(obj, admitted_classes)
        if name in STDLIB_CONSTANTS:
            kind, target = "constant", name
        if kind in ("class", "ufunc", "function", "constant"):
            allow[name] = (kind, target)
            if kind == "class":
                admitted_classes.add(target)
        elif kind == "dangerous":
            dangerous[name] = target
        else:
            rejected[name] = note or kind

    for name, target in LEGACY_ALIASES.items():
        if target in allow:
            allow[name] = (allow[target][0], allow[target][1])
    # Dunder segments (numpy.__array_namespace_info__) are interpreter internals to the scanner.
    for name in [
        n
        for n in allow
        if n not in DANGEROUS_TABLE_EXCEPTIONS and any(_DUNDER.match(seg) for seg in n.split("."))
    ]:
        rejected[name] = "a __dunder__ name"
        del allow[name]

    # 3. re-exports: every attribute of every family module that denotes something dangerous, or
    #    an admitted object under another name (an alias, judged as its target).
    for mod in modules:
        if not in_scope(mod.__name__) and _test_module(mod.__name__):
            continue
        for attr, value in list(vars(mod).items()):
            if attr.startswith("__") or isinstance(value, (int, float, str, bytes, bool, type(None))):
                continue
            path = f"{mod.__name__}.{attr}"
            if path in allow or path in dangerous:
                continue
            if isinstance(value, types.ModuleType):
                # ``import subprocess as sp``: a pickle can name sklearn.x + "sp.Popen" (an attribute
                # path), so the alias is recorded and the scanner judges paths through it.
                if danger_of(value.__name__ + ".x"):
                    dangerous[path] = f"{value.__name__} (a module)"
                continue
            try:
                kind, target, note = judge(value, admitted_classes)
            except Exception:  # noqa: BLE001 - objects whose attributes raise
                continue
            if kind == "dangerous":
                dangerous[path] = target
            elif kind == "ufunc" and mod.__name__ in UFUNC_MODULES:
                allow[path] = ("ufunc", target)

    # The name pickle writes for an admitted ufunc (pickle.whichmodule: scipy 1.17 pickles
    # scipy.special.expit as scipy.special._special_ufuncs.expit) is admitted too, or the library's
    # own pickle of a ufunc fails the scan.
    for kind, target in list(allow.values()):
        if kind == "ufunc" and target not in allow and target not in dangerous and \
                in_scope(target.rpartition(".")[0]):
            allow[target] = ("ufunc", target)

    log(
        f"  {len(allow)} admitted, {len(dangerous)} dangerous names, {len(rejected)} seen but left out, "
        f"{time.process_time() - started:.1f} s CPU"
    )
    return {
        "env": env,
        "versions": versions(),
        "allow": {k: list(v) for k, v in sorted(allow.items())},
        "dangerous": dict(sorted(dangerous.items())),
        "rejected": dict(sorted(rejected.items())),
    }


# ---------------------------------------------------------------------------------------------
# Merging parts into the data file.


def parts_of(table: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Split a merged table back into per-environment parts (to merge it again)."""
    parts = []
    for env, vers in table["environments"].items():
        part: Dict[str, Any] = {"env": env, "versions": vers, "allow": {}, "dangerous": {}}
        for name, entry in table["allow"].items():
            if env in entry.get("envs", table["environments"]):
                part["allow"][name] = [entry["kind"], entry.get("target", name)]
        for name, entry in table["dangerous"].items():
            if env in entry.get("envs", table["environments"]):
                part["dangerous"][name] = entry["target"]
        for name, entry in table.get("withheld", {}).items():
            if env in entry["envs"]:
                part["allow"][name] = [entry["kind"], entry["target"]]
        parts.append(part)
    return parts


def merge(parts: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """One table from several parts; a later part replaces an earlier one of the same environment."""
    by_env: Dict[str, Dict[str, Any]] = {}
    for part in parts:
        if "environments" in part:
            for p in parts_of(part):
                by_env[p["env"]] = p
        else:
            by_env[part["env"]] = part
    envs = list(by_env)  # in the order given: the last environment's target wins (newest last)
    allow: Dict[str, Dict[str, Any]] = {}
    dangerous: Dict[str, Dict[str, Any]] = {}
    conflicts: List[str] = []
    for env in envs:
        part = by_env[env]
        for name, (kind, target) in part["allow"].items():
            entry = allow.setdefault(name, {"kind": kind, "target": target, "envs": []})
            if entry["kind"] != kind:
                conflicts.append(f"{name}: {entry['kind']} {entry['target']} vs {kind} {target} ({env})")
            entry["target"] = target  # the object moved between versions (numpy.core -> numpy._core)
            entry["envs"].append(env)
        for name, target in part["dangerous"].items():
            entry = dangerous.setdefault(name, {"target": target, "envs": []})
            entry["target"] = target  # the newest environment's
            entry["envs"].append(env)
    # A name that is dangerous in any version is never admitted; the admitted reading is kept under
    # "withheld" (the scanner ignores it) so that merging the committed file again loses nothing.
    withheld: Dict[str, Dict[str, Any]] = {}
    for name in set(allow) & set(dangerous):
        withheld[name] = {**allow.pop(name), "dangerous_in": dangerous[name]["envs"]}
    for table in (allow, dangerous):
        for name, entry in table.items():
            if entry["envs"] == envs:
                del entry["envs"]  # in every environment: no tag (keeps the diff of a new version small)
            if entry.get("target") == name and "kind" in entry:
                del entry["target"]
    return {
        "format": FORMAT,
        "generated_by": "tools/gen_allowlist.py",
        "environments": {env: by_env[env]["versions"] for env in envs},
        "allow": dict(sorted(allow.items())),
        "dangerous": dict(sorted(dangerous.items())),
        "withheld": dict(sorted(withheld.items())),
        "conflicts": sorted(conflicts),
    }


def dumps(table: Dict[str, Any]) -> str:
    """JSON with one entry per line, sorted: a new library version shows as a readable diff."""
    lines = ["{"]
    lines.append(f'  "format": {json.dumps(table["format"])},')
    lines.append(f'  "generated_by": {json.dumps(table["generated_by"])},')
    lines.append('  "environments": {')
    envs = list(table["environments"].items())
    for i, (env, vers) in enumerate(envs):
        lines.append(
            f"    {json.dumps(env)}: {json.dumps(vers, sort_keys=True)}" + ("," if i < len(envs) - 1 else "")
        )
    lines.append("  },")
    for section in ("allow", "dangerous", "withheld"):
        lines.append(f'  "{section}": {{')
        items = list(table[section].items())
        for i, (name, entry) in enumerate(items):
            lines.append(
                f"    {json.dumps(name)}: {json.dumps(entry, sort_keys=True)}"
                + ("," if i < len(items) - 1 else "")
            )
        lines.append("  },")
    lines.append(f'  "conflicts": {json.dumps(table["conflicts"])}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: collect / merge / update."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="collect this interpreter's part")
    c.add_argument("--env", required=True, help="a name for this set of library versions")
    c.add_argument("--out", required=True)
    m = sub.add_parser("merge", help="merge parts (and committed tables) into one table")
    m.add_argument("parts", nargs="+")
    m.add_argument("--out", default=DATA_FILE)
    u = sub.add_parser("update", help="collect here and merge into the committed table")
    u.add_argument("--env", required=True)
    u.add_argument("--out", default=DATA_FILE)
    args = ap.parse_args(argv)

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    if args.cmd == "collect":
        part = collect(args.env, log)
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(part, fh, indent=0, sort_keys=True)
        return 0
    loaded: List[Dict[str, Any]] = []
    if args.cmd == "merge":
        for p in args.parts:
            with open(p, encoding="utf-8") as fh:
                loaded.append(json.load(fh))
    else:
        if os.path.exists(args.out):
            with open(args.out, encoding="utf-8") as fh:
                loaded.append(json.load(fh))
        loaded.append(collect(args.env, log))
    table = merge(loaded)
    text = dumps(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    log(
        f"wrote {args.out}: {len(table['allow'])} admitted, {len(table['dangerous'])} dangerous, "
        f"{len(text)} bytes, {len(table['conflicts'])} conflicts"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
