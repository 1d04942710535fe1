"""Legacy ``torch.save(..., _use_new_zipfile_serialization=False)`` files, and interleaved streams.

Layout (``torch/serialization.py _legacy_save``): five pickles back to back (the magic number,
the protocol version 1001, ``sys_info``, the main object whose persistent ids
``('storage', type, key, location, numel, view)`` name the storages, and the list of storage
keys), then per key, in that list's order, a little-endian u64 element count and
``count * element_size`` raw bytes. ``torch.load`` unpickles all five pickles, so all five are
scanned (a payload in the 4th was missed by scanners reading only the first); raw regions are
skipped by their recorded sizes; any byte the layout does not account for is carved for pickle
streams, which are scanned.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..context import ScanContext
from ..findings import Severity
from ..source import ByteSource
from .interface import FormatReader

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_MAGIC_LONG1 = b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little") + b"."
#: The magic pickle: protocol 2+ (optionally framed) LONG1, or protocol 0/1 text.
_MAGIC_RE = re.compile(rb"\A(?:\x80[\x02-\x05](?:\x95.{8})?" + re.escape(_MAGIC_LONG1) +
                       rb"|L" + str(MAGIC_NUMBER).encode() + rb"L?\n\.)", re.S)

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
#: Pickle starts looked for in unaccounted bytes (protocol 2+ header, or protocol 0 GLOBAL).
_CARVE_RE = re.compile(rb"\x80[\x02-\x05]|c[A-Za-z_][\w.]{0,200}\n[A-Za-z_][\w.]{0,200}\n")
_CARVE_CHUNK = 1 << 20
_CARVE_OVERLAP = 512


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


def _trial_scan(source: ByteSource, ctx: ScanContext, offset: int,
                end: Optional[int] = None, rule_id: str = "torch-unaccounted-bytes") -> Optional[int]:
    """Scan a pickle that *may* start at ``offset`` without reporting noise.

    The stream is first walked in a private context; its findings are kept when it is a complete
    pickle or when it shows something blocking before it broke (a payload then garbage). Returns
    the offset after its STOP when complete, else None.
    """
    from .pickle import looks_like_pickle, scan_pickle_at

    if not looks_like_pickle(source, offset):
        return None
    trial = ctx.isolated()
    result = scan_pickle_at(source, trial, offset, end)
    blocking = any(f.severity >= Severity.HIGH and not f.unscanned for f in trial.findings)
    ctx.adopt(trial, keep_findings=result.complete or blocking)
    if result.complete or blocking:
        ctx.report(rule_id, f"a pickle stream starts at offset {offset}, outside the file's recorded "
                   "layout; it was scanned", offset=offset)
    return result.end if result.complete else None


def carve(source: ByteSource, ctx: ScanContext, start: int, end: int,
          rule_id: str = "torch-unaccounted-bytes") -> None:
    """Look for pickle streams in ``source[start:end]`` (bytes no structure accounts for).

    Each one found is scanned and reported under ``rule_id`` (where it sits) besides its findings.
    """
    if end <= start:
        return
    limit = ctx.limits.max_in_memory_bytes
    if end - start > limit:
        ctx.report("unscanned-limit",
                   f"{end - start} unaccounted bytes from offset {start}: only the first {limit} were "
                   "searched for pickle streams", offset=start, details={"limit": "max_in_memory_bytes"})
        end = start + limit
    pos = start
    while pos < end:
        ctx.check_deadline()
        chunk = source.read_at(pos, min(_CARVE_CHUNK + _CARVE_OVERLAP, end - pos))
        if not chunk:
            break
        advanced_to = pos + min(_CARVE_CHUNK, len(chunk))
        skip_until = pos
        for m in _CARVE_RE.finditer(chunk):
            at = pos + m.start()
            if at >= advanced_to:
                break
            if at < skip_until:
                continue  # inside a pickle already scanned
            stop = _trial_scan(source, ctx, at, end, rule_id)
            if stop is not None:
                skip_until = stop
                if stop > advanced_to:
                    advanced_to = stop
                    break
        pos = advanced_to


class TorchLegacyReader(FormatReader):
    """The five pickles and the raw storages of a legacy ``torch.save`` file."""

    name = "torch-legacy"
    supersedes = frozenset({"pickle"})

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return _MAGIC_RE.match(head) is not None

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        from .pickle import scan_pickle_at

        pos = 0
        results = []
        for index in range(5):
            ctx.check_deadline()
            result = scan_pickle_at(source, ctx, pos)
            results.append(result)
            if not result.complete or result.end is None:
                # The VM reported the break; what follows cannot be placed: carve it.
                carve(source, ctx, pos + 1, source.size)
                return
            pos = result.end
            if index == 1 and result.value not in (None, PROTOCOL_VERSION):
                ctx.report("unscanned-parse-error",
                           f"protocol version {result.value!r} is not {PROTOCOL_VERSION}; torch refuses "
                           "the file, the rest was carved for pickles", offset=results[1].start)
                carve(source, ctx, pos, source.size)
                return
        storages = storages_from_persistent_ids(results[3].persistent_ids)
        keys = results[4].value
        if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
            ctx.report("unscanned-parse-error",
                       "the storage-keys pickle is not a list of strings; the raw storage area could not "
                       "be laid out and was carved for pickles", offset=results[4].start)
            carve(source, ctx, pos, source.size)
            return
        end, problem = self._skip_storages(source, pos, list(keys), storages)
        if end is None:
            ctx.report("unscanned-parse-error",
                       f"raw storages from offset {pos}: {problem}; torch.load reads each as an 8-byte count "
                       "and count * element size bytes, and that layout could not be followed exactly. The "
                       "area was carved for pickles", offset=pos)
            carve(source, ctx, pos, source.size)
            return
        if end < source.size:
            ctx.report("torch-unaccounted-bytes",
                       f"{source.size - end} bytes follow the last storage at offset {end}; torch.load "
                       "ignores them, they were searched for pickle streams", offset=end,
                       details={"length": source.size - end})
            carve(source, ctx, end, source.size)

    @staticmethod
    def _skip_storages(source: ByteSource, pos: int, keys: List[str],
                       storages: Dict[str, Tuple[Optional[int], Optional[int]]]) -> Tuple[Optional[int], str]:
        """(end of the raw storage area, "") as torch reads it, or (None, why) when it cannot be
        followed exactly: for each key in order, a little-endian u64 element count that must equal
        the persistent id's numel, then count * element size bytes (the size from the storage type).
        No size is guessed."""
        for key in keys:
            if key not in storages:
                return None, f"storage key {key!r} has no persistent id (torch fails on it)"
            elem, numel = storages[key]
            if elem is None:
                return None, f"the type of storage {key!r} is not one whose element size is known"
            raw = source.read_at(pos, 8)
            if len(raw) != 8:
                return None, f"the file ends before the count of storage {key!r}"
            count = struct.unpack("<Q", raw)[0]
            if numel is not None and count != numel:
                return None, f"storage {key!r} records {count} elements, its persistent id {numel}"
            pos += 8 + count * elem
            if pos > source.size:
                return None, f"storage {key!r} runs past the end of the file"
        return pos, ""


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
    from .pickle import _maybe_literal, scan_pickle_at

    pos = 0

    def next_pickle(what: str) -> Any:
        nonlocal pos
        result = scan_pickle_at(source, ctx, pos)
        if not result.complete or result.end is None:
            raise _RecordsBroken(pos, f"the {what} pickle is broken", reported=True)
        pos = result.end
        return _maybe_literal(result.top, keep_globals=True)

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


def scan_interleaved(source: ByteSource, ctx: ScanContext) -> None:
    """A stream of pickles mixed with binary records of unknown layout: the first pickle is
    scanned as such; the rest is carved, so every pickle is scanned while the binary records
    between them produce no noise. (Legacy torch tars use :func:`scan_legacy_tar_member`.)"""
    from .pickle import scan_pickle_at

    result = scan_pickle_at(source, ctx, 0)
    start = result.end if result.complete and result.end is not None else 1
    pos = start
    while pos < source.size:
        ctx.check_deadline()
        chunk = source.read_at(pos, min(_CARVE_CHUNK, source.size - pos))
        m = _CARVE_RE.search(chunk)
        if m is None:
            pos += max(1, len(chunk) - _CARVE_OVERLAP)
            if len(chunk) < _CARVE_CHUNK:
                break
            continue
        at = pos + m.start()
        stop = _scan_quiet(source, ctx, at)
        pos = stop if stop is not None else at + 1


def _scan_quiet(source: ByteSource, ctx: ScanContext, offset: int) -> Optional[int]:
    """Like :func:`_trial_scan` but a complete pickle here is expected (no unaccounted finding)."""
    from .pickle import looks_like_pickle, scan_pickle_at

    if not looks_like_pickle(source, offset):
        return None
    trial = ctx.isolated()
    result = scan_pickle_at(source, trial, offset)
    ctx.adopt(trial, keep_findings=result.complete or any(
        f.severity >= Severity.HIGH and not f.unscanned for f in trial.findings))
    return result.end if result.complete else None
