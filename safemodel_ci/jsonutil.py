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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union

#: serde_json's default recursion limit: 128 levels, of which 127 nested arrays/objects parse.
SERDE_MAX_DEPTH = 127

_U64_MAX = (1 << 64) - 1
_I64_MIN = -(1 << 63)

JSONPath = Tuple[Union[str, int], ...]


class JSONFormatError(ValueError):
    """The text is not JSON as a strict parser accepts it. ``pos`` is a character index or None."""

    def __init__(self, message: str, pos: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


class JSONObject(dict):  # type: ignore[type-arg]
    """A parsed JSON object (the last value of a repeated key wins, as in serde's maps)."""

    __slots__ = ("duplicate_keys",)

    def __init__(self, pairs: List[Tuple[str, Any]]) -> None:
        super().__init__(pairs)
        #: Keys that occurred more than once, with how often.
        self.duplicate_keys: List[Tuple[str, int]] = []
        if len(self) != len(pairs):
            counts = Counter(k for k, _ in pairs)
            self.duplicate_keys = [(k, c) for k, c in counts.items() if c > 1]


@dataclass(frozen=True)
class DuplicateKey:
    """A key repeated inside one object; ``path`` leads from the top level to that object."""

    path: JSONPath
    key: str
    count: int

    def where(self) -> str:
        """The object's location, for messages (``top level`` or ``["a"]["b"][0]``)."""
        return format_path(self.path)


@dataclass
class JSONDocument:
    """A parsed document and the duplicate keys found anywhere in it."""

    value: Any
    duplicates: List[DuplicateKey] = field(default_factory=list)
    max_depth: int = 0


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


_DECODER = json.JSONDecoder(object_pairs_hook=JSONObject, parse_constant=_reject_constant,
                            parse_int=_parse_int, parse_float=_parse_float, strict=True)


def _has_lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _walk(value: Any, max_depth: int) -> Tuple[List[DuplicateKey], int]:
    """Duplicate keys with their paths, and the nesting depth; rejects what serde rejects."""
    duplicates: List[DuplicateKey] = []
    deepest = 0
    stack: List[Tuple[Any, int, JSONPath]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            if depth > max_depth:
                raise JSONFormatError(f"nesting deeper than {max_depth} levels at {format_path(path)}")
            for key, count in getattr(node, "duplicate_keys", ()):
                duplicates.append(DuplicateKey(path, key, count))
            for key, child in node.items():
                if _has_lone_surrogate(key):
                    raise JSONFormatError(f"lone UTF-16 surrogate escape in key {key!r}")
                if isinstance(child, (dict, list, str)):
                    stack.append((child, depth + 1, path + (key,)))
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            if depth > max_depth:
                raise JSONFormatError(f"nesting deeper than {max_depth} levels at {format_path(path)}")
            for index, child in enumerate(node):
                if isinstance(child, (dict, list, str)):
                    stack.append((child, depth + 1, path + (index,)))
        elif isinstance(node, str) and _has_lone_surrogate(node):
            raise JSONFormatError(f"lone UTF-16 surrogate escape in string at {format_path(path)}")
    # Report duplicates in document order rather than stack order.
    duplicates.reverse()
    return duplicates, deepest


def parse_json_strict(text: str, *, max_depth: int = SERDE_MAX_DEPTH) -> JSONDocument:
    """Parse ``text`` as serde_json would, recording duplicate keys anywhere in the document.

    Raises :class:`JSONFormatError` for anything serde_json rejects: invalid syntax, ``NaN`` and
    ``Infinity``, numbers out of the f64 range, lone surrogate escapes, raw control characters in
    strings, a byte-order mark, and nesting deeper than ``max_depth``. Leading and trailing JSON
    whitespace is accepted (callers that care check it themselves).
    """
    try:
        value = _DECODER.decode(text)
    except JSONFormatError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONFormatError(f"{exc.msg} (line {exc.lineno} column {exc.colno})", exc.pos) from None
    except RecursionError:
        raise JSONFormatError(f"nesting deeper than {max_depth} levels") from None
    except ValueError as exc:  # int() digit limit and similar conversions
        raise JSONFormatError(str(exc)) from None
    duplicates, depth = _walk(value, max_depth)
    return JSONDocument(value, duplicates, depth)


def char_to_byte_offset(text: str, pos: Optional[int]) -> Optional[int]:
    """Byte offset in the UTF-8 encoding of ``text`` of character index ``pos``."""
    if pos is None:
        return None
    return len(text[:pos].encode("utf-8", "surrogatepass"))
