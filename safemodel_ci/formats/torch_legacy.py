"""Legacy ``torch.save(..., _use_new_zipfile_serialization=False)`` files.

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

from ..context import ScanContext
from ..source import ByteSource
from .carve import carve
from .torch_storages import storages_from_persistent_ids
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, List, Optional, Tuple

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_MAGIC_LONG1 = b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little") + b"."
#: The magic pickle: protocol 2+ (optionally framed) LONG1, or protocol 0/1 text.
_MAGIC_RE = re.compile(rb"\A(?:\x80[\x02-\x05](?:\x95.{8})?" + re.escape(_MAGIC_LONG1) +
                       rb"|L" + str(MAGIC_NUMBER).encode() + rb"L?\n\.)", re.S)

class TorchLegacyReader(FormatReader):
    """The five pickles and the raw storages of a legacy ``torch.save`` file."""

    name = "torch-legacy"
    supersedes = frozenset({"pickle"})

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return _MAGIC_RE.match(head) is not None

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        pos = 0
        results = []
        for index in range(5):
            ctx.check_deadline()
            result = ctx.scan_pickle_at(source, pos)
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
