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
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

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

#: Bytes per element of the legacy storage classes (``torch.<Name>Storage``).
STORAGE_ELEMENT_SIZES: Dict[str, int] = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "QUInt8Storage": 1,
    "QInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
    "UntypedStorage": 1, "ByteTensor": 1,
}
#: Candidate element sizes when a storage's type cannot be read from its persistent id.
_ELEMENT_SIZES = (1, 2, 4, 8, 16)
#: Pickle starts looked for in unaccounted bytes (protocol 2+ header, or protocol 0 GLOBAL).
_CARVE_RE = re.compile(rb"\x80[\x02-\x05]|c[A-Za-z_][\w.]{0,200}\n[A-Za-z_][\w.]{0,200}\n")
_CARVE_CHUNK = 1 << 20
_CARVE_OVERLAP = 512


def _type_name(value: Any) -> Optional[str]:
    """Best-effort class name of a storage type as the pickle API renders a global."""
    if isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[1].rsplit(".", 1)[-1]
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name.rsplit(".", 1)[-1]
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
        # Persistent ids that hold a class are not literals; the storage classes the main pickle
        # imports still tell the element size when they all agree (the usual all-float checkpoint).
        sizes = {STORAGE_ELEMENT_SIZES[name] for module, name in results[3].globals
                 if module == "torch" and name in STORAGE_ELEMENT_SIZES}
        default_elem = sizes.pop() if len(sizes) == 1 else None
        keys = results[4].value
        if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
            ctx.report("unscanned-parse-error",
                       "the storage-keys pickle is not a list of strings; the raw storage area could not "
                       "be laid out and was carved for pickles", offset=results[4].start)
            carve(source, ctx, pos, source.size)
            return
        end = self._skip_storages(source, pos, list(keys), storages, default_elem, exact_end=True)
        if end is None:
            # Bytes after the storages (an appended payload) defeat the exact-end check: lay the
            # storages out anyway, smallest sizes first, so that whatever is left over is carved.
            end = self._skip_storages(source, pos, list(keys), storages, default_elem, exact_end=False)
        if end is None:
            ctx.report("unscanned-parse-error",
                       f"raw storages from offset {pos} do not match the {len(keys)} recorded storages; "
                       "the area was carved for pickles", offset=pos)
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
                       storages: Dict[str, Tuple[Optional[int], Optional[int]]],
                       default_elem: Optional[int], exact_end: bool) -> Optional[int]:
        """End of the raw storage area, or None when the recorded layout does not fit the bytes.

        Element sizes come from the storage types; when a type is unknown every plausible size is
        tried (depth-first) and the layout must land exactly on the next count or the end of file.
        """
        size = source.size

        def counts_at(offset: int) -> Optional[int]:
            raw = source.read_at(offset, 8)
            return struct.unpack("<Q", raw)[0] if len(raw) == 8 else None

        failed: Set[Tuple[int, int]] = set()
        budget = 100_000

        def options(i: int, offset: int) -> List[int]:
            """Offsets where storage ``i`` may end if it starts at ``offset``."""
            n = counts_at(offset)
            elem, numel = storages.get(keys[i], (None, None))
            elem = elem or default_elem
            if n is None or (numel is not None and n != numel):
                return []
            sizes = [elem] if elem else ([1] if n == 0 else list(_ELEMENT_SIZES))
            out = []
            for e in sizes:
                nxt = offset + 8 + n * e
                if nxt > size or (exact_end and i + 1 == len(keys) and elem is None and nxt != size):
                    continue
                out.append(nxt)
            return out

        # Depth-first over storages, iteratively (checkpoints hold thousands of storages).
        stack: List[Tuple[int, int, List[int]]] = [(0, pos, options(0, pos))] if keys else []
        if not keys:
            return pos
        while stack:
            budget -= 1
            if budget < 0:
                return None
            i, offset, pending = stack[-1]
            if not pending:
                failed.add((i, offset))
                stack.pop()
                continue
            nxt = pending.pop(0)
            if i + 1 == len(keys):
                return nxt
            if (i + 1, nxt) in failed:
                continue
            stack.append((i + 1, nxt, options(i + 1, nxt)))
        return None


def scan_interleaved(source: ByteSource, ctx: ScanContext) -> None:
    """A stream of pickles mixed with binary records (legacy tar ``storages`` / ``tensors``).

    The first pickle is scanned as such; the rest is carved, so every pickle is scanned while the
    binary records between them produce no noise.
    """
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
