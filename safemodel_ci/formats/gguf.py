"""GGUF (llama.cpp) files: the header, the metadata and the chat templates stored in it.

Layout (ggml ``docs/gguf.md``): ``GGUF``, u32 version, u64 tensor count, u64 metadata count (u32
counts in version 1), then ``count`` key/value pairs: string key (u64 length + bytes), u32 type,
value; strings are u64 length + bytes; arrays are u32 element type + u64 count + elements. Then
the tensor infos. Every length and count is checked against the bytes that remain before it is
used, so a header claiming 2^63 elements is a finding, not a hang or an allocation; native GGUF
parsers have had memory-safety bugs on exactly such headers.

The metadata that runs code is ``tokenizer.chat_template`` (and ``tokenizer.chat_template.<name>``):
a Jinja program that llama-cpp-python rendered unsandboxed (CVE-2024-34359).
"""

from __future__ import annotations

import struct

from ..context import ScanContext
from ..source import ByteSource, SourceReader
from .chat_template import MAX_TEMPLATE, report_template
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

MAGIC = b"GGUF"
# Type codes and their fixed sizes (STRING=8 and ARRAY=9 are variable).
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9
#: ggml tensors have at most 4 dimensions (GGML_MAX_DIMS).
MAX_DIMS = 4
#: Key names longer than this are not GGUF keys (the spec caps them at 65535 bytes).
MAX_KEY = 65535


class GgufError(ValueError):
    """The header is invalid at ``offset``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class _Header:
    def __init__(self, source: ByteSource, ctx: ScanContext, endian: str, version: int) -> None:
        self.r = SourceReader(source)
        self.r.seek(8)
        self.source = source
        self.ctx = ctx
        self.e = endian
        self.version = version
        self.count_fmt = "I" if version == 1 else "Q"

    def _unpack(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        at = self.r.tell()
        data = self.r.read(size)
        if len(data) != size:
            raise GgufError(f"file ends inside {what}", at)
        return struct.unpack(self.e + fmt, data)[0]

    def count(self, what: str, min_item: int) -> int:
        at = self.r.tell()
        n = self._unpack(self.count_fmt, what)
        if n * max(min_item, 1) > self.r.remaining():
            raise GgufError(f"{what} claims {n} entries but only {self.r.remaining()} bytes remain", at)
        return n

    def string(self, what: str, limit: Optional[int] = None) -> "tuple[Optional[str], int, int]":
        """(text or None when only skipped, offset of its bytes, length)."""
        at = self.r.tell()
        n = self._unpack(self.count_fmt, what)
        if n > self.r.remaining():
            raise GgufError(f"{what} claims {n} bytes but only {self.r.remaining()} remain", at)
        start = self.r.tell()
        if limit is not None and n > limit:
            self.r.skip(n)
            return None, start, n
        data = self.r.read(n)
        return data.decode("utf-8", "replace"), start, n

    def _skip_strings(self, count: int, what: str) -> None:
        """Skip ``count`` strings (a tokenizer vocabulary) by parsing lengths inside buffered windows."""
        fmt = self.e + self.count_fmt
        width = struct.calcsize(fmt)
        done = 0
        while done < count:
            self.ctx.check_deadline()
            at = self.r.tell()
            buf = self.r.peek(1 << 20)
            if len(buf) < width:
                raise GgufError(f"file ends inside {what}", at)
            pos = 0
            while done < count and pos + width <= len(buf):
                n = struct.unpack_from(fmt, buf, pos)[0]
                if pos + width + n > len(buf):
                    break
                pos += width + n
                done += 1
            if pos == 0:  # one string longer than the window
                n = struct.unpack_from(fmt, buf, 0)[0]
                if width + n > self.r.remaining():
                    raise GgufError(f"{what}: a string claims {n} bytes but only "
                                    f"{self.r.remaining() - width} remain", at)
                pos = width + n
                done += 1
            self.r.skip(pos)

    def skip_value(self, vtype: int, what: str, depth: int = 0) -> None:
        if vtype in _FIXED:
            at = self.r.tell()
            if self.r.skip(_FIXED[vtype]) != _FIXED[vtype]:
                raise GgufError(f"file ends inside {what}", at)
        elif vtype == STRING:
            self.string(what, limit=0)
        elif vtype == ARRAY:
            if depth > 4:
                raise GgufError(f"{what}: arrays nested too deeply", self.r.tell())
            at = self.r.tell()
            etype = self._unpack("I", what)
            if etype not in _FIXED and etype not in (STRING, ARRAY):
                raise GgufError(f"{what}: unknown array element type {etype}", at)
            n = self.count(what, _FIXED.get(etype, 8 if self.version > 1 else 4))
            if etype in _FIXED:
                if self.r.skip(n * _FIXED[etype]) != n * _FIXED[etype]:
                    raise GgufError(f"file ends inside {what}", at)
            elif etype == STRING:
                self._skip_strings(n, what)
            else:
                for i in range(n):
                    if i % 65536 == 0:
                        self.ctx.check_deadline()
                    self.skip_value(etype, what, depth + 1)
        else:
            raise GgufError(f"{what}: unknown value type {vtype}", self.r.tell() - 4)


def _version(head: bytes) -> "tuple[str, int]":
    le = struct.unpack_from("<I", head, 4)[0]
    be = struct.unpack_from(">I", head, 4)[0]
    # Big-endian GGUF files exist (s390x); their version reads as a huge little-endian number.
    if le < 65536 or be >= 65536:
        return "<", le
    return ">", be


class GgufReader(FormatReader):
    """GGUF metadata: bounds of every length, and the chat templates."""

    name = "gguf"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return head[:4] == MAGIC

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        head = source.read_at(0, 24)
        if len(head) < 8:
            ctx.report("gguf-invalid-header", "file ends inside the GGUF header", offset=0)
            return
        endian, version = _version(head)
        if version not in (1, 2, 3):
            ctx.report("gguf-invalid-header", f"unsupported GGUF version {version}", offset=4,
                       details={"version": version})
            return
        h = _Header(source, ctx, endian, version)
        try:
            self._scan_header(h, ctx)
        except GgufError as exc:
            ctx.report("gguf-invalid-header", str(exc), offset=exc.offset)

    def _scan_header(self, h: _Header, ctx: ScanContext) -> None:
        # A tensor info is at least name length + u32 dims + u32 type + u64 offset.
        n_tensors = h.count("tensor count", 1)
        # A key/value pair is at least key length + u32 type + one byte.
        n_kv = h.count("metadata count", 13 if h.version > 1 else 9)
        alignment = 32
        for i in range(n_kv):
            if i % 4096 == 0:
                ctx.check_deadline()
            key_at = h.r.tell()
            key, _, key_len = h.string(f"key of metadata entry {i}", limit=MAX_KEY)
            if key is None:
                raise GgufError(f"metadata key {i} is {key_len} bytes long", key_at)
            vtype = h._unpack("I", f"type of {key!r}")
            if key.startswith("tokenizer.chat_template"):
                if vtype != STRING:
                    h.skip_value(vtype, repr(key))
                    continue
                value_at = h.r.tell()
                text, start, length = h.string(repr(key), limit=MAX_TEMPLATE)
                if text is None:
                    ctx.report("unscanned-limit", f"chat template {key!r} of {length} bytes exceeds the "
                               f"{MAX_TEMPLATE}-byte template limit", offset=value_at,
                               details={"key": key})
                    continue
                ctx.add_format("gguf-chat-template")
                report_template(text, ctx, key, offset=start)
            elif key == "general.alignment" and vtype == 4:
                alignment = h._unpack("I", repr(key))
                if alignment == 0 or alignment % 8:
                    raise GgufError(f"general.alignment {alignment} is not a positive multiple of 8",
                                    h.r.tell() - 4)
            else:
                h.skip_value(vtype, repr(key))
        for i in range(n_tensors):
            if i % 4096 == 0:
                ctx.check_deadline()
            name_at = h.r.tell()
            name, _, name_len = h.string(f"name of tensor {i}", limit=MAX_KEY)
            if name is None:
                raise GgufError(f"tensor name {i} is {name_len} bytes long", name_at)
            dims_at = h.r.tell()
            n_dims = h._unpack("I", f"dimensions of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise GgufError(f"tensor {name!r} claims {n_dims} dimensions (ggml allows {MAX_DIMS})",
                                dims_at)
            for _ in range(n_dims):
                h._unpack("Q" if h.version > 1 else "I", f"shape of tensor {name!r}")
            h._unpack("I", f"type of tensor {name!r}")
            off_at = h.r.tell()
            offset = h._unpack("Q", f"offset of tensor {name!r}")
            if offset % alignment or offset >= h.source.size:
                raise GgufError(f"tensor {name!r} data offset {offset} is misaligned or beyond the file",
                                off_at)
