"""How the VM reads bytes: a buffered reader with an inlined fast path, the frame-buffer reading of
the C unpickler fed a file object without ``peek``, and big latin-1 payloads made on demand."""

from __future__ import annotations

import codecs

from ...context import Limits
from ...source import ByteSource, SourceReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

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

        from ...source import FileSource

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
