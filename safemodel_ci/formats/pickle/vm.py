"""The machine: one pass over one pickle, opcode by opcode, as ``pickle.load`` would walk it, and
the stream scanners built on it (:func:`scan_pickle_at`, :func:`scan_pickle_stream`,
:func:`looks_like_pickle`).

The VM keeps the unpickler's stack, mark stack and memo; its loop reads each opcode byte and runs
that opcode's handler from :mod:`.opcodes`; what imports and calls mean comes from the policy hooks
it inherits (:mod:`.hooks`).
"""

from __future__ import annotations

import codecs
import gc
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ...context import ScanContext
from ...findings import Severity
from ...source import ByteSource
from .base import (
    _C,
    _PY,
    MAX_INLINE_BYTES,
    MAX_RECORDS,
    MAX_RETAINED_BYTES,
    TRIAL_OPS,
    _Broken,
    _Record,
    _Stop,
)
from .hooks import _PolicyHooks
from .opcodes import _OPCODES, _TABLE
from .reading import _FastReader, _FrameBufferReader
from .textargs import _memo_index
from .values import BigData, _maybe_literal

#: Opcodes a pickler writes right after an import: MARK, memo PUTs, EMPTY_TUPLE.
_AFTER_IMPORT = frozenset(b"(pqr\x94)")


@dataclass
class PickleStreamResult:
    """What scanning one pickle (up to its STOP) found out, for readers that build on it."""

    start: int
    #: Offset just after STOP; None when the stream broke.
    end: Optional[int]
    complete: bool
    #: Values given to PERSID/BINPERSID: literals, with imported classes kept as :class:`Global`
    #: (torch: ``('storage', Global('torch', 'FloatStorage'), key, location, numel)``); None when
    #: not literal.
    persistent_ids: List[Any] = field(default_factory=list)
    #: Top of the stack at STOP, symbolic (see :attr:`value`).
    top: Any = field(default=None, repr=False)
    globals: List[Tuple[str, str]] = field(default_factory=list)
    #: Number of findings the stream produced (imports not allowed, anomalies), before flushing.
    findings: int = 0
    #: Why the stream broke, when it did.
    error: Optional[str] = None

    @property
    def value(self) -> Any:
        """Top of the stack at STOP when it is a plain literal (str/int/bytes/list/tuple/dict), else
        None. Converted when asked for: most callers never ask, and a big state dict is costly."""
        return _maybe_literal(self.top)


class _PickleVM(_PolicyHooks):
    """One pass over one pickle, from ``start`` to its STOP."""

    # Per-stream reading state lives on the reader (``max_line``, ``frame_end``, ``alive``): an
    # instance with more than 30 attributes no longer shares its attribute keys, and every attribute
    # access in the opcode loop gets slower (5M opcodes: +5% instructions); a class-level default
    # read through an instance is slower still.
    #: A frame did not end at an opcode boundary we saw (see ``frame``): scan_pickle_at then also
    #: walks the stream as a BytesIO-fed C unpickler reads it (:class:`_FrameBufferReader`).
    frames_irregular = False
    #: This VM reads like the C unpickler on a BytesIO (frames as buffers that drop their rest).
    lossy = False

    def __init__(self, source: ByteSource, ctx: Optional[ScanContext], start: int, end: Optional[int],
                 *, torch_archive: bool = False, silent: bool = False, policy: Any = None,
                 max_ops: Optional[int] = None) -> None:
        self.source = source
        self.ctx = ctx
        self.silent = silent or ctx is None
        self.policy = policy if policy is not None else (ctx.policy if ctx is not None else None)
        self.reader = (_FrameBufferReader if self.lossy else _FastReader)(source, start, end)
        self.start = start
        self.torch_archive = torch_archive
        limits = ctx.limits if ctx is not None else None
        self.max_stack = limits.max_pickle_stack if limits else 1_000_000
        self.max_memo = limits.max_pickle_memo if limits else 1_000_000
        if limits is not None:
            self.reader.max_line = limits.max_in_memory_bytes + 1
        self.stack: List[Any] = []
        self.metastack: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        self.proto = 0
        self.records: Dict[Tuple[str, str], _Record] = {}
        self.dropped_records = 0
        self.globals: List[Tuple[str, str]] = []
        self._globals_seen: set = set()
        self.persistent_ids: List[Any] = []
        self.retained_bytes = 0
        self.retained_items = 0
        self.ops = 0
        #: Detection evidence for broken protocol 0/1 streams (see :func:`looks_like_pickle`).
        self.import_evidence = False
        self._just_imported = False
        self.max_ops = max_ops
        self.out_of_ops = False
        self.broken: Optional[_Broken] = None
        self._pending_nested: List[Callable[[], None]] = []
        #: Whether an allowlisted loader (``pickle.loads`` and the like) was imported: until one
        #: is, no value can hold one and the escaped-loader walk has nothing to find.
        self._loader_imported = False

    # -- reading -------------------------------------------------------------------------------
    def _read(self, n: int, pos: int) -> bytes:
        data = self.reader.read(n) if n else b""
        if len(data) != n:
            raise _Broken(pos, f"stream ends inside an opcode argument (wanted {n} bytes)")
        return data

    def _line(self, pos: int) -> bytes:
        """One protocol-0 argument line, without its newline, of any length up to the in-memory limit.

        Both unpicklers read a whole line whatever its length; a line longer than
        ``max-in-memory-bytes`` is a scan limit (``unscanned-limit``), not a malformed pickle.
        """
        reader = self.reader
        limit = reader.max_line
        line = reader.readline(limit)
        if reader.frame_end > 0:
            self._crosses_frame(len(line), pos)
        if line[-1:] == b"\n":
            return line[:-1]
        if len(line) >= limit:
            raise _Broken(pos, f"text argument longer than {limit - 1} bytes (max-in-memory-bytes); the "
                          "rest of the stream was not inspected", limit=True)
        raise _Broken(pos, "stream ends inside a text argument")

    def _ascii_line(self, pos: int) -> Any:
        """A PERSID line: ASCII, any length up to the limit, read in pieces and kept only when short
        (binary data starting with 'P', a zip's local headers, may be one long ASCII line)."""
        reader = self.reader
        limit = reader.max_line
        piece = reader.readline(MAX_INLINE_BYTES)
        if piece[-1:] == b"\n":
            if reader.frame_end > 0:
                self._crosses_frame(len(piece), pos)
            return piece[:-1].decode("ascii")
        total = len(piece)
        while True:
            if not piece.isascii():
                raise _Broken(pos, "invalid argument: a non-ASCII byte in a PERSID argument")
            if total >= limit:
                raise _Broken(pos, f"text argument longer than {limit - 1} bytes (max-in-memory-bytes); "
                              "the rest of the stream was not inspected", limit=True)
            if not piece:
                raise _Broken(pos, "stream ends inside a text argument")
            piece = reader.readline(min(MAX_INLINE_BYTES, limit - total))
            total += len(piece)
            if piece[-1:] == b"\n":
                if not piece.isascii():
                    raise _Broken(pos, "invalid argument: a non-ASCII byte in a PERSID argument")
                return BigData("str", total - 1, None)

    def _ascii_precheck(self, pos: int) -> None:
        """An ASCII argument line (PERSID, INST) with a non-ASCII byte in its first 64 KiB fails in
        both unpicklers: say so without reading the rest of a long line into memory (binary data
        that happens to start with 'P', a zip's "PK", would otherwise be read up to the limit)."""
        head = self.reader.peek(1 << 16)
        if len(head) == 1 << 16 and b"\n" not in head and not head.isascii():
            raise _Broken(pos, "invalid argument: a non-ASCII byte in an ASCII text argument")

    def _name_lines(self, pos: int, encoding: str, opcode: str) -> Tuple[str, str]:
        """The module and name lines of GLOBAL/INST.

        At the end of the data, ``pickle._Unpickler`` (joblib's unpickler) still imports: its
        ``readline()[:-1]`` drops the last byte of an unterminated line, or gives '' when nothing is
        left. That import is judged before the stream is reported broken.
        """
        limit = self.reader.max_line
        parts: List[str] = []
        for _ in range(2):
            line = self.reader.readline(limit) if self.reader.remaining() else b""
            if line[-1:] == b"\n":
                parts.append(line[:-1].decode(encoding))
                continue
            if len(line) >= limit:
                raise _Broken(pos, f"text argument longer than {limit - 1} bytes (max-in-memory-bytes); "
                              "the rest of the stream was not inspected", limit=True)
            try:
                parts.append(line[:-1].decode(encoding))
                while len(parts) < 2:
                    parts.append("")
                self._global(parts[0], parts[1], pos, opcode)
            except UnicodeDecodeError:
                pass
            raise _Broken(pos, "stream ends inside a text argument")
        return parts[0], parts[1]

    def _payload(self, n: int, pos: int, kind: str) -> Any:
        """A length-prefixed payload: bytes in memory, or a placeholder when large."""
        if n < 0:
            raise _Broken(pos, "negative length")
        offset = self.reader.tell()
        # Short payloads (names, keys) are always kept: a placeholder would make a later
        # STACK_GLOBAL look computed. The budget bounds the long ones.
        if n > MAX_INLINE_BYTES or (n > 256 and self.retained_bytes + n > MAX_RETAINED_BYTES):
            if self.reader.skip(n) != n:
                raise _Broken(pos, f"stream ends inside a {n}-byte payload")
            return BigData(kind, n, offset)
        data = self._read(n, pos)
        self.retained_bytes += n
        return data

    def _check_utf8(self, offset: int, n: int, pos: int) -> None:
        """Both unpicklers decode BINUNICODE as UTF-8 (surrogatepass): a payload too large to keep is
        still decoded, piecewise, so an invalid one breaks the walk where the loader fails."""
        decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        end = offset + n
        try:
            while offset < end:
                chunk = self.source.read_at(offset, min(MAX_INLINE_BYTES, end - offset))
                if not chunk:
                    break
                offset += len(chunk)
                decoder.decode(chunk, final=offset >= end)
        except UnicodeDecodeError as exc:
            raise _Broken(pos, f"invalid argument: {exc}") from None

    def _crosses_frame(self, n: int, pos: int) -> None:
        """pickle.py fails on a read that starts inside a frame and ends past it."""
        end = self.reader._pos
        if end - n < self.reader.frame_end < end:
            self.frames_irregular = True
            self._kill(_PY, pos, "an argument crosses the end of a FRAME")

    def _kill(self, who: int, pos: int, why: str) -> None:
        """The unpickler(s) ``who`` fail here; the walk breaks when none is left."""
        alive = self.reader.alive & ~who
        if not alive:
            raise _Broken(pos, f"{why}, and the other unpickler failed earlier (the loader raises)")
        if alive != self.reader.alive:
            self.reader.alive = alive

    # -- stack ---------------------------------------------------------------------------------
    def _push(self, value: Any) -> None:
        stack = self.stack
        if len(stack) >= self.max_stack:
            raise _Broken(self.reader.tell(), f"stack deeper than {self.max_stack} entries (limit)")
        stack.append(value)

    def _pop(self, pos: int) -> Any:
        if not self.stack:
            raise _Broken(pos, "stack underflow")
        return self.stack.pop()

    def _top(self, pos: int) -> Any:
        if not self.stack:
            raise _Broken(pos, "stack underflow")
        return self.stack[-1]

    def _pop_mark(self, pos: int) -> List[Any]:
        if not self.metastack:
            raise _Broken(pos, "no MARK to pop to")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _memo_put(self, index: int, pos: int) -> None:
        memo = self.memo  # locals: MEMOIZE runs this once per memoized object
        if index < 0:
            raise _Broken(pos, "negative memo index")
        if len(memo) >= self.max_memo and index not in memo:
            raise _Broken(pos, f"memo larger than {self.max_memo} entries (limit)")
        stack = self.stack
        if not stack:
            raise _Broken(pos, "stack underflow")
        memo[index] = stack[-1]

    def _memo_line_index(self, pos: int) -> Any:
        """A GET/PUT text argument as each unpickler reads it (int() for pickle.py, strtol or
        PyLong_FromString for _pickle); a form only one reads stops the other. A huge index stays
        a tuple of its digits."""
        line = self._line(pos)
        try:
            if len(line) >= 20:
                raise ValueError
            index: Any = int(line)
        except ValueError:
            index, py_ok = _memo_index(line, bool(self.reader.alive & _C))
            if not py_ok:
                self._kill(_PY, pos, "a memo index only _pickle reads")
        if index.__class__ is tuple or index > sys.maxsize:  # _pickle: OverflowError
            self._kill(_C, pos, "a memo index over sys.maxsize")
        return index

    def _memo_get(self, index: int, pos: int) -> None:
        if index not in self.memo:
            raise _Broken(pos, f"memo value not found at index {index}")
        self._push(self.memo[index])


    # -- scanning other streams (nested pickles, joblib object arrays) ----------------------------
    @staticmethod
    def _scan_stream(source: ByteSource, ctx: ScanContext) -> None:
        """Scan every pickle in ``source`` into ``ctx`` (a nested pickle a loader call loads)."""
        scan_pickle_stream(source, ctx)

    def _scan_inline_pickle(self, start: int) -> PickleStreamResult:
        """The complete pickle written inline at ``start`` (a joblib object array), scanned."""
        if self.silent:
            vm = _PickleVM(self.source, None, start, self.reader.end, silent=True, policy=self.policy)
            return vm.run()
        return scan_pickle_at(self.source, self.ctx, start, self.reader.end)  # type: ignore[arg-type]

    def _check_array_bytes_as_opcodes(self, start: int, end: int) -> None:
        """joblib.load skips an array's bytes, plain pickle.load runs them as opcodes: if they import
        anything that way, the file means two things, and what pickle.load would import counts."""
        if self.silent or self.ctx is None or end <= start:
            return
        vm = _PickleVM(self.source, self.ctx, start, end, policy=self.policy)
        vm.run()
        if vm.records or vm._pending_nested:
            self.ctx.report("polyglot", f"the {end - start} bytes of a joblib array at offset {start} are "
                            "also pickle opcodes that import code when the file is read with pickle.load; "
                            "both readings were scanned", offset=start,
                            details={"formats": ["joblib", "pickle"]})
            vm.flush()

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> PickleStreamResult:
        result = PickleStreamResult(start=self.start, end=None, complete=False)
        reader = self.reader
        read = reader.read
        table = _TABLE
        max_ops = self.max_ops if self.max_ops is not None else -1
        ctx = self.ctx
        ops = self.ops
        # The VM makes many small containers and no garbage cycles of its own: the cyclic
        # collector's passes, which also walk every object of the host process, are paused (a
        # stream of 843,000 TUPLE1s: 0.88 -> 0.40 s; in a process holding 3M objects 1.55 -> 0.31 s).
        collecting = gc.isenabled()
        gc.disable()
        try:
            while True:
                pos = reader._pos  # tell(), without the call: this loop runs once per opcode
                ops += 1
                if not ops & 0xFFF and ctx is not None:
                    ctx.check_deadline()
                if ops == max_ops:
                    self.out_of_ops = True
                    raise _Broken(pos, f"stopped after {max_ops} opcodes (detection budget)")
                # The opcode byte straight from the reader's buffer when it is there (the common
                # case); the buffer never extends past the reader's end.
                rel = pos - reader._buf_start
                buf = reader._buf
                if 0 <= rel < len(buf):
                    code = buf[rel]
                    reader._pos = pos + 1
                else:
                    b = read(1)
                    if not b:
                        raise _Broken(pos, "stream ends before STOP" if pos > self.start else "empty stream")
                    code = b[0]
                handler = table[code]
                if handler is None:
                    raise _Broken(pos, f"invalid opcode 0x{code:02x}")
                if self._just_imported:
                    self._just_imported = False
                    if code in _AFTER_IMPORT:
                        self.import_evidence = True
                try:
                    handler(self, pos)
                except _Stop:
                    result.end = self.reader.tell()
                    result.complete = True
                    result.top = self.stack[-1] if self.stack else None
                    if self.reader.frame_end > 0 and result.end > self.reader.frame_end:
                        self.frames_irregular = True
                    break
                except (struct.error, ValueError, UnicodeDecodeError, OverflowError) as exc:
                    raise _Broken(pos, f"invalid argument: {exc}") from None
        except _Broken as exc:
            result.error = exc.reason
            result.end = None
            self.broken = exc
            if self.reader.frame_end != 0:
                self.frames_irregular = True
        else:
            self.broken = None
        finally:
            self.ops = ops
            if collecting:
                gc.enable()
        result.persistent_ids = self.persistent_ids
        result.globals = self.globals
        result.findings = len(self.records) + self.dropped_records
        return result

    def flush(self) -> None:
        """Report the findings of this stream (imports, anomalies, nested scans) into the context."""
        if self.ctx is None:
            return
        for rec in self.records.values():
            details: Dict[str, Any] = dict(rec.extra)
            details.update({"opcode": rec.opcode, "occurrences": rec.count, "calls": list(rec.calls)})
            if rec.calls:
                how = "called via " + ", ".join(rec.calls)
            elif rec.rule_id in ("pickle-dangerous-global", "pickle-unknown-global",
                                 "pickle-unresolved-global", "pickle-ext-code"):
                how = "imported, not called here (the import alone runs module code)"
            else:
                how = ""
            times = f" ({rec.count} times)" if rec.count > 1 else ""
            verb = {"pickle-dangerous-global": "imports", "pickle-unknown-global": "imports"}.get(rec.rule_id)
            subject = f"{rec.opcode} {verb} {rec.subject}" if verb else rec.subject
            message = f"{subject}{times}: {rec.reason}" + (f"; {how}" if how else "")
            self.ctx.report(rec.rule_id, message, offset=rec.offset, severity=rec.severity, details=details)
        if self.dropped_records:
            self.ctx.report("pickle-unknown-global",
                            f"{self.dropped_records} more imports or anomalies not listed (limit "
                            f"{MAX_RECORDS} per stream)", offset=self.start, severity=Severity.HIGH)
        for run in self._pending_nested:
            run()


class _LossyPickleVM(_PickleVM):
    """The VM reading as the C unpickler does from a file object without ``peek``."""

    lossy = True



def looks_like_pickle(source: ByteSource, offset: int = 0) -> bool:
    """True when a pickle starts at ``offset``.

    A protocol 2+ header (``\\x80`` 2-5 and an opcode) decides at once. Anything else must parse
    as a pickle up to its STOP (or through :data:`TRIAL_OPS` opcodes without an error), so text
    files that happen to start with an opcode letter do not count.
    """
    head = source.read_at(offset, 3)
    if len(head) < 2 or head[0] not in _OPCODES:
        return False
    if head[0] == 0x80 and head[1] <= 5:
        # PROTO 0-5 and an opcode: both unpicklers accept the header (pickle.dumps writes PROTO only
        # from protocol 2, a hand-made stream may start with PROTO 0 or 1); no text starts so.
        return len(head) == 3 and head[2] in _OPCODES
    vm = _PickleVM(source, None, offset, None, silent=True, max_ops=TRIAL_OPS)
    result = vm.run()
    # Complete, valid through a long run of opcodes (a big protocol 0 pickle), or stopped by a scan
    # limit (a text argument longer than max-in-memory-bytes): a pickle, scanned as far as it goes.
    if result.complete or vm.out_of_ops or (vm.broken is not None and vm.broken.limit):
        return True
    # Broken after an import of an identifier-like name that was then called, or followed by what a
    # pickler writes after an import (MARK, memo PUT, an empty tuple): a loader runs that import
    # before failing (nullifAI-style broken payloads). A text file that merely starts with
    # "c<line>\n<line>\n" does not count.
    return vm.import_evidence


def scan_pickle_at(source: ByteSource, ctx: ScanContext, offset: int = 0, end: Optional[int] = None,
                   *, torch_archive: bool = False) -> PickleStreamResult:
    """Scan ONE pickle starting at ``offset`` up to its STOP; report findings into ``ctx``.

    A broken stream gets the findings seen before the break and ``pickle-broken-stream``.
    ``torch_archive``: the pickle is a torch zip ``data.pkl`` (STACK_GLOBAL there is anomalous).
    """
    vm = _PickleVM(source, ctx, offset, end, torch_archive=torch_archive)
    result = vm.run()
    if vm.frames_irregular:
        _second_reading(vm, result, source, ctx, offset, end, torch_archive)
    vm.flush()
    broken = vm.broken
    if broken is not None and broken.limit:
        ctx.report("unscanned-limit", f"pickle starting at offset {offset}: {broken.reason} (offset "
                   f"{broken.offset}); opcodes before it run when it is loaded", offset=broken.offset,
                   details={"start": offset, "reason": broken.reason})
    elif broken is not None and not broken.reported:
        ctx.report("pickle-broken-stream",
                   f"pickle starting at offset {offset} is broken at offset {broken.offset}: "
                   f"{broken.reason}; opcodes before the break run when it is loaded, the rest was not "
                   "inspected",
                   offset=broken.offset, details={"start": offset, "reason": broken.reason})
    return result


def _second_reading(vm: _PickleVM, result: PickleStreamResult, source: ByteSource, ctx: ScanContext,
                    offset: int, end: Optional[int], torch_archive: bool) -> None:
    """Frames that do not end at opcode boundaries: walk the stream again as torch.load's C unpickler
    (fed an io.BytesIO) reads it, and add what that reading imports and calls to ``vm``'s findings."""
    other = _LossyPickleVM(source, ctx, offset, end, torch_archive=torch_archive)
    res = other.run()
    differs = (res.complete != result.complete or res.end != result.end
               or set(res.globals) != set(result.globals))
    for key, rec in other.records.items():
        vm.records.setdefault(key, rec)
    vm._pending_nested.extend(other._pending_nested)
    seen = set(result.globals)
    result.globals.extend(g for g in res.globals if g not in seen)
    if res.complete and not result.complete:
        result.complete, result.end, result.top = True, res.end, res.top
    if differs:
        vm._anomaly("polyglot", "frames split opcodes",
                    "FRAME boundaries fall inside opcodes: the C unpickler reading from a BytesIO "
                    "(torch.load) and pickle.loads read different opcodes; both readings were scanned",
                    offset, "FRAME")


def scan_pickle_stream(source: ByteSource, ctx: ScanContext, start: int = 0,
                       end: Optional[int] = None) -> None:
    """Scan every pickle from ``start`` to ``end``: concatenated pickles are loaded by repeated
    ``pickle.load`` calls, so the scan resumes after each STOP until the data ends."""
    stop = source.size if end is None else min(end, source.size)
    result = scan_pickle_at(source, ctx, start, stop)
    while result.complete and result.end is not None and result.end < stop:
        pos = result.end
        ctx.check_deadline()
        vm = _PickleVM(source, ctx, pos, stop)
        nxt = vm.run()
        if nxt.complete:
            vm.flush()
            result = nxt
            continue
        trailing = source.read_at(pos, min(64, stop - pos))
        strong_header = len(trailing) >= 3 and trailing[0] == 0x80 and trailing[1] <= 5 \
            and trailing[2] in _OPCODES
        if vm.records or vm._pending_nested or strong_header:
            # Another pickle.load would run these opcodes before failing: they count; and a
            # protocol 2+ pickle cut short is a truncated file, not stray bytes.
            vm.flush()
            broken = vm.broken
            if broken is not None and not broken.reported:
                ctx.report("pickle-broken-stream",
                           f"data after the pickle ending at offset {pos} is a broken pickle "
                           f"(broken at offset {broken.offset}: {broken.reason}); opcodes before the "
                           "break run when it is loaded", offset=broken.offset,
                           details={"start": pos, "reason": broken.reason})
        elif trailing.strip(b" \t\r\n\x00"):
            ctx.report("pickle-trailing-data",
                       f"{stop - pos} bytes after the last pickle are not a pickle (they import and call "
                       "nothing); pickle.load ignores them", offset=pos, details={"size": stop - pos})
        break
