"""The symbolic pickle VM: walks a pickle opcode by opcode, as ``pickle.load`` would, without
importing or calling anything.

It keeps the unpickler's stack, mark stack and memo, so an import is resolved however its module
and name were produced (literal, memoized, duplicated); an import whose operands are not literal
strings cannot be known without running the pickle and is itself a finding. Every import is judged
by the policy (allowlist first), every call site (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD, and
the method calls APPEND/SETITEM/ADDITEMS make on non-builtin objects) is recorded against the
callable it calls, and bytes built in the stream that reach a loader (``pickle.loads``,
``torch.load`` ...) are scanned as a nested pickle or file.

Memory is bounded whatever the size of the stream: bytes are read through a buffered
:class:`SourceReader`, payloads above :data:`MAX_INLINE_BYTES` are never read (a placeholder keeps
their length and offset, so a nested pickle can still be scanned from the source), and container
contents beyond a budget are dropped (they cannot be reached by later opcodes except through calls,
which are judged when they happen).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import gc
import re
import struct
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, NoReturn, Optional, Sequence, Tuple

from ..context import Limits, ScanContext
from ..findings import Severity
from ..npdtype import DType, DtypeUnsure, PickledDtype, from_pickled
from ..pickle_policy import ARGUMENT_CALLERS, NESTED_LOADERS, full_name
from ..policy import GlobalVerdict
from ..source import ByteSource, BytesSource, SourceReader
from .interface import FormatReader

#: A str/bytes payload longer than this is not read: a placeholder keeps its length and offset.
MAX_INLINE_BYTES = 1 << 20
#: Total bytes of str/bytes values kept in memory per stream; beyond it payloads become placeholders.
MAX_RETAINED_BYTES = 32 << 20
#: Items kept in lists/dicts/sets per stream; items appended beyond it are counted, not kept.
MAX_RETAINED_ITEMS = 200_000
#: Protocol 0/1 detection: this many valid opcodes make a file a pickle even before its STOP.
TRIAL_OPS = 100_000
#: Findings of one kind kept per stream (the rest are counted in the last one's details).
MAX_RECORDS = 200
#: Call sites listed per imported global.
MAX_CALLS_LISTED = 10
#: The default numpy alignment joblib's NumpyArrayWrapper.__init__ sets.
_JOBLIB_ALIGNMENT = 16
_JOBLIB_WRAPPERS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper",
                              "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper"})
_BYTES_IO = frozenset({"io.BytesIO", "_io.BytesIO"})

# Text codecs whose result the VM computes for ``_codecs.encode(str, encoding)`` (pure functions).
_CODEC_ALIASES = {
    "latin1": "latin-1", "latin_1": "latin-1", "latin-1": "latin-1", "iso8859_1": "latin-1",
    "iso_8859_1": "latin-1", "iso-8859-1": "latin-1", "l1": "latin-1", "8859": "latin-1",
    "utf8": "utf-8", "utf_8": "utf-8", "utf-8": "utf-8", "u8": "utf-8", "ascii": "ascii",
    "us_ascii": "ascii", "us-ascii": "ascii", "raw_unicode_escape": "raw-unicode-escape",
    "unicode_escape": "unicode-escape", "rot13": "rot13", "rot_13": "rot13",
    "utf_16": "utf-16", "utf-16": "utf-16", "utf16": "utf-16", "utf_32": "utf-32", "utf-32": "utf-32",
}


# ---------------------------------------------------------------------------------------------
# Symbolic values. Literals (None, bool, int, float, str, bytes, bytearray, tuple) are Python values;
# everything the unpickler would build by calling or importing is one of these.

class Sym:
    """Base of every value the VM cannot hold as a plain Python literal."""

    __slots__ = ()


class Global(Sym):
    """An imported object (the result of GLOBAL, INST's class, STACK_GLOBAL) or an unresolved one."""

    __slots__ = ("module", "name", "path", "record", "loader", "allowed", "plausible")

    def __init__(self, module: Optional[str], name: Optional[str], record: Optional["_Record"],
                 allowed: bool) -> None:
        self.module = module
        self.name = name
        self.path = full_name(module, name) if module is not None and name is not None else "<unresolved>"
        self.record = record
        self.loader = NESTED_LOADERS.get(self.path)
        self.allowed = allowed
        self.plausible = False


class Obj(Sym):
    """What a call or construction returned. ``cls`` is the global that was called, if known."""

    __slots__ = ("cls", "attrs")

    def __init__(self, cls: Optional[Global], attrs: Optional[Dict[str, Any]] = None) -> None:
        self.cls = cls
        self.attrs = attrs


class Opaque(Sym):
    """A value the VM does not model (persistent objects, out-of-band buffers, huge integers)."""

    __slots__ = ("what", "record")

    def __init__(self, what: str, record: Optional["_Record"] = None) -> None:
        self.what = what
        self.record = record


class _HugeInt(Sym):
    """An integer too long to convert (over 4000 digits): an int to every operation, value unknown."""

    __slots__ = ()
    what = "a huge integer"


class BigData(Sym):
    """A str/bytes payload not held in memory: its kind, length and (for raw bytes) source offset."""

    __slots__ = ("kind", "length", "offset")

    def __init__(self, kind: str, length: Optional[int], offset: Optional[int]) -> None:
        self.kind = kind
        self.length = length
        self.offset = offset


class PList(list):  # type: ignore[type-arg]
    """A list built by the stream; ``dropped`` counts items not kept (memory budget)."""

    __slots__ = ("dropped",)

    def __init__(self, items: Sequence[Any] = ()) -> None:
        super().__init__(items)
        self.dropped = 0


class PDict(Sym):
    """A dict built by the stream, as key/value pairs (keys may be symbolic).

    The pair list is made on the first item: a stream of a million empty dicts (memoized, so the
    memo holds them all) then costs one small object each, not an object and an empty list.
    """

    __slots__ = ("_pairs", "dropped")

    def __init__(self) -> None:
        self._pairs: Optional[List[Tuple[Any, Any]]] = None
        self.dropped = 0

    @property
    def pairs(self) -> Sequence[Tuple[Any, Any]]:
        return self._pairs if self._pairs is not None else ()

    def add_pairs(self, pairs: Iterable[Tuple[Any, Any]]) -> None:
        if self._pairs is None:
            self._pairs = []
        self._pairs.extend(pairs)


class PSet(Sym):
    """A set or frozenset built by the stream."""

    __slots__ = ("items", "frozen", "dropped")

    def __init__(self, items: Sequence[Any] = (), frozen: bool = False) -> None:
        self.items = list(items)
        self.frozen = frozen
        self.dropped = 0


class _CBytes(bytes):
    """Bytes a call returned (``_codecs.encode``, ``bytes(...)``): the VM knows their value, but an
    operation on them is judged like one on any call result (accepted), not like one on a literal."""

    __slots__ = ()


class _CByteArray(bytearray):
    """A bytearray a call returned (see :class:`_CBytes`)."""


def _computed(value: Any) -> Any:
    if type(value) is bytes:
        return _CBytes(value)
    if type(value) is bytearray:
        return _CByteArray(value)
    return value


class _NotLiteral(Exception):
    pass


def to_literal(value: Any, budget: Optional[List[int]] = None, keep_globals: bool = False) -> Any:
    """The plain Python value a symbolic value stands for, or :class:`_NotLiteral`.

    ``keep_globals``: imported objects stay :class:`Global` (``.module``, ``.name``, ``.path``), as
    persistent ids hold classes (``('storage', torch.FloatStorage, key, location, numel)``).
    """
    if budget is None:
        budget = [100_000]
    if keep_globals and isinstance(value, Global):
        return value
    budget[0] -= 1
    if budget[0] < 0:
        raise _NotLiteral("too large")
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(to_literal(v, budget, keep_globals) for v in value)
    if isinstance(value, PList):
        if value.dropped:
            raise _NotLiteral("truncated")
        return [to_literal(v, budget, keep_globals) for v in value]
    if isinstance(value, PDict):
        if value.dropped:
            raise _NotLiteral("truncated")
        try:
            return {to_literal(k, budget, keep_globals): to_literal(v, budget, keep_globals)
                    for k, v in value.pairs}
        except TypeError:
            raise _NotLiteral("unhashable key") from None
    raise _NotLiteral(type(value).__name__)


def _maybe_literal(value: Any, keep_globals: bool = False) -> Any:
    try:
        return to_literal(value, keep_globals=keep_globals)
    except (_NotLiteral, RecursionError):
        return None


def describe(value: Any) -> str:
    """Short human description of a stack value (for messages)."""
    if isinstance(value, Global):
        return f"the imported object {value.path}"
    if isinstance(value, Obj):
        return f"the result of calling {value.cls.path}" if value.cls else "a computed object"
    if isinstance(value, (Opaque, _HugeInt)):
        return value.what
    if isinstance(value, BigData):
        return f"a {value.kind} of {value.length} bytes"
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return type(value).__name__


# ---------------------------------------------------------------------------------------------

_DEFAULT_MAX_LINE = Limits().max_in_memory_bytes + 1


class _FastReader(SourceReader):
    """:class:`SourceReader` with an inlined fast path for reads inside the current buffer: the VM
    reads a byte or a few per opcode, and millions of opcodes make the general path the hot spot.

    It also holds the VM's per-stream reading state (see :class:`_PickleVM`)."""

    def __init__(self, source: ByteSource, start: int = 0, end: Optional[int] = None) -> None:
        super().__init__(source, start, end)
        #: Longest text argument line read, with its newline (``max-in-memory-bytes``).
        self.max_line = _DEFAULT_MAX_LINE
        #: Where the last FRAME ends; -1 once a FRAME ran past the end of the data (only
        #: ``pickle._Unpickler`` goes on then, see the VM's ``frame``).
        self.frame_end = 0
        #: Which unpicklers still read the stream (``_PY | _C``): where only one accepts a form,
        #: the other has failed, and a later form only that other one accepts breaks the walk.
        self.alive = 3

    def read(self, n: int) -> bytes:
        rel = self._pos - self._buf_start
        stop = rel + n
        if n > 0 and rel >= 0 and stop <= len(self._buf):  # the buffer never extends past ``end``
            self._pos += n
            return self._buf[rel:stop]
        return super().read(n)

    def readline(self, limit: int = 1 << 16) -> bytes:
        rel = self._pos - self._buf_start
        if rel >= 0:  # the line ends inside the buffer (which never extends past ``end``)
            idx = self._buf.find(b"\n", rel, rel + limit)
            if idx >= 0:
                self._pos += idx + 1 - rel
                return self._buf[rel:idx + 1]
        return super().readline(limit)


class _FrameBufferReader(_FastReader):
    """How the C unpickler reads a stream from a file object without ``peek`` (an ``io.BytesIO``, as
    ``torch.load`` gives it): a FRAME is read into a buffer in one piece, and a read the rest of the
    buffer cannot satisfy drops that rest and reads on from the file, after the frame. Where a frame
    ends inside an opcode, that reader sees other opcodes than ``pickle.loads`` does."""

    region_end = -1  #: end of the frame being read from the buffer; -1: none

    def _leave_region(self, n: int) -> None:
        end = self.region_end
        if end >= 0 and self._pos < end < self._pos + n:
            self._pos = end  # the rest of the buffer is dropped
            self.region_end = -1

    def read(self, n: int) -> bytes:
        self._leave_region(n)
        return super().read(n)

    def skip(self, n: int) -> int:
        self._leave_region(n)
        return super().skip(n)

    def readline(self, limit: int = 1 << 16) -> bytes:
        end = self.region_end
        if end >= 0 and self._pos < end:
            line = self.source.read_at(self._pos, min(end - self._pos, limit))
            if b"\n" not in line:
                self._pos = end
                self.region_end = -1
        return super().readline(limit)

    def frame(self, size: int) -> bool:
        """FRAME of ``size`` bytes: False when the data ends first (the C unpickler fails)."""
        end = self.region_end
        if end >= 0 and self._pos + size <= end:
            return True  # inside the buffer already: _pickle only rewinds
        if end >= 0 and self._pos < end:
            self._pos = end
        if size > self.remaining():
            return False
        self.region_end = self._pos + size
        return True


class _Latin1OfUtf8:
    """The bytes ``_codecs.encode(text, 'latin1')`` makes of a large BINUNICODE string, produced on
    demand into an unlinked temporary file (streamed: memory stays bounded)."""

    def __init__(self, source: ByteSource, offset: int, length: int) -> None:
        self.source = source
        self.offset = offset
        self.length = length
        self.size = length  # an upper bound, for messages

    def materialize(self) -> ByteSource:
        import os
        import tempfile

        from ..source import FileSource

        decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        fd, path = tempfile.mkstemp(prefix="safemodel-nested-")
        try:
            with os.fdopen(fd, "wb") as out:
                pos, end = self.offset, self.offset + self.length
                while pos < end:
                    chunk = self.source.read_at(pos, min(1 << 20, end - pos))
                    if not chunk:
                        break
                    pos += len(chunk)
                    out.write(decoder.decode(chunk, final=pos >= end).encode("latin-1"))
            source = FileSource(path, name="<nested bytes>")
        finally:
            os.unlink(path)  # the open descriptor keeps the data until the source is closed
        return source


class _Broken(Exception):
    """The stream cannot be parsed further at ``offset``. ``reported``: a nested VM said so already."""

    def __init__(self, offset: int, reason: str, reported: bool = False, limit: bool = False) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.reported = reported
        #: A scan limit stopped the walk (the stream may be fine): ``unscanned-limit``, and detection
        #: counts the stream as a pickle.
        self.limit = limit


class _Stop(Exception):
    pass


@dataclass
class _Record:
    """One finding in the making: an import (or anomaly) with where and how it is used."""

    rule_id: str
    severity: Severity
    subject: str
    reason: str
    offset: int
    opcode: str
    count: int = 1
    calls: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    def add_call(self, kind: str, offset: int) -> None:
        if len(self.calls) < MAX_CALLS_LISTED:
            self.calls.append(f"{kind}@{offset}")
        else:
            self.extra["more_calls"] = self.extra.get("more_calls", 0) + 1


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


def _verdict_rank(v: GlobalVerdict) -> int:
    return -1 if v.rule_id is None else int(v.severity)


class _PickleVM:
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

    # -- findings ------------------------------------------------------------------------------
    def _record(self, key: Tuple[str, str], make: Callable[[], _Record]) -> Optional[_Record]:
        rec = self.records.get(key)
        if rec is not None:
            rec.count += 1
            return rec
        if len(self.records) >= MAX_RECORDS:
            self.dropped_records += 1
            return None
        rec = make()
        self.records[key] = rec
        return rec

    def _anomaly(self, rule_id: str, subject: str, reason: str, pos: int, opcode: str,
                 key: Optional[str] = None, severity: Optional[Severity] = None) -> Optional[_Record]:
        from ..rules import rule

        sev = severity if severity is not None else rule(rule_id).severity
        return self._record((rule_id, key or subject),
                            lambda: _Record(rule_id, sev, subject, reason, pos, opcode))

    def _classify(self, module: str, name: str) -> GlobalVerdict:
        if self.policy is None:
            from ..pickle_policy import classify_global
            return classify_global(module, name, frozenset())
        return self.policy.classify_global(module, name)

    def _global(self, module: str, name: str, pos: int, opcode: str) -> Global:
        """Resolve and judge an import, as ``Unpickler.find_class`` would see it."""
        mapped = (module, name)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            mapped = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            mapped = (_compat_pickle.IMPORT_MAPPING[module], name)
        if self.proto < 3:  # the loader maps Python 2 names (fix_imports) below protocol 3
            verdict = self._classify(*mapped)
            module, name = mapped
        else:
            verdict = self._classify(module, name)
            if mapped != (module, name):  # a Python 2 name: the worse of both readings
                other = self._classify(*mapped)
                if _verdict_rank(other) > _verdict_rank(verdict):
                    verdict = other
        if (module, name) not in self._globals_seen and len(self.globals) < 10_000:
            self._globals_seen.add((module, name))
            self.globals.append((module, name))
        record = None
        path = full_name(module, name)
        plausible = bool(_IDENTIFIER_PATH.match(module) and _IDENTIFIER_PATH.match(name))
        self._just_imported = plausible
        if verdict.rule_id is not None:
            record = self._record(
                (verdict.rule_id, path),
                lambda: _Record(verdict.rule_id or "", verdict.severity, path, verdict.reason, pos, opcode,
                                extra={"global": path, "module": module, "name": name}))
        elif verdict.allowed_by:  # a config entry turned a finding off: one INFO note per entry
            extra = {"global": path, "entry": verdict.allowed_by, "turned_off": verdict.turned_off}
            self._record(("allowed-by-config", verdict.allowed_by),
                         lambda: _Record("allowed-by-config", Severity.INFO, path, verdict.reason, pos,
                                         opcode, extra=extra))
        glob = Global(module, name, record, allowed=verdict.rule_id is None)
        glob.plausible = plausible
        if glob.loader and glob.allowed:
            self._loader_imported = True
        return glob

    def _unresolved(self, module: Any, name: Any, pos: int, opcode: str) -> Global:
        reason = (f"module {describe(module)} and name {describe(name)} are not literal strings; "
                  "what is imported is only known when the pickle runs")
        rec = self._anomaly("pickle-unresolved-global", f"{opcode} at offset {pos}", reason, pos, opcode,
                            key=str(pos))
        return Global(None, None, rec, allowed=False)

    # -- calls -----------------------------------------------------------------------------------
    def _note_call(self, target: Any, kind: str, pos: int) -> None:
        if isinstance(target, Global) and target.plausible and kind in _CALL_KINDS:
            self.import_evidence = True
        rec = None
        if isinstance(target, Global):
            rec = target.record
        elif isinstance(target, Obj) and target.cls is not None:
            rec = target.cls.record
        elif isinstance(target, Opaque):
            rec = target.record
        if rec is not None:
            rec.add_call(kind, pos)

    def _check_escaped_loaders(self, values: Sequence[Any], pos: int) -> None:
        """An allowlisted loader handed to another callable would load bytes nobody scanned."""
        if not self._loader_imported:
            return
        todo = [(v, 0) for v in values]
        seen = 0
        while todo and seen < 2000:
            v, depth = todo.pop()
            seen += 1
            if isinstance(v, Global):
                if v.loader and v.allowed:
                    self._anomaly("pickle-nested-opaque", v.path,
                                  f"{v.path} is passed on as a value, so what it loads cannot be "
                                  "followed without running the pickle", pos, "REDUCE")
            elif depth < 4:
                if isinstance(v, (tuple, PList)):
                    todo.extend((x, depth + 1) for x in v)
                elif isinstance(v, PDict):
                    todo.extend((x, depth + 1) for kv in v.pairs for x in kv)
                elif isinstance(v, PSet):
                    todo.extend((x, depth + 1) for x in v.items)

    def _call(self, callee: Any, args: Any, kind: str, pos: int, kwargs: Any = None) -> Any:
        """What calling ``callee(*args)`` returns, symbolically; records the call site."""
        if not isinstance(callee, _SYMBOLIC) or (kind in ("NEWOBJ", "NEWOBJ_EX")
                                                  and not isinstance(callee, Global)):
            # NEWOBJ takes a class: an imported one (what a call or a persistent load returns is an
            # instance, and _pickle checks for a type).
            raise _Broken(pos, f"{kind} calls {describe(callee)}, which is not callable (the loader raises)")
        if type(args) in _NOT_ITERABLE or (kwargs is not None and not _is_kwargs(kwargs)):
            raise _Broken(pos, f"{kind} with arguments {describe(args)} (the loader raises TypeError)")
        self._note_call(callee, kind, pos)
        if not isinstance(callee, Global):
            # The callee is an instance the stream made (or a loaded/persistent object): the call runs
            # its type's __call__, which no allowlist entry admits.
            self._built_call(callee, f"{kind} calls {describe(callee)}", pos, kind)
        extra = [kwargs] if kwargs is not None else []
        direct_loader = isinstance(callee, Global) and callee.loader and kind in ("REDUCE", "INST", "OBJ")
        self._check_escaped_loaders([args, *extra] if not direct_loader else [*extra], pos)
        if not isinstance(callee, Global) or callee.module is None:
            return Obj(None)
        path = callee.path
        argv = tuple(args) if isinstance(args, (tuple, PList)) else None
        if argv is not None and kind in ("REDUCE", "INST", "OBJ"):
            for i in ARGUMENT_CALLERS.get(path, ()):
                if i < len(argv) and isinstance(argv[i], Sym) and not isinstance(argv[i], Global):
                    self._built_call(argv[i], f"{path} calls its argument {i} ({describe(argv[i])})",
                                     pos, kind)
        if direct_loader:
            self._nested(callee, argv, pos)
            return Opaque(f"the object {path} loads")
        if argv is None:
            return Obj(callee)
        if path == "_codecs.encode" and kind == "REDUCE":
            return _computed(self._codecs_encode(argv))
        if path in ("builtins.bytes", "builtins.bytearray") and kind in ("REDUCE", "NEWOBJ"):
            value = self._codecs_encode(argv) if len(argv) == 2 else (
                argv[0] if argv and isinstance(argv[0], (bytes, bytearray, BigData)) else
                (b"" if not argv else Obj(callee)))
            if path == "builtins.bytearray" and isinstance(value, bytes):
                return _CByteArray(value)
            return _computed(value)
        if path in _BYTES_IO:
            return Obj(callee, {"bytes": argv[0] if argv else b""})
        if path in ("copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__") and argv \
                and isinstance(argv[0], Global):
            self._note_call(argv[0], f"{kind} via {path}", pos)
            if path == "copyreg._reconstructor" and len(argv) > 1:  # runs base.__init__(obj, state)
                self._note_call(argv[1], f"{kind} via {path}", pos)
                base = argv[1]
                if isinstance(base, Global) and 0 in ARGUMENT_CALLERS.get(base.path, ()) and len(argv) > 2 \
                        and isinstance(argv[2], Sym) and not isinstance(argv[2], Global):
                    # state is __init__'s first argument, which that __init__ calls
                    self._built_call(argv[2], f"{path} runs {base.path}.__init__, which calls its argument "
                                     f"0 ({describe(argv[2])})", pos, kind)
            cls = argv[0]
            rest = argv[1:] if path != "copyreg._reconstructor" else ()
            return self._construct(cls, rest, kind if path != "copyreg._reconstructor" else "NEWOBJ")
        return self._construct(callee, argv, kind)

    def _built_call(self, target: Any, what: str, pos: int, opcode: str) -> None:
        """Report a call whose callable is not an imported global (its __call__ was never judged)."""
        cls = target.cls.path if isinstance(target, Obj) and target.cls is not None else None
        reason = (f"{what}: the call runs the __call__ of "
                  f"{'an instance of ' + cls if cls else 'an object built at load time'}, which no "
                  "allowlist entry admits (an admitted class's instance can dispatch to any function)")
        self._anomaly("pickle-calls-built-object", f"{opcode} at offset {pos}", reason, pos, opcode,
                      key=str(pos))

    def _construct(self, cls: Global, argv: Sequence[Any], kind: str) -> Obj:
        if cls.path == "numpy.dtype" and argv:
            return Obj(cls, {"descr": argv[0], "argv": tuple(argv)})
        if cls.path in _JOBLIB_WRAPPERS:
            attrs: Dict[str, Any] = {}
            if argv and kind not in ("NEWOBJ", "NEWOBJ_EX"):  # __init__ runs: positional fields
                names = ("subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes")
                attrs["numpy_array_alignment_bytes"] = _JOBLIB_ALIGNMENT
                attrs.update(zip(names, argv))
            return Obj(cls, attrs)
        return Obj(cls)

    def _codecs_encode(self, argv: Sequence[Any]) -> Any:
        text = argv[0] if argv else None
        encoding = argv[1] if len(argv) > 1 else "utf-8"
        if not isinstance(encoding, str):
            return BigData("bytes", None, None)
        codec = _CODEC_ALIASES.get(encoding.strip().lower().replace(" ", "_"))
        if isinstance(text, BigData):
            # A large string still has a known source range: protocol 2 writes big bytes objects as
            # _codecs.encode(<BINUNICODE of their latin-1 text>, 'latin1').
            if text.offset is not None and text.kind == "str8" and codec == "latin-1":
                return BigData("bytes", text.length, text.offset)
            if text.offset is not None and text.kind == "str" and codec == "utf-8":
                return BigData("bytes", text.length, text.offset)
            if text.offset is not None and text.kind == "str" and codec == "latin-1":
                return BigData("bytes-from-utf8", text.length, text.offset)
            return BigData("bytes", None, None)
        if codec is None or not isinstance(text, str):
            return BigData("bytes", None, None)
        try:
            if codec == "rot13":
                return codecs.encode(text, "rot13").encode("latin-1")
            return text.encode(codec)
        except (UnicodeError, ValueError):
            return BigData("bytes", None, None)

    def _nested(self, loader: Global, argv: Optional[Tuple[Any, ...]], pos: int) -> None:
        """Scan what ``loader`` would load: bytes built in the stream, or say it cannot be known."""
        data = argv[0] if argv else None
        if isinstance(data, Obj) and data.cls is not None and data.cls.path in _BYTES_IO and data.attrs:
            data = data.attrs.get("bytes")
        src: Optional[ByteSource] = None
        if isinstance(data, (bytes, bytearray)):
            src = BytesSource(bytes(data), name=f"<nested @{pos}>")
        elif isinstance(data, BigData) and data.kind in ("bytes", "bytearray") and data.offset is not None:
            src = self.source.slice(data.offset, data.length or 0)
        elif isinstance(data, BigData) and data.kind == "bytes-from-utf8" and data.offset is not None:
            src = _Latin1OfUtf8(self.source, data.offset, data.length or 0)
        if src is None:
            self._anomaly("pickle-nested-opaque", loader.path,
                          f"{loader.path} is called on {describe(data)}, which is computed at load time",
                          pos, "REDUCE", key=f"{loader.path}@{pos}")
            return
        if self.silent or self.ctx is None:
            return
        kind = loader.loader
        ctx = self.ctx
        n = src.size

        def run() -> None:
            ctx.report("pickle-nested", f"{loader.path} loads {n} bytes built inside the stream; they "
                       f"were scanned as a nested {'pickle' if kind == 'pickle' else 'file'}",
                       offset=pos, details={"loader": loader.path, "size": n})
            member = f"<nested pickle @{pos}>"
            child = ctx.child(member)
            if child.depth > ctx.limits.max_depth:
                child.report("unscanned-limit", f"nesting deeper than {ctx.limits.max_depth} levels; "
                             "nested pickle not scanned")
            else:
                try:
                    source = src.materialize() if isinstance(src, _Latin1OfUtf8) else src
                except UnicodeError:  # not latin-1 text: the loader's encode fails, nothing loads
                    return
                try:
                    if kind == "pickle":
                        child.add_format("pickle")
                        scan_pickle_stream(source, child)
                    else:
                        ctx.scan(source, member=member)
                finally:
                    if source is not src:
                        source.close()

        self._pending_nested.append(run)

    # -- containers ------------------------------------------------------------------------------
    def _keep(self, n: int) -> bool:
        if self.retained_items + n > MAX_RETAINED_ITEMS:
            return False
        self.retained_items += n
        return True

    def _append(self, target: Any, items: List[Any], pos: int, kind: str) -> None:
        if isinstance(target, PList):
            if self._keep(len(items)):
                target.extend(items)
            else:
                target.dropped += len(items)
            return
        if not isinstance(target, _SYMBOLIC):
            # A value the stream built itself has no append/extend (a bytearray takes bytes):
            # both unpicklers raise, except _pickle on an empty APPENDS, which does nothing.
            if not (isinstance(target, bytearray) and all(_is_byte(v) for v in items)):
                if items:
                    raise _Broken(pos, f"{kind} to {describe(target)} (the loader raises)")
                self._kill(_PY, pos, f"empty {kind} to {describe(target)}")  # pickle.py looks up extend
            return
        # Anything else: the loader calls target.append / target.extend, a method call.
        self._mutating_call(target, items, pos, kind)

    def _mutating_call(self, target: Any, values: Sequence[Any], pos: int, kind: str) -> None:
        if isinstance(target, Global):
            self._anomaly("pickle-global-mutation", target.path,
                          f"{kind} modifies the imported object {target.path} itself", pos, kind)
        self._note_call(target, kind, pos)
        self._check_escaped_loaders(values, pos)
        if kind.startswith("SETITEM") and "__setstate__" in [k for k in values[0::2] if isinstance(k, str)]:
            # a mapping class whose __getattr__ reads its items would hand the value to a later BUILD
            self._state_hook(pos, kind)

    def _check_state_hook(self, state: Any, pos: int, kind: str) -> None:
        """BUILD's state (dict state or slot state) that gives the instance its own __setstate__."""
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if isinstance(part, PDict) and any(isinstance(k, str) and k == "__setstate__"
                                               for k, _ in part.pairs):
                self._state_hook(pos, kind)

    def _state_hook(self, pos: int, kind: str) -> None:
        # Both unpicklers find __setstate__ with getattr(inst, '__setstate__'), which reads the
        # instance's own attributes: the next BUILD on this object calls the stored value with its
        # state, a call of something no allowlist entry judged as a call target.
        self._built_call(None, f"{kind} stores a __setstate__ on an instance; the next BUILD on it calls "
                         "that value with its state", pos, kind)

    def _setitems(self, target: Any, pairs: List[Any], pos: int, kind: str) -> None:
        if len(pairs) % 2:
            raise _Broken(pos, f"{kind} with an odd number of items")
        if isinstance(target, PDict):
            for key in pairs[0::2]:
                if type(key) not in _HASHABLE and _unhashable(key):
                    raise _Broken(pos, f"{kind} with the unhashable key {describe(key)} (the loader raises)")
            if self._keep(len(pairs) // 2):
                target.add_pairs(zip(pairs[0::2], pairs[1::2]))
            else:
                target.dropped += len(pairs) // 2
            return
        if not isinstance(target, _SYMBOLIC):
            if pairs and not _item_assignable(target, pairs):
                raise _Broken(pos, f"{kind} on {describe(target)} (the loader raises)")
            return
        self._mutating_call(target, pairs, pos, kind)

    def _build(self, inst: Any, state: Any, pos: int) -> None:
        """BUILD: ``inst.__setstate__(state)`` or an attribute update; joblib arrays follow it."""
        if isinstance(inst, Global):
            self._anomaly("pickle-global-mutation", inst.path,
                          f"BUILD sets attributes of the imported object {inst.path} itself (not of "
                          "an instance): it rewrites a module, class or function for later use", pos, "BUILD")
        if not isinstance(inst, _SYMBOLIC):
            # No __setstate__ and no __dict__: pickle.py accepts only a false state (and slot state).
            slots = None
            if isinstance(state, tuple) and len(state) == 2:
                state, slots = state
            # pickle.py: a false state and slot state do nothing; _pickle: only a None state does, and
            # a slot state must be a dict (empty here).
            py_ok = not _truthy(state) and not _truthy(slots)
            c_ok = state is None and (slots is None or isinstance(slots, PDict) and not _truthy(slots))
            if not (py_ok or c_ok):
                raise _Broken(pos, f"BUILD sets the state of {describe(inst)} (the loader raises)")
            if not (py_ok and c_ok):
                self._kill(_C if py_ok else _PY, pos, f"BUILD on {describe(inst)}")
            return
        self._note_call(inst, "BUILD", pos)
        self._check_escaped_loaders([state], pos)
        self._check_state_hook(state, pos, "BUILD")
        if not isinstance(inst, Obj) or inst.cls is None:
            return
        path = inst.cls.path
        if path == "numpy.dtype":
            inst.attrs = dict(inst.attrs or {}, state=state)
        elif path in _JOBLIB_WRAPPERS:
            attrs = inst.attrs if inst.attrs is not None else {}
            for part in (state if isinstance(state, tuple) and len(state) == 2 else (state,)):
                if isinstance(part, PDict):
                    for k, v in part.pairs:
                        if isinstance(k, str):
                            attrs[k] = v
            inst.attrs = attrs
            self._skip_joblib_array(inst, pos)

    def _skip_joblib_array(self, wrapper: Obj, pos: int) -> None:
        """joblib.load reads an array's raw bytes right after its wrapper's BUILD: skip them.

        The number of bytes is numpy's ``dtype.itemsize * prod(shape)``, computed by
        :mod:`safemodel_ci.npdtype` exactly or not at all: where it is not certain, the stream
        is not resynchronised by a guess but fails closed (``unscanned-parse-error``).
        """
        attrs = wrapper.attrs or {}
        here = self.reader.tell()
        try:
            dtype = _dtype_info(attrs.get("dtype"))
        except DtypeUnsure as exc:
            self._unsure_array(pos, f"its dtype: {exc}")
        if dtype.hasobject:
            # An object array is a complete pickle written inline; joblib loads it with a plain
            # Unpickler and then continues after its STOP.
            if self.silent:
                vm = _PickleVM(self.source, None, here, self.reader.end, silent=True, policy=self.policy)
                res = vm.run()
            else:
                res = scan_pickle_at(self.source, self.ctx, here, self.reader.end)  # type: ignore[arg-type]
            if not res.complete or res.end is None:
                raise _Broken(here, "the object array pickle after a joblib NumpyArrayWrapper is broken",
                              reported=not self.silent)
            self.reader.seek(res.end)
        else:
            count = _shape_count(attrs.get("shape"))
            if count is None:
                self._unsure_array(pos, f"its shape {describe(attrs.get('shape'))} (joblib multiplies "
                                   "int64 dimensions; only non-negative ints whose product fits are read)")
            if dtype.itemsize == 0:
                raise _Broken(pos, "joblib NumpyArrayWrapper with a zero-size dtype: joblib.load fails "
                              "there (division by zero)")
            if attrs.get("numpy_array_alignment_bytes") is not None:
                pad = self._read(1, here)[0]
                if self.reader.skip(pad) != pad:
                    raise _Broken(here, "stream ends inside joblib array padding")
            nbytes = count * dtype.itemsize
            if self.reader.skip(nbytes) != nbytes:
                raise _Broken(here, f"stream ends inside a {nbytes}-byte joblib array")
            self._check_array_bytes_as_opcodes(here, self.reader.tell())
        self.stack[-1] = Obj(None)

    def _unsure_array(self, pos: int, what: str) -> NoReturn:
        """A joblib array whose byte count is not certain: fail closed, never guess and go on."""
        reason = (f"joblib NumpyArrayWrapper at offset {pos}: the number of raw array bytes joblib reads "
                  f"after it cannot be computed exactly from {what}; the rest of the stream was not scanned")
        if not self.silent and self.ctx is not None:
            self.ctx.report("unscanned-parse-error", reason, offset=pos,
                            details={"reason": "joblib-array-size"})
        raise _Broken(pos, reason, reported=not self.silent and self.ctx is not None)

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

    # -- opcodes -----------------------------------------------------------------------------------
    @staticmethod
    def _build_dispatch() -> Dict[int, Callable[["_PickleVM", int], None]]:
        """The opcode table, built once for the class: handlers take the VM as ``self``."""
        d: Dict[int, Callable[["_PickleVM", int], None]] = {}

        def op(code: bytes) -> Callable[[Callable[..., None]], Callable[..., None]]:
            def deco(fn: Callable[..., None]) -> Callable[..., None]:
                d[code[0]] = fn
                return fn
            return deco

        @op(b"(")
        def mark(self: _PickleVM, pos: int) -> None:
            if len(self.metastack) >= self.max_stack:
                raise _Broken(pos, "too many MARKs (limit)")
            self.metastack.append(self.stack)
            self.stack = []

        @op(b".")
        def stop(self: _PickleVM, pos: int) -> None:
            self._top(pos)
            raise _Stop

        @op(b"0")
        def pop(self: _PickleVM, pos: int) -> None:
            if self.stack:
                self.stack.pop()
            else:
                self._pop_mark(pos)  # POP on an empty frame discards the mark (pickle.py and _pickle)

        @op(b"1")
        def pop_mark(self: _PickleVM, pos: int) -> None:
            self._pop_mark(pos)

        @op(b"2")
        def dup(self: _PickleVM, pos: int) -> None:
            self._push(self._top(pos))

        @op(b"F")
        def float_(self: _PickleVM, pos: int) -> None:
            line = self._line(pos)
            try:  # the common case inline (a function call per opcode shows in protocol 0 streams)
                value = float(line)
            except ValueError:
                value, py_ok = _parse_float_line(line, bool(self.reader.alive & _C))
                if not py_ok:
                    self._kill(_PY, pos, "a FLOAT form only _pickle reads")
                self._push(value)
                return
            # _pickle reads what float() reads, but for whitespace, underscores and an overflow.
            if (value - value != 0.0 or b"_" in line or line[:1].isspace() or line[-1:].isspace()) \
                    and self.reader.alive & _C and not _c_float_ok(line, value):
                self._kill(_C, pos, "a FLOAT form only pickle.py reads")
            self._push(value)

        @op(b"I")
        def int_(self: _PickleVM, pos: int) -> None:
            line = self._line(pos)
            if len(line) < 20 and line != b"00" and line != b"01":
                try:  # the common case inline
                    self._push(int(line, 0))
                    return
                except ValueError:
                    pass
            value, py_ok = _parse_int_line(line, bool(self.reader.alive & _C))
            if not py_ok:
                self._kill(_PY, pos, "an INT form only _pickle reads")
            self._push(value)

        @op(b"L")
        def long_(self: _PickleVM, pos: int) -> None:
            value, py_ok = _parse_long_line(self._line(pos), bool(self.reader.alive & _C))
            if not py_ok:
                self._kill(_PY, pos, "a LONG form only _pickle reads")
            self._push(value)

        @op(b"J")
        def binint(self: _PickleVM, pos: int) -> None:
            self._push(struct.unpack("<i", self._read(4, pos))[0])

        @op(b"K")
        def binint1(self: _PickleVM, pos: int) -> None:
            self._push(self._read(1, pos)[0])

        @op(b"M")
        def binint2(self: _PickleVM, pos: int) -> None:
            self._push(struct.unpack("<H", self._read(2, pos))[0])

        @op(b"\x8a")
        def long1(self: _PickleVM, pos: int) -> None:
            n = self._read(1, pos)[0]
            self._push(int.from_bytes(self._read(n, pos), "little", signed=True))

        @op(b"\x8b")
        def long4(self: _PickleVM, pos: int) -> None:
            n = struct.unpack("<i", self._read(4, pos))[0]
            if n < 0:
                raise _Broken(pos, "LONG4 with a negative byte count")
            data = self._payload(n, pos, "bytes")
            self._push(int.from_bytes(data, "little", signed=True) if isinstance(data, bytes) and n <= 4096
                       else _HugeInt())

        @op(b"N")
        def none(self: _PickleVM, pos: int) -> None:
            self._push(None)

        @op(b"\x88")
        def newtrue(self: _PickleVM, pos: int) -> None:
            self._push(True)

        @op(b"\x89")
        def newfalse(self: _PickleVM, pos: int) -> None:
            self._push(False)

        @op(b"P")
        def persid(self: _PickleVM, pos: int) -> None:
            pid = self._ascii_line(pos)
            self.persistent_ids.append(pid)
            self._push(Opaque("a persistent object"))

        @op(b"Q")
        def binpersid(self: _PickleVM, pos: int) -> None:
            pid = self._pop(pos)
            self.persistent_ids.append(_maybe_literal(pid, keep_globals=True))
            self._push(Opaque("a persistent object"))

        @op(b"R")
        def reduce(self: _PickleVM, pos: int) -> None:
            args = self._pop(pos)
            func = self._top(pos)
            self.stack[-1] = self._call(func, args, "REDUCE", pos)

        @op(b"S")
        def string(self: _PickleVM, pos: int) -> None:
            content = self._line(pos)
            if len(content) < 2 or content[0] != content[-1] or content[:1] not in (b"'", b'"'):
                raise _Broken(pos, "the STRING opcode argument must be quoted")
            if b"\\" in content:  # both unpicklers: ValueError on a bad escape (an unknown one warns)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    value = codecs.escape_decode(content[1:-1])[0]
            else:
                value = content[1:-1]
            self._push(_py2_str(value) if len(value) <= MAX_INLINE_BYTES
                       else BigData("str", len(value), None))

        @op(b"T")
        def binstring(self: _PickleVM, pos: int) -> None:
            # Unsigned: _pickle reads the length with calc_binsize (pickle.py refuses a negative one).
            n = struct.unpack("<I", self._read(4, pos))[0]
            data = self._payload(n, pos, "str8")  # raw bytes are the latin-1 encoding of the value
            self._push(_py2_str(data) if isinstance(data, bytes) else data)

        @op(b"U")
        def short_binstring(self: _PickleVM, pos: int) -> None:
            self._push(_py2_str(self._read(self._read(1, pos)[0], pos)))

        @op(b"V")
        def unicode_(self: _PickleVM, pos: int) -> None:
            content = self._line(pos)
            if len(content) <= MAX_INLINE_BYTES:
                self._push(str(content, "raw-unicode-escape"))
                return
            # Checked piecewise (a bad escape is an error in both unpicklers), not kept.
            decoder = codecs.getincrementaldecoder("raw-unicode-escape")()
            for i in range(0, len(content), MAX_INLINE_BYTES):
                decoder.decode(content[i:i + MAX_INLINE_BYTES])
            decoder.decode(b"", final=True)
            self._push(BigData("str", len(content), None))

        def text(self: _PickleVM, n: int, pos: int) -> Any:
            data = self._payload(n, pos, "str")
            if isinstance(data, bytes):
                return str(data, "utf-8", "surrogatepass")
            if isinstance(data, BigData) and data.offset is not None:
                self._check_utf8(data.offset, n, pos)  # not kept, but invalid UTF-8 fails the load
            return data

        @op(b"X")
        def binunicode(self: _PickleVM, pos: int) -> None:
            self._push(text(self, struct.unpack("<I", self._read(4, pos))[0], pos))

        @op(b"\x8d")
        def binunicode8(self: _PickleVM, pos: int) -> None:
            self._push(text(self, struct.unpack("<Q", self._read(8, pos))[0], pos))

        @op(b"\x8c")
        def short_binunicode(self: _PickleVM, pos: int) -> None:
            self._push(text(self, self._read(1, pos)[0], pos))

        @op(b"B")
        def binbytes(self: _PickleVM, pos: int) -> None:
            self._push(self._payload(struct.unpack("<I", self._read(4, pos))[0], pos, "bytes"))

        @op(b"C")
        def short_binbytes(self: _PickleVM, pos: int) -> None:
            self._push(self._read(self._read(1, pos)[0], pos))

        @op(b"\x8e")
        def binbytes8(self: _PickleVM, pos: int) -> None:
            self._push(self._payload(struct.unpack("<Q", self._read(8, pos))[0], pos, "bytes"))

        @op(b"\x96")
        def bytearray8(self: _PickleVM, pos: int) -> None:
            data = self._payload(struct.unpack("<Q", self._read(8, pos))[0], pos, "bytearray")
            self._push(bytearray(data) if isinstance(data, bytes) else data)

        @op(b"\x97")
        def next_buffer(self: _PickleVM, pos: int) -> None:
            # pickle.load / torch.load / joblib.load / np.load pass no out-of-band buffers: both
            # unpicklers raise here.
            raise _Broken(pos, "NEXT_BUFFER: the stream refers to out-of-band data, which loaders do not "
                          "give (the loader raises)")

        @op(b"\x98")
        def readonly_buffer(self: _PickleVM, pos: int) -> None:
            top = self._top(pos)
            # An imported class or function is no buffer (allowlisted imports are such; any other
            # import is a finding already).
            if isinstance(top, Global) or not isinstance(top, (bytes, bytearray, _SYMBOLIC)) and not (
                    isinstance(top, BigData) and top.kind.startswith("bytes")):
                raise _Broken(pos, f"READONLY_BUFFER on {describe(top)}, which is not a buffer (the loader "
                              "raises)")

        @op(b"a")
        def append(self: _PickleVM, pos: int) -> None:
            value = self._pop(pos)
            self._append(self._top(pos), [value], pos, "APPEND")

        @op(b"e")
        def appends(self: _PickleVM, pos: int) -> None:
            items = self._pop_mark(pos)
            self._append(self._top(pos), items, pos, "APPENDS")

        @op(b"b")
        def build(self: _PickleVM, pos: int) -> None:
            state = self._pop(pos)
            self._build(self._top(pos), state, pos)

        @op(b"c")
        def global_(self: _PickleVM, pos: int) -> None:
            module, name = self._name_lines(pos, "utf-8", "GLOBAL")
            self._push(self._global(module, name, pos, "GLOBAL"))

        @op(b"\x93")
        def stack_global(self: _PickleVM, pos: int) -> None:
            name = self._pop(pos)
            module = self._pop(pos)
            if self.torch_archive:
                self._anomaly("torch-stack-global", "STACK_GLOBAL in a torch archive",
                              "torch.save writes protocol 2 (GLOBAL only) by default and torch's "
                              "weights-only loader rejects STACK_GLOBAL: this data.pkl was written "
                              "with a higher pickle_protocol or by another tool",
                              pos, "STACK_GLOBAL", key="torch")
            if isinstance(module, str) and isinstance(name, str):
                self._push(self._global(module, name, pos, "STACK_GLOBAL"))
            else:
                self._push(self._unresolved(module, name, pos, "STACK_GLOBAL"))

        @op(b"i")
        def inst(self: _PickleVM, pos: int) -> None:
            self._ascii_precheck(pos)
            module, name = self._name_lines(pos, "ascii", "INST")
            klass = self._global(module, name, pos, "INST")
            args = self._pop_mark(pos)
            self._push(self._call(klass, tuple(args), "INST", pos))

        @op(b"o")
        def obj(self: _PickleVM, pos: int) -> None:
            args = self._pop_mark(pos)
            if not args:
                raise _Broken(pos, "OBJ without a class")
            cls = args.pop(0)
            self._push(self._call(cls, tuple(args), "OBJ", pos))

        @op(b"\x81")
        def newobj(self: _PickleVM, pos: int) -> None:
            args = self._pop(pos)
            cls = self._pop(pos)
            self._push(self._call(cls, args, "NEWOBJ", pos))

        @op(b"\x92")
        def newobj_ex(self: _PickleVM, pos: int) -> None:
            kwargs = self._pop(pos)
            args = self._pop(pos)
            cls = self._pop(pos)
            self._push(self._call(cls, args, "NEWOBJ_EX", pos, kwargs))

        def ext(self: _PickleVM, code: int, pos: int) -> None:
            rec = self._anomaly("pickle-ext-code", f"extension code {code}",
                                "EXT opcodes import whatever the loading process registered in copyreg's "
                                "extension registry under this code", pos, "EXT", key=str(code))
            self._push(Opaque(f"the object registered under extension code {code}", rec))

        @op(b"\x82")
        def ext1(self: _PickleVM, pos: int) -> None:
            ext(self, self._read(1, pos)[0], pos)

        @op(b"\x83")
        def ext2(self: _PickleVM, pos: int) -> None:
            ext(self, struct.unpack("<H", self._read(2, pos))[0], pos)

        @op(b"\x84")
        def ext4(self: _PickleVM, pos: int) -> None:
            ext(self, struct.unpack("<i", self._read(4, pos))[0], pos)

        @op(b"d")
        def dict_(self: _PickleVM, pos: int) -> None:
            items = self._pop_mark(pos)
            if len(items) % 2:
                raise _Broken(pos, "DICT with an odd number of items")
            dct = PDict()
            self._setitems(dct, items, pos, "DICT")
            self._push(dct)

        @op(b"}")
        def empty_dict(self: _PickleVM, pos: int) -> None:
            self._push(PDict())

        @op(b"s")
        def setitem(self: _PickleVM, pos: int) -> None:
            value = self._pop(pos)
            key = self._pop(pos)
            self._setitems(self._top(pos), [key, value], pos, "SETITEM")

        @op(b"u")
        def setitems(self: _PickleVM, pos: int) -> None:
            items = self._pop_mark(pos)
            self._setitems(self._top(pos), items, pos, "SETITEMS")

        @op(b"l")
        def list_(self: _PickleVM, pos: int) -> None:
            items = self._pop_mark(pos)
            lst = PList()
            self._append(lst, items, pos, "LIST")
            self._push(lst)

        @op(b"]")
        def empty_list(self: _PickleVM, pos: int) -> None:
            self._push(PList())

        @op(b"t")
        def tuple_(self: _PickleVM, pos: int) -> None:
            self._push(tuple(self._pop_mark(pos)))

        @op(b")")
        def empty_tuple(self: _PickleVM, pos: int) -> None:
            self._push(())

        @op(b"\x85")
        def tuple1(self: _PickleVM, pos: int) -> None:
            stack = self.stack  # in place, as pickle.py does: the depth does not change
            if not stack:
                raise _Broken(pos, "stack underflow")
            stack[-1] = (stack[-1],)

        @op(b"\x86")
        def tuple2(self: _PickleVM, pos: int) -> None:
            stack = self.stack
            if len(stack) < 2:
                raise _Broken(pos, "stack underflow")
            stack[-2:] = [(stack[-2], stack[-1])]

        @op(b"\x87")
        def tuple3(self: _PickleVM, pos: int) -> None:
            stack = self.stack
            if len(stack) < 3:
                raise _Broken(pos, "stack underflow")
            stack[-3:] = [(stack[-3], stack[-2], stack[-1])]

        @op(b"\x8f")
        def empty_set(self: _PickleVM, pos: int) -> None:
            self._push(PSet())

        @op(b"\x90")
        def additems(self: _PickleVM, pos: int) -> None:
            items = self._pop_mark(pos)
            target = self._top(pos)
            if isinstance(target, PSet) and not target.frozen:
                _check_hashable(items, pos, "ADDITEMS")
                if self._keep(len(items)):
                    target.items.extend(items)
                else:
                    target.dropped += len(items)
            elif not isinstance(target, _SYMBOLIC):
                if items:  # _pickle does nothing for no items, pickle.py looks up add()
                    raise _Broken(pos, f"ADDITEMS to {describe(target)} (the loader raises)")
                self._kill(_PY, pos, f"empty ADDITEMS to {describe(target)}")
            else:
                self._mutating_call(target, items, pos, "ADDITEMS")

        @op(b"\x91")
        def frozenset_(self: _PickleVM, pos: int) -> None:
            items = self._pop_mark(pos)
            _check_hashable(items, pos, "FROZENSET")
            kept = self._keep(len(items))
            fs = PSet(items if kept else (), frozen=True)
            fs.dropped = 0 if kept else len(items)
            self._push(fs)

        @op(b"g")
        def get(self: _PickleVM, pos: int) -> None:
            index = self._memo_line_index(pos)
            self._memo_get(index, pos)

        @op(b"h")
        def binget(self: _PickleVM, pos: int) -> None:
            self._memo_get(self._read(1, pos)[0], pos)

        @op(b"j")
        def long_binget(self: _PickleVM, pos: int) -> None:
            self._memo_get(struct.unpack("<I", self._read(4, pos))[0], pos)

        @op(b"p")
        def put(self: _PickleVM, pos: int) -> None:
            index = self._memo_line_index(pos)
            if index.__class__ is tuple:  # a huge index (kept as its digits)
                if index[1][:1] == b"-":
                    raise _Broken(pos, "negative memo index")
                if not self.stack:
                    raise _Broken(pos, "stack underflow")
                if len(self.memo) >= self.max_memo and index not in self.memo:
                    raise _Broken(pos, f"memo larger than {self.max_memo} entries (limit)")
                self.memo[index] = self.stack[-1]  # type: ignore[index]
            else:
                self._memo_put(index, pos)

        @op(b"q")
        def binput(self: _PickleVM, pos: int) -> None:
            self._memo_put(self._read(1, pos)[0], pos)

        @op(b"r")
        def long_binput(self: _PickleVM, pos: int) -> None:
            self._memo_put(struct.unpack("<I", self._read(4, pos))[0], pos)

        @op(b"\x94")
        def memoize(self: _PickleVM, pos: int) -> None:
            # len(memo) may already be taken (PUT to any index): pickle then overwrites it.
            self._memo_put(len(self.memo), pos)

        @op(b"G")
        def binfloat(self: _PickleVM, pos: int) -> None:
            self._push(struct.unpack(">d", self._read(8, pos))[0])

        @op(b"\x80")
        def proto(self: _PickleVM, pos: int) -> None:
            p = self._read(1, pos)[0]
            if p > 5:
                raise _Broken(pos, f"unsupported pickle protocol {p}")
            self.proto = p

        @op(b"\x95")
        def frame(self: _PickleVM, pos: int) -> None:
            size = struct.unpack("<Q", self._read(8, pos))[0]
            if size > sys.maxsize:
                raise _Broken(pos, f"FRAME of {size} bytes (over sys.maxsize)")
            if self.lossy:
                if not self.reader.frame(size):  # type: ignore[attr-defined]
                    raise _Broken(pos, f"FRAME of {size} bytes runs past the end of the data")
                return
            if self.reader.frame_end > 0 and pos != self.reader.frame_end:
                # Not where the previous frame ends: some opcode may straddle a frame's end, and a C
                # unpickler reading from a BytesIO (torch.load) would read other opcodes.
                self.frames_irregular = True
            here = self.reader.tell()
            # pickle.py refuses a FRAME that starts before the current frame ends (its opcode or its
            # 9 bytes must end it exactly); _pickle only needs the whole frame to be there.
            fe = self.reader.frame_end
            py_ok = fe >= 0 and (pos + 1 >= fe or here == fe)
            if not py_ok:
                self._kill(_PY, pos, "a FRAME before the current frame ends")
            if size <= self.reader.remaining():
                self.reader.frame_end = here + size
            else:
                # _pickle fails here; pickle._Unpickler reads what there is as the frame and goes on.
                self._kill(_C, pos, f"a FRAME of {size} bytes runs past the end of the data")
                self.reader.frame_end = -1

        return d


class _LossyPickleVM(_PickleVM):
    """The VM reading as the C unpickler does from a file object without ``peek``."""

    lossy = True


_CALL_KINDS = frozenset({"REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})
#: Values whose behaviour is only known when the pickle runs (imports, what calls return): the VM
#: accepts any operation on them. Everything else is a value the stream built, with known behaviour.
_SYMBOLIC = (Global, Obj, Opaque, _CBytes, _CByteArray)
_NOT_ITERABLE = frozenset({type(None), bool, int, float, _HugeInt})
_HASHABLE = frozenset({str, int, float, bool, bytes, type(None)})


def _unhashable(value: Any, depth: int = 0) -> bool:
    """Whether ``hash(value)`` raises for a value the stream built (lists, dicts, sets, bytearrays)."""
    if isinstance(value, _SYMBOLIC):
        return False
    if isinstance(value, (PList, PDict, bytearray)):
        return True
    if isinstance(value, PSet):
        return not value.frozen
    if isinstance(value, BigData):
        return value.kind == "bytearray"
    if isinstance(value, tuple) and depth < 50:
        return any(type(v) not in _HASHABLE and _unhashable(v, depth + 1) for v in value)
    return False


def _check_hashable(items: Sequence[Any], pos: int, kind: str) -> None:
    for item in items:
        if type(item) not in _HASHABLE and _unhashable(item):
            raise _Broken(pos, f"{kind} with the unhashable item {describe(item)} (the loader raises)")


def _is_byte(value: Any) -> bool:
    return isinstance(value, int) and 0 <= value < 256


def _truthy(value: Any) -> bool:
    """``bool(value)`` as the loader would see it; values known only at load time count as true."""
    if isinstance(value, _SYMBOLIC):
        return True
    if value is None or isinstance(value, (bool, int, float, str, bytes, bytearray, tuple)):
        return bool(value)
    if isinstance(value, PList):
        return bool(value) or bool(value.dropped)
    if isinstance(value, PDict):
        return bool(value.pairs) or bool(value.dropped)
    if isinstance(value, PSet):
        return bool(value.items) or bool(value.dropped)
    if isinstance(value, BigData):
        return value.length != 0
    return True


def _is_kwargs(value: Any) -> bool:
    """NEWOBJ_EX keyword arguments: a dict with str keys (values known at load time: accepted)."""
    if isinstance(value, _SYMBOLIC):
        return not isinstance(value, Global)  # a class or function is no mapping
    return isinstance(value, PDict) and all(isinstance(k, (str, *_SYMBOLIC)) for k, _ in value.pairs)


def _item_assignable(target: Any, pairs: Sequence[Any]) -> bool:
    """Whether ``target[key] = value`` works for every pair, on a value the stream built."""
    if isinstance(target, (PList, bytearray)):
        size = len(target) + (target.dropped if isinstance(target, PList) else 0)
        for key, value in zip(pairs[0::2], pairs[1::2]):
            if not isinstance(key, int) or not -size <= key < size:
                return False
            if isinstance(target, bytearray) and not _is_byte(value):
                return False
        return True
    return False
#: Opcodes a pickler writes right after an import: MARK, memo PUTs, EMPTY_TUPLE.
_AFTER_IMPORT = frozenset(b"(pqr\x94)")
_IDENTIFIER_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


_DISPATCH = _PickleVM._build_dispatch()
#: The same table as a 256-entry list (None: not an opcode): indexing beats dict.get in the loop.
_TABLE: List[Optional[Callable[[_PickleVM, int], None]]] = [_DISPATCH.get(i) for i in range(256)]


# ---------------------------------------------------------------------------------------------
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
#: The two unpicklers, as bits of ``_FastReader.alive``.
_PY, _C = 1, 2


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


def _shape_count(shape: Any) -> Optional[int]:
    """Elements of a joblib array of ``shape``, as joblib counts them, or None when not certain.

    joblib takes ``len(shape)`` (a tuple; an empty one is one element) and multiplies the
    dimensions as int64: negative or non-int dimensions, or a product past int64, are not read.
    """
    if not isinstance(shape, (tuple, PList)):
        return None
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            return None
        count *= dim
        if count >= 1 << 63:
            return None
    return count


def _dtype_info(dtype: Any, depth: int = 0) -> DType:
    """The numpy dtype a symbolic ``numpy.dtype(...)`` (+ BUILD state) in the stream rebuilds.

    Raises :class:`DtypeUnsure` for anything that is not a dtype built from literal arguments
    whose size :mod:`safemodel_ci.npdtype` knows exactly.
    """
    if depth > 16:
        raise DtypeUnsure("dtypes nested too deeply")
    if not isinstance(dtype, Obj) or dtype.cls is None or dtype.cls.path != "numpy.dtype" or not dtype.attrs \
            or "argv" not in dtype.attrs:
        raise DtypeUnsure(f"{describe(dtype)} is not a numpy.dtype made from literal arguments")
    argv = dtype.attrs["argv"]
    if len(argv) > 3:
        raise DtypeUnsure("numpy.dtype called with more than three arguments")
    has_state = "state" in dtype.attrs
    state = _dtype_state(dtype.attrs["state"]) if has_state else None
    pickled = PickledDtype(_plain(argv[0]), _plain(argv[1]) if len(argv) > 1 else False, state, has_state)
    return from_pickled(pickled, lambda inner: _dtype_info(inner, depth + 1))


def _plain(value: Any) -> Any:
    """The literal a symbolic value stands for; DtypeUnsure when it is not one."""
    try:
        return to_literal(value)
    except (_NotLiteral, RecursionError):
        raise DtypeUnsure(f"{describe(value)} is not a literal") from None


def _dtype_state(state: Any) -> Any:
    """A dtype ``__setstate__`` tuple made plain, the dtypes nested in its subarray and fields kept
    as symbols (they are resolved one by one); DtypeUnsure for anything else not literal."""
    if not isinstance(state, tuple):
        return _plain(state)
    out: List[Any] = []
    for index, item in enumerate(state):
        if index == 2 and isinstance(item, tuple) and len(item) == 2:  # subarray: (dtype, shape)
            out.append((item[0], _plain(item[1])))
        elif index == 4 and isinstance(item, PDict):  # fields: name -> (dtype, offset[, title])
            if item.dropped:
                raise DtypeUnsure("structured dtype fields were not all kept")
            fields: Dict[Any, Any] = {}
            for k, v in item.pairs:
                if not isinstance(v, tuple) or not v:
                    raise DtypeUnsure("structured dtype field is not a tuple")
                fields[_plain(k)] = (v[0],) + tuple(_plain(x) for x in v[1:])
            out.append(fields)
        else:
            out.append(_plain(item))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Public API used by the other readers.

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


class PickleReader(FormatReader):
    """Plain pickle files (``pickle.dump``, uncompressed ``joblib.dump``; any name, by content)."""

    name = "pickle"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return looks_like_pickle(source, 0)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        scan_pickle_stream(source, ctx)


#: Every pickle opcode: the VM has a handler for each (a test checks this against pickletools).
_OPCODES = frozenset(_DISPATCH)

__all__ = ["PickleReader", "PickleStreamResult", "looks_like_pickle", "scan_pickle_at", "scan_pickle_stream",
           "MAX_INLINE_BYTES"]
