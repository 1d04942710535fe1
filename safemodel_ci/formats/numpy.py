"""NumPy ``.npy`` arrays (also the members of ``.npz`` archives, which the zip reader hands over).

The header is read exactly as ``numpy.lib.format`` reads it (numpy 2.x ``_read_array_header``):
format versions 1.0 and 2.0 (latin-1 header, a 2- or 4-byte length) and 3.0 (UTF-8 header), the
text parsed with ``ast.literal_eval`` (which parses a literal and evaluates nothing), retried for
versions up to 2.0 after dropping Python 2 ``L`` suffixes as numpy's ``_filter_header`` does; a
dict with exactly ``descr``, ``fortran_order`` and ``shape``; ``shape`` a tuple of ints (bools are
ints to numpy too). The dtype and its item size come from :mod:`safemodel_ci.npdtype`
(``descr_to_dtype``'s rules, without numpy): where the size is not certain the file is
``unscanned``, never skipped by a guess. An object dtype means the data is a pickle, which
``np.load(allow_pickle=True)`` unpickles: it is scanned as one. Otherwise the data is
``prod(shape) * itemsize`` raw bytes, and anything after them is reported and scanned.
"""

from __future__ import annotations

import re
import struct

from ..context import ScanContext
from ..npdtype import DtypeUnsure, from_descr
from ..source import ByteSource, SliceSource
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Tuple

MAGIC = b"\x93NUMPY"
#: numpy refuses headers above 10000 characters unless allow_pickle is given (then any size); the
#: scanner reads up to this many bytes and reports larger ones as unscanned.
MAX_HEADER = 1 << 20
#: numpy's ``_header_size_info``: version -> (length field format, header encoding).
HEADER_FORMATS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}
_EXPECTED_KEYS = {"descr", "fortran_order", "shape"}
_TYPESTR = re.compile(r"^([<>|=]?)([?bBhHiIlLqQpPefdgFDGSUVOMmcaub])(\d*)(\[[a-zA-Z0-9]+\])?$")


class NpyHeaderError(ValueError):
    """The header is not what numpy accepts (or its size is not certain)."""


def descr_has_object(descr: Any) -> bool:
    """True when an object ('O') type appears anywhere in a descr (plain or structured, nested).

    Deliberately broad (any type string of kind O, sized or not): used to decide whether data may
    be a pickle when the exact dtype is not certain."""
    if isinstance(descr, str):
        m = _TYPESTR.match(descr.strip())
        return bool(m and m.group(2) == "O") or descr.strip() in ("object", "O") or "O" in descr
    if isinstance(descr, (list, tuple)):
        return any(descr_has_object(item) for item in descr)
    return False


def itemsize(descr: Any) -> int:
    """Bytes per element of a descr as ``numpy.lib.format.descr_to_dtype`` builds it (npdtype);
    :class:`NpyHeaderError` where that size is not certain."""
    try:
        return from_descr(descr).itemsize
    except DtypeUnsure as exc:
        raise NpyHeaderError(f"descr {descr!r:.200}: {exc}") from None


def _filter_header(text: str) -> str:
    """numpy's ``_filter_header``: drop the ``L`` after integers (headers written by Python 2)."""
    import io
    import tokenize

    tokens = []
    last_was_number = False
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if last_was_number and token[0] == tokenize.NAME and token[1] == "L":
            continue
        tokens.append(token)
        last_was_number = token[0] == tokenize.NUMBER
    return tokenize.untokenize(tokens)


#: Parsed headers by (text, version): the same few headers recur in every .npz and corpus.
_HEADER_MEMO: Dict[Tuple[str, Tuple[int, int]], Any] = {}


def _literal(text: str, version: Tuple[int, int]) -> Any:
    """``ast.literal_eval`` as numpy calls it (it parses a literal; nothing is evaluated).
    Results are remembered per text: literals of dicts, tuples, strings, numbers, which the
    readers copy before changing (they never do)."""
    key = (text, version)
    if key in _HEADER_MEMO:
        return _HEADER_MEMO[key]
    value = _literal_eval(text, version)
    if len(_HEADER_MEMO) < 4096 and len(text) < 4096:
        _HEADER_MEMO[key] = value
    return value


_INT = r"(?:0|[1-9][0-9]*)"
#: The header exactly as numpy writes it for a plain dtype (and nothing looser): a dict literal
#: that ast.literal_eval reads as {'descr': str, 'fortran_order': bool, 'shape': tuple of ints}.
#: Such headers are read without compiling (literal_eval compiles, ~50x the cost); any other text
#: goes to literal_eval itself.
_CANONICAL = re.compile(
    r"\{'descr': '([^'\\\n\r]*)', 'fortran_order': (True|False), 'shape': "
    r"\((|" + _INT + r",|" + _INT + r"(?:, " + _INT + r")+)\), \} *\n?\Z")


def _literal_eval(text: str, version: Tuple[int, int]) -> Any:
    m = _CANONICAL.match(text)
    if m is not None:
        descr, order, dims = m.groups()
        shape = tuple(int(d) for d in dims.replace(",", " ").split())
        return {"descr": descr, "fortran_order": order == "True", "shape": shape}
    import ast  # only for headers not in numpy's own form
    import tokenize

    try:
        return ast.literal_eval(text)
    except SyntaxError:
        if version > (2, 0):
            raise NpyHeaderError(f"cannot parse header: {text!r:.200}") from None
    except (ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise NpyHeaderError(f"header is not a literal: {exc}") from None
    try:
        return ast.literal_eval(_filter_header(text))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError, tokenize.TokenError) as exc:
        raise NpyHeaderError(f"cannot parse header: {exc}") from None


def parse_header(source: ByteSource) -> "tuple[Dict[str, Any], int, int]":
    """(header dict, major version, offset of the array data). Raises :class:`NpyHeaderError`."""
    fixed = source.read_at(0, 12)
    if len(fixed) < 8 or fixed[:6] != MAGIC:
        raise NpyHeaderError("no .npy magic")
    version = (fixed[6], fixed[7])
    info = HEADER_FORMATS.get(version)
    if info is None:
        raise NpyHeaderError(f"unsupported format version {version[0]}.{version[1]}")
    length_format, encoding = info
    width = struct.calcsize(length_format)
    if len(fixed) < 8 + width:
        raise NpyHeaderError("header length is truncated")
    (hlen,) = struct.unpack_from(length_format, fixed, 8)
    start = 8 + width
    if hlen > MAX_HEADER:
        raise NpyHeaderError(f"header of {hlen} bytes is larger than the {MAX_HEADER}-byte limit")
    raw = source.read_at(start, hlen)
    if len(raw) != hlen:
        raise NpyHeaderError("header is truncated")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise NpyHeaderError(f"header is not {encoding}: {exc}") from exc
    header = _literal(text, version)
    if not isinstance(header, dict) or set(header) != _EXPECTED_KEYS or len(header) != 3:
        raise NpyHeaderError("header must be a dict with exactly descr, fortran_order and shape: "
                             f"{text!r:.200}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        raise NpyHeaderError(f"bad shape {shape!r}")
    if any(d < 0 for d in shape):
        # numpy reads "everything left" for a negative count: not a size known here.
        raise NpyHeaderError(f"negative dimension in shape {shape!r}")
    if not isinstance(header["fortran_order"], bool):
        raise NpyHeaderError(f"bad fortran_order {header['fortran_order']!r}")
    return header, version[0], start + hlen


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
        try:
            dtype = from_descr(descr)
        except DtypeUnsure as exc:
            ctx.report("unscanned-parse-error",
                       f".npy header: the item size of descr {descr!r:.200} is not certain to equal numpy's "
                       f"({exc}); the data that follows was not laid out", offset=0,
                       details={"descr": repr(descr)[:200]})
            if descr_has_object(descr):
                self._scan_object_data(source, ctx, data_start)  # it may be a pickle: read it as one
            return
        if dtype.hasobject:
            ctx.report("npy-object-array",
                       f"object array (descr {descr!r}): the data from offset {data_start} is a pickle, "
                       "loaded only with np.load(allow_pickle=True); it was scanned",
                       offset=data_start, details={"descr": repr(descr), "version": version})
            self._scan_object_data(source, ctx, data_start)
            return
        size = dtype.itemsize
        count = 1
        for dim in header["shape"]:
            count *= int(dim)
        if count >= 1 << 63:
            ctx.report("unscanned-parse-error", f".npy shape {header['shape']} overflows numpy's int64 count",
                       offset=0)
            return
        end = data_start + count * size
        if end > source.size:
            ctx.report("unscanned-parse-error",
                       f"array data is truncated: shape {header['shape']} of {descr!r} needs {count * size} "
                       f"bytes from offset {data_start}, the file has {source.size - data_start}",
                       offset=data_start)
        elif end < source.size:
            self._trailing(source, ctx, end)

    def _scan_object_data(self, source: ByteSource, ctx: ScanContext, data_start: int) -> None:
        result = ctx.scan_pickle_at(source, data_start)
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


__all__ = ["NpyReader", "descr_has_object", "itemsize", "parse_header", "NpyHeaderError", "HEADER_FORMATS"]
