"""Carving: finding pickle streams in bytes that no recorded structure accounts for.

A shared helper of the readers (legacy torch files, torch archives, zips with prepended or hidden
bytes), not a reader: it imports only the context, the findings and the source, and reads pickles
through :meth:`ScanContext.scan_pickle_at`.
"""

from __future__ import annotations

import re

from ..context import ScanContext
from ..findings import Severity
from ..source import ByteSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

#: Pickle starts looked for in unaccounted bytes (protocol 2+ header, or protocol 0 GLOBAL).
_CARVE_RE = re.compile(rb"\x80[\x02-\x05]|c[A-Za-z_][\w.]{0,200}\n[A-Za-z_][\w.]{0,200}\n")
_CARVE_CHUNK = 1 << 20
_CARVE_OVERLAP = 512


def _trial_scan(source: ByteSource, ctx: ScanContext, offset: int,
                end: Optional[int] = None, rule_id: str = "torch-unaccounted-bytes") -> Optional[int]:
    """Scan a pickle that *may* start at ``offset`` without reporting noise.

    The stream is first walked in a private context; its findings are kept when it is a complete
    pickle or when it shows something blocking before it broke (a payload then garbage). Returns
    the offset after its STOP when complete, else None.
    """
    if not ctx.looks_like_pickle(source, offset):
        return None
    trial = ctx.isolated()
    result = trial.scan_pickle_at(source, offset, end)
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


__all__ = ["carve"]
