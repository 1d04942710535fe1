"""Legacy torch storage records: element sizes of storage types, the persistent ids that name
storages, and the ``storages`` / ``tensors`` members of a legacy torch tar.

A shared helper (the legacy torch reader and the tar reader use it), not a reader: it imports only
the context, the source and the carving helper, and reads pickles through the context.
"""

from __future__ import annotations

import struct

from ..context import ScanContext
from ..source import ByteSource
from .carve import carve

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional, Sequence, Tuple

#: Bytes per element of the classes a legacy persistent id may name as its storage type: torch's
#: loader reads ``torch._utils._element_size(storage_type.dtype)`` bytes per element, so these are
#: exactly the ``torch.<Name>`` classes with a ``dtype`` in torch 2.13 (tests/test_containers_claims
#: checks the table against torch). Anything else has no size known here: the file is unscanned.
STORAGE_ELEMENT_SIZES: Dict[str, int] = {
    "BFloat16Storage": 2, "BFloat16Tensor": 2, "BoolStorage": 1, "BoolTensor": 1, "ByteStorage": 1,
    "ByteTensor": 1, "CharStorage": 1, "CharTensor": 1, "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8, "DoubleStorage": 8, "DoubleTensor": 8, "FloatStorage": 4, "FloatTensor": 4,
    "HalfStorage": 2, "HalfTensor": 2, "IntStorage": 4, "IntTensor": 4, "LongStorage": 8, "LongTensor": 8,
    "QInt32Storage": 4, "QInt8Storage": 1, "QUInt2x4Storage": 1, "QUInt4x2Storage": 1, "QUInt8Storage": 1,
    "ShortStorage": 2, "ShortTensor": 2, "Storage": 4,
}


def _type_name(value: Any) -> Optional[str]:
    """The ``torch.<Name>`` class a persistent id names as its storage type (an imported global of
    module ``torch``), None for anything else (a string, another module: torch would fail or do
    something not modelled here)."""
    module = getattr(value, "module", None)
    name = getattr(value, "name", None)
    if module == "torch" and isinstance(name, str):
        return name
    return None


def storages_from_persistent_ids(pids: Sequence[Any]) -> Dict[str, Tuple[Optional[int], Optional[int]]]:
    """key -> (element size or None, numel or None) from ``('storage', type, key, loc, numel, ...)``."""
    out: Dict[str, Tuple[Optional[int], Optional[int]]] = {}
    for pid in pids:
        if not isinstance(pid, (tuple, list)) or len(pid) < 5 or pid[0] != "storage":
            continue
        key = pid[2]
        if not isinstance(key, str):
            continue
        name = _type_name(pid[1])
        size = STORAGE_ELEMENT_SIZES.get(name) if name else None
        numel = pid[4] if isinstance(pid[4], int) and pid[4] >= 0 else None
        out[key] = (size, numel)
    return out


#: Classes with a ``_dtype`` (what the legacy tar loader asks of a storage type): the storages.
TAR_STORAGE_TYPES = frozenset(name for name in STORAGE_ELEMENT_SIZES if name.endswith("Storage"))


class _RecordsBroken(Exception):
    def __init__(self, offset: int, reason: str, reported: bool = False) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.reported = reported


def scan_legacy_tar_member(source: ByteSource, ctx: ScanContext, kind: str) -> None:
    """The ``storages`` or ``tensors`` member of a legacy torch tar, walked as ``torch.load`` reads
    it (``torch/serialization.py`` ``legacy_load``): a pickled count, then per record a pickle and
    a binary part whose length the pickle and the bytes fix (``storages``: a u64 element count and
    count * element size bytes, the size from the storage class; ``tensors``: an int32 ndim, 4
    bytes, ndim sizes, ndim strides and an offset, 8 bytes each), and for ``storages`` a last
    pickle of views. Every pickle is scanned where torch reads it; where the layout cannot be
    followed exactly the rest is unscanned (and carved for pickles), never guessed."""
    pos = 0

    def next_pickle(what: str) -> Any:
        nonlocal pos
        result = ctx.scan_pickle_at(source, pos)
        if not result.complete or result.end is None:
            raise _RecordsBroken(pos, f"the {what} pickle is broken", reported=True)
        pos = result.end
        return ctx.pickle_literal(result.top, keep_globals=True)

    def read_int(fmt: str, what: str) -> int:
        nonlocal pos
        width = struct.calcsize(fmt)
        raw = source.read_at(pos, width)
        if len(raw) != width:
            raise _RecordsBroken(pos, f"the member ends inside {what}")
        pos += width
        return int(struct.unpack(fmt, raw)[0])

    try:
        count = next_pickle("record count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise _RecordsBroken(0, f"the record count is {count!r}, not a non-negative int")
        for index in range(count):
            ctx.check_deadline()
            args = next_pickle(f"record {index}")
            if not isinstance(args, (tuple, list)) or len(args) != 3:
                raise _RecordsBroken(pos, f"record {index} is not a 3-tuple")
            if kind == "storages":
                name = _type_name(args[2])
                if name not in TAR_STORAGE_TYPES:
                    raise _RecordsBroken(pos, f"storage {args[0]!r} has a type whose element size is not "
                                         "known")
                n = read_int("<Q", f"the element count of storage {args[0]!r}")
                pos += n * STORAGE_ELEMENT_SIZES[name]  # type: ignore[index]
            else:
                ndim = read_int("<i", f"the dimension count of tensor {args[0]!r}")
                if ndim < 0:
                    raise _RecordsBroken(pos, f"tensor {args[0]!r} has {ndim} dimensions")
                pos += 4 + 16 * ndim + 8
            if pos > source.size:
                raise _RecordsBroken(source.size, f"record {index} runs past the end of the member")
        if kind == "storages":
            next_pickle("storage views")
    except _RecordsBroken as exc:
        if not exc.reported:
            ctx.report("unscanned-parse-error",
                       f"legacy torch tar member {kind!r}: {exc.reason} at offset {exc.offset}; torch.load "
                       "reads it as pickles and raw records, and the layout could not be followed exactly. "
                       "The rest was carved for pickles", offset=exc.offset)
        carve(source, ctx, min(exc.offset + 1, source.size), source.size)
        return
    if pos < source.size:
        ctx.report("torch-unaccounted-bytes",
                   f"{source.size - pos} bytes follow the last record of {kind!r} at offset {pos}; "
                   "torch.load ignores them, they were searched for pickle streams", offset=pos,
                   details={"length": source.size - pos})
        carve(source, ctx, pos, source.size)
