"""The allowlist and the dangerous-globals table that judge every import a pickle makes.

Allowlist first: a pickle may import only what ordinary checkpoints need (the globals
``torch.load(weights_only=True)`` accepts, numpy's array reconstruction, scikit-learn, XGBoost and
LightGBM estimators, a few standard containers). Everything on the dangerous table is CRITICAL; every
other import is HIGH ("not on the allowlist"). The dangerous table only sets the severity: it is not
what keeps a file out, so a gadget nobody has listed yet is still blocked.

Names are judged as the full dotted path ``module.name`` after Python 2 names were mapped (the
caller does that). The dangerous table matches package prefixes segment by segment, so submodules
count (``asyncio.unix_events...`` matches ``asyncio``), and it is also matched against every tail of
an attribute path (``pathlib`` + ``os.system`` reaches ``os.system``).
"""

from __future__ import annotations

import re
from typing import AbstractSet, FrozenSet, Iterable, Tuple

from .findings import Severity
from .policy import GlobalVerdict

#: Bumped whenever a table changes: it is part of the result-cache key (``Policy.fingerprint``).
TABLES_VERSION = "1"

# ---------------------------------------------------------------------------------------------
# Known-safe globals, exact names.

_TORCH_DTYPES = (
    "bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 float16 float32 "
    "float4_e2m1fn_x2 float64 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu "
    "int1 int2 int3 int4 int5 int6 int7 int8 int16 int32 int64 qint32 qint8 quint2x4 quint4x2 quint8 "
    "uint1 uint2 uint3 uint4 uint5 uint6 uint7 uint8 uint16 uint32 uint64 "
    "half float double long int short cfloat cdouble chalf"
).split()
_TORCH_STORAGE_KINDS = (
    "BFloat16 Bool Byte Char ComplexDouble ComplexFloat Double Float Half Int Long Short "
    "QInt32 QInt8 QUInt2x4 QUInt4x2 QUInt8"
).split()
_TORCH_TENSOR_KINDS = "BFloat16 Bool Byte Char Double Float Half Int Long Short".split()
_TORCH_REBUILD = (
    "_rebuild_device_tensor_from_cpu_tensor _rebuild_device_tensor_from_numpy "
    "_rebuild_meta_tensor_no_storage _rebuild_nested_tensor _rebuild_parameter "
    "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor _rebuild_tensor "
    "_rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_wrapper_subclass"
).split()


def _torch_globals() -> Iterable[str]:
    """What ``torch._weights_only_unpickler._get_allowed_globals`` allows (torch 2.13), spelled out."""
    yield from ("torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer",
                "torch.nn.parameter.UninitializedParameter", "torch.nn.parameter.UninitializedBuffer",
                "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device",
                "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
                "torch._tensor._rebuild_from_type_v2", "torch._utils._rebuild_xla_tensor",
                "torch.per_tensor_affine", "torch.per_tensor_symmetric", "torch.per_channel_affine",
                "torch.per_channel_symmetric", "torch.per_channel_affine_float_qparams",
                "torch.strided", "torch.sparse_coo", "torch.sparse_csr", "torch.sparse_csc",
                "torch.sparse_bsr", "torch.sparse_bsc", "torch._mkldnn", "torch.contiguous_format",
                "torch.channels_last", "torch.channels_last_3d", "torch.preserve_format",
                "torch.finfo", "torch.iinfo",
                # Plain pickle.dumps(tensor) stores torch.save bytes; the VM scans them as a nested
                # file and reports any other use of this loader.
                "torch.storage._load_from_bytes", "torch.dtype", "torch.layout", "torch.memory_format",
                # Activation functions stored as attributes of whole-module checkpoints
                # (TransformerEncoderLayer.activation): pure tensor functions.
                "torch.nn.functional.relu", "torch.nn.functional.gelu", "torch.nn.functional.silu",
                "torch.nn.functional.tanh", "torch.nn.functional.sigmoid",
                "torch.nn.functional.softmax", "torch.nn.functional.log_softmax",
                "torch.nn.functional.leaky_relu", "torch.nn.functional.elu",
                "torch.relu", "torch.tanh", "torch.sigmoid")
    for dt in _TORCH_DTYPES:
        yield f"torch.{dt}"
    for kind in _TORCH_STORAGE_KINDS:
        yield f"torch.{kind}Storage"
        yield f"torch.cuda.{kind}Storage"
    for kind in _TORCH_TENSOR_KINDS:
        for prefix in ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse"):
            yield f"{prefix}.{kind}Tensor"
    for fn in _TORCH_REBUILD:
        yield f"torch._utils.{fn}"


def _numpy_globals() -> Iterable[str]:
    for core in ("numpy.core", "numpy._core"):
        yield from (f"{core}.multiarray._reconstruct", f"{core}.multiarray.scalar",
                    f"{core}.numeric._frombuffer", f"{core}._multiarray_umath._reconstruct",
                    f"{core}.multiarray._frombuffer")
    yield from ("numpy.ndarray", "numpy.dtype", "numpy.matrix", "numpy.ma.core._mareconstruct",
                "numpy.ma.core.MaskedArray",
                "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__generator_ctor",
                "numpy.random._pickle.__bit_generator_ctor",
                "numpy.random.mtrand.RandomState", "numpy.random._generator.Generator",
                "numpy.random._mt19937.MT19937", "numpy.random._pcg64.PCG64",
                "numpy.random._pcg64.PCG64DXSM", "numpy.random._philox.Philox",
                "numpy.random._sfc64.SFC64", "numpy.random.bit_generator.SeedSequence",
                "numpy.random.bit_generator.__pyx_unpickle_SeedSequence")
    for scalar in ("bool_", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "float16", "float32", "float64", "longdouble", "complex64", "complex128",
                   "clongdouble", "str_", "bytes_", "void", "datetime64", "timedelta64", "intc",
                   "uintc", "intp", "uintp", "longlong", "ulonglong", "half", "single", "double",
                   "object_"):
        yield f"numpy.{scalar}"
    for dtype_cls in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                      "Int16DType", "Int8DType", "UInt64DType", "UInt32DType", "UInt16DType",
                      "UInt8DType", "BoolDType", "Complex64DType", "Complex128DType", "StrDType",
                      "BytesDType", "VoidDType", "ObjectDType", "DateTime64DType", "TimeDelta64DType"):
        yield f"numpy.dtypes.{dtype_cls}"


_STDLIB_SAFE = (
    "collections.OrderedDict", "collections.Counter", "collections.defaultdict", "collections.deque",
    "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.slice", "builtins.range",
    "builtins.bytearray", "builtins.bytes", "builtins.list", "builtins.dict", "builtins.tuple",
    "builtins.int", "builtins.float", "builtins.bool", "builtins.str", "builtins.object",
    "builtins.NoneType", "builtins.Ellipsis", "builtins.NotImplemented",
    "_codecs.encode",  # how protocol 2 writes bytes; its result is followed by the VM
    "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta", "datetime.timezone",
    "datetime.tzinfo", "decimal.Decimal", "fractions.Fraction", "uuid.UUID",
    "argparse.Namespace", "types.SimpleNamespace",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath",
    "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    "pathlib._local.Path", "pathlib._local.PosixPath", "pathlib._local.WindowsPath",
    "pathlib._local.PurePath", "pathlib._local.PurePosixPath", "pathlib._local.PureWindowsPath",
    "re._compile",  # compiled regexes (tokenizers); compiling a pattern runs no code
    "enum.Enum",
)

_LIBRARY_SAFE = (
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    "xgboost.core.Booster", "lightgbm.basic.Booster",
    "scipy.sparse._csr.csr_matrix", "scipy.sparse._csc.csc_matrix", "scipy.sparse._coo.coo_matrix",
    "scipy.sparse.csr.csr_matrix", "scipy.sparse.csc.csc_matrix", "scipy.sparse.coo.coo_matrix",
    "scipy.sparse._arrays.csr_array", "scipy.sparse._csr.csr_array", "scipy.sparse._csc.csc_array",
    "pandas.core.frame.DataFrame", "pandas.core.series.Series",
    "pandas.core.internals.managers.BlockManager", "pandas.core.internals.managers.SingleBlockManager",
    "pandas.core.internals.blocks.new_block", "pandas.core.internals.blocks.Block",
    "pandas.core.internals.blocks.NumpyBlock", "pandas.core.internals.blocks.ObjectBlock",
    "pandas.core.indexes.base._new_Index", "pandas.core.indexes.base.Index",
    "pandas.core.indexes.range.RangeIndex", "pandas.core.indexes.multi.MultiIndex",
    "pandas.core.indexes.datetimes._new_DatetimeIndex", "pandas.core.indexes.datetimes.DatetimeIndex",
    "pandas._libs.internals._unpickle_block", "pandas.core.arrays.categorical.Categorical",
    "pandas.core.dtypes.dtypes.CategoricalDtype", "pandas._libs.tslibs.timestamps._unpickle_timestamp",
    "pandas._libs.tslibs.timedeltas._timedelta_unpickle", "pandas.core.indexes.numeric.Int64Index",
)

SAFE_GLOBALS: FrozenSet[str] = frozenset(
    [*_torch_globals(), *_numpy_globals(), *_STDLIB_SAFE, *_LIBRARY_SAFE])

# Whole families allowed by pattern: ``(module prefix, name regex, excluded module prefixes)``.
# Classes only (a capitalised single-segment name): constructing a model class runs its __init__ or
# __setstate__, which for these libraries only builds arrays; module-level *functions* are not
# allowed wholesale because a function that takes a name or a path is a gadget.
_CLASS = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
_SAFE_FAMILIES: Tuple[Tuple[str, "re.Pattern[str]", Tuple[str, ...]], ...] = (
    ("torch.nn.modules.", _CLASS, ()),
    ("sklearn.", re.compile(r"(?:[A-Z][A-Za-z0-9_]*|newObj|__pyx_unpickle_[A-Za-z0-9_]+)\Z"),
     ("sklearn.utils._testing", "sklearn.externals", "sklearn.datasets", "sklearn.utils._show_versions",
      "sklearn.utils.parallel", "sklearn.utils._joblib", "sklearn.utils.fixes", "sklearn.__check_build",
      "sklearn.experimental", "sklearn.utils._estimator_html_repr", "sklearn.utils._mocking")),
    ("xgboost.sklearn.", _CLASS, ()),
    ("lightgbm.sklearn.", re.compile(r"LGBM[A-Za-z0-9_]*\Z"), ()),
)

# ---------------------------------------------------------------------------------------------
# Known-dangerous globals: package prefixes (submodules and attributes count).

_DANGEROUS_BUILTINS = (
    "eval exec compile getattr setattr delattr __import__ open vars globals locals breakpoint input "
    "help exit quit copyright credits license execfile reload file apply type"
).split()

DANGEROUS_PREFIXES: FrozenSet[str] = frozenset([
    *(f"builtins.{n}" for n in _DANGEROUS_BUILTINS),
    *(f"__builtin__.{n}" for n in _DANGEROUS_BUILTINS),
    # processes, code, imports
    "os", "posix", "nt", "_posixsubprocess", "_winapi", "msvcrt", "winreg", "_winreg", "subprocess",
    "commands", "popen2", "pty", "tty", "signal", "resource", "runpy", "code", "codeop", "pdb", "bdb",
    "pydoc", "timeit", "cProfile", "profile", "_lsprof", "trace", "doctest", "idlelib", "lib2to3",
    "ensurepip", "venv", "pip", "setuptools", "distutils", "_distutils_hack", "pkg_resources",
    "importlib", "imp", "zipimport", "pkgutil", "marshal", "sys", "site", "ctypes", "_ctypes", "cffi",
    "_cffi_backend", "gc", "inspect", "platform", "_osx_support", "_aix_support", "_pyrepl", "test",
    "faulthandler", "readline", "getpass", "atexit", "weakref", "_weakref", "threading", "_thread",
    "sched", "multiprocessing", "_multiprocessing", "concurrent", "asyncio", "tkinter", "_tkinter",
    "turtle", "antigravity", "unittest",
    # uuid helpers that run external commands
    "uuid._get_command_stdout", "uuid._popen", "uuid._find_mac_near_keyword",
    "uuid._find_mac_under_heading", "uuid._arp_getnode", "uuid._ifconfig_getnode", "uuid._ip_getnode",
    "uuid._lanscan_getnode", "uuid._netstat_getnode", "uuid._ipconfig_getnode",
    "uuid._netbios_getnode", "uuid._unix_getnode", "uuid._windll_getnode", "uuid.getnode", "uuid.uuid1",
    # generic call / attribute gadgets
    "operator", "_operator", "functools", "_functools", "types", "copyreg", "copy_reg", "codecs",
    "_codecs.decode", "_codecs.lookup", "_codecs.register", "itertools.starmap",
    # deserializers and code builders
    "pickle", "_pickle", "cPickle", "pickletools", "dill", "cloudpickle", "joblib", "shelve", "dbm",
    "jsonpickle", "yaml", "jinja2", "mako", "numexpr", "sympy.core.sympify", "sympy.parsing",
    # files and the network
    "io", "_io", "shutil", "tempfile", "glob", "fileinput", "linecache", "tokenize", "gzip", "bz2",
    "lzma", "zipfile", "tarfile", "sqlite3", "mmap", "fcntl", "logging", "socket", "_socket",
    "socketserver", "select", "selectors", "ssl", "_ssl", "http", "httplib", "urllib", "urllib2",
    "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib", "smtpd", "poplib", "imaplib",
    "nntplib", "telnetlib", "xmlrpc", "xmlrpclib", "webbrowser", "mailcap", "cgi", "wsgiref",
    "paramiko", "pexpect", "sh", "plumbum", "fabric", "invoke", "git", "huggingface_hub",
    # library functions that load, compile, run or fetch
    "torch.load", "torch.serialization", "torch.hub", "torch.jit", "torch._jit_internal",
    "torch._inductor", "torch._dynamo", "torch.fx", "torch.utils.collect_env", "torch.utils.bottleneck",
    "torch.utils.cpp_extension", "torch.package", "torch._C", "torch.ops", "torch._ops",
    "torch.distributed", "torch.multiprocessing", "torch.compile", "torch.export", "torch._export",
    "torch.storage._load_from_bytes_unsafe", "torch.testing",
    "numpy.load", "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "numpy.memmap",
    "numpy.fromfile", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
    "numpy.loadtxt", "numpy.genfromtxt", "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.lib.format",
    "numpy.lib.utils", "numpy._pytesttester", "numpy.core.records.fromfile", "numpy._core.records.fromfile",
    "sklearn.utils._testing", "sklearn.externals", "sklearn.datasets", "sklearn.utils._show_versions",
    "pandas.read_pickle", "pandas.read_csv", "pandas.read_excel", "pandas.read_html", "pandas.read_json",
    "pandas.read_sql", "pandas.read_parquet", "pandas.read_hdf", "pandas.read_feather",
    "pandas.read_table", "pandas.read_xml", "pandas.read_clipboard", "pandas.to_pickle", "pandas.eval",
    "pandas.io", "pandas.core.computation", "pandas.testing", "pandas.util", "pandas._testing",
])

#: Callables that deserialize their (bytes) argument: a literal argument is scanned as a nested
#: pickle or model file. ``"pickle"`` ones read exactly a pickle, ``"file"`` ones sniff a format.
NESTED_LOADERS = {
    "pickle.loads": "pickle", "pickle._loads": "pickle", "_pickle.loads": "pickle",
    "pickle.load": "pickle", "pickle._load": "pickle", "_pickle.load": "pickle",
    "dill.loads": "pickle", "dill._dill.loads": "pickle", "dill.load": "pickle",
    "dill._dill.load": "pickle", "cloudpickle.loads": "pickle", "cloudpickle.load": "pickle",
    "cloudpickle.cloudpickle.loads": "pickle", "joblib.load": "file",
    "joblib.numpy_pickle.load": "file", "numpy.load": "file", "numpy.lib.npyio.load": "file",
    "numpy.lib._npyio_impl.load": "file", "torch.load": "file", "torch.serialization.load": "file",
    "torch.storage._load_from_bytes": "file", "pandas.read_pickle": "pickle",
}

_DUNDER = re.compile(r"__[A-Za-z0-9_]+__\Z")


def full_name(module: str, name: str) -> str:
    return f"{module}.{name}" if module else name


def _prefix_match(path: str, prefixes: AbstractSet[str]) -> str:
    """The entry of ``prefixes`` that ``path`` is, or is under (segment-wise); '' if none."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in prefixes:
            return candidate
    return ""


def dangerous_reason(module: str, name: str) -> str:
    """Why ``module.name`` is on the dangerous table ('' when it is not)."""
    path = full_name(module, name)
    hit = _prefix_match(path, DANGEROUS_PREFIXES)
    if hit:
        return f"{hit} can run code, start processes, touch files or the network, or import code"
    segments = name.split(".")
    for seg in segments:
        if _DUNDER.match(seg):
            return (f"the attribute path reaches {seg}, which exposes interpreter internals "
                    "(builtins, globals, classes) to the pickle")
    # An attribute path can walk from a harmless module into a dangerous one: pathlib + os.system.
    for i in range(1, len(segments)):
        tail = ".".join(segments[i:])
        hit = _prefix_match(tail, DANGEROUS_PREFIXES)
        if hit:
            return f"the attribute path {path} reaches {hit} through {'.'.join(segments[:i])}"
    if len(segments) > 1 and _prefix_match(".".join(segments), DANGEROUS_PREFIXES):
        return f"the attribute path {path} reaches a dangerous callable"  # pragma: no cover
    return ""


def _family_allowed(module: str, name: str) -> bool:
    if "." in name:
        return False  # attribute paths are allowed only by exact entry
    for prefix, pattern, excluded in _SAFE_FAMILIES:
        if (module + ".").startswith(prefix) or module == prefix.rstrip("."):
            if any(module == ex or module.startswith(ex + ".") for ex in excluded):
                return False
            return bool(pattern.match(name))
    return False


def _wildcard_allowed(module: str, extra_allow: AbstractSet[str]) -> bool:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) + ".*" in extra_allow:
            return True
    return False


def classify_global(module: str, name: str, extra_allow: AbstractSet[str] = frozenset()) -> GlobalVerdict:
    """Judge the global ``module.name`` (Python 2 names already mapped; ``name`` may be dotted).

    Order: an exact config entry or exact allowlist entry allows; the dangerous table gives CRITICAL
    (a ``module.*`` config entry cannot lower it); class families and ``module.*`` entries allow;
    anything else is HIGH.
    """
    path = full_name(module, name)
    if path in extra_allow:
        return GlobalVerdict(None, Severity.INFO, f"{path} is allowed by the configuration")
    if path in SAFE_GLOBALS:
        return GlobalVerdict(None, Severity.INFO, f"{path} is on the built-in allowlist")
    reason = dangerous_reason(module, name)
    if reason:
        return GlobalVerdict("pickle-dangerous-global", Severity.CRITICAL, reason)
    if _family_allowed(module, name):
        return GlobalVerdict(None, Severity.INFO, f"{path} is a model class of an allowlisted library")
    if _wildcard_allowed(module, extra_allow):
        return GlobalVerdict(None, Severity.INFO, f"{path} is allowed by a module.* configuration entry")
    return GlobalVerdict(
        "pickle-unknown-global", Severity.HIGH,
        f"{path} is not on the allowlist; if you trust it, add `- global: {path}` with a `reason:` "
        "to allow-globals in .safemodel.yaml")


__all__ = ["TABLES_VERSION", "SAFE_GLOBALS", "DANGEROUS_PREFIXES", "NESTED_LOADERS", "classify_global",
           "dangerous_reason", "full_name"]
