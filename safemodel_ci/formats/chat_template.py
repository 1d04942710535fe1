"""Jinja chat templates, judged on Jinja's own syntax tree, allowlist first.

A chat template is a Jinja program. Rendered by a plain ``jinja2.Environment`` (llama-cpp-python
before 0.2.72, CVE-2024-34359; similar bugs in vLLM and SGLang) it reaches Python through attribute
access: ``''.__class__.__mro__[1].__subclasses__()``, ``cycler.__init__.__globals__.os``, spelled
with ``|attr``, ``'{0.__class__}'.format``, ``'__cla' ~ 'ss__'`` or ``{% set %}`` blocks to dodge
pattern checks. So the template is parsed by ``jinja2`` itself (never compiled, never rendered),
with the options and extensions of transformers' renderer, and every name in the tree is judged:

- names, attributes, filters, tests and globals that chat templates use pass (the renderer's
  variables and globals, ``loop.*``, string and dict methods, Jinja's filters and tests except
  ``attr``); an attribute no Python or Jinja object has is a key of the chat data and passes too;
- ``chat-template-code`` (CRITICAL): dunder and private names, introspection attributes (``mro``,
  ``gi_frame`` ...), the ``attr`` filter, the globals ``cycler``/``joiner``/``lipsum``/``self``,
  format strings that reach attributes, calls of ``popen``/``system``/``eval``-like methods;
- ``chat-template-unknown-name`` (HIGH): any other attribute of Python objects, method call, filter,
  test or called global outside the allowlist;
- ``chat-template-suspicious`` (HIGH): a key, attribute, filter or test name built at render time
  from parts that are not all constants, and includes/imports of other templates.

Names built at render time (``~``, ``+``, ``join``, ``format``, ``replace``, slicing, ``{% set %}``
blocks, ``namespace`` attributes, loops over constant lists, macro arguments) are evaluated where
every input is a constant, and the result is judged like a name written out. The evaluation is
flow-insensitive (every assignment of a variable counts everywhere) and iterated to a fixed point;
text the template picks out of data or object reprs by constant indices and puts together counts as
built. Keys taken from the chat data itself pass: the template's author does not choose them.

Only templates a loader renders are judged (:func:`rendered_as_chat_template`,
:func:`json_template_file`); other Jinja files are not chat templates.
"""

from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass, replace

from ..context import ScanContext
from ..source import ByteSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

#: Template text kept in memory at most (larger templates are reported, not scanned).
MAX_TEMPLATE = 16 << 20
#: Findings reported per template (the rest are counted in the last message).
MAX_REPORTED = 50

# ---- the allowlist ---------------------------------------------------------------------------

#: Globals of the chat renderers (Jinja's defaults as the sandbox keeps them, plus transformers'
#: and llama-cpp-python's ``raise_exception`` and ``strftime_now``) that templates may call.
SAFE_GLOBALS = frozenset({"namespace", "range", "dict", "raise_exception", "strftime_now"})
#: Jinja globals whose ``__init__.__globals__`` lead to modules, and the template reference ``self``
#: (``self._TemplateReference__context``): no chat template needs them.
CODE_GLOBALS = frozenset({"cycler", "joiner", "lipsum", "self"})
#: Globals of other Jinja applications (Flask); chat renderers do not define them.
FOREIGN_GLOBALS = frozenset({"url_for", "get_flashed_messages", "config", "request", "session", "g"})
#: Attributes of the ``loop`` variable inside ``{% for %}``.
LOOP_ATTRIBUTES = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length",
                             "depth", "depth0", "previtem", "nextitem", "cycle", "changed"})
#: Methods templates call on strings, dicts and lists of the chat data. Mutating ones are listed:
#: the immutable sandbox refuses them, and elsewhere they change the template's own data only.
SAFE_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "index",
    "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
    "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower",
    "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
    "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase",
    "title", "upper", "zfill",
    "get", "items", "keys", "values", "copy",
    "append", "extend", "insert", "pop", "remove", "update", "setdefault", "clear", "sort", "reverse",
})
#: Attributes of Python objects that chat data also uses as field names, harmless when read.
SAFE_FIELDS = frozenset({"name", "arguments", "real", "imag", "numerator", "denominator", "start",
                         "stop", "step", "args", "format", "format_map"}) | SAFE_METHODS | LOOP_ATTRIBUTES
#: Jinja's filters, minus ``attr`` (``getattr`` by a string), and transformers' ``tojson``.
SAFE_FILTERS = frozenset({
    "abs", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int",
    "items", "join", "last", "length", "list", "lower", "map", "max", "min", "pprint", "random",
    "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "slice",
    "sort", "string", "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper",
    "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
})
#: Jinja's tests.
SAFE_TESTS = frozenset({
    "!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq",
    "equalto", "escaped", "even", "false", "filter", "float", "ge", "greaterthan", "gt", "in",
    "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd",
    "sameas", "sequence", "string", "test", "true", "undefined", "upper",
})
#: Attributes that walk from any object to frames, code, classes and module globals.
INTROSPECTION = frozenset({
    "mro", "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame",
    "ag_code", "ag_await", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace",
    "tb_frame", "tb_next", "co_code", "co_consts", "co_names", "func_globals", "func_code",
    "func_closure", "func_defaults", "im_func", "im_self", "im_class", "cell_contents",
})
#: Method names of template-injection payloads: calling one is CRITICAL.
CODE_CALLS = frozenset({
    "popen", "system", "spawnl", "spawnv", "spawnve", "check_output", "check_call", "getoutput",
    "exec", "eval", "compile", "execfile", "getattr", "setattr", "delattr", "import_module",
    "load_module", "exec_module", "from_string", "get_template", "open", "fdopen", "unlink",
    "rmdir", "chmod", "kill", "fork", "putenv",
})
#: Methods that put their arguments into the object they are called on.
_MUTATORS = frozenset({"append", "extend", "insert", "update", "setdefault"})
#: Filters whose arguments name attributes: (positional index, keyword) of the attribute argument.
_ATTRIBUTE_ARGUMENTS: Dict[str, Tuple[Optional[int], str]] = {
    "map": (None, "attribute"), "selectattr": (0, "attribute"), "rejectattr": (0, "attribute"),
    "sort": (2, "attribute"), "groupby": (0, "attribute"), "sum": (0, "attribute"),
    "unique": (1, "attribute"), "min": (1, "attribute"), "max": (1, "attribute"),
    "join": (1, "attribute"),
}


#: Attributes of Jinja's own objects (environment, template, context) that lead to its globals,
#: loader and compiler. Only CRITICAL names (``self``, ``cycler``, dunders) reach those objects;
#: other names of theirs (``filename``, ``parent``) are left to chat data.
JINJA_INTERNALS = frozenset({
    "environment", "globals", "loader", "module", "policies", "extensions", "overlay", "sandboxed",
    "root_render_func", "new_context", "make_module", "exported_vars", "eval_ctx", "get_all",
    "get_exported", "resolve", "resolve_or_missing", "call_filter", "call_test", "getattr", "getitem",
    "select_template", "get_or_select_template", "compile_expression", "compile_templates",
})


def _python_attributes() -> FrozenSet[str]:
    """Every public attribute of the Python objects a template can reach: the builtin types of chat
    data, functions, generators (``map`` and ``select`` return them), frames and code, plus
    :data:`JINJA_INTERNALS`. A name outside this set read from chat data can only be a key
    lookup; a name inside it and outside :data:`SAFE_FIELDS` is not chat data."""
    import types

    kinds: List[Any] = [
        object, type, str, bytes, int, float, complex, bool, list, tuple, dict, range, slice,
        property, classmethod, staticmethod, super,
        BaseException, map, filter, zip, enumerate, reversed, type(None), type(NotImplemented),
        type({}.keys()), type({}.values()), type({}.items()), type(iter([])), type(iter("")),
        types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.GeneratorType,
        types.CoroutineType, types.AsyncGeneratorType, types.FrameType, types.TracebackType,
        types.CodeType, types.ModuleType, types.MappingProxyType, types.SimpleNamespace,
        types.MethodWrapperType, types.WrapperDescriptorType, types.GetSetDescriptorType,
        types.MemberDescriptorType, types.ClassMethodDescriptorType, types.CellType,
    ]
    names: Set[str] = set(JINJA_INTERNALS)
    for kind in kinds:
        names.update(a for a in dir(kind) if not a.startswith("_"))
    # Instance attributes of macros (their names are also common chat-data fields: see SAFE_FIELDS).
    names.update({"name", "arguments"})
    return frozenset(names)


_PYTHON_ATTRIBUTES: Optional[FrozenSet[str]] = None


def python_attributes() -> FrozenSet[str]:
    """:func:`_python_attributes`, computed once."""
    global _PYTHON_ATTRIBUTES
    if _PYTHON_ATTRIBUTES is None:
        _PYTHON_ATTRIBUTES = _python_attributes()
    return _PYTHON_ATTRIBUTES


# ---- abstract values -------------------------------------------------------------------------

#: Constants one value may stand for before it is treated as "built at render time".
MAX_CONSTANTS = 64
#: Length of a folded string (or tuple) kept as a constant.
MAX_FOLDED = 4096
#: Size of one constant (items of nested lists, and 64 characters of text, count one each).
MAX_CONSTANT_SIZE = 8192
#: Bits of an integer a fold computes with.
MAX_INT_BITS = 1 << 16
#: Passes over the template to bind what variables may hold (real templates need two to four).
MAX_ROUNDS = 16


class _Tagged(tuple):  # type: ignore[type-arg]
    """A tuple that is not equal to a plain tuple (or another kind) with the same items."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and tuple.__eq__(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + tuple(self))


class _DictConst(_Tagged):
    """A constant dict literal, as a tuple of (key, value) pairs (hashable)."""


class _DictShape(_Tagged):
    """A dict literal with constant keys and values that are not all constants:
    ``((key, Value), ...)``. Its keys can be iterated and its values looked up by key."""


def _order(c: Any) -> Tuple[str, int]:
    """A cheap order for constants (their repr may be large); stable within the process."""
    return type(c).__name__, hash(c)


def _unique(items: Iterable[Any]) -> Tuple[Any, ...]:
    return tuple(sorted(dict.fromkeys(items), key=_order))


class _Elements(_Tagged):
    """A list whose length the analysis stopped following (it grows in a loop): the possible
    elements, each of which may be at any index."""

    def __add__(self, other: Any) -> "_Elements":
        if not isinstance(other, tuple) or isinstance(other, (_DictConst, _DictShape)):
            return NotImplemented
        return _Elements(_unique(tuple(self) + tuple(other)))

    def __radd__(self, other: Any) -> "_Elements":
        if not isinstance(other, tuple) or isinstance(other, (_DictConst, _DictShape)):
            return NotImplemented
        return _Elements(_unique(tuple(other) + tuple(self)))


def _canonical(v: "Value") -> "Value":
    """``v`` with every list constant replaced by its elements (:class:`_Elements`)."""
    constants = frozenset(
        _Elements(_unique(c)) if isinstance(c, tuple) and not isinstance(c, (_DictConst, _DictShape))
        else c for c in v.constants)
    return replace(v, constants=constants)


@dataclass(frozen=True)
class _MacroRef:
    """A macro of the template used as a value (``{% set calls = [my_macro] %}``)."""

    name: str


def _has_slots(c: Any) -> bool:
    """True for a tuple holding :class:`Value` items (a list whose items are not all constants)."""
    return isinstance(c, tuple) and any(isinstance(i, Value) or _has_slots(i) for i in c)


def _carries_text(c: Any) -> bool:
    if isinstance(c, Value):
        return c.has_text
    if isinstance(c, str):
        return True
    if isinstance(c, (_DictConst, _DictShape)):
        return True
    if isinstance(c, tuple):
        return any(_carries_text(i) for i in c)
    return False


@dataclass(frozen=True)
class Value:
    """What an expression may evaluate to at render time, as far as names are concerned.

    ``constants``: the values it may have that the template alone decides; ``data``: it may be
    (part of) the caller's chat data, which the template author does not choose; ``built``: it may
    be computed from constants and other values in a way that was not evaluated here;
    ``namespace``: it may be a ``namespace()`` object; ``picked``: it may be a part of data (or of an
    object's text form) that the template chose by a constant index (``(messages|string)[3]``):
    harmless alone, but text put together from such parts is built by the template.
    """

    constants: FrozenSet[Any] = frozenset()
    data: bool = False
    built: bool = False
    namespace: bool = False
    picked: bool = False

    def join(self, other: "Value") -> "Value":
        constants = self.constants | other.constants
        built = self.built or other.built
        if len(constants) > MAX_CONSTANTS:
            constants, built = frozenset(), True
        return Value(constants, self.data or other.data, built, self.namespace or other.namespace,
                     self.picked or other.picked)

    @property
    def has_text(self) -> bool:
        """True when template constants other than numbers and booleans flow into the value."""
        return self.built or any(_carries_text(c) for c in self.constants)

    @property
    def open(self) -> bool:
        """True when the value is not (only) the constants listed."""
        return self.data or self.built or self.namespace or not self.constants


DATA = Value(data=True)
PICKED = Value(data=True, picked=True)
BUILT = Value(built=True)
NOTHING = Value()


def _const(*values: Any) -> Value:
    """The value that is one of ``values`` (an item that is itself a :class:`Value`, an element of a
    list whose items are not all constants, stands for what it may be)."""
    kept: Set[Any] = set()
    slots = NOTHING
    try:
        for v in values:
            if isinstance(v, Value):
                slots = slots.join(v)
                continue
            # sized before hashed: hashing a list of lists costs what it holds
            if isinstance(v, tuple) and (len(v) > MAX_FOLDED or _too_big(v)):
                return BUILT
            if v not in kept:
                kept.add(v)
                if len(kept) > MAX_CONSTANTS:
                    return BUILT
    except TypeError:  # an unhashable result of a fold
        return BUILT
    return Value(frozenset(kept)).join(slots)


def _too_big(c: Any) -> bool:
    """True when a constant list nests more than :data:`MAX_CONSTANT_SIZE` items (lists of lists
    multiplied in a loop would otherwise cost memory and time exponential in the template)."""
    budget = MAX_CONSTANT_SIZE
    stack = [c]
    while stack:
        item = stack.pop()
        budget -= 1 + (len(item) >> 6 if isinstance(item, str) else 0)
        if budget < 0:
            return True
        if isinstance(item, tuple):
            stack.extend(item)
        elif isinstance(item, Value):
            stack.extend(item.constants)
        elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > MAX_INT_BITS:
            return True
    return False


def _derived(*inputs: Value) -> Value:
    """The value of an operation that was not evaluated: text built from template constants when
    any input carries some, else plain data."""
    if any(v.has_text for v in inputs):
        return BUILT
    return DATA


class _RenderFails(Exception):
    """Raised by a fold where the renderer itself fails (``|items`` of a list): no value at all."""


def _combinations(inputs: List[Value]) -> Optional[List[Tuple[Any, ...]]]:
    total = 1
    for v in inputs:
        total *= len(v.constants)
        if total > MAX_CONSTANTS:
            return None
    return list(itertools.product(*[sorted(v.constants, key=_order) for v in inputs]))


def _fold(inputs: List[Value], fn: Callable[..., Any]) -> Value:
    """``fn`` applied to every combination of the inputs' constants, joined with what the rest of
    the inputs (data, values built elsewhere) make: BUILT when constant text flows in, else DATA."""
    out = NOTHING
    if all(v.constants for v in inputs):
        combos = _combinations(inputs)
        if combos is None:
            out = BUILT
        else:
            results = []
            for combo in combos:
                try:
                    results.append(fn(*combo))
                except _RenderFails:
                    continue
                except Exception:  # noqa: BLE001 - not foldable here: some value built at render time
                    out = BUILT
            out = out.join(_const(*results))
    # The cases where some input is not one of its constants: text built at render time when the
    # open input was itself built, or another input may carry template text.
    for i, v in enumerate(inputs):
        if v.open:
            others = [w for j, w in enumerate(inputs) if j != i]
            text = v.built or any(w.has_text or w.picked for w in others) or (v.picked and bool(others))
            out = out.join(BUILT if text else PICKED if v.picked else DATA)
            if text:
                break
    return out


#: A printf conversion with a width or precision from an argument or of four digits or more.
_BIG_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{4,}|\d*\.(?:\*|\d{4,}))")
_BIG_SPEC = re.compile(r"\d{4,}")


def _printf(fmt: Any, args: Any) -> str:
    """``fmt % args`` for constants, refusing formats that ask for huge or computed widths."""
    if not isinstance(fmt, str) or _BIG_PRINTF.search(fmt) or _has_slots((args,)) or \
            len(fmt) + 1000 * fmt.count("%") > MAX_FOLDED * 64:
        raise ValueError("format not folded")
    if isinstance(args, _DictConst):
        args = dict(args)
    return fmt % args


def _str_format(fmt: Any, *args: Any, **kwargs: Any) -> str:
    if not isinstance(fmt, str) or _has_slots(args) or _has_slots(tuple(kwargs.values())) or \
            len(fmt) + 1000 * fmt.count("{") > MAX_FOLDED * 64:
        raise ValueError("format not folded")
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field and not field.isidentifier() and not field.isdigit():
            raise ValueError("field not folded")
        if spec and ("{" in spec or _BIG_SPEC.search(spec)):
            raise ValueError("spec not folded")
    return fmt.format(*args, **kwargs)


def _items(value: Any) -> Tuple[Any, ...]:
    """Elements of a constant in order (a string's characters, a dict's keys), for folding."""
    if isinstance(value, (_DictConst, _DictShape)):
        return tuple(k for k, _ in value)
    if isinstance(value, (str, tuple)) and not isinstance(value, _Elements):
        return tuple(value)
    raise TypeError("not folded")


def _elements(v: Value) -> Value:
    """What iterating over ``v`` yields."""
    out = NOTHING
    for c in v.constants:
        if isinstance(c, _Elements):
            out = out.join(_const(*c))
            continue
        try:
            out = out.join(_const(*(frozenset(c) if isinstance(c, str) else _items(c))))
        except TypeError:
            continue
    if v.data or v.namespace:
        out = out.join(DATA)
    if v.built:
        out = out.join(BUILT)
    return out


def _to_str(c: Any) -> str:
    if isinstance(c, (Value, _MacroRef, _DictShape, _Elements)) or _has_slots(c):
        raise TypeError("not folded")
    if isinstance(c, (tuple, int)) and _too_big(c):
        raise ValueError("too big")
    if isinstance(c, _DictConst):
        return str(dict(c))
    if isinstance(c, tuple):
        return str(list(c))
    return str(c)


def _escape(c: Any) -> str:
    import markupsafe

    return str(markupsafe.escape(_to_str(c)))


def _tojson(c: Any) -> str:
    import json

    def plain(x: Any) -> Any:
        if isinstance(x, _DictConst):
            return {k: plain(v) for k, v in x}
        if isinstance(x, tuple):
            return [plain(i) for i in x]
        return x

    return json.dumps(plain(c), ensure_ascii=False)


def _replace(text: str, old: Any, new: Any, count: int = -1) -> str:
    if not isinstance(old, str) or not isinstance(new, str):
        raise TypeError("not folded")
    hits = text.count(old) if old else len(text) + 1
    if count >= 0:
        hits = min(hits, count)
    if len(text) + hits * max(0, len(new) - len(old)) > MAX_FOLDED:
        raise ValueError("too long")
    return text.replace(old, new, count)


def _join(sep: Any, items: Tuple[Any, ...]) -> str:
    if not isinstance(sep, str):
        raise TypeError("not folded")
    parts = [_to_str(i) for i in items]
    if sum(map(len, parts)) + len(sep) * len(parts) > MAX_FOLDED:
        raise ValueError("too long")
    return sep.join(parts)


def _dict_items(c: Any) -> Tuple[Any, ...]:
    if isinstance(c, (_DictConst, _DictShape)):
        return tuple(tuple(pair) for pair in c)
    if isinstance(c, (str, tuple, int, float, type(None))) and not isinstance(c, _Elements):
        raise _RenderFails("no items()")
    raise TypeError("not folded")


def _trim(c: Any, chars: Any = None) -> str:
    return c.strip(chars) if isinstance(c, str) else _to_str(c).strip(chars)


#: Filters folded over constant inputs: name -> function of (value, *args).
_FOLDABLE_FILTERS: Dict[str, Callable[..., Any]] = {
    "string": _to_str,
    "lower": lambda c: _to_str(c).lower(),
    "upper": lambda c: _to_str(c).upper(),
    "title": lambda c: _to_str(c).title(),
    "capitalize": lambda c: _to_str(c).capitalize(),
    "trim": _trim,
    "replace": lambda c, old, new, count=None: _replace(_to_str(c), old, new, -1 if count is None else count),
    "reverse": lambda c: c[::-1] if isinstance(c, (str, tuple)) else tuple(reversed(_items(c))),
    "join": lambda c, d="": _join(d, _items(c)),
    "first": lambda c: _items(c)[0],
    "last": lambda c: _items(c)[-1],
    "list": lambda c: _items(c),
    "format": lambda c, *args: _printf(c, args),
    "center": lambda c, width=80: _to_str(c).center(min(int(width), MAX_FOLDED)),
    "int": int,
    "float": float,
    "length": lambda c: len(_items(c)),
    "count": lambda c: len(_items(c)),
    "escape": _escape, "e": _escape, "forceescape": _escape, "safe": lambda c: c,
    "tojson": lambda c, *a, **k: _tojson(c),
    "items": lambda c: _dict_items(c),
    "sort": lambda c, *a: tuple(sorted(_items(c))),
    "unique": lambda c, *a: tuple(dict.fromkeys(_items(c))),
    "dictsort": lambda c, *a: tuple(sorted(_dict_items(c), key=repr)),
}
#: Filters whose result is one of the input's elements.
_ELEMENT_FILTERS = frozenset({"random", "min", "max"})

#: String methods folded over constant receivers and arguments.
_FOLDABLE_METHODS = frozenset({
    "upper", "lower", "strip", "lstrip", "rstrip", "replace", "split", "rsplit", "title",
    "capitalize", "swapcase", "casefold", "removeprefix", "removesuffix", "splitlines", "partition",
    "rpartition", "startswith", "endswith", "count", "find", "rfind", "index", "rindex", "isdigit",
    "isalpha", "isalnum", "isspace", "islower", "isupper", "istitle",
})


def _fold_method(receiver: Any, method: str, *args: Any) -> Any:
    if isinstance(receiver, (_DictConst, _DictShape)):
        if method == "items":
            return _dict_items(receiver)
        if method == "keys":
            return tuple(k for k, _ in receiver)
        if method == "values":
            return tuple(v for _, v in receiver)
        raise TypeError("not folded")
    if not isinstance(receiver, str):
        raise TypeError("not folded")
    if method == "join":
        return _join(receiver, _items(args[0]))
    if method == "format":
        return _str_format(receiver, *args)
    if method == "replace":
        return _replace(receiver, *args)
    if method in ("center", "ljust", "rjust", "zfill"):
        return getattr(receiver, method)(min(int(args[0]), MAX_FOLDED), *args[1:])
    if method not in _FOLDABLE_METHODS:
        raise TypeError("not folded")
    result = getattr(receiver, method)(*args)
    return tuple(result) if isinstance(result, list) else result


# ---- findings --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TemplateIssue:
    """One reason to distrust a template."""

    rule_id: str
    what: str
    #: Line of the template (1-based) where it occurs.
    line: int
    snippet: str


def _dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _name_variants(name: str) -> List[str]:
    """The name, and the name without surrounding whitespace (a ``{% set %}`` block keeps the
    newlines a renderer without ``trim_blocks`` would leave)."""
    stripped = name.strip()
    return [name] if stripped == name else [name, stripped]


class _Judge:
    """Walks one parsed template: binds what every variable may hold, then judges every name."""

    def __init__(self, tree: Any, lines: List[str], check: Optional[Callable[[], None]] = None) -> None:
        self.tree = tree
        #: Called every few thousand statements (the scan's time budget); raises to stop.
        self.check = check
        self.steps = 0
        self.lines = lines
        self.env: Dict[str, Value] = {}
        self.namespace_attrs: Dict[str, Value] = {}
        self.macros: Set[str] = set()
        #: Parameter names of every macro (and, under "caller", of every {% call %} block).
        self.params: Dict[str, List[List[str]]] = {}
        self.issues: List[TemplateIssue] = []
        self.seen: Set[Tuple[str, str]] = set()
        self.reporting = False
        self.changed = False
        self.round = 0
        #: What any ``{% for %}`` of the template iterates over (``loop.previtem``/``nextitem``).
        self.loop_items = NOTHING
        #: Variables (and namespace attributes, as ".name") widened to "built at render time".
        self.widened: Set[str] = set()

    # -- reporting -----------------------------------------------------------------------
    def add(self, rule_id: str, what: str, node: Any) -> None:
        if not self.reporting or (rule_id, what) in self.seen:
            return
        self.seen.add((rule_id, what))
        line = getattr(node, "lineno", 0) or 0
        snippet = self.lines[line - 1].strip()[:160] if 0 < line <= len(self.lines) else ""
        self.issues.append(TemplateIssue(rule_id, what, line, snippet))

    # -- the two passes ------------------------------------------------------------------
    def run(self) -> List[TemplateIssue]:
        # Bindings first, flow-insensitively, until nothing changes. Values only grow; a variable
        # still growing after a few rounds (text accumulated in a loop) keeps the constants seen so
        # far and is marked built at render time, and then stops growing.
        for round_ in range(MAX_ROUNDS):
            self.changed = False
            self.round = round_
            self.visit(self.tree)
            if not self.changed:
                break
        else:
            # Still changing (a chain of assignments longer than the rounds): every variable may then
            # hold text built at render time, and keeps the constants found so far.
            self.env = {k: replace(v, built=True) for k, v in self.env.items()}
            self.namespace_attrs = {k: replace(v, built=True) for k, v in self.namespace_attrs.items()}
            self.widened.update(self.env)
            self.widened.update("." + k for k in self.namespace_attrs)
            self.loop_items = self.loop_items.join(BUILT)
        self.reporting = True
        self.visit(self.tree)
        return self.issues

    def _grow(self, table: Dict[str, Value], name: str, key: str, value: Value) -> None:
        old = table.get(name, NOTHING)
        if key in self.widened:
            new = replace(old.join(replace(value, constants=frozenset())), built=True)
        else:
            new = replace(old.join(replace(value, constants=frozenset())),
                          constants=old.constants | value.constants)
            if new != old and self.round >= 2:
                new = _canonical(new)  # lists that grow in loops: keep their elements only
            new = NOTHING.join(new)  # the cap on constants
            if new != old and self.round >= 8:
                self.widened.add(key)
                new = replace(new, built=True)
        if new != old:
            table[name] = new
            self.changed = True

    def bind(self, name: str, value: Value) -> None:
        self._grow(self.env, name, name, value)

    def bind_attr(self, attr: str, value: Value) -> None:
        self._grow(self.namespace_attrs, attr, "." + attr, value)

    def bind_target(self, target: Any, value: Value) -> None:
        nodes = _jinja_nodes()

        if isinstance(target, nodes.Name):
            self.bind(target.name, value)
        elif isinstance(target, nodes.NSRef):
            self.judge_attribute(target.attr, target, called=False, on_namespace=True)
            self.bind_attr(target.attr, value)
        elif isinstance(target, (nodes.Tuple, nodes.List)):
            n = len(target.items)
            for i, item in enumerate(target.items):
                part = NOTHING
                for c in value.constants:
                    if isinstance(c, tuple) and len(c) == n:
                        part = part.join(_const(c[i]))
                    else:
                        part = part.join(BUILT if isinstance(c, (str, tuple)) else DATA)
                if value.data or value.namespace:
                    part = part.join(DATA)
                if value.built:
                    part = part.join(BUILT)
                self.bind_target(item, part)
        else:
            self.add("chat-template-unknown-name", f"an assignment to {type(target).__name__}", target)

    # -- statements ----------------------------------------------------------------------
    def visit(self, node: Any) -> None:
        nodes = _jinja_nodes()
        self.steps += 1
        if self.check is not None and self.steps % 4096 == 0:
            self.check()

        if isinstance(node, (nodes.Template, nodes.Scope, nodes.Block)):
            self.visit_all(node.body)
        elif isinstance(node, nodes.Output):
            for child in node.nodes:
                if not isinstance(child, nodes.TemplateData):
                    self.ev(child)
        elif isinstance(node, nodes.If):
            self.ev(node.test)
            self.visit_all(node.body)
            self.visit_all(node.elif_)
            self.visit_all(node.else_)
        elif isinstance(node, nodes.For):
            items = _elements(self.ev(node.iter))
            if self.loop_items.join(items) != self.loop_items:
                self.loop_items = self.loop_items.join(items)
                self.changed = True
            self.bind_target(node.target, items)
            if node.test is not None:
                self.ev(node.test)
            self.visit_all(node.body)
            self.visit_all(node.else_)
        elif isinstance(node, nodes.Assign):
            self.bind_target(node.target, self.ev(node.node))
        elif isinstance(node, nodes.AssignBlock):
            value = self.block_value(node.body)
            if node.filter is not None:
                value = self.filter(node.filter, value)
            self.bind_target(node.target, value)
        elif isinstance(node, nodes.Macro):
            self.macros.add(node.name)
            self.bind_macro_args(node.name, node.args, node.defaults)
            self.visit_all(node.body)
        elif isinstance(node, nodes.CallBlock):
            self.bind_macro_args("caller", node.args, node.defaults)
            self.ev(node.call)
            self.visit_all(node.body)
        elif isinstance(node, nodes.FilterBlock):
            self.filter(node.filter, self.block_value(node.body))
        elif isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values):
                self.bind_target(target, self.ev(value))
            self.visit_all(node.body)
        elif isinstance(node, nodes.ExprStmt):
            self.ev(node.node)
        elif isinstance(node, (nodes.Break, nodes.Continue)):
            pass
        elif isinstance(node, (nodes.ScopedEvalContextModifier, nodes.EvalContextModifier)):
            for keyword in node.options:
                self.ev(keyword.value)
            self.visit_all(getattr(node, "body", []))
        elif isinstance(node, (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            self.ev(node.template)
            self.add("chat-template-suspicious",
                     f"'{type(node).__name__.lower()}' of another template", node)
        else:
            self.add("chat-template-unknown-name", f"the Jinja construct {type(node).__name__}", node)

    def visit_all(self, body: Iterable[Any]) -> None:
        for child in body:
            self.visit(child)

    def bind_macro_args(self, macro: str, args: List[Any], defaults: List[Any]) -> None:
        """Parameters hold what callers pass (bound at the calls), or their defaults."""
        names = [a.name for a in args]
        known = self.params.setdefault(macro, [])
        if names not in known:
            known.append(names)
        for arg, default in zip(args[len(args) - len(defaults):], defaults):
            self.bind(arg.name, self.ev(default))
        for name in names + ["varargs", "kwargs"]:
            self.bind(name, NOTHING)

    def bind_call_args(self, macro: str, args: List[Value], kwargs: Dict[str, Value]) -> None:
        for names in self.params.get(macro, []):
            for i, value in enumerate(args):
                self.bind(names[i] if i < len(names) else "varargs", value if i < len(names) else
                          replace(value, constants=frozenset(), built=value.has_text))
            for key, value in kwargs.items():
                self.bind(key if key in names else "kwargs", value if key in names else
                          replace(value, constants=frozenset(), built=value.has_text))

    def block_value(self, body: List[Any]) -> Value:
        """The text a ``{% set x %}...{% endset %}`` or ``{% filter %}`` body renders to."""
        nodes = _jinja_nodes()

        parts: List[Value] = []
        for stmt in body:
            if isinstance(stmt, nodes.Output):
                for child in stmt.nodes:
                    parts.append(_const(child.data) if isinstance(child, nodes.TemplateData)
                                 else self.string_of(self.ev(child)))
            else:
                self.visit(stmt)
                parts.append(BUILT)
        if not parts:
            return _const("")
        return _fold(parts, lambda *p: "".join(p))

    @staticmethod
    def string_of(v: Value) -> Value:
        """``v`` as text (``~`` and output): objects other than data turn into their repr."""
        out = _fold([v], _to_str) if v.constants else NOTHING
        if v.namespace or v.built:
            out = out.join(BUILT)
        if v.data:
            out = out.join(PICKED if v.picked else DATA)
        return out

    # -- expressions ---------------------------------------------------------------------
    def ev(self, node: Any) -> Value:  # noqa: C901 - one branch per node type, as Jinja's compiler
        nodes = _jinja_nodes()

        if isinstance(node, nodes.Const):
            return _const(node.value)
        if isinstance(node, nodes.TemplateData):
            return _const(node.data)
        if isinstance(node, nodes.Name):
            return self.name(node)
        if isinstance(node, nodes.Getattr):
            if self._is_loop(node.node):
                self.judge_attribute(node.attr, node, called=False, on_loop=True)
                if node.attr in ("previtem", "nextitem"):
                    return self.loop_items.join(DATA)
                return DATA
            obj = self.ev(node.node)
            self.judge_attribute(node.attr, node, called=False, on_namespace=obj.namespace)
            return self.member(obj, _const(node.attr))
        if isinstance(node, nodes.Getitem):
            obj = self.ev(node.node)
            if isinstance(node.arg, nodes.Slice):
                parts = [self.ev(p) if p is not None else _const(None)
                         for p in (node.arg.start, node.arg.stop, node.arg.step)]
                sliced = _fold([obj] + parts, lambda o, a, b, c: o[slice(a, b, c)])
                return sliced.join(PICKED) if obj.data or obj.namespace else sliced
            key = self.ev(node.arg)
            self.judge_key(key, node, called=False)
            return self.member(obj, key)
        if isinstance(node, nodes.Call):
            return self.call(node)
        if isinstance(node, nodes.Filter):
            return self.filter(node, None)
        if isinstance(node, nodes.Test):
            self.ev(node.node)
            self.judge_test_name(node.name, node)
            for arg in node.args:
                self.ev(arg)
            for kw in node.kwargs:
                self.ev(kw.value)
            self.ev_dyn(node)
            return DATA
        if isinstance(node, nodes.CondExpr):
            self.ev(node.test)
            out = self.ev(node.expr1)
            return out.join(self.ev(node.expr2)) if node.expr2 is not None else out
        if isinstance(node, (nodes.And, nodes.Or)):
            return self.ev(node.left).join(self.ev(node.right))
        if isinstance(node, nodes.Not):
            self.ev(node.node)
            return DATA
        if isinstance(node, nodes.Compare):
            self.ev(node.expr)
            for op in node.ops:
                self.ev(op.expr)
            return DATA
        if isinstance(node, nodes.Concat):
            parts = [self.string_of(self.ev(n)) for n in node.nodes]
            return _fold(parts, lambda *p: "".join(p))
        if isinstance(node, nodes.BinExpr):
            return self.binary(node)
        if isinstance(node, nodes.UnaryExpr):
            v = self.ev(node.node)
            return _fold([v], (lambda x: -x) if isinstance(node, nodes.Neg) else (lambda x: +x))
        if isinstance(node, (nodes.List, nodes.Tuple)):
            items = [self.ev(i) for i in node.items]
            if not items:
                return _const(())
            if not any(v.open for v in items) and _combinations(items) is not None:
                return _fold(items, lambda *p: tuple(p))
            # items that are not all constants: a list whose slots hold what each item may be
            return _const(tuple(next(iter(v.constants)) if len(v.constants) == 1 and not v.open else v
                                for v in items))
        if isinstance(node, nodes.Dict):
            pairs = [(self.ev(p.key), self.ev(p.value)) for p in node.items]
            if not pairs:
                return _const(_DictConst())
            if all(len(k.constants) == 1 and not k.open for k, _ in pairs) and \
                    any(len(v.constants) != 1 or v.open for _, v in pairs):
                # constant keys, values that are not: keep the keys and each value's own reading
                return _const(_DictShape((next(iter(k.constants)), v) for k, v in pairs))
            flat = [v for pair in pairs for v in pair]
            return _fold(flat, lambda *p: _DictConst(zip(p[0::2], p[1::2])))
        if isinstance(node, nodes.Keyword):
            return self.ev(node.value)
        self.add("chat-template-unknown-name", f"the Jinja expression {type(node).__name__}", node)
        for child in node.iter_child_nodes():
            self.ev(child)
        return BUILT

    def ev_dyn(self, node: Any) -> None:
        for extra in (getattr(node, "dyn_args", None), getattr(node, "dyn_kwargs", None)):
            if extra is not None:
                self.ev(extra)

    def _is_loop(self, node: Any) -> bool:
        nodes = _jinja_nodes()

        return isinstance(node, nodes.Name) and node.name == "loop" and "loop" not in self.env

    def name(self, node: Any) -> Value:
        name = node.name
        if name in self.env:
            bound = self.env[name]
            return bound if bound != NOTHING else DATA
        if name in self.macros:
            return _const(_MacroRef(name))
        if name in CODE_GLOBALS:
            self.add("chat-template-code", f"the Jinja global {name!r}", node)
            return BUILT
        if _dunder(name) or name.startswith("_"):
            self.add("chat-template-code" if "__" in name else "chat-template-unknown-name",
                     f"the private name {name!r}", node)
            return BUILT
        if name in FOREIGN_GLOBALS:
            self.add("chat-template-unknown-name", f"the global {name!r} of another Jinja application", node)
        if name in SAFE_GLOBALS or name in ("loop", "caller"):
            return BUILT  # a function or object: its text form ("<function safe_range ...>") is fixed
        # Any other free name is a variable the caller passes (messages, tools, bos_token,
        # enable_thinking ...) or undefined: chat data.
        return DATA

    def member(self, obj: Value, key: Value) -> Value:
        """``obj.key`` / ``obj[key]``."""
        out = NOTHING
        if obj.namespace:
            for k in key.constants:
                if isinstance(k, str):
                    out = out.join(self.namespace_attrs.get(k, NOTHING))
            if key.data or key.built:
                for v in self.namespace_attrs.values():
                    out = out.join(v)
        for o in obj.constants:
            if isinstance(o, (_DictConst, _DictShape)):
                entries = dict(o)
                for k in key.constants:
                    if k in entries:
                        value = entries[k]
                        out = out.join(value if isinstance(value, Value) else _const(value))
                if key.open:
                    for value in entries.values():
                        out = out.join(value if isinstance(value, Value) else _const(value))
            elif isinstance(o, (str, tuple)):
                if key.open:
                    out = out.join(_const(*(frozenset(o) if isinstance(o, str) else o)))  # some element
                for k in key.constants:
                    if isinstance(k, int) and isinstance(o, _Elements):
                        out = out.join(_const(*o))
                    elif isinstance(k, int):
                        try:
                            out = out.join(_const(o[k]))
                        except IndexError:
                            continue
                    elif isinstance(k, str) and hasattr(type(o) if isinstance(o, str) else tuple, k):
                        out = out.join(BUILT)  # a method of str or tuple
            else:
                out = out.join(BUILT if _carries_text(o) else DATA)
        if obj.data or obj.namespace:
            # an item picked by a constant index may be a character of a string
            chosen = obj.picked or any(isinstance(k, int) and not isinstance(k, bool) for k in key.constants)
            out = out.join(PICKED if chosen else DATA)
        if obj.built:
            out = out.join(BUILT)
        return out if out != NOTHING else DATA

    def binary(self, node: Any) -> Value:
        nodes = _jinja_nodes()

        left, right = self.ev(node.left), self.ev(node.right)
        ops: Dict[type, Callable[[Any, Any], Any]] = {
            nodes.Add: lambda a, b: a + b, nodes.Sub: lambda a, b: a - b,
            nodes.Div: lambda a, b: a / b, nodes.FloorDiv: lambda a, b: a // b,
            nodes.Mul: self._mul, nodes.Mod: lambda a, b: _printf(a, b) if isinstance(a, str) else a % b,
            nodes.Pow: self._pow,
        }
        fn = ops.get(type(node))
        if fn is None:
            self.add("chat-template-unknown-name", f"the operator {type(node).__name__}", node)
            return BUILT
        return _fold([left, right], fn)

    @staticmethod
    def _mul(a: Any, b: Any) -> Any:
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, tuple)) and isinstance(n, int):
                if len(seq) * n > MAX_FOLDED:
                    raise ValueError("too long")
        if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise ValueError("too big")
        return a * b

    @staticmethod
    def _pow(a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and (b < 0 or a.bit_length() * b > MAX_INT_BITS):
            raise ValueError("too big")
        return a ** b

    # -- calls and filters ---------------------------------------------------------------
    def call(self, node: Any) -> Value:
        nodes = _jinja_nodes()

        args = [self.ev(a) for a in node.args]
        kwargs = {kw.key: self.ev(kw.value) for kw in node.kwargs}
        self.ev_dyn(node)
        func = node.node
        inputs = args + list(kwargs.values())
        if isinstance(func, nodes.Name):
            name = func.name
            if name in self.macros or name == "caller" or (name == "loop" and "loop" not in self.env):
                self.bind_call_args(name, args, kwargs)
                return BUILT  # renders the macro's (or loop's) body: text with its constants
            if name in self.env:
                self.add("chat-template-unknown-name", f"a call of the variable {name!r}", node)
                return BUILT
            self.name(func)
            if name == "namespace":
                for key, value in kwargs.items():
                    self.bind_attr(key, value)
                return Value(namespace=True)
            if name == "dict":
                if node.args or node.dyn_args is not None or node.dyn_kwargs is not None:
                    return _derived(*inputs)
                keys = list(kwargs)
                if not keys:
                    return _const(_DictConst())
                return _fold(list(kwargs.values()), lambda *v: _DictConst(zip(keys, v)))
            if name == "strftime_now":
                # the format comes back as it is where it has no % directive
                return _fold(args[:1], lambda f: f if isinstance(f, str) and "%" not in f else
                             (_ for _ in ()).throw(ValueError("not folded"))) if args else DATA
            if name in ("range", "raise_exception"):
                return DATA
            if name not in CODE_GLOBALS and not name.startswith("_"):
                self.add("chat-template-unknown-name", f"a call of the unknown global {name!r}", node)
            return _derived(*inputs)
        if isinstance(func, nodes.Getattr):
            receiver = self.ev(func.node)
            if self._is_loop(func.node):
                if func.attr == "cycle":
                    out = NOTHING
                    for a in args:
                        out = out.join(a)
                    return out if out != NOTHING else DATA
                self.judge_attribute(func.attr, func, called=True, on_loop=True)
                return DATA
            self.judge_attribute(func.attr, func, called=True)
            if func.attr in _MUTATORS and any(v.has_text or v.picked for v in inputs):
                self.taint(func.node)
            if func.attr in ("format", "format_map"):
                self.judge_format(receiver, func)
            if func.attr == "get" and args and not node.kwargs:
                # dict.get(key, default): the entry, or the default
                found = self.member(receiver, args[0])
                return found.join(args[1]) if len(args) > 1 else found
            if receiver.constants and not node.kwargs:
                return _fold([receiver] + args, lambda r, *a: _fold_method(r, func.attr, *a))
            return _derived(receiver, *inputs)
        if isinstance(func, nodes.Getitem) and not isinstance(func.arg, nodes.Slice):
            receiver = self.ev(func.node)
            key = self.ev(func.arg)
            callee = self.member(receiver, key)
            if self.call_macros(callee, args, kwargs):
                return BUILT
            self.judge_key(key, func, called=True)
            if key.constants & {"format", "format_map"}:
                self.judge_format(receiver, func)
            return _derived(receiver, key, *inputs)
        if self.call_macros(self.ev(func), args, kwargs):
            return BUILT
        self.add("chat-template-unknown-name", "a call of a computed value", node)
        return BUILT

    def taint(self, node: Any) -> None:
        """``x.append('...')`` puts template text into ``x``: the variable (or namespace attribute)
        it belongs to may hold text built at render time from now on."""
        nodes = _jinja_nodes()

        while isinstance(node, (nodes.Getattr, nodes.Getitem)):
            if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and \
                    self.env.get(node.node.name, NOTHING).namespace:
                self.bind_attr(node.attr, BUILT)
                return
            node = node.node
        if isinstance(node, nodes.Name):
            self.bind(node.name, BUILT.join(DATA if node.name not in self.env else NOTHING))

    def call_macros(self, callee: Value, args: List[Value], kwargs: Dict[str, Value]) -> bool:
        """A call of macros picked from the template's own values (``calls[i](...)``): True, and the
        arguments are bound, when the callee can only be macros of the template."""
        if callee.open or not all(isinstance(c, _MacroRef) for c in callee.constants):
            return False
        for ref in callee.constants:
            self.bind_call_args(ref.name, args, kwargs)
        return True

    def filter(self, node: Any, body: Optional[Value]) -> Value:
        """A filter applied to ``node.node`` (or to ``body`` in ``{% filter %}`` and set blocks)."""
        value = self.ev(node.node) if node.node is not None else (body if body is not None else BUILT)
        args = [self.ev(a) for a in node.args]
        kwargs = {kw.key: self.ev(kw.value) for kw in node.kwargs}
        self.ev_dyn(node)
        name = node.name
        if name == "attr":
            self.add("chat-template-code", "the attr filter", node)
            return BUILT
        if name not in SAFE_FILTERS:
            self.add("chat-template-unknown-name", f"the filter {name!r}", node)
            return _derived(value, *args, *kwargs.values())
        self.judge_filter_arguments(node, name, args, kwargs)
        if name in _FOLDABLE_FILTERS and not kwargs:
            return _fold([value] + args, _FOLDABLE_FILTERS[name])
        if name in ("default", "d"):
            return value.join(args[0]) if args else value
        if name in _ELEMENT_FILTERS:
            return _elements(value)
        if name in ("select", "reject", "selectattr", "rejectattr", "unique", "sort", "list", "batch",
                    "slice", "first", "last", "items", "dictsort", "groupby") and not value.has_text:
            # data in, data out; generators and group tuples have text forms of their own
            return value if name in ("list", "sort", "first", "last", "items", "dictsort") \
                else value.join(PICKED)
        return _derived(value, *args, *kwargs.values())

    def judge_filter_arguments(self, node: Any, name: str, args: List[Value],
                               kwargs: Dict[str, Value]) -> None:
        """Attribute, filter and test names given to filters as arguments."""
        dynamic = node.dyn_args is not None or node.dyn_kwargs is not None
        if name in ("map", "select", "reject", "selectattr", "rejectattr") and dynamic:
            self.add("chat-template-suspicious", f"arguments of the {name!r} filter unpacked at render time",
                     node)
        if name in _ATTRIBUTE_ARGUMENTS:
            position, keyword = _ATTRIBUTE_ARGUMENTS[name]
            attribute = kwargs.get(keyword)
            if attribute is None and position is not None and len(args) > position:
                attribute = args[position]
            if attribute is not None:
                self.judge_attribute_path(attribute, node, f"the attribute argument of {name!r}")
        if name == "map" and "attribute" not in kwargs and args:
            self.judge_named(args[0], node, "filter", self.judge_filter_name)
        if name in ("select", "reject") and args:
            self.judge_named(args[0], node, "test", self.judge_test_name)
        if name in ("selectattr", "rejectattr") and len(args) > 1:
            self.judge_named(args[1], node, "test", self.judge_test_name)

    def judge_named(self, v: Value, node: Any, kind: str, judge: Callable[[str, Any], None]) -> None:
        """A filter or test named by an argument (``map('upper')``, ``select('defined')``)."""
        for c in v.constants:
            if isinstance(c, str):
                judge(c, node)
        if v.built or v.data or v.namespace or any(not isinstance(c, str) for c in v.constants):
            self.add("chat-template-suspicious", f"a {kind} name chosen at render time", node)

    def judge_filter_name(self, name: str, node: Any) -> None:
        if name == "attr":
            self.add("chat-template-code", "the attr filter", node)
        elif name not in SAFE_FILTERS:
            self.add("chat-template-unknown-name", f"the filter {name!r}", node)

    def judge_test_name(self, name: str, node: Any) -> None:
        if name not in SAFE_TESTS:
            self.add("chat-template-unknown-name", f"the test {name!r}", node)

    # -- names ---------------------------------------------------------------------------
    def judge_attribute(self, attr: str, node: Any, called: bool, on_loop: bool = False,
                        on_namespace: bool = False) -> None:
        """``x.attr`` (and ``x.attr(...)`` when ``called``)."""
        if self.judge_private(attr, node, "attribute"):
            return
        if attr in CODE_CALLS and called:
            self.add("chat-template-code", f"a call of {attr!r}", node)
        elif on_loop:
            if attr not in LOOP_ATTRIBUTES:
                self.add("chat-template-unknown-name", f"the loop attribute {attr!r}", node)
        elif called:
            if attr not in SAFE_METHODS and attr not in ("format", "format_map"):
                self.add("chat-template-unknown-name", f"a call of the method {attr!r}", node)
        elif on_namespace:
            pass  # namespace attributes are the template's own variables
        elif attr not in SAFE_FIELDS and attr in python_attributes():
            self.add("chat-template-unknown-name", f"the Python attribute {attr!r}", node)
        # Any other name is not an attribute of any object the renderer hands out: Jinja falls
        # back to a key lookup in the chat data (message.reasoning_content, tool.parameters).

    def judge_private(self, name: str, node: Any, kind: str) -> bool:
        """CRITICAL/HIGH for dunder, private and introspection names; True when it was one."""
        if _dunder(name) or ("__" in name and name.startswith("_")):
            self.add("chat-template-code", f"the {kind} {name!r}", node)
            return True
        if name in INTROSPECTION:
            self.add("chat-template-code", f"the introspection {kind} {name!r}", node)
            return True
        if name.startswith("_") and name != "_":
            self.add("chat-template-unknown-name", f"the private {kind} {name!r}", node)
            return True
        return False

    def judge_key(self, key: Value, node: Any, called: bool) -> None:
        """``x[key]``: Jinja tries the item, then the attribute of that name."""
        for c in key.constants:
            if isinstance(c, str):
                for name in _name_variants(c):
                    if self.judge_private(name, node, "key"):
                        break
                    if called:
                        self.judge_attribute(name, node, called=True)
        if key.built:
            self.add("chat-template-suspicious", "a key or attribute name built at render time", node)
        elif called and (key.data or key.namespace):
            self.add("chat-template-suspicious", "a method chosen at render time", node)

    def judge_attribute_path(self, v: Value, node: Any, what: str) -> None:
        """An attribute argument: Jinja splits it at dots and looks every part up like ``x[part]``."""
        for c in v.constants:
            if isinstance(c, str):
                for part in c.split("."):
                    for name in _name_variants(part):
                        if self.judge_private(name, node, "attribute"):
                            break
        if v.built or v.namespace:
            self.add("chat-template-suspicious", f"{what} built at render time", node)

    def judge_format(self, receiver: Value, node: Any) -> None:
        """``str.format``: a replacement field like ``{0.__class__}`` or ``{0[x]}`` reads attributes."""
        for c in receiver.constants:
            if not isinstance(c, str):
                continue
            try:
                fields = [f for _, f, spec, _ in string.Formatter().parse(c) if f is not None]
                specs = [spec for _, _, spec, _ in string.Formatter().parse(c) if spec]
            except ValueError:
                continue  # the render fails on it
            for field in fields + [s for s in specs if "{" in s]:
                if "." in field or "[" in field:
                    self.add("chat-template-code", f"a format string that reads attributes ({field!r})", node)
        if receiver.built or receiver.data or receiver.namespace:
            self.add("chat-template-suspicious", "a format string built at render time", node)


# ---- parsing ---------------------------------------------------------------------------------

_ENVIRONMENT: Any = None
_NODES: Any = None


def _jinja_nodes() -> Any:
    """``jinja2.nodes``, imported on first use (a scan without templates never imports Jinja)."""
    global _NODES
    if _NODES is None:
        from jinja2 import nodes

        _NODES = nodes
    return _NODES


def _environment() -> Any:
    """The parser: the sandbox environment and options of transformers' renderer (``trim_blocks``,
    ``lstrip_blocks``, ``loopcontrols``, the ``{% generation %}`` tag), plus ``do``, which other
    renderers enable. It is only ever asked to parse."""
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        import jinja2.ext
        nodes = _jinja_nodes()
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class GenerationTag(jinja2.ext.Extension):
            """transformers' ``{% generation %}...{% endgeneration %}`` (marks assistant text)."""

            tags = {"generation"}

            def parse(self, parser: Any) -> Any:
                lineno = next(parser.stream).lineno
                body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
                return nodes.Scope(body, lineno=lineno)

        _ENVIRONMENT = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True,
            extensions=[GenerationTag, jinja2.ext.loopcontrols, jinja2.ext.do])
    return _ENVIRONMENT


def check_template(text: str, check: Optional[Callable[[], None]] = None) -> List[TemplateIssue]:
    """Every reason to distrust a template (empty for ordinary chat templates). A template Jinja
    cannot parse is one issue, ``unscanned-parse-error``: no renderer runs it, but it was not judged."""
    from jinja2 import TemplateSyntaxError

    try:
        tree = _environment().parse(text)
    except TemplateSyntaxError as exc:
        lines = text.splitlines()
        line = exc.lineno or 0
        snippet = lines[line - 1].strip()[:160] if 0 < line <= len(lines) else ""
        what = f"Jinja syntax that no renderer accepts: {exc.message}"
        return [TemplateIssue("unscanned-parse-error", what, line, snippet)]
    return _Judge(tree, text.splitlines(), check).run()


def report_template(text: str, ctx: ScanContext, key: str, offset: Optional[int] = None) -> int:
    """Check one template and report its issues (``key`` names where it came from). Returns the count."""
    try:
        issues = check_template(text, ctx.check_deadline)
    except RecursionError:
        ctx.report("unscanned-limit", f"chat template {key!r} nests too deeply to be judged",
                   offset=offset, details={"key": key})
        return 1
    for issue in issues[:MAX_REPORTED]:
        where = f"line {issue.line}: {issue.snippet}" if issue.snippet else f"line {issue.line}"
        if issue.rule_id == "unscanned-parse-error":
            message = f"chat template {key!r} could not be parsed: {issue.what} ({where})"
        else:
            message = f"chat template {key!r} uses {issue.what} ({where})"
        if len(issues) > MAX_REPORTED and issue is issues[MAX_REPORTED - 1]:
            message += f"; {len(issues) - MAX_REPORTED} more issues not listed"
        ctx.report(issue.rule_id, message, offset=offset,
                   details={"key": key, "template_line": issue.line, "snippet": issue.snippet})
    return len(issues)


def check_chat_template_value(value: Any, ctx: ScanContext, key: str = "chat_template",
                              offset: Optional[int] = None) -> None:
    """``chat_template`` as transformers stores it: a string, or a list of ``{name, template}``."""
    if isinstance(value, str):
        report_template(value, ctx, key, offset)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = item.get("name") if isinstance(item.get("name"), str) else str(i)
                report_template(item["template"], ctx, f"{key}.{name}", offset)
    elif isinstance(value, dict):
        for name, template in value.items():
            if isinstance(template, str):
                report_template(template, ctx, f"{key}.{name}", offset)


# ---- .jinja files ----------------------------------------------------------------------------

#: The file transformers (tokenizers and processors) loads a chat template from.
TEMPLATE_FILE = "chat_template.jinja"
#: The folder transformers loads named templates from (``additional_chat_templates/<name>.jinja``).
TEMPLATE_FOLDER = "additional_chat_templates"
#: Files whose presence makes a folder a tokenizer or processor folder.
TOKENIZER_FILES = ("tokenizer_config.json", "processor_config.json", "chat_template.json",
                   "tokenizer.json", "preprocessor_config.json")


#: JSON files whose ``chat_template`` transformers renders (tokenizers, and processors).
JSON_TEMPLATE_FILES = frozenset({"tokenizer_config.json", "chat_template.json", "processor_config.json"})


def json_template_file(ctx: ScanContext) -> bool:
    """True when the JSON document being scanned is one whose ``chat_template`` a loader renders."""
    return _location(ctx)[1] in JSON_TEMPLATE_FILES


def _location(ctx: ScanContext) -> Tuple[str, str]:
    """(name of the folder, name of the file), lower case, of the innermost member or the file.
    Display paths may carry a ``repo@sha:`` prefix (Hub) or ``archive:member`` parts."""
    path = ctx.member if ctx.member else ctx.path
    parts = [p for p in re.split(r"[/\\:]", path) if p]
    base = parts[-1].lower() if parts else ""
    folder = parts[-2].lower() if len(parts) > 1 else ""
    return folder, base


def rendered_as_chat_template(ctx: ScanContext) -> bool:
    """True when a loader renders this ``.jinja`` file as a chat template: ``chat_template.jinja``,
    ``additional_chat_templates/*.jinja``, or any ``.jinja`` beside a tokenizer/processor config."""
    folder, base = _location(ctx)
    if base == TEMPLATE_FILE or folder == TEMPLATE_FOLDER:
        return True
    for name in TOKENIZER_FILES:
        sibling = ctx.open_sibling(name)
        if sibling is not None:
            sibling.close()
            return True
    return False


def scan_jinja_file(source: ByteSource, ctx: ScanContext) -> None:
    """A ``.jinja`` file: judged as a chat template when it is where a loader renders one."""
    if not rendered_as_chat_template(ctx):
        return
    if source.size > MAX_TEMPLATE:
        ctx.report("unscanned-limit", f"template of {source.size} bytes exceeds the {MAX_TEMPLATE}-byte "
                   "template limit", details={"limit": "template"})
        return
    raw = source.read_exact(0, source.size)
    try:
        # transformers reads the file as UTF-8 text
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        ctx.report("unscanned-parse-error", f"chat template is not UTF-8 text ({exc.reason} at byte "
                   f"{exc.start}); transformers cannot read it", offset=exc.start)
        return
    ctx.add_format("chat-template")
    report_template(text, ctx, ctx.basename)
