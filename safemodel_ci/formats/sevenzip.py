"""7z archives (the nullifAI wrapper: a pickle inside a 7z), read with the optional ``py7zr``.

Members are decompressed into bounded spooled buffers (never to paths named by the archive) and
scanned by content. Without ``py7zr`` the archive is reported as not scannable, never as clean.
"""

from __future__ import annotations


from ..context import ScanContext, ScanLimitExceeded
from ..decompress import DecompressedSource
from ..source import ByteSource, SourceIO
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional

MAGIC = b"7z\xbc\xaf\x27\x1c"


class _SpoolWriter:
    """py7zr writes one member here: spooled, and charged to the per-file decompression budget."""

    def __init__(self, name: str, ctx: ScanContext, source_name: str) -> None:
        self.out = DecompressedSource(f"{source_name}:{name}")
        self.ctx = ctx
        self.error: Optional[str] = None

    def write(self, data: "bytes | bytearray") -> int:
        if self.error is None:
            try:
                self.ctx.charge_decompressed(len(data))
                self.out._append(bytes(data))
            except ScanLimitExceeded as exc:
                self.error = str(exc)
        return len(data)

    def read(self, size: Optional[int] = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return offset

    def flush(self) -> None:
        self.out._finish()

    def size(self) -> int:
        return self.out.size

    def close(self) -> None:
        self.out._finish()


def _factory(ctx: ScanContext, source_name: str) -> Any:
    from py7zr.io import Py7zIO, WriterFactory

    class Writer(_SpoolWriter, Py7zIO):  # type: ignore[misc]
        pass

    class Factory(WriterFactory):  # type: ignore[misc]
        def __init__(self) -> None:
            self.products: Dict[str, List[_SpoolWriter]] = {}

        def create(self, filename: str) -> Any:
            writer = Writer(filename, ctx, source_name)
            self.products.setdefault(filename, []).append(writer)
            return writer

    return Factory()


class SevenZipReader(FormatReader):
    """Every member of a 7z archive, decompressed with bounds and scanned by content."""

    name = "7z"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return head[:6] == MAGIC

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        try:
            import py7zr
        except ImportError:
            ctx.report("unscanned-unsupported",
                       "7z archive: install py7zr (safemodel-ci[formats]) to scan its members", offset=0)
            return
        try:
            archive = py7zr.SevenZipFile(SourceIO(source), mode="r")  # type: ignore[arg-type]
            encrypted = archive.needs_password()
            infos = [] if encrypted else [i for i in archive.list() if not i.is_directory]
        except Exception as exc:  # noqa: BLE001 - py7zr raises many types (LZMAError ...) on damaged headers
            ctx.report("unscanned-parse-error", f"7z archive could not be read: {type(exc).__name__}: {exc}",
                       offset=0)
            return
        with archive:
            if encrypted:
                ctx.report("unscanned-encrypted", "7z archive is encrypted; its members cannot be inspected",
                           offset=0)
                return
            if len(infos) > ctx.limits.max_members:
                ctx.report("unscanned-limit", f"{len(infos)} members exceed the members-per-archive limit "
                           f"of {ctx.limits.max_members}; not scanned", offset=0,
                           details={"limit": "max_members"})
                return
            total = sum(int(i.uncompressed or 0) for i in infos)
            if total > ctx.limits.max_decompressed_bytes:
                ctx.report("unscanned-limit", f"members expand to {total} bytes, above the "
                           f"decompressed-bytes limit of {ctx.limits.max_decompressed_bytes}; not scanned",
                           offset=0,
                           details={"limit": "max_decompressed_bytes"})
                return
            factory = _factory(ctx, source.name)
            try:
                archive.extractall(factory=factory)
            except Exception as exc:  # noqa: BLE001 - py7zr raises many types on damaged input
                ctx.report("unscanned-parse-error", f"7z members could not be decompressed: "
                           f"{type(exc).__name__}: {exc}", offset=0)
        for name, writers in factory.products.items():
            for n, writer in enumerate(writers, 1):
                label = name if n == 1 else f"{name}#{n}"
                with writer.out:
                    if writer.error:
                        ctx.child(label).report("unscanned-limit",
                                                f"{writer.error}; the part decompressed so far was scanned",
                                                details={"limit": "max_decompressed_bytes"})
                    ctx.scan(writer.out, label)
