"""Bounded stream decompression into a byte source (zip members, compressed joblib files).

Output is kept in memory while small and spooled to an anonymous temporary file beyond
``SPOOL_THRESHOLD``, so memory stays bounded whatever the expanded size. Every byte produced is
charged to the per-file budget (``Limits.max_decompressed_bytes``) and the expansion ratio is
checked once the output passes 1 MiB (``Limits.max_compression_ratio``): a decompression bomb
stops with :class:`ScanLimitExceeded`, which the driver turns into an ``unscanned-limit`` finding.
"""

from __future__ import annotations

import bz2
import lzma
import os
import zlib

from .context import ScanContext, ScanLimitExceeded
from .source import ByteSource, SliceSource, SourceError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Iterator, Optional

#: Output kept in memory up to this size; beyond it the output goes to a temporary file.
SPOOL_THRESHOLD = 8 << 20
#: Input read and output produced per step.
CHUNK = 1 << 16
#: The ratio limit applies once the output is larger than this (small outputs compress well).
RATIO_GRACE = 1 << 20


class DecompressionError(ValueError):
    """The compressed stream is invalid (corrupt, truncated, or not this compression at all)."""


class DecompressedSource(ByteSource):
    """Decompressed bytes, in memory or in an anonymous temporary file. Close it when done."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._mem: Optional[bytearray] = bytearray()
        self._file: Optional[Any] = None
        self._size = 0
        #: True when the compressed stream ended properly (False: stopped at ``max_output``).
        self.complete = False
        #: Offset in the compressed input just after the end of the stream (when complete).
        self.compressed_end: Optional[int] = None
        #: Set to the limit's message when decompression stopped at a limit (``keep_partial``).
        self.limit_reached: Optional[str] = None

    def _append(self, data: bytes) -> None:
        if self._mem is not None and len(self._mem) + len(data) > SPOOL_THRESHOLD:
            import tempfile  # only a spill needs it; most streams stay in memory

            self._file = tempfile.TemporaryFile(prefix="safemodel-")
            self._file.write(self._mem)
            self._mem = None
        if self._mem is not None:
            self._mem += data
        else:
            assert self._file is not None
            self._file.write(data)
        self._size += len(data)

    def _finish(self) -> None:
        if self._file is not None:
            self._file.flush()

    @property
    def size(self) -> int:
        return self._size

    def _read(self, offset: int, n: int) -> bytes:
        if self._mem is not None:
            return bytes(self._mem[offset:offset + n])
        if self._file is None:
            raise SourceError(f"{self.name}: read after close")
        if hasattr(os, "pread"):
            return os.pread(self._file.fileno(), n, offset)
        return self._seek_read(offset, n)

    def _seek_read(self, offset: int, n: int) -> bytes:  # pragma: no cover - Windows
        assert self._file is not None
        self._file.seek(offset)
        data: bytes = self._file.read(n)
        self._file.seek(0, os.SEEK_END)
        return data

    def close(self) -> None:
        self._mem = bytearray() if self._mem is not None else None
        if self._file is not None:
            self._file.close()
            self._file = None


class _Stream:
    """One decompressor behind a uniform ``step`` (zlib and the bz2/lzma/lz4 family differ)."""

    def __init__(self, obj: Any, zlib_like: bool) -> None:
        self.obj = obj
        self.zlib_like = zlib_like

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decompress ``data``; output comes in pieces of at most CHUNK bytes, one at a time.

        A generator, so that the caller's limits apply after each piece: a few KiB of bz2 or xz
        input can expand to gigabytes, which must never be collected in memory first.
        """
        if self.zlib_like:
            yield self.obj.decompress(data, CHUNK)
            while self.obj.unconsumed_tail and not self.obj.eof:
                piece = self.obj.decompress(self.obj.unconsumed_tail, CHUNK)
                if not piece:
                    break
                yield piece
        else:
            if self.obj.eof:
                return
            yield self.obj.decompress(data, CHUNK)
            while not self.obj.eof and not self.obj.needs_input:
                yield self.obj.decompress(b"", CHUNK)

    @property
    def eof(self) -> bool:
        return bool(self.obj.eof)

    @property
    def unused(self) -> bytes:
        return bytes(self.obj.unused_data or b"")


def _lz4_frame() -> Any:
    import lz4.frame  # optional dependency: callers check lz4_available() first

    return lz4.frame.LZ4FrameDecompressor()


def lz4_available() -> bool:
    """True when the optional ``lz4`` package is installed."""
    try:
        import lz4.frame  # noqa: F401
    except ImportError:
        return False
    return True


#: Decompressor factories by method name. ``zlib-raw`` is a zip member's deflate stream.
METHODS: "dict[str, Callable[[], _Stream]]" = {
    "zlib": lambda: _Stream(zlib.decompressobj(zlib.MAX_WBITS), True),
    "gzip": lambda: _Stream(zlib.decompressobj(zlib.MAX_WBITS | 16), True),
    "zlib-raw": lambda: _Stream(zlib.decompressobj(-zlib.MAX_WBITS), True),
    "bz2": lambda: _Stream(bz2.BZ2Decompressor(), False),
    "xz": lambda: _Stream(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), False),
    "lzma": lambda: _Stream(lzma.LZMADecompressor(format=lzma.FORMAT_ALONE), False),
    "lz4": lambda: _Stream(_lz4_frame(), False),
}


def raw_lzma_stream(filters: "list[dict[str, Any]]") -> _Stream:
    """A raw LZMA decompressor (the zip ``LZMA`` method carries its filter properties in front)."""
    return _Stream(lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters), False)


_DECOMPRESS_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError, RuntimeError)


def decompress_head(source: ByteSource, method: str, n: int, start: int = 0,
                    stream: Optional[_Stream] = None) -> bytes:
    """The first ``n`` decompressed bytes (or fewer if the stream ends), reading little input.

    Raises :class:`DecompressionError` when the input is not a valid stream of that method.
    """
    dec = stream or METHODS[method]()
    out = bytearray()
    pos = start
    try:
        while len(out) < n and pos < source.size and not dec.eof:
            data = source.read_at(pos, CHUNK)
            pos += len(data)
            for piece in dec.feed(data):
                out += piece
                if len(out) >= n:
                    break
    except SourceError:
        raise
    except _DECOMPRESS_ERRORS as exc:
        raise DecompressionError(f"{method}: {exc}") from exc
    return bytes(out[:n])


def decompress_to_source(source: ByteSource, method: str, ctx: ScanContext, name: str,
                         start: int = 0, end: Optional[int] = None,
                         max_output: Optional[int] = None,
                         stream: Optional[_Stream] = None,
                         multi_stream: bool = False,
                         keep_partial: bool = False) -> DecompressedSource:
    """Decompress ``source[start:end]`` with ``method`` into a :class:`DecompressedSource`.

    ``max_output`` stops early (``complete`` stays False), for a caller that only needs the
    beginning. ``multi_stream`` continues with a fresh decompressor after the end of a stream when
    the next bytes start another one (what GzipFile, BZ2File, LZMAFile and joblib's zlib reader
    do). On the per-file byte budget or the ratio limit, :class:`ScanLimitExceeded` is raised, or,
    with ``keep_partial``, the output so far is returned with ``limit_reached`` set. An invalid
    stream raises :class:`DecompressionError`. The caller closes the result.
    """
    end = source.size if end is None else min(end, source.size)
    dec = stream or METHODS[method]()
    out = DecompressedSource(name)
    pos = start
    stream_start = start
    try:
        while True:
            if dec.eof:
                leftover = pos - len(dec.unused)
                if not multi_stream or leftover >= end or not _starts_stream(source, method, leftover, end):
                    break
                dec = METHODS[method]()
                pos = stream_start = leftover
            elif pos >= end:
                break
            data = source.read_at(pos, min(CHUNK, end - pos))
            if not data:
                break
            pos += len(data)
            for piece in dec.feed(data):
                if not piece:
                    continue
                ctx.charge_decompressed(len(piece))
                out._append(piece)
                consumed = max(1, pos - start)
                if out.size > RATIO_GRACE and out.size // consumed > ctx.limits.max_compression_ratio:
                    raise ScanLimitExceeded(
                        f"compression ratio above {ctx.limits.max_compression_ratio}:1 "
                        f"({out.size} bytes from {consumed}); possible decompression bomb")
                if max_output is not None and out.size >= max_output:
                    out._finish()
                    return out
            ctx.check_deadline()
        if not dec.eof:
            raise DecompressionError(f"{method}: compressed stream is truncated "
                                     f"(stream from offset {stream_start})")
    except SourceError:
        out.close()
        raise
    except _DECOMPRESS_ERRORS as exc:
        out.close()
        raise DecompressionError(f"{method}: {exc}") from exc
    except ScanLimitExceeded as exc:
        if not keep_partial:
            out.close()
            raise
        out.limit_reached = str(exc)
        out._finish()
        return out
    except BaseException:
        out.close()
        raise
    out.complete = True
    out._finish()
    out.compressed_end = pos - len(dec.unused)
    return out


def _starts_stream(source: ByteSource, method: str, offset: int, end: int) -> bool:
    """True when a new stream of ``method`` begins at ``offset`` (it decompresses a first block)."""
    try:
        return bool(decompress_head(SliceSource(source, offset, end - offset), method, 1))
    except DecompressionError:
        return False
