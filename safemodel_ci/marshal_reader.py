"""Reading a marshalled Python code object without unmarshalling it: the names and strings it
uses, enough to say what a Keras Lambda layer would run. ``marshal.loads`` is never called and
nothing becomes a function. A shared decoder (like :mod:`.protobuf`): it imports no reader.
"""

from __future__ import annotations


from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, List, Optional

class MarshalError(ValueError):
    """The bytes are not a marshalled code object in the layout tried."""


class CodeSummary(Record):
    """What a marshalled code object names: enough to tell a reader what it would do. (A plain
    record, not a dataclass: see safemodel_ci/record.py; a gate may import this module.)"""

    __slots__ = ("layout", "names", "strings", "functions")
    layout: str
    names: List[str]      # co_names of all code objects
    strings: List[str]    # string constants
    functions: List[str]  # co_name of every code object

    def __init__(self, layout: str, names: Optional[List[str]] = None, strings: Optional[List[str]] = None,
                 functions: Optional[List[str]] = None) -> None:
        self.layout = layout
        self.names = [] if names is None else names
        self.strings = [] if strings is None else strings
        self.functions = [] if functions is None else functions


_NULL = object()
_CODE = object()  # stands for a nested code object (its names are collected separately)
# Layouts of TYPE_CODE in CPython's marshal.c: (number of int32 header fields, object fields
# before firstlineno, object fields after it). Field 2 of the objects (0-based) is co_names.
_LAYOUTS = {
    # code consts names localsplusnames localspluskinds filename name qualname | linetable exceptiontable
    "3.11+": (5, 8, 2),
    "3.8-3.10": (6, 8, 1),  # code consts names varnames freevars cellvars filename name | lnotab
    "3.7": (5, 8, 1),
}


class _MarshalReader:
    def __init__(self, data: bytes, layout: str) -> None:
        self.data = data
        self.pos = 0
        self.refs: List[Any] = []
        self.layout = layout
        self.summary = CodeSummary(layout)

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MarshalError("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def _long(self) -> int:
        return int.from_bytes(self._take(4), "little", signed=True)

    def _count(self, n: int) -> int:
        if n < 0 or n > len(self.data) - self.pos:
            raise MarshalError("impossible count")
        return n

    def read(self, depth: int = 0) -> Any:  # noqa: C901 - one branch per marshal type code
        if depth > 200:
            raise MarshalError("nesting too deep")
        code = self._take(1)[0]
        flag, t = code & 0x80, chr(code & 0x7F)
        idx = None
        if flag:
            idx = len(self.refs)
            self.refs.append(None)
        value: Any
        if t == "0":
            value = _NULL
        elif t in "NFTS.":
            value = None
        elif t == "i":
            value = self._long()
        elif t == "I" or t == "g":
            self._take(8)
            value = 0
        elif t == "y":
            self._take(16)
            value = 0
        elif t == "f":
            self._take(self._take(1)[0])
            value = 0
        elif t == "x":
            self._take(self._take(1)[0])
            self._take(self._take(1)[0])
            value = 0
        elif t == "l":
            n = self._long()
            self._take(2 * self._count(abs(n)))
            value = 0
        elif t == "s":
            value = self._take(self._count(self._long()))
        elif t in "tuaA":
            value = self._take(self._count(self._long())).decode("utf-8", "replace")
        elif t in "zZ":
            value = self._take(self._take(1)[0]).decode("latin-1")
        elif t in "([<>":
            value = tuple(self.read(depth + 1) for _ in range(self._count(self._long())))
        elif t == ")":
            value = tuple(self.read(depth + 1) for _ in range(self._take(1)[0]))
        elif t == "{":
            items = []
            while True:
                k = self.read(depth + 1)
                if k is _NULL:
                    break
                items.append((k, self.read(depth + 1)))
            value = tuple(items)
        elif t == "r":
            n = self._long()
            if not 0 <= n < len(self.refs):
                raise MarshalError("bad reference")
            value = self.refs[n]
        elif t == ":":  # slice (3.14)
            value = tuple(self.read(depth + 1) for _ in range(3))
        elif t == "c":
            value = self._code(depth)
        else:
            raise MarshalError(f"unknown type code {code:#x}")
        if idx is not None:
            self.refs[idx] = value
        return value

    def _code(self, depth: int) -> object:
        ints, before, after = _LAYOUTS[self.layout]
        self._take(4 * ints)
        objs = [self.read(depth + 1) for _ in range(before)]
        self._long()  # firstlineno
        for _ in range(after):
            self.read(depth + 1)
        code_bytes, consts, names = objs[0], objs[1], objs[2]
        func = objs[6] if self.layout == "3.11+" else objs[7]
        if not isinstance(code_bytes, bytes) or not isinstance(consts, tuple) or not isinstance(names, tuple):
            raise MarshalError("fields do not have the types of a code object")
        self.summary.names.extend(n for n in names if isinstance(n, str))
        self.summary.strings.extend(c for c in consts if isinstance(c, str))
        if isinstance(func, str):
            self.summary.functions.append(func)
        return _CODE


def summarize_marshalled_code(data: bytes) -> Optional[CodeSummary]:
    """Names used by a marshalled code object, or None when no known layout reads it exactly."""
    for layout in _LAYOUTS:
        reader = _MarshalReader(data, layout)
        try:
            top = reader.read()
        except (MarshalError, RecursionError):
            continue
        if top is _CODE and reader.pos == len(data):
            return reader.summary
    return None


__all__ = ["CodeSummary", "MarshalError", "summarize_marshalled_code"]
