"""numpy dtype sizes computed without numpy, exactly or not at all.

A loader that reads raw array bytes (``np.load`` of a ``.npy`` / ``.npz`` member, joblib's
``NumpyArrayWrapper``) reads ``dtype.itemsize * size`` bytes and then goes on. A scanner that
skips a different number of bytes reads something else than the loader from there on: an
attacker chooses a dtype whose size we get wrong and hides a pickle behind it. So every size here
is either the one numpy computes or :class:`DtypeUnsure` (the caller fails closed, ``unscanned``).

Accepted forms (everything else is "unsure", never a guess):

* type strings: an optional byte order ``<>=|``, then a one-letter code with its explicit sizes
  (``f8``, ``i4``, ``b1`` ...), a sized flexible type (``S5``, ``U3``, ``V16``, ``a5``), a
  datetime (``M8[ns]``, ``m8[25s]``) or a platform-independent name (``float64``, ``bool`` ...);
* comma strings (``'i4,(2,3)f8'``) as numpy builds them: packed fields, or aligned with ``align``;
* ``.npy`` descrs as ``numpy.lib.format.descr_to_dtype`` reads them: a type string, a
  ``(descr, shape)`` tuple, or a list of ``(name, descr[, shape])`` fields with padding fields;
* a pickled dtype (``numpy.dtype(ctor, align, copy)`` then ``__setstate__(state)``), as
  ``_multiarray_umath``'s ``arraydescr_setstate`` applies the state.

Type codes whose size depends on the platform that loads the file (``l``, ``g``, ``p``, ``int``,
``longdouble`` ...) are unsure: the loading machine may not be this one. tests/test_npdtype.py
checks every form against ``numpy.dtype`` itself (numpy is a test dependency only).
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, List, Tuple


class DtypeUnsure(ValueError):
    """The dtype is not one whose size is certain to equal numpy's (or numpy rejects it)."""


class DType:
    """What a reader needs of a dtype: bytes per element, whether it holds Python objects, its
    alignment (for aligned structured dtypes) and ``kind``: ``S``/``U``/``V`` (their size is
    free) or the one-letter kind of a fixed-size type. (A plain class: a dataclass costs a
    compile at import, and this module is imported by every scan.)"""

    __slots__ = ("itemsize", "hasobject", "alignment", "kind")

    def __init__(self, itemsize: int, hasobject: bool, alignment: int, kind: str) -> None:
        self.itemsize = itemsize
        self.hasobject = hasobject
        self.alignment = alignment
        self.kind = kind

    def _key(self) -> Tuple[int, bool, int, str]:
        return (self.itemsize, self.hasobject, self.alignment, self.kind)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DType) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"DType(itemsize={self.itemsize}, hasobject={self.hasobject}, alignment={self.alignment}, "
                f"kind={self.kind!r})")


#: code -> (sizes accepted after it, size when no digits follow, alignment per size, kind).
#: Only codes whose sizes are the same on every platform numpy supports for loading: C ``long``,
#: ``long double`` and pointer-sized codes are left out (they differ between Linux and Windows,
#: x86 and arm).
_FIXED = {
    "b": ({1: "b1"}, 1),   # 'b' alone is int8, 'b1' is bool; both one byte
    "?": ({}, 1),
    "B": ({}, 1),
    "h": ({}, 2),
    "H": ({}, 2),
    "i": ({1: "", 2: "", 4: "", 8: ""}, 4),
    "I": ({}, 4),
    "u": ({1: "", 2: "", 4: "", 8: ""}, None),
    "q": ({}, 8),
    "Q": ({}, 8),
    "e": ({}, 2),
    "f": ({2: "", 4: "", 8: ""}, 4),
    "d": ({}, 8),
    "F": ({}, 8),
    "D": ({}, 16),
    "c": ({8: "", 16: ""}, None),   # 'c' alone is S1 (handled below)
    "O": ({8: ""}, 8),
}
#: Kind letter numpy reports for each code (for alignment of complex types: half their size).
_NAMES = {
    "bool": ("?", 1), "int8": ("i", 1), "uint8": ("u", 1), "int16": ("i", 2), "uint16": ("u", 2),
    "int32": ("i", 4), "uint32": ("u", 4), "int64": ("i", 8), "uint64": ("u", 8),
    "float16": ("f", 2), "float32": ("f", 4), "float64": ("f", 8), "half": ("f", 2), "single": ("f", 4),
    "double": ("f", 8), "complex64": ("c", 8), "complex128": ("c", 16), "object": ("O", 8),
    "byte": ("i", 1), "ubyte": ("u", 1), "short": ("i", 2), "ushort": ("u", 2), "intc": ("i", 4),
    "uintc": ("u", 4), "longlong": ("i", 8), "ulonglong": ("u", 8), "csingle": ("c", 8),
    "cdouble": ("c", 16), "bool_": ("?", 1), "object_": ("O", 8), "float_": None, "int_": None,
}
_CODE_KIND = {"b": "i", "?": "?", "B": "u", "h": "i", "H": "u", "i": "i", "I": "u", "u": "u", "q": "i",
              "Q": "u", "e": "f", "f": "f", "d": "f", "F": "c", "D": "c", "c": "c", "O": "O"}
_DATETIME_UNITS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as")
_SIMPLE = re.compile(r"([<>=|]?)([A-Za-z?])(\d*)(\[[^\]]*\])?\Z")
#: Flexible sizes beyond this are left to the caller's limits, not to a size computation.
_MAX_FLEX = 1 << 40


def _fixed(kind: str, size: int) -> DType:
    align = size // 2 if kind == "c" else size
    return DType(size, kind == "O", min(align, 16) if kind != "O" else 8, kind)


def _simple(text: str) -> DType:
    """One type string without commas or a subarray prefix."""
    if text in _NAMES:
        named = _NAMES[text]
        if named is None:
            raise DtypeUnsure(f"dtype name {text!r} is platform dependent or removed in numpy 2")
        return _fixed(*named)
    m = _SIMPLE.match(text)
    if not m:
        raise DtypeUnsure(f"dtype {text!r} is not a form whose size is known here")
    order, code, digits, unit = m.groups()
    if unit is not None and code not in "Mm":
        raise DtypeUnsure(f"dtype {text!r}: a [unit] only follows M or m")
    if digits and (len(digits) > 1 and digits[0] == "0"):
        raise DtypeUnsure(f"dtype {text!r}: leading zeros in the size")
    if code in "SaUV":
        if code == "a" and not digits:
            raise DtypeUnsure("dtype 'a' without a size")
        if order in "<>=" and code in "SVa" and order:
            pass  # numpy ignores the byte order of byte strings and void
        n = int(digits) if digits else 0
        if n > _MAX_FLEX:
            raise DtypeUnsure(f"dtype {text!r}: size beyond {_MAX_FLEX}")
        if code == "U":
            return DType(4 * n, False, 4, "U")
        return DType(n, False, 1, "S" if code in "Sa" else "V")
    if code in "Mm":
        if digits not in ("", "8") or (unit is not None and digits != "8"):
            raise DtypeUnsure(f"dtype {text!r}: datetimes are 8 bytes ('M8[unit]')")
        if unit is not None:
            um = re.match(r"\[(\d*)([A-Za-z]+)\]\Z", unit)
            if not um or um.group(2) not in _DATETIME_UNITS or (um.group(1)[:1] == "0"):
                raise DtypeUnsure(f"dtype {text!r}: datetime unit not known here")
        return DType(8, False, 8, code)
    if code == "c" and not digits:
        return DType(1, False, 1, "S")  # 'c' is a one-character byte string
    entry = _FIXED.get(code)
    if entry is None:
        raise DtypeUnsure(f"dtype code {code!r} is platform dependent or not known here")
    sizes, default = entry
    if digits:
        size = int(digits)
        if size not in sizes:
            raise DtypeUnsure(f"dtype {text!r}: size {size} is not one numpy accepts for {code!r}")
        if code == "b":
            return _fixed("?", 1)
        return _fixed(_CODE_KIND[code], size)
    if default is None:
        raise DtypeUnsure(f"dtype {text!r} needs a size")
    return _fixed(_CODE_KIND[code], default)


def _subarray(base: DType, shape: Tuple[int, ...]) -> DType:
    if base.kind in "SUV" and base.itemsize == 0:
        # numpy.dtype(('V0', 2)) is V2: a count on an unsized type is its size. Not decided here.
        raise DtypeUnsure("subarray of an unsized flexible type")
    count = 1
    for dim in shape:
        count *= dim
    return DType(base.itemsize * count, base.hasobject, base.alignment, "V")


_PREFIX = re.compile(r"\s*(?:\(([\d,\s]*)\)|(\d+))\s*")


def _field(text: str) -> Tuple[DType, bool]:
    """A comma-string field: (dtype, whether it had a subarray prefix)."""
    m = _PREFIX.match(text)
    body = text.strip()
    if m and m.end() > 0 and (m.group(1) is not None or m.group(2) is not None):
        if m.group(1) is not None:
            inner = m.group(1).strip()
            parts = [p.strip() for p in inner.split(",")]
            if not inner or (len(parts) == 1 and not inner.endswith(",")) or "" in parts[:-1]:
                # '(2)i4' is deprecated (a warning now, an error later); '()i4' is unsure
                raise DtypeUnsure(f"subarray prefix {m.group(0).strip()!r} is not a plain tuple")
            dims = tuple(int(p) for p in parts if p)
        else:
            dims = (int(m.group(2)),)
        base = _simple(text[m.end():].strip())
        if base.kind in "SUV" and base.itemsize == 0:
            # numpy reads '2S' as 'S2' (a repeat count on an unsized string): not decided here
            raise DtypeUnsure(f"unsized flexible type after a count: {text!r}")
        return _subarray(base, dims), True
    return _simple(body), False


def from_string(text: str, align: bool = False) -> DType:
    """The dtype ``numpy.dtype(text, align)`` makes, or :class:`DtypeUnsure`."""
    if not isinstance(text, str):
        raise DtypeUnsure(f"dtype argument {text!r} is not a string")
    if re.search(r"\s", re.sub(r"\([^)]*\)", "", text)):
        raise DtypeUnsure(f"dtype {text!r}: white space (numpy accepts it in some places only)")
    if "," not in text:
        stripped = text.strip()
        if stripped != text:
            raise DtypeUnsure(f"dtype {text!r}: surrounding spaces")
        field, prefixed = _field(text)
        if prefixed and align:
            raise DtypeUnsure("aligned subarray string")
        return field
    parts = _split_fields(text)
    if parts[-1].strip() == "":
        parts = parts[:-1]  # numpy allows one trailing comma
    if not parts or any(not p.strip() for p in parts):
        raise DtypeUnsure(f"dtype {text!r}: empty field")
    fields = [_field(p)[0] for p in parts]
    if any(f.kind in "SUV" and f.itemsize == 0 for f in fields):
        raise DtypeUnsure(f"unsized flexible field in {text!r}")
    return _structure(fields, align)


def _split_fields(text: str) -> List[str]:
    """Split a comma string at the commas outside parentheses."""
    parts: List[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth != 0:
        raise DtypeUnsure(f"dtype {text!r}: unbalanced parentheses")
    parts.append(current)
    return parts


def _structure(fields: List[DType], align: bool) -> DType:
    offset = 0
    max_align = 1
    hasobject = False
    for f in fields:
        if align:
            a = f.alignment
            offset = (offset + a - 1) // a * a
            max_align = max(max_align, a)
        offset += f.itemsize
        hasobject = hasobject or f.hasobject
    if align:
        offset = (offset + max_align - 1) // max_align * max_align
    return DType(offset, hasobject, max_align if align else 1, "V")


def _shape(value: Any) -> Tuple[int, ...]:
    if isinstance(value, bool):
        raise DtypeUnsure("boolean subarray shape")
    if isinstance(value, int):
        return (value,) if value >= 0 else _bad(f"negative subarray dimension {value}")
    if isinstance(value, tuple) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                         for d in value):
        return value
    raise DtypeUnsure(f"subarray shape {value!r} is not a tuple of non-negative ints")


def _bad(message: str) -> Tuple[int, ...]:
    raise DtypeUnsure(message)


def from_descr(descr: Any, depth: int = 0) -> DType:
    """The dtype ``numpy.lib.format.descr_to_dtype(descr)`` makes for an ``.npy`` header, or unsure."""
    if depth > 32:
        raise DtypeUnsure("descr nests too deeply")
    if isinstance(descr, str):
        if "," in descr or descr.strip() != descr or _PREFIX.match(descr) is not None:
            raise DtypeUnsure(f"descr string {descr!r} is not a single type")
        return _simple(descr)
    if isinstance(descr, tuple):
        if len(descr) != 2:
            raise DtypeUnsure(f"descr tuple {descr!r} is not (type, shape)")
        base = from_descr(descr[0], depth + 1)
        shape = _shape(descr[1])
        if shape == () or shape == (1,) and isinstance(descr[1], int):
            raise DtypeUnsure(f"subarray shape {descr[1]!r}: numpy's handling differs by version")
        return _subarray(base, shape)
    if not isinstance(descr, list):
        raise DtypeUnsure(f"descr {descr!r} is neither a string, a tuple nor a list")
    fields: List[DType] = []
    names: List[Any] = []
    total = 0
    for field in descr:
        if not isinstance(field, tuple) or len(field) not in (2, 3):
            raise DtypeUnsure(f"structured field {field!r} is not (name, type[, shape])")
        name = field[0]
        dt = from_descr(field[1], depth + 1)
        if len(field) == 3:
            shape = _shape(field[2])
            if shape == () or shape == (1,) and isinstance(field[2], int):
                raise DtypeUnsure(f"field shape {field[2]!r}: numpy's handling differs by version")
            dt = _subarray(dt, shape)
        is_pad = name == "" and dt.kind == "V" and len(field) == 2 and isinstance(field[1], str)
        if not is_pad:
            if isinstance(name, tuple):
                if len(name) != 2 or not all(isinstance(n, str) for n in name):
                    raise DtypeUnsure(f"field title/name {name!r}")
                names.extend([name[1], name[0]])
            elif isinstance(name, str) and name:
                names.append(name)
            else:
                raise DtypeUnsure(f"field name {name!r}")
            fields.append(dt)
        total += dt.itemsize
    if len(set(names)) != len(names):
        raise DtypeUnsure("repeated field names or titles")
    return DType(total, any(f.hasobject for f in fields), 1, "V")


class PickledDtype:
    """A ``numpy.dtype`` built in a pickle: its constructor arguments (``ctor``, ``align``) and the
    state BUILD set (``state``; ``has_state`` False when no BUILD followed)."""

    __slots__ = ("ctor", "align", "state", "has_state")

    def __init__(self, ctor: Any, align: Any = False, state: Any = None, has_state: bool = False) -> None:
        self.ctor = ctor
        self.align = align
        self.state = state
        self.has_state = has_state


def from_pickled(dtype: PickledDtype, nested: Callable[[Any], DType]) -> DType:
    """The dtype numpy rebuilds from ``dtype(ctor, align, copy)`` + ``__setstate__(state)``.

    ``nested`` resolves the dtype objects found inside a state (structured fields, a subarray
    base); it raises :class:`DtypeUnsure` for anything it cannot resolve.
    """
    if isinstance(dtype.align, bool):
        align = dtype.align
    elif dtype.align in (0, 1) and not isinstance(dtype.align, bool):
        align = bool(dtype.align)
    else:
        raise DtypeUnsure(f"align argument {dtype.align!r}")
    base = from_string(dtype.ctor, align)
    if not dtype.has_state:
        return base
    state = dtype.state
    if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4) \
            or isinstance(state[0], bool) or (state[0] == 4) != (len(state) == 9):
        raise DtypeUnsure("dtype state is not the version 3 or 4 tuple numpy writes")
    _, order, subarray, names, fields, elsize, alignment, flags = state[:8]
    if not isinstance(order, str) or order not in ("<", ">", "|", "="):
        raise DtypeUnsure(f"dtype state byte order {order!r}")
    for value in (elsize, alignment, flags):
        if not isinstance(value, int) or isinstance(value, bool):
            raise DtypeUnsure("dtype state sizes are not integers")
    # A version 4 state ends with metadata (a datetime's unit). It never changes the size, but
    # numpy refuses a datetime state without a unit it knows: only numpy's own form is sure.
    if base.kind in "Mm":
        meta = state[8] if len(state) == 9 else None
        unit = meta[1] if isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple) else None
        if not (unit is not None and len(unit) == 4 and isinstance(unit[0], bytes)
                and unit[0].decode("latin-1") in _DATETIME_UNITS + ("generic",)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in unit[1:])
                and unit[1] >= 1 and unit[2:] == (1, 1) and (meta[0] is None or isinstance(meta[0], dict))):
            raise DtypeUnsure("datetime dtype state without numpy's (metadata, (unit, num, 1, 1))")
    if base.kind not in "SUV" and bool(flags & 1) != base.hasobject:
        # numpy copies the "holds objects" flag (NPY_ITEM_REFCOUNT) from the state: an 'f8' whose
        # state says so is read by joblib as an inline pickle. Not decided here.
        raise DtypeUnsure("dtype state flags disagree with the type about holding objects")
    if base.kind not in "SUV":
        # Fixed-size types: numpy keeps the constructor's size whatever the state says; a state
        # with fields or a subarray is not what numpy writes for them.
        if subarray is not None or names is not None or fields is not None:
            raise DtypeUnsure("fixed-size dtype with structure in its state")
        return base
    if elsize < 0 or elsize > _MAX_FLEX:
        raise DtypeUnsure(f"flexible dtype state size {elsize}")
    if flags & 1 and base.kind in "SU":
        raise DtypeUnsure("string dtype state flags say it holds objects")
    if base.kind in "SU":
        if subarray is not None or names is not None or fields is not None:
            raise DtypeUnsure("string dtype with structure in its state")
        return DType(elsize, False, base.alignment, base.kind)
    # Void: plain, a subarray, or structured. The size is the state's.
    hasobject = False
    if subarray is not None:
        if names is not None or fields is not None:
            raise DtypeUnsure("dtype state with both a subarray and fields")
        if not isinstance(subarray, tuple) or len(subarray) != 2:
            raise DtypeUnsure("subarray state is not (dtype, shape)")
        sub = nested(subarray[0])
        shape = _shape(subarray[1])
        count = 1
        for dim in shape:
            count *= dim
        if sub.itemsize * count != elsize:
            raise DtypeUnsure("subarray state size does not match its base and shape")
        hasobject = sub.hasobject
    elif names is not None or fields is not None:
        if not isinstance(names, tuple) or not isinstance(fields, dict) or len(names) != len(fields) \
                or not all(isinstance(n, str) for n in names) or set(names) != set(fields):
            raise DtypeUnsure("structured dtype state: names and fields do not agree")
        for name in names:
            info = fields[name]
            if not isinstance(info, tuple) or len(info) not in (2, 3):
                raise DtypeUnsure(f"structured dtype state: field {name!r}")
            sub = nested(info[0])
            offset = info[1]
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 \
                    or offset + sub.itemsize > elsize:
                raise DtypeUnsure(f"structured dtype state: field {name!r} lies outside the item")
            hasobject = hasobject or sub.hasobject
    if bool(flags & 1) != hasobject:
        # numpy takes a void dtype's "holds objects" flag from the state (NPY_ITEM_REFCOUNT); a
        # state that disagrees with its own fields is not decided here.
        raise DtypeUnsure("dtype state flags and fields disagree about holding objects")
    return DType(elsize, hasobject, base.alignment, "V")


__all__ = ["DType", "DtypeUnsure", "PickledDtype", "from_descr", "from_pickled", "from_string"]
