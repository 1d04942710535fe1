"""Compressed joblib files: decompress in a stream (bounded), then scan what comes out.

``joblib.load`` picks the decompressor from the first bytes (``joblib/compressor.py``): zlib
``x``, gzip ``1f 8b``, bz2 ``BZ``, xz ``fd 37 7a 58 5a``, lzma-alone ``5d 00``, lz4 ``04 22 4d 18``,
and the legacy ``ZF`` format of joblib < 0.10 (``numpy_pickle_compat.py``). Most of these prefixes
are short and collide with other content (threats: magic-byte collisions), so a prefix alone never
decides: the first block must actually decompress. The decompressed bytes (normally a joblib
pickle with raw array bytes inline, which the pickle reader walks) are sniffed and scanned like a
file of their own, as member ``<zlib>`` / ``<gzip>`` ...
"""

from __future__ import annotations


from ..context import ScanContext
from ..decompress import DecompressionError, decompress_head, decompress_to_source, lz4_available
from ..source import ByteSource, SliceSource
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional, Tuple

#: (prefix, method) in the order joblib tests them.
PREFIXES: Tuple[Tuple[bytes, str], ...] = (
    (b"\x78", "zlib"),
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\xfd\x37\x7a\x58\x5a", "xz"),
    (b"\x5d\x00", "lzma"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
ZF_PREFIX = b"ZF"
#: Length field of the legacy ZF header: ``hex(len)`` left-justified to ``len(hex(2**64))``.
ZF_LENGTH_FIELD = len(hex(2 ** 64))
#: Bytes that must decompress from the first block before a prefix is believed.
PROBE = 16


def _zf_data_start(head: bytes) -> Optional[int]:
    """Offset of the zlib stream of a legacy ``ZF`` file, None when the header is not one."""
    if head[:2] != ZF_PREFIX:
        return None
    field = head[2:2 + ZF_LENGTH_FIELD]
    try:
        int(field.strip(), 16)
    except ValueError:
        return None
    start = 2 + ZF_LENGTH_FIELD
    # joblib skips one more byte when it is a space (older writers padded one further).
    if head[start:start + 1] == b" ":
        start += 1
    if start > len(head):  # cut short inside the header (the head holds 4 KiB of any longer file)
        return None
    return start


class JoblibCompressedReader(FormatReader):
    """A joblib file written with ``compress=``: one compressed stream holding the pickle."""

    name = "joblib-compressed"

    def _identify(self, source: ByteSource, head: bytes) -> Optional[Tuple[str, int]]:
        """(method, offset of the compressed stream) when the head decompresses as joblib would."""
        zf = _zf_data_start(head)
        candidates = [("zlib", zf)] if zf is not None else [
            (method, 0) for prefix, method in PREFIXES if head.startswith(prefix)]
        for method, start in candidates:
            if method == "lz4" and not lz4_available():
                return method, start  # a 4-byte magic; reported as unsupported
            try:
                window = SliceSource(source, start, source.size - start)
                if decompress_head(window, method, PROBE):
                    return method, start
            except DecompressionError:
                continue
        return None

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return self._identify(source, head) is not None

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        found = self._identify(source, source.head(4096))
        if found is None:
            return
        method, start = found
        label = "zf" if start else method
        ctx.add_format(f"joblib-{label}")
        if method == "lz4" and not lz4_available():
            ctx.report("unscanned-unsupported",
                       "lz4-compressed content (joblib compress='lz4'); install the lz4 package "
                       "(safemodel-ci[formats]) to scan it", offset=0, details={"method": "lz4"})
            return
        member = f"<{label}>"
        try:
            out = decompress_to_source(source, method, ctx, f"{source.name}:{member}", start=start,
                                       multi_stream=True, keep_partial=True)
        except DecompressionError as exc:
            ctx.report("unscanned-parse-error", f"{method} stream could not be decompressed: {exc}",
                       offset=start, details={"method": method})
            return
        with out:
            if out.limit_reached:
                ctx.report("unscanned-limit",
                           f"decompression stopped after {out.size} bytes: {out.limit_reached}; the part "
                           "decompressed so far was scanned", offset=start, details={"method": method})
            # joblib.load unpickles whatever comes out: read as a pickle, not sniffed.
            ctx.scan_as("pickle", out, member)
        if out.complete and out.compressed_end is not None and out.compressed_end < source.size:
            extra = source.size - out.compressed_end
            ctx.report("compressed-trailing-data",
                       f"{extra} bytes follow the end of the {method} stream at offset {out.compressed_end}; "
                       "they were scanned", offset=out.compressed_end, details={"length": extra})
            tail = f"<after {label}@{out.compressed_end}>"
            ctx.scan(SliceSource(source, out.compressed_end, extra, name=f"{source.name}:{tail}"), tail)
