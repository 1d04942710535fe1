"""Protocol-0 number arguments, exactly as the two unpicklers read them."""

from __future__ import annotations

import re

from .values import _HugeInt

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Optional, Tuple

# Protocol-0 number arguments, exactly as the two unpicklers read them. A stream must be walked to
# its STOP whenever EITHER of them would load it (torch and numpy use the C ``_pickle``, joblib uses
# ``pickle._Unpickler``), so each parser accepts the union of the two and rejects the rest:
#
# - ``pickle._Unpickler``: ``int(line, 0)`` (INT, LONG), ``int(line)`` (GET, PUT), ``float(line)``
#   (FLOAT) on the bytes of the line: whitespace around, a sign, underscores between digits.
# - ``_pickle``: the line is a C string, so it ends at its first NUL byte; INT tries ``strtol(s, 0)``
#   first (C syntax: a leading 0 means octal, no underscores) and then ``PyLong_FromString(s, 0)``;
#   LONG, GET, PUT use ``PyLong_FromString`` (base 0, 10, 10); FLOAT uses
#   ``PyOS_string_to_double`` (no whitespace, no underscores, an overflow is an error).
#
# Values of lines longer than :data:`_SHORT_NUMBER` are not computed (decimal conversion is quadratic
# and the 4300-digit limit of Python >= 3.11 is off in some loaders): their syntax is checked with
# the same grammar and the value is opaque.

_SHORT_NUMBER = 4000


class _LazyRegex:
    """A pattern compiled when first used: only unusual lines need these, and every scan process
    would otherwise pay for compiling them at start-up."""

    def __init__(self, pattern: bytes, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: Optional["re.Pattern[bytes]"] = None

    def match(self, text: bytes) -> Optional["re.Match[bytes]"]:
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return self._compiled.match(text)


_WS = rb"[ \t\n\r\x0b\x0c]*"
#: ``int(text, 0)`` / ``PyLong_FromString(text, NULL, 0)``.
_PY_INT0 = _LazyRegex(_WS + rb"[+-]?(?:0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|0(?:_?0)*"
                      rb"|[1-9](?:_?[0-9])*)" + _WS + rb"\Z")
#: ``int(text)`` / ``PyLong_FromString(text, NULL, 10)``.
_PY_INT10 = _LazyRegex(_WS + rb"[+-]?[0-9](?:_?[0-9])*" + _WS + rb"\Z")
#: What C ``strtol(s, &end, 0)`` consumes entirely.
_C_STRTOL = _LazyRegex(_WS + rb"([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))\Z")
#: What ``PyOS_string_to_double`` consumes entirely.
_C_FLOAT = _LazyRegex(rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\Z",
                      re.IGNORECASE)
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INF = float("inf")


def _c_string(line: bytes) -> bytes:
    """The line as ``_pickle`` sees it: a C string ends at its first NUL."""
    nul = line.find(b"\0")
    return line if nul < 0 else line[:nul]


def _py_int0(text: bytes) -> Any:
    """``int(text, 0)``; ValueError when invalid."""
    if len(text) <= _SHORT_NUMBER:  # under the 4300-digit limit: int() decides
        return int(text, 0)
    if _PY_INT0.match(text) is None:
        raise ValueError("invalid integer literal")
    return _HugeInt()


def _parse_int_line(line: bytes, c_too: bool = True) -> Tuple[Any, bool]:
    """(value INT pushes, whether pickle.py reads it); ValueError when neither unpickler reads it.

    ``c_too`` False: only ``pickle._Unpickler`` is still reading (the C one failed on a FRAME that
    runs past the end of the data), so only its forms count. The same for the other parsers.
    """
    if line == b"00":
        return False, True
    if line == b"01":
        return True, True
    try:
        return _py_int0(line), True  # pickle._Unpickler
    except ValueError:
        if not c_too:
            raise
    return _c_int(line), False


def _c_int(line: bytes) -> Any:
    """INT as _pickle reads it: strtol, then PyLong_FromString, on the C string."""
    text = _c_string(line)
    if not text:
        if line:  # "\0...": strtol reads no digit and stops at the terminating NUL: 0
            return 0
        raise ValueError("empty INT argument")
    m = _C_STRTOL.match(text)
    if m is not None:
        sign, hexd, octd, decd = m.groups()
        digits = (hexd if hexd is not None else octd if octd is not None else decd).lstrip(b"0")
        if len(digits) > 24:  # past a C long whatever the base: strtol overflows
            return _py_int0(text)
        mag = int(hexd, 16) if hexd is not None else (int(octd, 8) if octd is not None else int(decd))
        value = -mag if sign == b"-" else mag
        if _LONG_MIN <= value <= _LONG_MAX:
            return bool(value) if len(line) == 2 and value in (0, 1) else value
    return _py_int0(text)  # out of range for a C long, or not C syntax


def _parse_long_line(line: bytes, c_too: bool = True) -> Tuple[Any, bool]:
    """(value LONG pushes, whether pickle.py reads it): one trailing 'L' dropped, then ``int(text,
    0)`` (C: up to a NUL)."""
    if line[-1:] == b"L":
        line = line[:-1]
    try:
        return _py_int0(line), True
    except ValueError:
        text = _c_string(line)
        if text is line or not c_too:
            raise
        return _py_int0(text), False


def _memo_index(line: bytes, c_too: bool = True) -> Tuple[Any, bool]:
    """(memo index of GET/PUT, whether pickle.py reads it): ``int(line)`` (C: up to a NUL). Huge
    indices are kept as text."""
    for text in (line, _c_string(line)) if c_too and b"\0" in line else (line,):
        if len(text) <= 64:
            try:
                return int(text), text is line
            except ValueError:
                continue
        if _PY_INT10.match(text) is not None:
            digits = text.strip().replace(b"_", b"")
            sign = b"-" if digits[:1] == b"-" else b""
            digits = digits.lstrip(b"+-").lstrip(b"0") or b"0"
            return (int(sign + digits) if len(digits) <= 64 else ("huge", sign + digits)), text is line
    raise ValueError("invalid memo index")


def _parse_float_line(line: bytes, c_too: bool = True) -> Tuple[float, bool]:
    """(value FLOAT pushes, whether pickle.py reads it); ValueError when neither unpickler reads it."""
    try:
        return float(line), True  # pickle._Unpickler
    except ValueError:
        if not c_too:
            raise
    text = _c_string(line)  # _pickle: strict syntax up to a NUL; an overflow is an error
    if text is line:
        raise ValueError("could not convert string to float")
    value = float(text) if _C_FLOAT.match(text) else None
    if value is None or not _c_float_ok(text, value):
        raise ValueError("could not convert string to float")
    return value, False


def _c_float_ok(text: bytes, value: float) -> bool:
    """Whether ``PyOS_string_to_double`` reads ``text`` (already read by float() as ``value``): strict
    syntax (no whitespace, no underscores), and no overflow to infinity."""
    if not _C_FLOAT.match(text):
        return False
    return not (value in (_INF, -_INF) and b"inf" not in text.lower())


def _py2_str(data: bytes) -> str:
    """STRING/BINSTRING values: str under the default ASCII decoding, latin-1 as a lossless stand-in."""
    return data.decode("latin-1")
