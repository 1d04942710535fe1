"""The VM's values: literals (None, bool, int, float, str, bytes, bytearray, tuple) are Python values;
everything the unpickler would build by calling or importing is one of the symbolic classes here.
Also what the loader would do with a value: hash it, test it for truth, iterate it."""

from __future__ import annotations


from ...pickle_policy import NESTED_LOADERS, full_name
from .base import _Broken, _Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple


class Sym:
    """Base of every value the VM cannot hold as a plain Python literal."""

    __slots__ = ()


class Global(Sym):
    """An imported object (the result of GLOBAL, INST's class, STACK_GLOBAL) or an unresolved one."""

    __slots__ = ("module", "name", "path", "record", "loader", "allowed", "plausible")

    def __init__(self, module: Optional[str], name: Optional[str], record: Optional["_Record"],
                 allowed: bool) -> None:
        self.module = module
        self.name = name
        self.path = full_name(module, name) if module is not None and name is not None else "<unresolved>"
        self.record = record
        self.loader = NESTED_LOADERS.get(self.path)
        self.allowed = allowed
        self.plausible = False


class Obj(Sym):
    """What a call or construction returned. ``cls`` is the global that was called, if known."""

    __slots__ = ("cls", "attrs")

    def __init__(self, cls: Optional[Global], attrs: Optional[Dict[str, Any]] = None) -> None:
        self.cls = cls
        self.attrs = attrs


class Opaque(Sym):
    """A value the VM does not model (persistent objects, out-of-band buffers, huge integers)."""

    __slots__ = ("what", "record")

    def __init__(self, what: str, record: Optional["_Record"] = None) -> None:
        self.what = what
        self.record = record


class _HugeInt(Sym):
    """An integer too long to convert (over 4000 digits): an int to every operation, value unknown."""

    __slots__ = ()
    what = "a huge integer"


class BigData(Sym):
    """A str/bytes payload not held in memory: its kind, length and (for raw bytes) source offset."""

    __slots__ = ("kind", "length", "offset")

    def __init__(self, kind: str, length: Optional[int], offset: Optional[int]) -> None:
        self.kind = kind
        self.length = length
        self.offset = offset


class PList(list):  # type: ignore[type-arg]
    """A list built by the stream; ``dropped`` counts items not kept (memory budget)."""

    __slots__ = ("dropped",)

    def __init__(self, items: Sequence[Any] = ()) -> None:
        super().__init__(items)
        self.dropped = 0


class PDict(Sym):
    """A dict built by the stream, as key/value pairs (keys may be symbolic).

    The pair list is made on the first item: a stream of a million empty dicts (memoized, so the
    memo holds them all) then costs one small object each, not an object and an empty list.
    """

    __slots__ = ("_pairs", "dropped")

    def __init__(self) -> None:
        self._pairs: Optional[List[Tuple[Any, Any]]] = None
        self.dropped = 0

    @property
    def pairs(self) -> Sequence[Tuple[Any, Any]]:
        return self._pairs if self._pairs is not None else ()

    def add_pairs(self, pairs: Iterable[Tuple[Any, Any]]) -> None:
        if self._pairs is None:
            self._pairs = []
        self._pairs.extend(pairs)


class PSet(Sym):
    """A set or frozenset built by the stream."""

    __slots__ = ("items", "frozen", "dropped")

    def __init__(self, items: Sequence[Any] = (), frozen: bool = False) -> None:
        self.items = list(items)
        self.frozen = frozen
        self.dropped = 0


class _CBytes(bytes):
    """Bytes a call returned (``_codecs.encode``, ``bytes(...)``): the VM knows their value, but an
    operation on them is judged like one on any call result (accepted), not like one on a literal."""

    __slots__ = ()


class _CByteArray(bytearray):
    """A bytearray a call returned (see :class:`_CBytes`)."""


def _computed(value: Any) -> Any:
    if type(value) is bytes:
        return _CBytes(value)
    if type(value) is bytearray:
        return _CByteArray(value)
    return value


class _NotLiteral(Exception):
    pass


def to_literal(value: Any, budget: Optional[List[int]] = None, keep_globals: bool = False) -> Any:
    """The plain Python value a symbolic value stands for, or :class:`_NotLiteral`.

    ``keep_globals``: imported objects stay :class:`Global` (``.module``, ``.name``, ``.path``), as
    persistent ids hold classes (``('storage', torch.FloatStorage, key, location, numel)``).
    """
    if budget is None:
        budget = [100_000]
    if keep_globals and isinstance(value, Global):
        return value
    budget[0] -= 1
    if budget[0] < 0:
        raise _NotLiteral("too large")
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(to_literal(v, budget, keep_globals) for v in value)
    if isinstance(value, PList):
        if value.dropped:
            raise _NotLiteral("truncated")
        return [to_literal(v, budget, keep_globals) for v in value]
    if isinstance(value, PDict):
        if value.dropped:
            raise _NotLiteral("truncated")
        try:
            return {to_literal(k, budget, keep_globals): to_literal(v, budget, keep_globals)
                    for k, v in value.pairs}
        except TypeError:
            raise _NotLiteral("unhashable key") from None
    raise _NotLiteral(type(value).__name__)


def _maybe_literal(value: Any, keep_globals: bool = False) -> Any:
    try:
        return to_literal(value, keep_globals=keep_globals)
    except (_NotLiteral, RecursionError):
        return None


class _Lost:
    """An inert value (a str, bytes or tuple of literals) a memo entry held past the memo budget: its
    kind is kept, its content is not (see ``_PickleVM.memo_exact``).

    Not a :class:`Sym`: it behaves as the value it stands for wherever only the kind decides (hashable,
    true, iterable, not callable, no append or item assignment), and wherever the content would
    decide (an import's name, bytes a loader loads, a literal a reader asks for) it is unknown, so the
    decision is the conservative one (``unscanned-limit``, ``pickle-nested-opaque``, not a literal).
    """

    __slots__ = ("kind",)

    def __init__(self, kind: int) -> None:
        self.kind = kind


#: Kinds of :class:`_Lost` (bytes of ``_PickleVM.memo_lost``; 0: not lost).
LOST_STR, LOST_BYTES, LOST_TUPLE = 1, 2, 3
#: One shared placeholder per kind: inert values are immutable, so no GET needs its own object.
LOST = (None, _Lost(LOST_STR), _Lost(LOST_BYTES), _Lost(LOST_TUPLE))
_LOST_NAMES = {LOST_STR: "str", LOST_BYTES: "bytes", LOST_TUPLE: "tuple"}


def describe(value: Any) -> str:
    """Short human description of a stack value (for messages)."""
    if isinstance(value, _Lost):
        return f"a {_LOST_NAMES[value.kind]} not kept in memory (memo budget)"
    if isinstance(value, Global):
        return f"the imported object {value.path}"
    if isinstance(value, Obj):
        return f"the result of calling {value.cls.path}" if value.cls else "a computed object"
    if isinstance(value, (Opaque, _HugeInt)):
        return value.what
    if isinstance(value, BigData):
        return f"a {value.kind} of {value.length} bytes"
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return type(value).__name__



#: Values whose behaviour is only known when the pickle runs (imports, what calls return): the VM
#: accepts any operation on them. Everything else is a value the stream built, with known behaviour.
_SYMBOLIC = (Global, Obj, Opaque, _CBytes, _CByteArray)
_NOT_ITERABLE = frozenset({type(None), bool, int, float, _HugeInt})
_HASHABLE = frozenset({str, int, float, bool, bytes, type(None)})


def _unhashable(value: Any, depth: int = 0) -> bool:
    """Whether ``hash(value)`` raises for a value the stream built (lists, dicts, sets, bytearrays)."""
    if isinstance(value, _SYMBOLIC):
        return False
    if isinstance(value, (PList, PDict, bytearray)):
        return True
    if isinstance(value, PSet):
        return not value.frozen
    if isinstance(value, BigData):
        return value.kind == "bytearray"
    if isinstance(value, tuple) and depth < 50:
        return any(type(v) not in _HASHABLE and _unhashable(v, depth + 1) for v in value)
    return False


def _check_hashable(items: Sequence[Any], pos: int, kind: str) -> None:
    for item in items:
        if type(item) not in _HASHABLE and _unhashable(item):
            raise _Broken(pos, f"{kind} with the unhashable item {describe(item)} (the loader raises)")


def _is_byte(value: Any) -> bool:
    return isinstance(value, int) and 0 <= value < 256


def _truthy(value: Any) -> bool:
    """``bool(value)`` as the loader would see it; values known only at load time count as true."""
    if isinstance(value, _SYMBOLIC):
        return True
    if value is None or isinstance(value, (bool, int, float, str, bytes, bytearray, tuple)):
        return bool(value)
    if isinstance(value, PList):
        return bool(value) or bool(value.dropped)
    if isinstance(value, PDict):
        return bool(value.pairs) or bool(value.dropped)
    if isinstance(value, PSet):
        return bool(value.items) or bool(value.dropped)
    if isinstance(value, BigData):
        return value.length != 0
    return True


def _is_kwargs(value: Any) -> bool:
    """NEWOBJ_EX keyword arguments: a dict with str keys (values known at load time: accepted)."""
    if isinstance(value, _SYMBOLIC):
        return not isinstance(value, Global)  # a class or function is no mapping
    return isinstance(value, PDict) and all(isinstance(k, (str, *_SYMBOLIC)) for k, _ in value.pairs)


def _item_assignable(target: Any, pairs: Sequence[Any]) -> bool:
    """Whether ``target[key] = value`` works for every pair, on a value the stream built."""
    if isinstance(target, (PList, bytearray)):
        size = len(target) + (target.dropped if isinstance(target, PList) else 0)
        for key, value in zip(pairs[0::2], pairs[1::2]):
            if not isinstance(key, int) or not -size <= key < size:
                return False
            if isinstance(target, bytearray) and not _is_byte(value):
                return False
        return True
    return False


#: Types of values a memo entry past the budget may drop (with :class:`_Lost` itself).
_INERT_ATOMS = frozenset({int, float, str, bytes, bool, type(None), _Lost})


def _lost_kind(value: Any) -> int:
    """The :class:`_Lost` kind a memo entry holding ``value`` may be reduced to, or 0 to keep it.

    Only inert values: a non-empty str other than ``'__setstate__'`` (a BUILD or SETITEM key that
    decides a finding), non-empty plain bytes (not bytes a call returned), a tuple of up to 16 such
    atoms or ints, floats, bools, None (one level of nested tuples). Everything else (imports, call
    results, mutable containers a later opcode can change, huge ints) is kept as it is.
    """
    cls = value.__class__
    if cls is str:
        return LOST_STR if value and value != "__setstate__" else 0
    if cls is tuple:
        if not value or len(value) > 16:
            return 0
        for item in value:
            kind = item.__class__
            if kind not in _INERT_ATOMS and not (kind is tuple and _lost_kind(item) == LOST_TUPLE
                                                 and all(x.__class__ in _INERT_ATOMS for x in item)):
                return 0
        return LOST_TUPLE
    if cls is bytes:
        return LOST_BYTES if value else 0
    if cls is _Lost:
        return value.kind
    return 0
