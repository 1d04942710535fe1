"""NumPy ``.npy`` arrays (also the members of ``.npz`` archives, which the zip reader hands over).

The header is a Python dict literal, parsed by a small literal parser of its own (names, calls
and attribute access are rejected; neither ``eval`` nor ``compile`` ever sees the bytes). An
object dtype anywhere in ``descr`` (nested structured fields included) means the array data is
a pickle that ``np.load`` unpickles with ``allow_pickle=True``: it is scanned where it starts.
Otherwise the data is ``prod(shape) * itemsize`` raw bytes, and anything after them is reported
and scanned.

numpy itself is not needed: item sizes are computed from the type strings.
"""

from __future__ import annotations

import re
import struct
from typing import Any, List, Tuple

from ..context import ScanContext
from ..source import ByteSource, SliceSource
from .interface import FormatReader

MAGIC = b"\x93NUMPY"
#: numpy refuses headers above 10000 bytes unless allow_pickle is given; object arrays may be larger.
MAX_HEADER = 1 << 20

_TYPESTR = re.compile(r"^([<>|=]?)([?bBhHiIlLqQpPefdgFDGSUVOMmcaub])(\d*)(\[[a-zA-Z0-9]+\])?$")
#: Sizes of numpy's one-letter type codes when no explicit size follows.
_CHAR_SIZES = {"?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8,
               "Q": 8, "p": 8, "P": 8, "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32,
               "O": 8, "M": 8, "m": 8, "c": 1}
#: Kinds whose digits are an item size in bytes (``<f8``), except ``U`` whose digits count UCS-4 chars.
_SIZED_KINDS = set("biufcSVOMmab?")


class NpyHeaderError(ValueError):
    """The header is not what numpy accepts."""


_LITERAL_NAMES = {"True": True, "False": False, "None": None}


def parse_literal(text: str, max_depth: int = 32) -> Any:
    """A Python literal of the kinds an .npy header holds (dict, list, tuple, str, int, bool, None).

    A small recursive-descent parser: no ``eval`` and no ``compile`` (``ast.literal_eval`` compiles,
    which the scanner never does on scanned content). Raises :class:`NpyHeaderError`.
    """
    pos = 0
    n = len(text)

    def skip() -> None:
        nonlocal pos
        while pos < n and text[pos] in " \t\r\n":
            pos += 1

    def value(depth: int) -> Any:
        nonlocal pos
        if depth > max_depth:
            raise NpyHeaderError("header nests too deeply")
        skip()
        if pos >= n:
            raise NpyHeaderError("header ends early")
        c = text[pos]
        if c in "{[(":
            close = {"{": "}", "[": "]", "(": ")"}[c]
            pos += 1
            items: List[Any] = []
            pairs: List[Tuple[Any, Any]] = []
            trailing_comma = False
            while True:
                skip()
                if pos < n and text[pos] == close:
                    pos += 1
                    break
                if c == "{":
                    key = value(depth + 1)
                    skip()
                    if pos >= n or text[pos] != ":":
                        raise NpyHeaderError(f"expected ':' at {pos}")
                    pos += 1
                    pairs.append((key, value(depth + 1)))
                else:
                    items.append(value(depth + 1))
                skip()
                trailing_comma = False
                if pos < n and text[pos] == ",":
                    pos += 1
                    trailing_comma = True
                    continue
                skip()
                if pos < n and text[pos] == close:
                    pos += 1
                    break
                raise NpyHeaderError(f"expected ',' or {close!r} at {pos}")
            if c == "{":
                out = {}
                for k, v in pairs:
                    if isinstance(k, (list, dict)):
                        raise NpyHeaderError("unhashable dict key")
                    out[k] = v
                return out
            if c == "[":
                return items
            return tuple(items) if (len(items) != 1 or trailing_comma) else items[0]
        if c in "'\"":
            return string()
        if c.isdigit() or c in "+-":
            start = pos
            pos += 1
            while pos < n and (text[pos].isdigit() or text[pos] == "_"):
                pos += 1
            try:
                return int(text[start:pos])
            except ValueError:
                raise NpyHeaderError(f"bad number at {start}") from None
        start = pos
        while pos < n and (text[pos].isalnum() or text[pos] == "_"):
            pos += 1
        word = text[start:pos]
        if word in _LITERAL_NAMES:
            return _LITERAL_NAMES[word]
        raise NpyHeaderError(f"not a literal at {start}: {text[start:start + 20]!r}")

    def string() -> str:
        nonlocal pos
        quote = text[pos]
        pos += 1
        out: List[str] = []
        while pos < n:
            c = text[pos]
            if c == quote:
                pos += 1
                return "".join(out)
            if c == "\\" and pos + 1 < n:
                nxt = text[pos + 1]
                out.append({"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}.get(nxt, "\\" + nxt))
                pos += 2
                continue
            if c == "\n":
                break
            out.append(c)
            pos += 1
        raise NpyHeaderError("unterminated string in header")

    result = value(0)
    skip()
    if pos != n:
        raise NpyHeaderError(f"unexpected text after the literal at {pos}")
    return result


def descr_has_object(descr: Any) -> bool:
    """True when an object ('O') type appears anywhere in a descr (plain or structured, nested)."""
    if isinstance(descr, str):
        m = _TYPESTR.match(descr.strip())
        return bool(m and m.group(2) == "O") or descr.strip() in ("object", "O")
    if isinstance(descr, (list, tuple)):
        return any(descr_has_object(item) for item in descr)
    return False


def itemsize(descr: Any) -> int:
    """Bytes per element of a descr (a type string or a structured list of fields)."""
    if isinstance(descr, str):
        m = _TYPESTR.match(descr.strip())
        if not m:
            return _named_itemsize(descr)
        kind, digits = m.group(2), m.group(3)
        if kind == "U":
            return 4 * int(digits or 0)
        if digits:
            return int(digits)
        if kind in ("S", "V", "a"):
            return 0
        return _CHAR_SIZES[kind]
    if isinstance(descr, list):
        total = 0
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise NpyHeaderError(f"bad structured field {field!r}")
            count = 1
            if len(field) == 3:
                shape = field[2] if isinstance(field[2], tuple) else (field[2],)
                for dim in shape:
                    if not isinstance(dim, int) or dim < 0:
                        raise NpyHeaderError(f"bad field shape {field[2]!r}")
                    count *= dim
            total += itemsize(field[1]) * count
        return total
    raise NpyHeaderError(f"unsupported descr {descr!r}")


def _named_itemsize(name: str) -> int:
    """Sizes of dtype names like ``float64`` (numpy's writer never uses them, other writers might)."""
    m = re.match(r"^(?:float|int|uint|complex)(\d+)$", name)
    if m:
        return int(m.group(1)) // 8
    if name in ("bool", "int8", "uint8"):
        return 1
    raise NpyHeaderError(f"unknown dtype {name!r}")


def parse_header(source: ByteSource) -> "tuple[dict[str, Any], int, int]":
    """(header dict, version, offset of the array data). Raises :class:`NpyHeaderError`."""
    fixed = source.read_at(0, 12)
    if len(fixed) < 10 or fixed[:6] != MAGIC:
        raise NpyHeaderError("no .npy magic")
    major, minor = fixed[6], fixed[7]
    if major == 1:
        (hlen,), start = struct.unpack_from("<H", fixed, 8), 10
    elif major in (2, 3) and len(fixed) >= 12:
        (hlen,), start = struct.unpack_from("<I", fixed, 8), 12
    else:
        raise NpyHeaderError(f"unsupported format version {major}.{minor}")
    if minor != 0:
        raise NpyHeaderError(f"unsupported format version {major}.{minor}")
    if hlen > MAX_HEADER:
        raise NpyHeaderError(f"header of {hlen} bytes is larger than the {MAX_HEADER}-byte limit")
    raw = source.read_at(start, hlen)
    if len(raw) != hlen:
        raise NpyHeaderError("header is truncated")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
    except UnicodeDecodeError as exc:
        raise NpyHeaderError(f"header is not UTF-8: {exc}") from exc
    header = parse_literal(text)
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyHeaderError("header must be a dict with exactly descr, fortran_order and shape: "
                             f"{text!r:.200}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise NpyHeaderError(f"bad shape {shape!r}")
    if not isinstance(header["fortran_order"], bool):
        raise NpyHeaderError(f"bad fortran_order {header['fortran_order']!r}")
    return header, major, start + hlen


class NpyReader(FormatReader):
    """``.npy`` arrays: object arrays' pickles are scanned; trailing bytes are reported."""

    name = "npy"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        # Any version: an unknown one is reported as unparseable rather than passed over.
        return head[:6] == MAGIC

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        try:
            header, version, data_start = parse_header(source)
        except NpyHeaderError as exc:
            ctx.report("unscanned-parse-error", f".npy header: {exc}", offset=0)
            return
        descr = header["descr"]
        if descr_has_object(descr):
            ctx.report("npy-object-array",
                       f"object array (descr {descr!r}): the data from offset {data_start} is a pickle, "
                       "loaded only with np.load(allow_pickle=True); it was scanned",
                       offset=data_start, details={"descr": repr(descr), "version": version})
            self._scan_object_data(source, ctx, data_start)
            return
        try:
            size = itemsize(descr)
        except NpyHeaderError as exc:
            ctx.report("unscanned-parse-error", f".npy header: {exc}", offset=0)
            return
        count = 1
        for dim in header["shape"]:
            count *= dim
        end = data_start + count * size
        if end > source.size:
            ctx.report("unscanned-parse-error",
                       f"array data is truncated: shape {header['shape']} of {descr!r} needs {count * size} "
                       f"bytes from offset {data_start}, the file has {source.size - data_start}",
                       offset=data_start)
        elif end < source.size:
            self._trailing(source, ctx, end)

    def _scan_object_data(self, source: ByteSource, ctx: ScanContext, data_start: int) -> None:
        from .pickle import scan_pickle_at

        result = scan_pickle_at(source, ctx, data_start)
        if result.complete and result.end is not None and result.end < source.size:
            self._trailing(source, ctx, result.end)

    @staticmethod
    def _trailing(source: ByteSource, ctx: ScanContext, end: int) -> None:
        extra = source.size - end
        ctx.report("npy-trailing-data",
                   f"{extra} bytes follow the array data at offset {end}; np.load ignores them, they were "
                   "scanned", offset=end, details={"length": extra})
        member = f"<after array@{end}>"
        ctx.scan(SliceSource(source, end, extra, name=f"{source.name}:{member}"), member)


__all__ = ["NpyReader", "descr_has_object", "itemsize", "parse_header", "NpyHeaderError"]
