"""The safetensors reader: the header checked as the reference implementation reads it
(:mod:`.safetensors`), then the tensor bytes offered to the other readers (a polyglot hides there)."""

from __future__ import annotations

from ..context import ScanContext
from ..source import ByteSource
from .interface import FormatReader
from .safetensors import DATA_MEMBER, SafetensorsHeader, claims_safetensors, read_safetensors_header


def _scan_data_region(source: ByteSource, ctx: ScanContext, header: SafetensorsHeader) -> None:
    """Offer the tensor bytes to the other readers: a zip or pickle in them is a polyglot.

    Formats the driver already found for the whole file (a zip found by its end record is found
    there too) are left to it. What is left is scanned in a scratch context first, so that tensor
    bytes which merely start like a pickle and break after a few opcodes are not reported; anything
    else (a complete stream, an import, another format) is reported as a polyglot with its findings.
    """
    start = header.data_start
    if start >= source.size:
        return
    region = source.slice(start, source.size - start, name=f"{source.name}:{DATA_MEMBER}")
    whole = set(ctx.detect(source))
    extra = [name for name in ctx.detect(region) if name not in whole and name != "safetensors-index"]
    if not extra:
        return
    child = ctx.enter(DATA_MEMBER, "tensor data not sniffed")
    if child is None:
        return
    scratch = child.isolated()
    scratch.scan(region)
    if extra == ["pickle"] and all(f.unscanned for f in scratch.findings) \
            and not _complete_pickle(region, child):
        ctx.adopt(scratch, keep_findings=False)
        return  # numbers that start like a pickle header and break at once: not a second format
    ctx.report("polyglot",
               f"the tensor data (file offset {start}) is also a {' and a '.join(extra)}: a loader that "
               "reads it as such sees different content; it was scanned as such",
               offset=start, details={"formats": extra, "data_start": start})
    ctx.adopt(scratch, keep_findings=True)


def _complete_pickle(region: ByteSource, ctx: ScanContext) -> bool:
    """True when a whole pickle stream (up to its STOP) starts the region (read in a scratch context)."""
    return bool(ctx.isolated().scan_pickle_at(region, 0).complete)


class SafetensorsReader(FormatReader):
    """Strict safetensors header validation plus a sniff of the tensor bytes for polyglots."""

    name = "safetensors"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return claims_safetensors(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        header = read_safetensors_header(source, ctx)
        if header is not None:
            _scan_data_region(source, ctx, header)


__all__ = ["SafetensorsReader"]
