"""Random-access byte sources: the one interface every format reader takes its bytes from.

A reader asks for ``size`` and ``read_at(offset, n)``; whether the bytes come from a local file, an
archive member, a decompressed stream or a Hub file read with HTTP range requests does not matter
to it. Reading only what is needed (a safetensors header, a zip's central directory) is therefore
the default everywhere. Every source counts the bytes it was asked for (``bytes_read``).
"""

from __future__ import annotations

import io
import os
import stat
from abc import ABC, abstractmethod

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional


class SourceError(OSError):
    """A source could not deliver bytes (I/O error, network error, short read past the end)."""


class ByteSource(ABC):
    """Read-only random access to a sequence of bytes of known size."""

    #: Human-readable name used in messages (a path, ``path:member``, a Hub URL).
    name: str = "<bytes>"

    def __init__(self) -> None:
        self.bytes_read = 0

    @property
    @abstractmethod
    def size(self) -> int:
        """Total length in bytes."""

    @abstractmethod
    def _read(self, offset: int, n: int) -> bytes:
        """Read up to ``n`` bytes at ``offset`` (fewer only at the end)."""

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset``; fewer only where the source ends."""
        if offset < 0 or n < 0:
            raise ValueError("negative offset or length")
        size = self.size  # a property: read once (this runs for every read of every reader)
        if offset >= size or n == 0:
            return b""
        if n > size - offset:
            n = size - offset
        data = self._read(offset, n)
        self.bytes_read += len(data)
        return data

    def read_exact(self, offset: int, n: int) -> bytes:
        """Exactly ``n`` bytes at ``offset``, or :class:`SourceError`."""
        data = self.read_at(offset, n)
        if len(data) != n:
            raise SourceError(f"{self.name}: wanted {n} bytes at offset {offset}, got {len(data)}")
        return data

    def head(self, n: int = 4096) -> bytes:
        return self.read_at(0, n)

    def tail(self, n: int) -> bytes:
        start = max(0, self.size - n)
        return self.read_at(start, self.size - start)

    def slice(self, offset: int, length: int, name: Optional[str] = None) -> "SliceSource":
        return SliceSource(self, offset, length, name)

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release resources; reading afterwards is an error."""

    def __enter__(self) -> "ByteSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(ByteSource):
    """A local file, read with ``pread`` so that memory stays bounded whatever its size.

    A file of at most :attr:`SLURP_SIZE` bytes is read whole on the first read and served from
    memory: readers ask for a few bytes at a time, and on small files the system calls dominate.
    """

    SLURP_SIZE = 256 << 10

    def __init__(self, path: "os.PathLike[str] | str", name: Optional[str] = None) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.name = name or self.path
        try:
            # O_NONBLOCK: a fifo or device swapped in for a checked file is refused below instead
            # of blocking the open (it changes nothing for a regular file).
            self._fd: Optional[int] = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0) |
                                              getattr(os, "O_NONBLOCK", 0))
            st = os.fstat(self._fd)
        except OSError as exc:
            raise SourceError(f"{self.name}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(self._fd)
            self._fd = None
            raise SourceError(f"{self.name}: not a regular file (fifo, device, socket or directory); "
                              "not read")
        self._size = st.st_size
        self._whole: Optional[bytes] = None

    @property
    def size(self) -> int:
        return self._size

    def _read(self, offset: int, n: int) -> bytes:
        if self._fd is None:
            raise SourceError(f"{self.name}: read after close")
        if self._size <= self.SLURP_SIZE:
            return self._slurp()[offset:offset + n]
        return self._pread(offset, n)

    def _slurp(self) -> bytes:
        if self._whole is None:
            self._whole = self._pread(0, self._size)
        return self._whole

    def snapshot(self) -> Optional[bytes]:
        """The whole content every read of a small file was served from (None for a big file).

        Whatever a reader saw of a small file came from this one read, so its hash identifies the
        content a scan looked at even if the file changes on disk meanwhile.
        """
        if self._size > self.SLURP_SIZE:
            return None
        if self._fd is None and self._whole is None:
            raise SourceError(f"{self.name}: read after close")
        return self._slurp()

    def _pread(self, offset: int, n: int) -> bytes:
        chunks = []
        while n > 0:
            try:
                if hasattr(os, "pread"):
                    data = os.pread(self._fd, n, offset)
                else:  # pragma: no cover - Windows
                    os.lseek(self._fd, offset, os.SEEK_SET)
                    data = os.read(self._fd, n)
            except OSError as exc:
                raise SourceError(f"{self.name}: {exc.strerror or exc}") from exc
            if not data:
                break
            chunks.append(data)
            offset += len(data)
            n -= len(data)
        return b"".join(chunks)

    def close(self) -> None:
        self._whole = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class BytesSource(ByteSource):
    """Bytes already in memory (small members, decoded payloads, test fixtures)."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        super().__init__()
        self._data = memoryview(bytes(data)) if not isinstance(data, bytes) else memoryview(data)
        self.name = name

    @property
    def size(self) -> int:
        return len(self._data)

    def _read(self, offset: int, n: int) -> bytes:
        return bytes(self._data[offset:offset + n])


class SliceSource(ByteSource):
    """A window ``[offset, offset+length)`` of another source (a stored zip member, a tar member)."""

    def __init__(self, parent: ByteSource, offset: int, length: int, name: Optional[str] = None) -> None:
        super().__init__()
        if offset < 0 or length < 0:
            raise ValueError("negative slice")
        self.parent = parent
        self.offset = min(offset, parent.size)
        self.length = max(0, min(length, parent.size - self.offset))
        self.name = name or f"{parent.name}[{offset}:{offset + length}]"

    @property
    def size(self) -> int:
        return self.length

    def _read(self, offset: int, n: int) -> bytes:
        return self.parent.read_at(self.offset + offset, n)


class SourceReader:
    """Sequential, buffered reading of a source: what a streaming parser (the pickle VM) wants.

    Memory is bounded by the buffer size, whatever the size of the source.
    """

    def __init__(self, source: ByteSource, start: int = 0, end: Optional[int] = None,
                 buffer_size: int = 1 << 20) -> None:
        self.source = source
        self.end = source.size if end is None else min(end, source.size)
        self._buf = b""
        self._buf_start = start
        self._pos = start
        self._buffer_size = buffer_size
        # Read-ahead starts small and doubles on each refill: a parser that gives up after a few
        # bytes (a detector) then costs 64 KiB, not a whole buffer (dear on a Hub range source).
        self._next_fill = min(buffer_size, 64 << 10)

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int) -> None:
        self._pos = pos

    def remaining(self) -> int:
        return max(0, self.end - self._pos)

    def _fill(self, n: int) -> None:
        rel = self._pos - self._buf_start
        if 0 <= rel and rel + n <= len(self._buf):
            return
        want = max(n, self._next_fill)
        self._next_fill = min(self._buffer_size, self._next_fill * 2)
        want = min(want, max(0, self.end - self._pos))
        self._buf = self.source.read_at(self._pos, want)
        self._buf_start = self._pos

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end."""
        n = min(n, self.remaining())
        if n <= 0:
            return b""
        if n > self._buffer_size:
            data = self.source.read_at(self._pos, n)
        else:
            self._fill(n)
            rel = self._pos - self._buf_start
            data = self._buf[rel:rel + n]
        self._pos += len(data)
        return data

    def peek(self, n: int = 1) -> bytes:
        n = min(n, self.remaining(), self._buffer_size)
        if n <= 0:
            return b""
        self._fill(n)
        rel = self._pos - self._buf_start
        return self._buf[rel:rel + n]

    def readline(self, limit: int = 1 << 16) -> bytes:
        """Bytes up to and including ``\\n``, at most ``limit`` bytes (caller checks the ending)."""
        out = []
        total = 0
        step = 4096  # most lines are short: look ahead a little, then more
        while total < limit and self.remaining() > 0:
            chunk = self.peek(min(step, self._buffer_size, limit - total))
            step *= 2
            idx = chunk.find(b"\n")
            if idx >= 0:
                piece = self.read(idx + 1)
                out.append(piece)
                return b"".join(out)
            piece = self.read(len(chunk))
            out.append(piece)
            total += len(piece)
        return b"".join(out)

    def skip(self, n: int) -> int:
        """Advance without reading; returns how far it actually moved."""
        n = max(0, min(n, self.remaining()))
        self._pos += n
        return n


class SourceIO(io.RawIOBase):
    """A read-only, seekable file object over a source, for libraries that want one (h5py, tarfile).

    Each ``read`` goes to ``read_at``, so a remote source still fetches only the ranges asked for.
    """

    def __init__(self, source: ByteSource) -> None:
        super().__init__()
        self.source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.source.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        data = self.source.read_at(self._pos, len(buffer))
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.source.size - self._pos)
        data = self.source.read_at(self._pos, size)
        self._pos += len(data)
        return data
