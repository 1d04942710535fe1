"""Strict JSON for headers and index files: what serde_json accepts, with every duplicate key seen.

Python's ``json`` is more lenient than the Rust ``serde_json`` that safetensors (and most
non-Python loaders) use: it accepts ``NaN``/``Infinity``, lone UTF-16 surrogates, numbers out of
range (as ``inf``) and nesting deeper than serde's recursion limit, and it silently keeps the last
of duplicate keys. A scanner that parses more than the loader does, or sees a different value
than it, can be fooled, so :func:`parse_json_strict` rejects what serde_json rejects and records
every duplicate key with where it occurred.
"""

from __future__ import annotations

import json
import re
from collections import Counter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple, Union

    JSONPath = Tuple[Union[str, int], ...]

#: serde_json's default recursion limit: 128 levels, of which 127 nested arrays/objects parse.
SERDE_MAX_DEPTH = 127

_U64_MAX = (1 << 64) - 1
_I64_MIN = -(1 << 63)


class JSONFormatError(ValueError):
    """The text is not JSON as a strict parser accepts it. ``pos`` is a character index or None."""

    def __init__(self, message: str, pos: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


# The two classes below are plain classes with the methods their dataclasses had (a frozen one with
# init, repr, eq, hash and no assignment; a mutable one with init, repr, eq and no hash): creating a
# dataclass costs ~0.3-0.5 ms of the start-up of every scan that reads JSON.


class DuplicateKey:
    """A key repeated inside one object; ``path`` leads from the top level to that object."""

    path: JSONPath
    key: str
    count: int

    def __init__(self, path: JSONPath, key: str, count: int) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "count", count)

    def __setattr__(self, name: str, value: Any) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        return f"DuplicateKey(path={self.path!r}, key={self.key!r}, count={self.count!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.path, self.key, self.count) == (other.path, other.key, other.count)  # type: ignore

    def __hash__(self) -> int:
        return hash((self.path, self.key, self.count))

    def where(self) -> str:
        """The object's location, for messages (``top level`` or ``["a"]["b"][0]``)."""
        return format_path(self.path)


class JSONDocument:
    """A parsed document and the duplicate keys found anywhere in it."""

    def __init__(self, value: Any, duplicates: Optional[List[DuplicateKey]] = None,
                 max_depth: int = 0) -> None:
        self.value = value
        self.duplicates: List[DuplicateKey] = [] if duplicates is None else duplicates
        self.max_depth = max_depth

    def __repr__(self) -> str:
        return (f"JSONDocument(value={self.value!r}, duplicates={self.duplicates!r}, "
                f"max_depth={self.max_depth!r})")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return ((self.value, self.duplicates, self.max_depth)
                == (other.value, other.duplicates, other.max_depth))  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


def format_path(path: JSONPath) -> str:
    """``["a"][0]`` style rendering of a path; ``top level`` for the empty path."""
    if not path:
        return "top level"
    return "".join(f"[{p}]" if isinstance(p, int) else f"[{json.dumps(p)}]" for p in path)


def _reject_constant(name: str) -> Any:
    raise JSONFormatError(f"{name} is not JSON")


def _parse_int(text: str) -> Union[int, float]:
    # serde_json keeps integers that fit u64 (or i64 when negative) and turns the rest into f64;
    # "-0" also becomes the float -0.0. Emulate it so "is this an unsigned integer" agrees.
    if text.startswith("-"):
        if text.strip("-0") == "":
            return -0.0
        if len(text) <= 20:
            value = int(text)
            if value >= _I64_MIN:
                return value
    elif len(text) <= 20:
        value = int(text)
        if value <= _U64_MAX:
            return value
    return _parse_float(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONFormatError(f"number out of range: {text[:40]}")
    return value


#: Integers Python and serde type differently: "-0" (serde: a float) and more than 20 digits
#: (serde: a float beyond u64/i64). Only texts containing them pay for the exact integer hook.
_NEGATIVE_ZERO = re.compile(r"-0(?![.eE])")
#: Digits to "0", so that a run of 21 digits is a plain substring search (a regex is 10x slower).
_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")


def _serde_int_differs(text: str) -> bool:
    return _NEGATIVE_ZERO.search(text) is not None or "0" * 21 in text.translate(_DIGITS_TO_ZERO)
#: A lone surrogate can only come from a \uD800-\uDFFF escape (raw UTF-8 cannot encode one).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_tree(value: Any, max_depth: int, strings: bool) -> int:
    """Nesting depth of ``value`` (raising past ``max_depth``); lone surrogates when ``strings``."""
    deepest = 0
    stack: List[Tuple[Any, int]] = [(value, 1)]
    containers = (dict, list)
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            if depth > max_depth:
                raise JSONFormatError(f"nesting deeper than {max_depth} levels")
            deepest = depth
        if type(node) is dict:
            if strings:
                for key in node:
                    if _has_lone_surrogate(key):
                        raise JSONFormatError(f"lone UTF-16 surrogate escape in key {key!r}")
            children = node.values()
        else:
            children = node
        below = depth + 1
        for child in children:
            kind = type(child)
            if kind is dict:
                stack.append((child, below))
            elif kind is list:
                # Lists of scalars (shapes, offsets) are most of a header: finish them here.
                if strings or any(type(x) in containers for x in child):
                    stack.append((child, below))
                elif below > deepest:
                    if below > max_depth:
                        raise JSONFormatError(f"nesting deeper than {max_depth} levels")
                    deepest = below
            elif strings and kind is str and _has_lone_surrogate(child):
                raise JSONFormatError("lone UTF-16 surrogate escape in a string")
    return deepest


def _paths_to(root: Any, targets: List[Any]) -> Dict[int, JSONPath]:
    """Paths from ``root`` to each container of ``targets`` (by identity), in one walk."""
    wanted = {id(t) for t in targets}
    found: Dict[int, JSONPath] = {}
    stack: List[Tuple[Any, JSONPath]] = [(root, ())]
    while stack and len(found) < len(wanted):
        node, path = stack.pop()
        if id(node) in wanted:
            found[id(node)] = path
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, (dict, list)):
                stack.append((child, path + (key,)))
    return found


def parse_json_strict(text: str, *, max_depth: int = SERDE_MAX_DEPTH) -> JSONDocument:
    """Parse ``text`` as serde_json would, recording duplicate keys anywhere in the document.

    Raises :class:`JSONFormatError` for anything serde_json rejects: invalid syntax, ``NaN`` and
    ``Infinity``, numbers out of the f64 range, lone surrogate escapes, raw control characters in
    strings, a byte-order mark, and nesting deeper than ``max_depth``. Leading and trailing JSON
    whitespace is accepted (callers that care check it themselves). Objects are plain dicts in
    which the last of repeated keys wins (as in serde's maps).
    """
    repeated: List[Tuple[Dict[str, Any], List[Tuple[str, int]]]] = []

    def make_object(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            counts = Counter(k for k, _ in pairs)
            repeated.append((obj, [(k, c) for k, c in counts.items() if c > 1]))
        return obj

    exact_ints = _serde_int_differs(text)
    decoder = json.JSONDecoder(object_pairs_hook=make_object, parse_constant=_reject_constant,
                               parse_float=_parse_float, parse_int=_parse_int if exact_ints else None,
                               strict=True)
    try:
        value = decoder.decode(text)
    except JSONFormatError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONFormatError(f"{exc.msg} (line {exc.lineno} column {exc.colno})", exc.pos) from None
    except RecursionError:
        raise JSONFormatError(f"nesting deeper than {max_depth} levels") from None
    except ValueError as exc:  # int() digit limit and similar conversions
        raise JSONFormatError(str(exc)) from None
    depth = _check_tree(value, max_depth, strings=_SURROGATE_ESCAPE.search(text) is not None)
    paths = _paths_to(value, [obj for obj, _ in repeated]) if repeated else {}
    duplicates = [DuplicateKey(paths.get(id(obj), ()), key, count)
                  for obj, keys in repeated for key, count in keys]
    return JSONDocument(value, duplicates, depth)


def json_bytes_encoding(raw: bytes) -> str:
    """The codec ``json.loads(raw)`` decodes ``raw`` with (``json.detect_encoding``): UTF-8 with or
    without a BOM, UTF-16 and UTF-32 in either byte order with or without a BOM."""
    return json.detect_encoding(raw)


def decode_json_bytes(raw: bytes) -> str:
    """The text ``json.loads(raw)`` parses for bytes ``raw`` (same codec, same ``surrogatepass``).

    Raises UnicodeDecodeError where ``json.loads`` does."""
    return raw.decode(json.detect_encoding(raw), "surrogatepass")


def json_head_text(head: bytes) -> str:
    """The start of the text ``json.loads`` would see for a document beginning with ``head``
    (possibly cut inside a character: the partial character is left out)."""
    import codecs

    decoder = codecs.getincrementaldecoder(json.detect_encoding(head))("replace")
    return decoder.decode(head, final=False)


def char_to_byte_offset(text: str, pos: Optional[int]) -> Optional[int]:
    """Byte offset in the UTF-8 encoding of ``text`` of character index ``pos``."""
    if pos is None:
        return None
    return len(text[:pos].encode("utf-8", "surrogatepass"))
