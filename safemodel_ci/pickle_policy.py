"""The allowlist and the dangerous-globals table that judge every import a pickle makes.

Allowlist first: a pickle may import only what the generated table admits (``data/allowlist.json``,
written by ``tools/gen_allowlist.py`` from the real libraries: classes defined in torch, numpy,
scipy, scikit-learn, pandas, XGBoost, LightGBM and CatBoost modules, numpy ufuncs, an explicit list
of pure functions such as numpy's array reconstruction, and a few standard-library types). Every name
is an exact path; there are no wildcard families, because a library module can re-export anything.
Re-exports of dangerous objects found in those libraries (scikit-learn 1.9 imports
``multiprocessing.connection.Listener`` into one of its modules) are in the table too, with their
real target, and are CRITICAL through any module path. Everything on the dangerous table is
CRITICAL; every other import is HIGH ("not on the allowlist"). The dangerous table only sets the
severity: it is not what keeps a file out, so a gadget nobody has listed yet is still blocked.

Names are judged as the full dotted path ``module.name`` after Python 2 names were mapped (the
caller does that). The dangerous table matches package prefixes segment by segment, so submodules
count (``asyncio.unix_events...`` matches ``asyncio``), and it is also matched against every tail of
an attribute path (``pathlib`` + ``os.system`` reaches ``os.system``).

The scanner reads only the data file, never the libraries: it works the same with none installed.
"""

from __future__ import annotations

import os
import re
import sys
from collections import namedtuple

from .findings import Severity

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import AbstractSet, Any, Dict, FrozenSet, Mapping, Optional, Set, Tuple

#: The generated table (see ``tools/gen_allowlist.py`` and the README, "The pickle allowlist").
DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "allowlist.json")

#: Bumped whenever the code's tables change; the data file's hash is added to it (``tables_version``).
_CODE_TABLES_VERSION = "2"


class GlobalVerdict(namedtuple("GlobalVerdict", ("rule_id", "severity", "reason", "allowed_by", "turned_off"),
                               defaults=(None, None))):
    """How the policy judges one imported global: ``rule_id`` (str; None means allowed), ``severity``
    (a :class:`Severity`), ``reason`` (str).

    ``allowed_by`` (str or None) is set when a config entry allowed what the built-in tables would
    report (``turned_off`` is that rule id): the scan then reports an INFO ``allowed-by-config``
    finding. Defined here, beside the tables that make it, so that ``policy`` imports this module
    and not the other way round (``policy`` re-exports it). A ``collections.namedtuple``: see
    :class:`~safemodel_ci.findings.Location`.
    """

    __slots__ = ()


class AllowTable(namedtuple("AllowTable", ("allow", "dangerous", "environments", "sha256"))):
    """The generated table: admitted names and dangerous re-exports, each mapped to its entry.

    - ``allow``: ``module.name`` -> ``(kind, target)``: kind is class, ufunc, function or constant;
      target the object's own ``module.qualname`` (equal to the name unless the name is an alias);
    - ``dangerous``: ``module.name`` -> the dangerous object it denotes
      (``multiprocessing.connection.Listener``);
    - ``environments``: environment name -> library versions the table was generated from;
    - ``sha256``: the data file's digest.
    """

    __slots__ = ()


_TABLE: Optional[AllowTable] = None


def load_table(path: str = DATA_FILE) -> AllowTable:
    """Read the generated table (once per process for the packaged file).

    A missing or damaged file raises: without it nothing could be allowed, and guessing would
    either block every model or let everything through.
    """
    global _TABLE
    if path == DATA_FILE and _TABLE is not None:
        return _TABLE
    import hashlib  # here: a pickle that imports nothing is judged without the table
    import json

    with open(path, "rb") as fh:
        raw = fh.read()
    data = json.loads(raw)
    if data.get("format") != 1:
        raise ValueError(f"{path}: unknown allowlist format {data.get('format')!r}")
    allow = {name: (e["kind"], e.get("target", name)) for name, e in data["allow"].items()}
    dangerous = {name: e["target"] for name, e in data["dangerous"].items()}
    table = AllowTable(allow, dangerous, data["environments"], hashlib.sha256(raw).hexdigest())
    if path == DATA_FILE:
        _TABLE = table
    return table


#: sha256 of the packaged data file, hashed once per process by :func:`tables_version` when the
#: table itself was not needed.
_DATA_SHA256: Optional[str] = None


def tables_version() -> str:
    """Part of the result-cache key: changes with the code's tables and with the data file."""
    global _DATA_SHA256
    if _TABLE is not None:
        return f"{_CODE_TABLES_VERSION}-{_TABLE.sha256[:16]}"
    # The key needs only the file's hash (the one load_table records): parsing the 700 KB table cost
    # ~10 ms of every cached run (the hook on an unchanged model), and a scan that judges a global
    # loads it then. Hashed once: the Hub commands key every file (0.9 ms a hash).
    if _DATA_SHA256 is None:
        import hashlib

        with open(DATA_FILE, "rb") as fh:
            _DATA_SHA256 = hashlib.sha256(fh.read()).hexdigest()
    return f"{_CODE_TABLES_VERSION}-{_DATA_SHA256[:16]}"


def __getattr__(name: str) -> Any:  # PEP 562: the data file is read only when a table is used
    if name == "TABLES_VERSION":
        return tables_version()
    if name == "SAFE_GLOBALS":
        return frozenset(load_table().allow)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    # numpy < 1.20 pickled ufuncs as _ufunc_reconstruct(module, name): __import__ + getattr
    "numpy.core._ufunc_reconstruct", "numpy._core._ufunc_reconstruct",
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

#: Admitted callables that call some of their positional arguments while the pickle loads (a
#: function's body, a class's __init__ run by REDUCE/INST/OBJ), by argument index: such an argument
#: must be an imported global (judged as any import), not an object the stream built, whose __call__
#: the allowlist never judged. Found by reading the __init__ of every admitted class for calls of a
#: parameter (tools/gen_allowlist.py admits classes, not what their constructors call).
ARGUMENT_CALLERS: Dict[str, Tuple[int, ...]] = {
    "torch._tensor._rebuild_from_type_v2": (0,),  # ret = func(*args)
    "torch.ao.quantization.fake_quantize.FakeQuantize": (0,),  # observer(**observer_kwargs)
    "torch.ao.quantization._learnable_fake_quantize._LearnableFakeQuantize": (0,),
    "numpy.lib._iotools.StringConverter": (0,),  # dtype_or_func(default)
    "scipy.optimize._differentiable_functions.ScalarFunction": (0, 3, 4),  # fun(x0), grad, hess
    "scipy.optimize._differentiable_functions.VectorFunction": (0, 2, 3),  # fun(x0), jac, hess
    "scipy.optimize._differentiable_functions._ScalarHessWrapper": (0, 2),
    "scipy.optimize._basinhopping.BasinHoppingRunner": (1,),  # minimizer(x0)
    "scipy.optimize._differentialevolution.DifferentialEvolutionSolver": (0,),
    "scipy.sparse.linalg._eigen.arpack.arpack._SymmetricArpackParams": (3, 5, 6),
    "scipy.sparse.linalg._eigen.arpack.arpack._UnsymmetricArpackParams": (3, 5, 6),
    "scipy.special._orthogonal.orthopoly1d": (4, 7),  # wfunc, eval_func
    "scipy.stats._sampling.CustomDistPINV": (0,),  # pdf
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


def _wildcard_entry(module: str, extra_allow: AbstractSet[str]) -> str:
    """The ``module.*`` config entry covering ``module`` ('' if none)."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        entry = ".".join(parts[:i]) + ".*"
        if entry in extra_allow:
            return entry
    return ""


def builtin_verdict(module: str, name: str) -> GlobalVerdict:
    """Judge ``module.name`` by the built-in tables alone (no configuration)."""
    path = full_name(module, name)
    table = load_table()
    entry = table.allow.get(path)
    if entry is not None:
        kind, target = entry
        what = kind if target == path else f"{kind} {target}"
        return GlobalVerdict(None, Severity.INFO, f"{path} is on the built-in allowlist ({what})")
    target = table.dangerous.get(path)
    if target is not None:
        # "module.qualname" or "module.qualname (why)": what the name denotes in the library
        ident, _, note = target.partition(" (")
        note = note[:-1] if note.endswith(")") else note
        what = f"{path} is {ident} under another name (a library re-exports it)" if ident != path else path
        why = (note if note != "a module" else f"{ident} is a module of the dangerous table") or \
            (dangerous_reason(*ident.rsplit(".", 1)) if "." in ident else "") or \
            "it can run code, start processes, touch files or the network"
        return GlobalVerdict("pickle-dangerous-global", Severity.CRITICAL, f"{what}; {why}")
    reason = dangerous_reason(module, name)
    if reason:
        return GlobalVerdict("pickle-dangerous-global", Severity.CRITICAL, reason)
    if "." in name:  # an attribute path through a re-exported module (sklearn.x + "sp.Popen")
        segments = name.split(".")
        for i in range(1, len(segments)):
            through = f"{module}.{'.'.join(segments[:i])}"
            target = table.dangerous.get(through)
            if target is not None:
                return GlobalVerdict("pickle-dangerous-global", Severity.CRITICAL,
                                     f"the attribute path {path} goes through {through}, which is "
                                     f"{target.partition(' (')[0]}")
    return GlobalVerdict(
        "pickle-unknown-global", Severity.HIGH,
        f"{path} is not on the allowlist; if you trust it, add `- global: {path}` with a `reason:` "
        "to allow-globals in .safemodel.yaml")


def classify_global(module: str, name: str, extra_allow: AbstractSet[str] = frozenset(),
                    reasons: Optional[Mapping[str, str]] = None) -> GlobalVerdict:
    """Judge the global ``module.name`` (Python 2 names already mapped; ``name`` may be dotted).

    The built-in tables decide first. A config entry can then turn a finding off: an exact
    ``module.name`` entry any finding (even CRITICAL: it names exactly what is trusted), a
    ``module.*`` entry only a HIGH "not on the allowlist" one. Such a verdict is allowed but carries
    ``allowed_by`` (the entry), so the scan reports an INFO ``allowed-by-config`` finding naming the
    entry, its reason and what it turned off. ``reasons`` maps entries to "reason (file:line)".
    """
    base = builtin_verdict(module, name)
    if base.rule_id is None or not extra_allow:
        return base
    path = full_name(module, name)
    entry = path if path in extra_allow else ""
    if not entry and base.rule_id != "pickle-dangerous-global":
        entry = _wildcard_entry(module, extra_allow)
    if not entry:
        return base
    why = (reasons or {}).get(entry, "")
    return GlobalVerdict(
        None, Severity.INFO,
        f"allowed by the allow-globals entry {entry}" + (f" ({why})" if why else "") +
        f"; without it: {base.rule_id} ({base.severity.name}): {base.reason}",
        allowed_by=entry, turned_off=base.rule_id)


_POLICY_NAMES: Optional[FrozenSet[str]] = None


def policy_names() -> FrozenSet[str]:
    """Every dot-separated part of every module path and name the policy could give meaning to: the
    allowlist's entries and targets, the danger tables, the nested loaders, the argument callers, and
    the builtins' names. A string whose every part is in it may be an import's module or name that
    the policy judges (``collections``, ``numpy._core.multiarray``, ``OrderedDict``).

    The pickle VM keeps such strings exactly in its memo past its memo budget, so that a later import
    naming them through GET stays known (see ``_PickleVM._keep_name``). Built once, on first use
    (a pickle past the budget): about 6,000 strings.
    """
    global _POLICY_NAMES
    if _POLICY_NAMES is None:
        import builtins

        table = load_table()
        full: Set[str] = set(table.allow) | set(table.dangerous) | set(DANGEROUS_PREFIXES)
        full.update(target for _, target in table.allow.values())
        full.update(table.dangerous.values())
        full.update(NESTED_LOADERS)
        full.update(ARGUMENT_CALLERS)
        names: Set[str] = {"builtins", "__builtin__"}
        names.update(dir(builtins))
        for path in full:
            names.update(path.split("."))
        _POLICY_NAMES = frozenset(sys.intern(n) for n in names)
    return _POLICY_NAMES


# TABLES_VERSION and SAFE_GLOBALS are module attributes made on first use (``__getattr__`` above).
__all__ = ["TABLES_VERSION", "SAFE_GLOBALS",  # noqa: F822 (made on first use)
           "DANGEROUS_PREFIXES", "NESTED_LOADERS", "AllowTable", "GlobalVerdict",
           "builtin_verdict", "classify_global", "dangerous_reason", "full_name", "load_table",
           "policy_names"]
