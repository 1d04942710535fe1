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

from ...context import ScanContext
from ...findings import Severity
from ...record import Record
from ...source import ByteSource
from .base import (
    _C,
    _PY,
    MAX_INLINE_BYTES,
    MAX_MEMO_EXACT,
    MAX_RECORDS,
    MAX_RETAINED_ITEMS,
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
from .values import _INERT_ATOMS, LOST, LOST_STR, LOST_TUPLE, BigData, PList, _lost_kind, _maybe_literal

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

#: Opcodes a pickler writes right after an import: MARK, memo PUTs, EMPTY_TUPLE.
_AFTER_IMPORT = frozenset(b"(pqr\x94)")
#: A memo index may extend the compact memo (``memo_lost``) by at most this many unused slots.
_LOST_GAP = 1 << 20
#: Memo entries the compact memo holds at most (one byte each); past it, entries are kept exactly
#: (and count against ``max-pickle-memo``).
MAX_LOST = 1 << 28
#: Past the memo budget, strings that may name an import are still kept exactly (``_KeptNames``):
#: up to this many distinct dotted identifiers (a dict from the string to itself), in at most
#: ``MAX_KEPT_ENTRIES`` memo entries (equal strings the pickler wrote as separate objects take one
#: entry each); then the strings made of the policy's name parts (``pickle_policy.policy_names``), in
#: at most ``MAX_POLICY_ENTRIES`` entries more. 16,384, not more: each kept identifier costs about
#: 3 us in the inline loop (65,536 cost 0.3 s CPU, +18%, on bench/big_pickle.py's 24 MB file, whose
#: rows' strings are all identifiers), and an identifier the policy does not know is an import the
#: policy judges HIGH anyway (unless a config allows it): the policy's own names are what must stay.
MAX_KEPT_NAMES = 1 << 14
MAX_KEPT_ENTRIES = 1 << 14
MAX_POLICY_ENTRIES = 1 << 16
#: Longer strings are never kept as names (CPython's own module and attribute names are far shorter).
MAX_NAME_LEN = 256
_MISSING = object()
#: An opcode's argument, read from the opcode's own offset (the pad byte is the opcode).
_I32 = struct.Struct("<xi").unpack_from
_U32 = struct.Struct("<xI").unpack_from
_U16 = struct.Struct("<xH").unpack_from
_F64 = struct.Struct(">xd").unpack_from
#: Opcodes :meth:`_PickleVM._fast_loop` may do inline: MEMOIZE BINFLOAT SHORT_BINUNICODE BINUNICODE
#: TUPLE3 BININT BINPUT LONG_BINPUT PUT MARK BININT1 BININT2 APPENDS APPEND BINGET LONG_BINGET GET
#: TUPLE2 TUPLE1 TUPLE NONE POP INT FLOAT UNICODE.
_INLINE = frozenset(b"\x94G\x8cX\x87Jqrp(KMeahjg\x86\x85tN0IFV")
#: The memo PUT opcodes: MEMOIZE, BINPUT, LONG_BINPUT, PUT.
_PUTS = frozenset(b"\x94qrp")
#: Bytes an opcode done inline takes at most: a BINUNICODE of 256 bytes is 261; a text line (INT,
#: FLOAT, UNICODE) is done inline only when its newline is found this close.
_INLINE_WIDTH = 264
#: Bytes between two checks of the deadline and the stack room in the inline loop: every opcode
#: takes at least one byte, so at most this many opcodes (the handler loop checks every 4096).
_CHECK_BYTES = 4096


class PickleStreamResult(Record):
    """What scanning one pickle (up to its STOP) found out, for readers that build on it."""

    # A plain record, not a dataclass: see safemodel_ci/record.py (start-up cost).
    __slots__ = ("start", "end", "complete", "persistent_ids", "top", "globals", "findings", "error")
    _repr_skip = frozenset({"top"})
    start: int
    #: Offset just after STOP; None when the stream broke.
    end: Optional[int]
    complete: bool
    #: Values given to PERSID/BINPERSID: literals, with imported classes kept as :class:`Global`
    #: (torch: ``('storage', Global('torch', 'FloatStorage'), key, location, numel)``); None when
    #: not literal.
    persistent_ids: List[Any]
    #: Top of the stack at STOP, symbolic (see :attr:`value`).
    top: Any
    globals: List[Tuple[str, str]]
    #: Number of findings the stream produced (imports not allowed, anomalies), before flushing.
    findings: int
    #: Why the stream broke, when it did.
    error: Optional[str]

    def __init__(self, start: int, end: Optional[int], complete: bool,
                 persistent_ids: Optional[List[Any]] = None, top: Any = None,
                 globals: Optional[List[Tuple[str, str]]] = None, findings: int = 0,
                 error: Optional[str] = None) -> None:
        self.start = start
        self.end = end
        self.complete = complete
        self.persistent_ids = [] if persistent_ids is None else persistent_ids
        self.top = top
        self.globals = [] if globals is None else globals
        self.findings = findings
        self.error = error

    @property
    def value(self) -> Any:
        """Top of the stack at STOP when it is a plain literal (str/int/bytes/list/tuple/dict), else
        None. Converted when asked for: most callers never ask, and a big state dict is costly."""
        return _maybe_literal(self.top)


class _KeptNames:
    """The strings a VM keeps exactly past its memo budget because they may name an import.

    An import whose module or name comes from a lost memo entry is ``unscanned-limit`` (exit 2): an
    ordinary big checkpoint that memoizes a module name after the budget and imports a second class
    of that module through GET must not become that. So any dotted identifier (a module or a name,
    known to the tables or not: an unknown import is judged, HIGH, not unscanned) is kept, up to
    ``MAX_KEPT_NAMES`` distinct ones in ``MAX_KEPT_ENTRIES`` memo entries; past those, every string
    whose parts the policy could give meaning to (:func:`~safemodel_ci.pickle_policy.policy_names`),
    in ``MAX_POLICY_ENTRIES`` more entries. Equal strings share one object (``kept``, a dict from the
    string to itself): memory stays bounded whatever the stream.
    """

    __slots__ = ("kept", "entries", "policy_entries", "parts", "full")

    def __init__(self) -> None:
        self.kept: Dict[str, str] = {}
        #: Memo entries kept as identifiers, as policy names.
        self.entries = 0
        self.policy_entries = 0
        #: The policy's name parts, once needed; empty once their entries are used up.
        self.parts: FrozenSet[str] = frozenset()
        #: No room left for identifiers: only a string in ``parts`` (or dotted) may still be kept.
        #: The inline loop tests this first and asks :meth:`keep` only then.
        self.full = False

    def keep(self, value: str) -> Optional[str]:
        """The string to keep exactly in a memo entry past the budget in place of ``value`` (a
        non-empty str; counted as kept), or None to keep only its kind."""
        if len(value) > MAX_NAME_LEN:
            return None
        kept = self.kept
        if not self.full:
            name = kept.get(value)
            if name is None and len(kept) < MAX_KEPT_NAMES:
                for part in value.split("."):
                    if not part.isidentifier():
                        break
                else:
                    name = kept[value] = value
            if name is not None:
                self.entries += 1
                if self.entries >= MAX_KEPT_ENTRIES:
                    self._fill()
                return name
            if len(kept) >= MAX_KEPT_NAMES and not self.parts:
                self._load_parts()
        parts = self.parts
        if parts and (value in parts or ("." in value and all(part in parts for part in value.split(".")))):
            self.policy_entries += 1
            if self.policy_entries >= MAX_POLICY_ENTRIES:
                self.parts = frozenset()  # no room left at all
            return kept.setdefault(value, value)  # bounded: at most MAX_POLICY_ENTRIES more strings
        return None

    def _load_parts(self) -> None:
        if self.policy_entries < MAX_POLICY_ENTRIES:
            from ...pickle_policy import policy_names  # built once, only by a stream past its budget

            self.parts = policy_names()

    def _fill(self) -> None:
        self.full = True
        self._load_parts()


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
    #: Memo entries kept exactly before inert ones (non-empty str, bytes, tuples of literals) are
    #: kept as one byte of their kind in ``memo_lost`` (a :class:`~.values._Lost` on GET): the memo of
    #: a stream of millions of rows then costs a byte per entry, not a dict entry and its objects.
    memo_exact = MAX_MEMO_EXACT
    #: Whether an allowlisted loader (``pickle.loads`` and the like) was imported: until one is, no
    #: value can hold one and the escaped-loader walk has nothing to find. A class-level default, set
    #: on the instance only when one is imported: it keeps the instance at 30 attributes (see above)
    #: with ``names``, and only calls (not the opcode loop) read it.
    _loader_imported = False

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
        #: The compact memo: kind (values.LOST_*) of the inert value at each index, 0 where none.
        self.memo_lost = bytearray()
        self.lost_count = 0  # non-zero bytes of memo_lost: len(memo) + lost_count is the memo's size
        #: Strings kept exactly past the budget because they may name an import (one attribute: see
        #: the class's comment on attribute counts).
        self.names = _KeptNames()
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
        stack = self.stack
        lost = self.memo_lost
        value = stack[-1] if stack else None
        if len(memo) >= self.memo_exact and stack and index not in memo:
            kind = _lost_kind(value)
            if kind == LOST_STR:
                name = self.names.keep(value)
                if name is not None:  # kept exactly: a later import may name it through GET
                    kind = 0
                    value = name
                    if index == len(lost) and index < MAX_LOST and len(memo) < self.max_memo:
                        lost.append(0)  # as the inline loop does (the compact memo stays aligned)
            if kind and index - len(lost) <= _LOST_GAP and index < MAX_LOST:
                if index >= len(lost):
                    lost.extend(bytes(index - len(lost)))
                    lost.append(kind)
                    self.lost_count += 1
                else:
                    if not lost[index]:
                        self.lost_count += 1
                    lost[index] = kind
                return
        if len(memo) >= self.max_memo and index not in memo:
            raise _Broken(pos, f"memo larger than {self.max_memo} entries (limit)")
        if not stack:
            raise _Broken(pos, "stack underflow")
        if lost and index.__class__ is int and index < len(lost) and lost[index]:
            lost[index] = 0  # the index now holds a value kept exactly
            self.lost_count -= 1
        memo[index] = value

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
        value = self.memo.get(index, _MISSING)
        if value is _MISSING:
            lost = self.memo_lost
            if index.__class__ is int and 0 <= index < len(lost) and lost[index]:
                value = LOST[lost[index]]
            else:
                raise _Broken(pos, f"memo value not found at index {index}")
        self._push(value)


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
        """Walk the stream to its STOP (or to where it breaks); findings stay here until :meth:`flush`."""
        result = PickleStreamResult(start=self.start, end=None, complete=False)
        # The VM makes many small containers and no garbage cycles of its own: the cyclic
        # collector's passes, which also walk every object of the host process, are paused (a
        # stream of 843,000 TUPLE1s: 0.88 -> 0.40 s; in a process holding 3M objects 1.55 -> 0.31 s).
        collecting = gc.isenabled()
        gc.disable()
        try:
            if self.lossy:
                self._loop(result)
            else:
                self._fast_loop(result)
        except _Broken as exc:
            result.error = exc.reason
            result.end = None
            self.broken = exc
            if self.reader.frame_end != 0:
                self.frames_irregular = True
        else:
            self.broken = None
        finally:
            if collecting:
                gc.enable()
        result.persistent_ids = self.persistent_ids
        result.globals = self.globals
        result.findings = len(self.records) + self.dropped_records
        return result

    def _stopped(self, result: PickleStreamResult) -> None:
        """STOP: the stream is complete."""
        result.end = self.reader.tell()
        result.complete = True
        result.top = self.stack[-1] if self.stack else None
        if self.reader.frame_end > 0 and result.end > self.reader.frame_end:
            self.frames_irregular = True

    def _loop(self, result: PickleStreamResult) -> None:
        """Every opcode through its handler (the lossy reader: every read goes through its frames)."""
        reader = self.reader
        read = reader.read
        table = _TABLE
        max_ops = self.max_ops if self.max_ops is not None else -1
        ctx = self.ctx
        ops = self.ops
        try:
            while True:
                pos = reader._pos  # tell(), without the call: this loop runs once per opcode
                ops += 1
                if not ops & 0xFFF and ctx is not None:
                    ctx.check_deadline()
                if ops == max_ops:
                    self.out_of_ops = True
                    raise _Broken(pos, f"stopped after {max_ops} opcodes (detection budget)")
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
                    self._stopped(result)
                    break
                except (struct.error, ValueError, UnicodeDecodeError, OverflowError) as exc:
                    raise _Broken(pos, f"invalid argument: {exc}") from None
        finally:
            self.ops = ops

    def _stack_room(self, p: int) -> int:
        """The position up to which the inline loop may push without checking the stack limits.

        Measured before the opcode at ``p``: no stack (the current one or one under a MARK) and not
        the mark stack is longer than ``hi``, and an opcode takes at least one byte and adds at most
        one entry to one of them, so before the opcode at ``p + d`` none is longer than ``hi + d``: a
        push is under ``max_stack`` before ``p + max_stack - hi``. With many MARKs open the bound is
        not computed (``p``: every opcode goes through its handler, which checks).
        """
        metastack = self.metastack
        if len(metastack) > 64:
            return p
        hi = max(len(self.stack), len(metastack), max(map(len, metastack), default=0))
        return p + self.max_stack - hi

    def _fast_loop(self, result: PickleStreamResult) -> None:
        """The loop of :meth:`_loop` with the most frequent opcodes done inline on the reader's buffer.

        Millions of opcodes make the per-opcode cost the whole cost: a handler call, the reader's
        attributes and a bounds check per read are most of it. Here the buffer, the position in it,
        the stack and the memo are locals, and the opcodes picklers write per value (ints, floats,
        strings, small tuples, MARK/APPEND(S), memo PUT/GET, their protocol-0 text forms) are done in
        the loop when nothing unusual holds (a memo past its budget, a target that is not a list, a
        text form only one unpickler reads, a FRAME to check). Anything else goes to the opcode's
        handler, with exactly the checks and errors of :meth:`_loop`; an inline case does exactly
        what its handler does.

        One comparison per opcode, ``p < lim``, stands for all the per-opcode checks; ``lim`` is the
        first buffer position at which one of them may fail. Every opcode takes at least one byte and
        adds at most one entry to the stacks, so positions bound opcode counts: the deadline is
        checked every ``_CHECK_BYTES`` bytes (``check_at``), a push is under the stack limits before
        ``safe`` (see :meth:`_stack_room`), and no inline opcode takes more than ``_INLINE_WIDTH``
        bytes (text lines are looked for only that far), so one that starts before
        ``blen - _INLINE_WIDTH + 1`` has its arguments in the buffer. At ``lim`` the checks are done,
        the buffer refilled and ``lim`` moved on; an opcode still at or past ``lim`` (the last bytes
        of the stream, a stack near its limit) goes to its handler. Only an opcode budget
        (``max_ops``, a detector's trial) counts opcodes: then every opcode comes by there first.
        """
        reader = self.reader
        table = _TABLE
        inline = _INLINE
        puts = _PUTS
        atoms = _INERT_ATOMS
        width_max = _INLINE_WIDTH
        check_bytes = _CHECK_BYTES
        memo = self.memo
        lost = self.memo_lost
        budget = self.memo_exact
        exact = min(budget, self.max_memo)
        max_memo = self.max_memo
        max_ops = self.max_ops if self.max_ops is not None else -1
        counting = max_ops >= 0
        ctx = self.ctx
        ops = self.ops
        stack = self.stack
        metastack = self.metastack
        just = self._just_imported
        framed = reader.frame_end > 0
        # Copies of two counters the handlers also use (written back around every handler call).
        lost_count = self.lost_count
        retained = self.retained_bytes
        lost_len = len(lost)
        names = self.names  # past the budget: a str that may name an import is kept (_KeptNames)
        # Copies of names.full and names.parts, refreshed after every keep() and handler call.
        kfull, kparts = names.full, names.parts
        i32, u32, u16, f64 = _I32, _U32, _U16, _F64
        maxsize = sys.maxsize
        # Module constants as locals: the loop reads them per opcode.
        max_lost, lost_str, lost_tuple, missing = MAX_LOST, LOST_STR, LOST_TUPLE, _MISSING
        plist, max_items = PList, MAX_RETAINED_ITEMS
        after_import = _AFTER_IMPORT
        buf = reader._buf
        base = reader._buf_start
        blen = len(buf)
        p = reader._pos - base
        if p < 0:
            buf, base, blen, p = b"", reader._pos, 0, 0
        check_at = p + check_bytes
        safe = self._stack_room(p)
        # The first opcode goes through the checks (and the buffer is filled).
        lim = 0
        try:
            while True:
                try:
                    if p < lim:
                        code = buf[p]
                        # Values first; a memo PUT right after a str or a tuple (pickle.dumps
                        # memoizes each) is done in the same pass, as the next opcode, unless that
                        # one is at lim.
                        if code == 0x8C or code == 0x58:  # SHORT_BINUNICODE, BINUNICODE
                            if code == 0x8C:
                                n = buf[p + 1]
                                start = p + 2
                            else:
                                n = u32(buf, p)[0]
                                start = p + 5
                            # Up to 256 bytes a payload is always read and kept (see _payload).
                            if n <= 256:
                                p = start + n
                                data = buf[start:p]
                                retained += n
                                try:  # strict UTF-8 is faster and decodes all but lone surrogates
                                    value = data.decode()
                                except UnicodeDecodeError:
                                    value = str(data, "utf-8", "surrogatepass")
                                stack.append(value)
                                if p >= lim:
                                    continue
                                code = buf[p]
                                if code not in puts:
                                    continue
                                # The memo PUT of this str: _memo_put's two common cases.
                                nmemo = len(memo)
                                if code == 0x94:
                                    index, width = nmemo + lost_count, 1
                                elif code == 0x72:
                                    index, width = u32(buf, p)[0], 5
                                elif code == 0x71:
                                    index, width = buf[p + 1], 2
                                else:
                                    index = -1
                                if index >= 0:
                                    if not lost and nmemo < exact:
                                        memo[index] = value
                                        p += width
                                        continue
                                    if nmemo >= budget and index == lost_len and value \
                                            and value != "__setstate__" and index not in memo \
                                            and index < max_lost:
                                        # A str that may name an import is kept (_memo_put's case).
                                        if kfull and value not in kparts and "." not in value:
                                            name = None
                                        else:
                                            name = names.keep(value)
                                            kfull, kparts = names.full, names.parts
                                        if name is None:
                                            lost.append(lost_str)
                                            lost_count += 1
                                            lost_len += 1
                                            p += width
                                            continue
                                        if nmemo < max_memo:
                                            memo[index] = name
                                            lost.append(0)
                                            lost_len += 1
                                            p += width
                                            continue
                        elif code == 0x87:  # TUPLE3
                            if len(stack) >= 3:
                                c = stack.pop()
                                b = stack.pop()
                                a = stack[-1]
                                value = stack[-1] = (a, b, c)
                                p += 1
                                if p >= lim:
                                    continue
                                code = buf[p]
                                if code not in puts:
                                    continue
                                # The memo PUT of this tuple: _memo_put's two common cases.
                                nmemo = len(memo)
                                if code == 0x94:
                                    index, width = nmemo + lost_count, 1
                                elif code == 0x72:
                                    index, width = u32(buf, p)[0], 5
                                elif code == 0x71:
                                    index, width = buf[p + 1], 2
                                else:
                                    index = -1
                                if index >= 0:
                                    if not lost and nmemo < exact:
                                        memo[index] = value
                                        p += width
                                        continue
                                    if nmemo >= budget and index == lost_len and a.__class__ in atoms \
                                            and b.__class__ in atoms and c.__class__ in atoms \
                                            and index not in memo and index < max_lost:
                                        lost.append(lost_tuple)
                                        lost_count += 1
                                        lost_len += 1
                                        p += width
                                        continue
                        elif code == 0x47:  # BINFLOAT
                            stack.append(f64(buf, p)[0])
                            p += 9
                            continue
                        elif code == 0x4A:  # BININT
                            stack.append(i32(buf, p)[0])
                            p += 5
                            continue
                        elif code in inline:
                            if code == 0x28:  # MARK
                                metastack.append(stack)
                                stack = self.stack = []
                                p += 1
                                continue
                            elif code == 0x4B:  # BININT1
                                stack.append(buf[p + 1])
                                p += 2
                                continue
                            elif code == 0x4D:  # BININT2
                                stack.append(u16(buf, p)[0])
                                p += 3
                                continue
                            elif code == 0x65:  # APPENDS
                                if metastack and metastack[-1] and metastack[-1][-1].__class__ is plist:
                                    items = stack
                                    stack = self.stack = metastack.pop()
                                    target = stack[-1]
                                    if self.retained_items + len(items) <= max_items:
                                        target.extend(items)
                                        self.retained_items += len(items)
                                    else:
                                        target.dropped += len(items)
                                    p += 1
                                    continue
                            elif code == 0x61:  # APPEND
                                if len(stack) >= 2 and stack[-2].__class__ is plist:
                                    value = stack.pop()
                                    if self.retained_items < max_items:
                                        stack[-1].append(value)
                                        self.retained_items += 1
                                    else:
                                        stack[-1].dropped += 1
                                    p += 1
                                    continue
                            elif code == 0x68 or code == 0x6A or code == 0x67:  # BINGET, LONG_BINGET, GET
                                value = missing
                                if code == 0x68:
                                    value = memo.get(buf[p + 1], missing)
                                    width = 2
                                elif code == 0x6A:
                                    value = memo.get(u32(buf, p)[0], missing)
                                    width = 5
                                elif not framed:
                                    end = buf.find(b"\n", p + 1, p + 21)
                                    if end > 0:
                                        try:
                                            index = int(buf[p + 1:end])
                                        except ValueError:
                                            index = -1
                                        if 0 <= index <= maxsize:
                                            value = memo.get(index, missing)
                                            width = end + 1 - p
                                if value is not missing:
                                    stack.append(value)
                                    p += width
                                    continue
                            elif code == 0x4E:  # NONE
                                stack.append(None)
                                p += 1
                                continue
                            elif code == 0x30:  # POP
                                if stack:
                                    stack.pop()
                                    p += 1
                                    continue
                            elif code == 0x86:  # TUPLE2
                                if len(stack) >= 2:
                                    b = stack.pop()
                                    stack[-1] = (stack[-1], b)
                                    p += 1
                                    continue
                            elif code == 0x85:  # TUPLE1
                                if stack:
                                    stack[-1] = (stack[-1],)
                                    p += 1
                                    continue
                            elif code == 0x74:  # TUPLE
                                if metastack:
                                    value = tuple(stack)
                                    stack = self.stack = metastack.pop()
                                    stack.append(value)
                                    p += 1
                                    if p >= lim:
                                        continue
                                    code = buf[p]
                                    if code not in puts:
                                        continue
                            elif code in puts:
                                pass
                            elif not framed:  # INT, FLOAT, UNICODE: a text line of up to _INLINE_WIDTH
                                end = buf.find(b"\n", p + 1, p + width_max)
                                if end > 0:
                                    line = buf[p + 1:end]
                                    if code == 0x49:  # INT: what int(line, 0) reads (see int_)
                                        if len(line) < 20 and line != b"00" and line != b"01":
                                            try:
                                                stack.append(int(line, 0))
                                                p = end + 1
                                                continue
                                            except ValueError:
                                                pass
                                    elif code == 0x46:  # FLOAT: the forms both read (see float_)
                                        try:
                                            value = float(line)
                                        except ValueError:
                                            value = None
                                        if value is not None and value - value == 0.0 and b"_" not in line \
                                                and not line[:1].isspace() and not line[-1:].isspace():
                                            stack.append(value)
                                            p = end + 1
                                            continue
                                    else:  # UNICODE
                                        stack.append(str(line, "raw-unicode-escape"))
                                        p = end + 1
                                        if p >= lim:
                                            continue
                                        code = buf[p]
                                        if code not in puts:
                                            continue
                        if code in puts:  # MEMOIZE, BINPUT, LONG_BINPUT, PUT (see _memo_put)
                            index = -1
                            nmemo = len(memo)
                            if code == 0x94:
                                index = nmemo + lost_count
                                width = 1
                            elif code == 0x71:
                                index = buf[p + 1]
                                width = 2
                            elif code == 0x72:
                                index = u32(buf, p)[0]
                                width = 5
                            elif not framed:
                                end = buf.find(b"\n", p + 1, p + 21)
                                if end > 0:  # a line under 20 digits that int() reads: both read it
                                    try:
                                        index = int(buf[p + 1:end])
                                    except ValueError:
                                        index = -1
                                    if index > maxsize:
                                        index = -1
                                    width = end + 1 - p
                            if index >= 0 and stack:
                                if not lost and nmemo < exact:
                                    memo[index] = stack[-1]
                                    p += width
                                    continue
                                if nmemo >= budget and index == lost_len and index not in memo \
                                        and index < max_lost:
                                    value = stack[-1]
                                    cls = value.__class__
                                    if cls is str:
                                        kind = lost_str if value and value != "__setstate__" else 0
                                        if kind and not (kfull and value not in kparts and "." not in value):
                                            name = names.keep(value)  # may name an import: kept
                                            kfull, kparts = names.full, names.parts
                                            if name is not None:
                                                kind = 0
                                                if nmemo < max_memo:
                                                    memo[index] = name
                                                    lost.append(0)
                                                    lost_len += 1
                                                    p += width
                                                    continue
                                    elif cls is tuple and len(value) == 3 and value[0].__class__ in atoms \
                                            and value[1].__class__ in atoms and value[2].__class__ in atoms:
                                        kind = lost_tuple
                                    else:
                                        kind = _lost_kind(value)
                                    if kind:
                                        lost.append(kind)
                                        lost_count += 1
                                        lost_len += 1
                                        p += width
                                        continue
                    else:
                        # At lim: the checks, a refill, then on (inline or through the handler).
                        if p >= check_at:
                            reader._pos = base + p
                            if ctx is not None:
                                ctx.check_deadline()
                            check_at = p + check_bytes
                            safe = self._stack_room(p)
                        if counting:
                            ops += 1
                            if ops == max_ops:
                                self.out_of_ops = True
                                raise _Broken(base + p, f"stopped after {max_ops} opcodes (detection budget)")
                        if blen - p < width_max:  # refill (the buffer never extends past the end)
                            pos = reader._pos = base + p
                            if not reader.peek(width_max):
                                raise _Broken(pos, "stream ends before STOP" if pos > self.start
                                              else "empty stream")
                            if reader._buf is not buf:  # positions are relative to the buffer
                                shift = reader._buf_start - base
                                buf = reader._buf
                                base = reader._buf_start
                                blen = len(buf)
                                p -= shift
                                check_at -= shift
                                safe -= shift
                        code = buf[p]
                        if just:
                            just = self._just_imported = False
                            if code in after_import:
                                self.import_evidence = True
                        lim = blen - width_max + 1  # min(check_at, safe, ...) without a call
                        if check_at < lim:
                            lim = check_at
                        if safe < lim:
                            lim = safe
                        if counting and lim > p + 1:
                            lim = p + 1  # this opcode only: the next one is counted here too
                        if p < lim:
                            continue  # this opcode, inline
                    # Everything else, and the unusual cases above: the opcode's handler.
                    pos = base + p
                    reader._pos = pos + 1
                    handler = table[code]
                    if handler is None:
                        raise _Broken(pos, f"invalid opcode 0x{code:02x}")
                    self.lost_count = lost_count
                    self.retained_bytes = retained
                    try:
                        handler(self, pos)
                    finally:  # the handler's counts, also when it raises
                        lost_count = self.lost_count
                        retained = self.retained_bytes
                        lost_len = len(lost)
                        kfull, kparts = names.full, names.parts
                except _Stop:
                    self._stopped(result)
                    break
                except (struct.error, ValueError, UnicodeDecodeError, OverflowError) as exc:
                    raise _Broken(base + p, f"invalid argument: {exc}") from None
                # A handler may have read, refilled or moved the reader, or replaced the stack.
                stack = self.stack
                just = self._just_imported
                if reader._buf is not buf:
                    shift = reader._buf_start - base
                    buf = reader._buf
                    base = reader._buf_start
                    blen = len(buf)
                    check_at -= shift
                    safe -= shift
                p = reader._pos - base
                if p < 0:  # before the buffer: empty it (positions stay relative to base)
                    shift = reader._pos - base
                    buf, base, blen, p = b"", reader._pos, 0, 0
                    check_at -= shift
                    safe -= shift
                framed = reader.frame_end > 0
                if just or counting:
                    lim = 0  # the next opcode through the checks
                else:
                    lim = blen - width_max + 1
                    if check_at < lim:
                        lim = check_at
                    if safe < lim:
                        lim = safe
        finally:
            self.ops = ops
            self.lost_count = lost_count
            self.retained_bytes = retained

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
