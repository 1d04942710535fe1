"""Project configuration: ``.safemodel.yaml`` or ``[tool.safemodel]`` in ``pyproject.toml``.

A security gate is only kept if a team can tune it without weakening it, so every setting here is
explicit and accountable: an allowed global names exactly what is trusted and why, an ignored file is
pinned by its sha256 (a changed file is scanned again), and a code-execution finding can never be
lowered by a severity override. Anything not understood is an error that names file, line and key
(exit code 3), never a silently ignored setting.

The schema is documented in the README (``## Configuration``) and shipped as a JSON Schema in
``schemas/config-v1.json``.
"""

from __future__ import annotations

import os
import re

from .context import Limits
from .findings import Severity
from .policy import Policy
from .record import Record
from .rules import RULES_BY_ID

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

#: File names looked for, in this order, in each directory from the working directory up.
CONFIG_FILENAMES = (".safemodel.yaml", ".safemodel.yml")
PYPROJECT = "pyproject.toml"

#: Every top-level key, with a one-line meaning (used in the "unknown key" error).
KEYS = ("fail-on", "allow-globals", "ignore", "exclude", "severity-overrides", "limits")

#: A config is a few hundred bytes: anything over this is refused before it is parsed.
MAX_CONFIG_BYTES = 1 << 20
#: YAML shape bounds, checked on the parser's flat event stream before a tree is built (the C
#: composer recurses per nesting level, and aliases multiply nodes: a "billion laughs" file).
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 64
#: Values in the tree once aliases are expanded.
MAX_YAML_NODES = 100_000

_GLOBAL_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\.(?:[A-Za-z_]\w*|\*)$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(ValueError):
    """An invalid configuration: where (file, line, key) and what is wrong."""

    def __init__(self, file: Optional[str], line: Optional[int], key: Optional[str], message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class AllowedGlobal(Record, frozen=True):
    """A global the project trusts (``module.name`` or ``module.*``) and why.

    ``origin`` is ``file:line`` of the entry, quoted in ``allowed-by-config`` findings.
    """

    # The classes here are plain records, not dataclasses: see safemodel_ci/record.py.
    __slots__ = ("name", "reason", "origin")
    name: str
    reason: str
    origin: str

    def __init__(self, name: str, reason: str, origin: str = "") -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "origin", origin)


class IgnoredFile(Record, frozen=True):
    """A file accepted as it is: its findings are suppressed while its content hashes to ``sha256``.

    ``path`` (optional, relative to the config's directory) narrows the entry to one location.
    ``origin`` is ``file:line`` of the entry, quoted in the report so a reviewer can find it.
    """

    __slots__ = ("sha256", "reason", "path", "origin")
    sha256: str
    reason: str
    path: Optional[str]
    origin: str

    def __init__(self, sha256: str, reason: str, path: Optional[str] = None, origin: str = "") -> None:
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "origin", origin)

    def matches(self, digest: str, relpath: Optional[str]) -> bool:
        if digest != self.sha256:
            return False
        return self.path is None or (relpath is not None and _norm_rel(self.path) == relpath)


class Config(Record, frozen=True):
    """A loaded configuration. ``Config()`` is the default: no file, nothing tuned."""

    __slots__ = ("path", "root", "fail_on", "allow_globals", "ignores", "excludes", "severity_overrides",
                 "limits")
    #: The file it came from (None: defaults).
    path: Optional[str]
    #: Directory that ``exclude`` patterns and ``ignore`` paths are relative to.
    root: str
    fail_on: Optional[Severity]
    allow_globals: Tuple[AllowedGlobal, ...]
    ignores: Tuple[IgnoredFile, ...]
    excludes: Tuple[str, ...]
    severity_overrides: Tuple[Tuple[str, Severity], ...]
    limits: Limits

    def __init__(self, path: Optional[str] = None, root: str = ".", fail_on: Optional[Severity] = None,
                 allow_globals: Tuple[AllowedGlobal, ...] = (), ignores: Tuple[IgnoredFile, ...] = (),
                 excludes: Tuple[str, ...] = (), severity_overrides: Tuple[Tuple[str, Severity], ...] = (),
                 limits: Optional[Limits] = None) -> None:
        set_ = object.__setattr__  # frozen: fields are set once, here
        set_(self, "path", path)
        set_(self, "root", root)
        set_(self, "fail_on", fail_on)
        set_(self, "allow_globals", allow_globals)
        set_(self, "ignores", ignores)
        set_(self, "excludes", excludes)
        set_(self, "severity_overrides", severity_overrides)
        set_(self, "limits", Limits() if limits is None else limits)

    def policy(self) -> Policy:
        """The scan policy these settings make (picklable, fingerprinted for the cache)."""
        return Policy(allow_globals=frozenset(g.name for g in self.allow_globals),
                      severity_overrides=dict(self.severity_overrides),
                      allow_reasons={g.name: f"{g.reason!r}, {g.origin}" if g.origin else repr(g.reason)
                                     for g in self.allow_globals})

    def relative(self, path: str) -> Optional[str]:
        """``path`` relative to the config's directory in ``/`` form, None when outside it."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        rel = rel.replace(os.sep, "/")
        if rel == ".." or rel.startswith("../"):
            return None
        return rel

    def is_excluded(self, path: str) -> bool:
        """True when an ``exclude`` pattern matches the path (or one of its parent directories)."""
        return self.excluding_pattern(path) is not None

    def excluding_pattern(self, path: str) -> Optional[str]:
        """The first ``exclude`` pattern matching the path (or a parent directory), or None."""
        if not self.excludes:
            return None
        rel = self.relative(path)
        for p in self.excludes:
            if _compiled_glob(p)(rel, path):
                return p
        return None

    def ignore_for(self, path: str, sha256: str) -> Optional[IgnoredFile]:
        """The ``ignore`` entry accepting this exact content at this path, if any."""
        rel = self.relative(path)
        for entry in self.ignores:
            if entry.matches(sha256, rel):
                return entry
        return None


# ---- locating ---------------------------------------------------------------------------------

def find_config(start: Optional[str] = None) -> Optional[str]:
    """The config file that applies to ``start`` (default: the working directory), or None.

    Looks in ``start`` and each parent for ``.safemodel.yaml`` (or ``.yml``) and for a
    ``pyproject.toml`` with a ``[tool.safemodel]`` table, stopping at the repository root (the
    first directory holding ``.git``). Outside a repository the walk stays in ``start``'s own tree
    below the home directory (home itself and everything above it, such as ``/tmp`` or ``/``, are
    never searched: anyone may plant a config there), and looks only in ``start`` itself when that
    is not below home; ``--config`` names any other file. Two configs in one directory is an error:
    which one wins would be a guess.
    """
    for directory in _search_dirs(os.path.abspath(start or os.getcwd())):
        found = [os.path.join(directory, n) for n in CONFIG_FILENAMES
                 if os.path.isfile(os.path.join(directory, n))]
        pyproject = os.path.join(directory, PYPROJECT)
        if os.path.isfile(pyproject) and _pyproject_has_table(pyproject):
            found.append(pyproject)
        if len(found) > 1:
            raise ConfigError(found[0], None, None,
                              "several configs in one directory (" +
                              ", ".join(os.path.basename(f) for f in found) + "): keep one")
        if found:
            return found[0]
    return None


def _search_dirs(start: str) -> List[str]:
    """The folders a config is looked for in, nearest first (see :func:`find_config`)."""
    chain = [start]
    while True:
        parent = os.path.dirname(chain[-1])
        if parent == chain[-1]:
            break
        chain.append(parent)
    for i, directory in enumerate(chain):
        if os.path.exists(os.path.join(directory, ".git")):
            return chain[:i + 1]  # up to the repository root
    home = os.path.abspath(os.path.expanduser("~"))
    below_home = [d for d in chain if d != home and d.startswith(home.rstrip(os.sep) + os.sep)]
    return below_home if start in below_home else [start]


def load_config(path: Optional[str] = None, start: Optional[str] = None) -> Config:
    """Load ``path``, or the config found from ``start`` (default: cwd); defaults when none."""
    if path is None:
        path = find_config(start)
        if path is None:
            return Config()
    if not os.path.isfile(path):
        raise ConfigError(path, None, None, "no such config file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, None, None, f"larger than {MAX_CONFIG_BYTES} bytes: not a config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.endswith(".toml"):
        node = _toml_tree(text, path)
    else:
        node = _yaml_tree(text, path)
    return parse_config(node, path)


# ---- a located tree: every value remembers its line -------------------------------------------

class Node(Record):
    """A config value with the line it is on (1-based; None when the format cannot tell)."""

    __slots__ = ("value", "line", "key_lines")
    value: Any  # Dict[str, Node] | List[Node] | str | int | float | bool | None
    line: Optional[int]
    #: For mappings: the line of each key.
    key_lines: Dict[str, Optional[int]]

    def __init__(self, value: Any, line: Optional[int],
                 key_lines: Optional[Dict[str, Optional[int]]] = None) -> None:
        self.value = value
        self.line = line
        self.key_lines = {} if key_lines is None else key_lines


def _yaml_tree(text: str, path: str) -> Node:
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_yaml_shape(yaml, text, path, loader_cls)
        root = yaml.compose(text, Loader=loader_cls)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, line, None, f"invalid YAML: {problem}") from None
    if root is None:
        return Node({}, 1)
    constructor = yaml.SafeLoader("")
    budget = [MAX_YAML_NODES]

    def convert(node: Any) -> Node:
        line = node.start_mark.line + 1
        budget[0] -= 1
        if budget[0] < 0:  # aliases expand: each use of an anchor counts again
            raise ConfigError(path, line, None, f"more than {MAX_YAML_NODES} values once aliases are "
                                                "expanded: refused (a YAML alias bomb?)")
        if isinstance(node, yaml.MappingNode):
            out: Dict[str, Node] = {}
            key_lines: Dict[str, Optional[int]] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ConfigError(path, key_line, None, "keys must be plain strings")
                key = str(constructor.construct_object(key_node))
                if key in out:
                    raise ConfigError(path, key_line, key, "duplicate key")
                out[key] = convert(value_node)
                key_lines[key] = key_line
            return Node(out, line, key_lines)
        if isinstance(node, yaml.SequenceNode):
            return Node([convert(item) for item in node.value], line)
        try:
            return Node(constructor.construct_object(node), line)
        except yaml.YAMLError as exc:
            raise ConfigError(path, line, None, f"invalid YAML value: {exc}") from None

    return convert(root)


def _check_yaml_shape(yaml: Any, text: str, path: str, loader_cls: Any) -> None:
    """Refuse nesting deeper than MAX_YAML_DEPTH and more than MAX_YAML_ALIASES aliases, from the
    parser's event stream (no tree built, no recursion)."""
    depth = aliases = 0
    for event in yaml.parse(text, Loader=loader_cls):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(path, event.start_mark.line + 1, None,
                                  f"nested deeper than {MAX_YAML_DEPTH} levels: refused")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(path, event.start_mark.line + 1, None,
                                  f"more than {MAX_YAML_ALIASES} YAML aliases: refused (a config needs "
                                  "none; an alias bomb would expand to billions of values)")


def _toml_loads() -> Callable[[str], Dict[str, Any]]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.9/3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError(None, None, None, "reading TOML on Python < 3.11 needs the tomli package "
                                                "(pip install tomli), or use .safemodel.yaml") from None
    return tomllib.loads


def _pyproject_has_table(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return False
    if "safemodel" not in text:  # most pyproject files: no need to parse them
        return False
    declared = re.search(r"^\s*\[\[?\s*tool\.safemodel\b", text, re.M) is not None
    try:
        loads = _toml_loads()
    except ConfigError as exc:
        if declared:  # a config we cannot read must not be skipped silently
            raise ConfigError(path, None, None, exc.message) from None
        return False
    try:
        data = loads(text)
    except Exception:  # noqa: BLE001 - a broken pyproject is an error only if it holds our table
        return declared
    return isinstance(data.get("tool"), dict) and "safemodel" in data["tool"]


def _toml_tree(text: str, path: str) -> Node:
    loads = _toml_loads()
    try:
        data = loads(text)
    except Exception as exc:  # noqa: BLE001 - tomllib.TOMLDecodeError / tomli's
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path, int(m.group(1)) if m else None, None, f"invalid TOML: {exc}") from None
    table: Any = data
    prefix = ""
    if isinstance(data.get("tool"), dict) and "safemodel" in data["tool"]:
        table = data["tool"]["safemodel"]
        prefix = "tool.safemodel"
    elif os.path.basename(path) == PYPROJECT:
        raise ConfigError(path, None, None, "no [tool.safemodel] table")
    if not isinstance(table, dict):
        raise ConfigError(path, None, prefix, "must be a table")
    lines = text.splitlines()
    # tomllib keeps no positions: find each top-level key's line in the text (the header of its
    # table, or its "key =" line below the [tool.safemodel] header).
    header_re = re.compile(r"^\s*\[\[?\s*" + re.escape(prefix) + r"\s*\]\]?\s*(#.*)?$") if prefix else None
    start = 0
    if header_re is not None:
        for i, line in enumerate(lines):
            if header_re.match(line):
                start = i
                break

    def key_line(key: str) -> Optional[int]:
        sub = re.compile(r"^\s*\[\[?\s*" + re.escape(f"{prefix}.{key}" if prefix else key) +
                         r"\s*[\].]")
        assign = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
        for i, line in enumerate(lines):
            if sub.match(line):
                return i + 1
        for i in range(start, len(lines)):
            if assign.match(lines[i]):
                return i + 1
        return None

    def convert(value: Any, line: Optional[int]) -> Node:
        if isinstance(value, dict):
            return Node({k: convert(v, line) for k, v in value.items()}, line, {k: line for k in value})
        if isinstance(value, list):
            return Node([convert(v, line) for v in value], line)
        return Node(value, line)

    top = {k: convert(v, key_line(k)) for k, v in table.items()}
    return Node(top, start + 1 if prefix else 1, {k: top[k].line for k in top})


# ---- validation -------------------------------------------------------------------------------

def parse_config(node: Node, path: str) -> Config:
    """Validate a located tree into a :class:`Config`; the first problem raises :class:`ConfigError`."""

    def fail(line: Optional[int], key: Optional[str], message: str) -> "ConfigError":
        return ConfigError(path, line, key, message)

    if not isinstance(node.value, dict):
        raise fail(node.line, None, f"the config must be a mapping of settings, not {_kind(node.value)}")
    top: Dict[str, Node] = node.value
    for key in top:
        if key not in KEYS:
            hint = _did_you_mean(key, KEYS)
            raise fail(node.key_lines.get(key), key, "unknown key" + (f" (did you mean {hint!r}?)" if hint
                                                                      else "") +
                       "; known keys: " + ", ".join(KEYS))
    fail_on = None
    if "fail-on" in top:
        fail_on = _severity(top["fail-on"], "fail-on", fail, allow_info=False)
    allow = _allow_globals(top.get("allow-globals"), fail, path)
    ignores = _ignores(top.get("ignore"), fail, path)
    excludes = _excludes(top.get("exclude"), fail)
    overrides = _overrides(top.get("severity-overrides"), fail)
    limits = _limits(top.get("limits"), fail)
    return Config(path=path, root=os.path.dirname(os.path.abspath(path)), fail_on=fail_on,
                  allow_globals=allow, ignores=ignores, excludes=excludes,
                  severity_overrides=overrides, limits=limits)


if TYPE_CHECKING:  # pragma: no cover
    _Fail = Callable[[Optional[int], Optional[str], str], ConfigError]


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _did_you_mean(key: str, options: Sequence[str]) -> Optional[str]:
    import difflib

    close = difflib.get_close_matches(key.replace("_", "-").lower(), list(options), n=1, cutoff=0.6)
    return close[0] if close else None


def _severity(node: Node, key: str, fail: _Fail, allow_info: bool) -> Severity:
    if not isinstance(node.value, str):
        raise fail(node.line, key, f"expected a severity name, got {_kind(node.value)}")
    try:
        sev = Severity.parse(node.value)
    except ValueError as exc:
        raise fail(node.line, key, str(exc)) from None
    if sev is Severity.INFO and not allow_info:
        raise fail(node.line, key, "must be low, medium, high or critical")
    return sev


def _list(node: Optional[Node], key: str, fail: _Fail) -> List[Node]:
    if node is None:
        return []
    if node.value is None:  # "key:" with nothing under it
        return []
    if not isinstance(node.value, list):
        raise fail(node.line, key, f"expected a list, got {_kind(node.value)}")
    return node.value


def _entry(item: Node, key: str, fields: Sequence[str], fail: _Fail) -> Dict[str, Node]:
    if not isinstance(item.value, dict):
        raise fail(item.line, key, f"expected a mapping with {', '.join(fields)}; got {_kind(item.value)}")
    for k in item.value:
        if k not in fields:
            raise fail(item.key_lines.get(k, item.line), f"{key}.{k}",
                       "unknown key; allowed: " + ", ".join(fields))
    return item.value


def _reason(entry: Dict[str, Node], item: Node, key: str, fail: _Fail) -> str:
    node = entry.get("reason")
    if node is None:
        raise fail(item.line, f"{key}.reason", "required: say why this is trusted (it is kept for review)")
    if not isinstance(node.value, str) or not node.value.strip():
        raise fail(node.line, f"{key}.reason", "must be a non-empty string")
    return node.value.strip()


def _allow_globals(node: Optional[Node], fail: _Fail, path: str = "") -> Tuple[AllowedGlobal, ...]:
    out: List[AllowedGlobal] = []
    for i, item in enumerate(_list(node, "allow-globals", fail)):
        key = f"allow-globals[{i}]"
        if isinstance(item.value, str):
            raise fail(item.line, key, f"{item.value!r} needs a reason: write "
                                       f"{{global: {item.value}, reason: why it is trusted}}")
        entry = _entry(item, key, ("global", "reason"), fail)
        g = entry.get("global")
        if g is None:
            raise fail(item.line, f"{key}.global", "required: module.name or module.*")
        if not isinstance(g.value, str) or not _GLOBAL_RE.match(g.value.strip()):
            raise fail(g.line, f"{key}.global",
                       f"{g.value!r} is not module.name or module.* (for example "
                       "collections.OrderedDict, or mypackage.layers.*)")
        name = g.value.strip()
        _refuse_dangerous_wildcard(name, g, f"{key}.global", fail)
        out.append(AllowedGlobal(name, _reason(entry, item, key, fail),
                                 f"{os.path.basename(path)}:{item.line or '?'}" if path else ""))
    return tuple(out)


def _refuse_dangerous_wildcard(name: str, node: Node, key: str, fail: _Fail) -> None:
    """``os.*`` would allow ``os.system``: a wildcard may not cover a module the policy calls dangerous.

    Dangerous globals can still be allowed one by one, by exact name, with a reason.
    """
    if not name.endswith(".*"):
        return
    module = name[:-2]
    probe = Policy()
    try:
        verdict = probe.classify_global(module, "safemodel_wildcard_probe")
    except Exception:  # noqa: BLE001 - the policy tables are optional here; refuse nothing then
        return
    rule = RULES_BY_ID.get(verdict.rule_id or "")
    if rule is not None and rule.code_execution:
        raise fail(node.line, key, f"{name} would allow every callable of {module}, which the policy "
                                   f"treats as dangerous ({verdict.reason}); allow the exact globals you "
                                   "need by name instead, each with a reason")


def _norm_rel(path: str) -> str:
    p = path.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p.rstrip("/")


def _ignores(node: Optional[Node], fail: _Fail, path: str) -> Tuple[IgnoredFile, ...]:
    out: List[IgnoredFile] = []
    for i, item in enumerate(_list(node, "ignore", fail)):
        key = f"ignore[{i}]"
        if isinstance(item.value, str):
            raise fail(item.line, key, "a path-only ignore is refused: pin the file by content with "
                                       "{sha256: <sha256sum of the file>, reason: ..., path: optional} "
                                       "so that a changed file is scanned again")
        entry = _entry(item, key, ("sha256", "reason", "path"), fail)
        digest = entry.get("sha256")
        if digest is None:
            raise fail(item.line, f"{key}.sha256",
                       "required: a path-only ignore is refused; pin the file by its sha256 (sha256sum "
                       "FILE) so that a changed file is scanned again")
        value = digest.value
        if isinstance(value, str) and value.lower().startswith("sha256:"):
            value = value[7:]
        if not isinstance(value, str) or not _SHA256_RE.match(value.lower()):
            raise fail(digest.line, f"{key}.sha256", "must be 64 hexadecimal digits (sha256sum FILE)")
        rel: Optional[str] = None
        if "path" in entry:
            p = entry["path"]
            if not isinstance(p.value, str) or not p.value.strip():
                raise fail(p.line, f"{key}.path", "must be a path relative to the config file's directory")
            rel = _norm_rel(p.value.strip())
            if rel.startswith("../") or os.path.isabs(p.value):
                raise fail(p.line, f"{key}.path", "must be relative, inside the config file's directory")
        reason = _reason(entry, item, key, fail)
        out.append(IgnoredFile(value.lower(), reason, rel, f"{os.path.basename(path)}:{item.line or '?'}"))
    return tuple(out)


def _excludes(node: Optional[Node], fail: _Fail) -> Tuple[str, ...]:
    out: List[str] = []
    for i, item in enumerate(_list(node, "exclude", fail)):
        if not isinstance(item.value, str) or not item.value.strip():
            raise fail(item.line, f"exclude[{i}]", "must be a glob pattern (for example tests/fixtures/**)")
        pattern = item.value.strip()
        try:
            _compiled_glob(pattern)
        except re.error as exc:
            raise fail(item.line, f"exclude[{i}]", f"invalid pattern: {exc}") from None
        out.append(pattern)
    return tuple(out)


def _overrides(node: Optional[Node], fail: _Fail) -> Tuple[Tuple[str, Severity], ...]:
    if node is None or node.value is None:
        return ()
    if not isinstance(node.value, dict):
        raise fail(node.line, "severity-overrides", f"expected a mapping of rule id to severity, got "
                                                   f"{_kind(node.value)}")
    out: List[Tuple[str, Severity]] = []
    for rule_id, value in node.value.items():
        key = f"severity-overrides.{rule_id}"
        line = node.key_lines.get(rule_id, value.line)
        rule = RULES_BY_ID.get(rule_id)
        if rule is None:
            hint = _did_you_mean(rule_id, list(RULES_BY_ID))
            raise fail(line, key, "unknown rule id" + (f" (did you mean {hint!r}?)" if hint else "") +
                       "; `safemodel rules` lists them")
        sev = _severity(value, key, fail, allow_info=True)
        if rule.unscanned:
            raise fail(line, key, "this rule means the file could not be fully scanned: such findings "
                                  "never block on severity, they make the verdict incomplete (exit 2), "
                                  "so an override would change nothing")
        if rule.code_execution and sev < rule.severity:
            raise fail(line, key, f"{rule.id} means loading the file runs code; its severity "
                                  f"({rule.severity.name}) cannot be lowered by config. Allow the exact "
                                  "global by name under allow-globals, with a reason, or pin the reviewed "
                                  "file by sha256 under ignore")
        out.append((rule_id, sev))
    return tuple(out)


def _limits(node: Optional[Node], fail: _Fail) -> Limits:
    if node is None or node.value is None:
        return Limits()
    if not isinstance(node.value, dict):
        raise fail(node.line, "limits", f"expected a mapping, got {_kind(node.value)}")
    defaults = Limits()
    known = {name.replace("_", "-"): name for name in Limits.field_names()}
    changes: Dict[str, Any] = {}
    for name, value in node.value.items():
        key = f"limits.{name}"
        line = node.key_lines.get(name, value.line)
        field = known.get(name)
        if field is None:
            raise fail(line, key, "unknown limit; known: " + ", ".join(sorted(known)))
        default = getattr(defaults, field)
        v = value.value
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        if isinstance(default, int) and not isinstance(v, int):
            ok = False
        if not ok:
            raise fail(value.line, key, f"must be a positive {type(default).__name__} (default {default})")
        changes[field] = type(default)(v)
    return defaults.replace(**changes)


# ---- exclude globs ----------------------------------------------------------------------------

_GLOB_CACHE: Dict[str, Callable[[Optional[str], str], bool]] = {}


def _compiled_glob(pattern: str) -> Callable[[Optional[str], str], bool]:
    """A matcher for one ``exclude`` pattern, given (path relative to the config dir, path as given).

    gitignore-like: ``*`` and ``?`` stay inside one path component, ``**`` spans components, a
    pattern with no ``/`` matches a file or directory name at any depth, a pattern with ``/`` is
    anchored at the config's directory, and matching a directory excludes everything under it.
    """
    cached = _GLOB_CACHE.get(pattern)
    if cached is not None:
        return cached
    body = _norm_rel(pattern.lstrip("/")) if pattern.startswith("/") else _norm_rel(pattern)
    anchored = "/" in body or pattern.startswith("/")
    regex = re.compile(_glob_regex(body) + r"\Z")

    def match(rel: Optional[str], given: str) -> bool:
        if anchored:
            if rel is None:
                return False
            parts = rel.split("/")
            return any(regex.match("/".join(parts[:i])) for i in range(1, len(parts) + 1))
        if rel is None:  # outside the config's tree: only the file's own name can match
            return bool(regex.match(os.path.basename(given)))
        return any(regex.match(n) for n in rel.split("/"))

    _GLOB_CACHE[pattern] = match
    return match


def _glob_regex(glob: str) -> str:
    out: List[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append(r"(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(r".*")
            i += 2
        elif c == "*":
            out.append(r"[^/]*")
            i += 1
        elif c == "?":
            out.append(r"[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2 if glob.startswith("[!", i) or glob.startswith("[]", i) else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
            else:
                inner = glob[i + 1:end]
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)

