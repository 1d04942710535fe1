"""The zip container, parsed by hand: end records (zip64 included), the central directory, local
headers, data descriptors and member streams. Nothing here knows about torch or about other
formats: :mod:`.reader` scans the members and :mod:`.torch_archive` applies torch's rules.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass, field

from ...context import ScanContext
from ...decompress import (CHUNK, DecompressionError, decompress_head, decompress_to_source,
                           raw_lzma_stream)
from ...source import ByteSource, SliceSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List, Optional, Tuple

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
EOCD_SIG = b"PK\x05\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD_SIG = b"PK\x06\x06"
DESCRIPTOR_SIG = b"PK\x07\x08"

EOCD_SIZE = 22
#: The EOCD sits within the last 22 bytes + the longest comment (65535 bytes).
EOCD_SEARCH = EOCD_SIZE + 0xFFFF
LOCAL_SIZE = 30
CENTRAL_SIZE = 46

FLAG_ENCRYPTED = 0x1
FLAG_DESCRIPTOR = 0x8
FLAG_PATCHED = 0x20
FLAG_STRONG_ENCRYPTION = 0x40
FLAG_UTF8 = 0x800
FLAG_MASKED_DIRECTORY = 0x2000
#: Flag bits that make ``zipfile`` refuse a member while torch's miniz reads it anyway.
FLAG_NAMES = {FLAG_ENCRYPTED: "encrypted", FLAG_PATCHED: "compressed patched data",
              FLAG_STRONG_ENCRYPTION: "strong encryption", FLAG_MASKED_DIRECTORY: "masked directory"}

METHOD_STORED = 0
METHOD_DEFLATED = 8
METHOD_BZIP2 = 12
METHOD_LZMA = 14
METHOD_NAMES = {0: "stored", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd",
                95: "xz", 98: "ppmd"}

#: Stored members up to this size get their CRC checked (they are read whole anyway, or nearly).
CRC_CHECK_STORED_MAX = 16 << 20
#: Trailing slack tolerated after an entry that uses a data descriptor (zip64 descriptor size).
DESCRIPTOR_MAX = 24


@dataclass
class CentralEntry:
    """One central-directory record, with offsets made absolute in the source."""

    index: int
    raw_name: bytes
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    local_offset: int
    central_offset: int


@dataclass
class ZipDirectory:
    """What the end records and the central directory say."""

    eocd_offset: int
    cd_start: int
    cd_size: int
    declared_entries: int
    #: Bytes in front of the archive: offsets in the records are relative to it (a prepended file).
    base: int
    zip64: bool
    entries: List[CentralEntry] = field(default_factory=list)
    #: (message, offset) of problems met while parsing the directory.
    problems: List[Tuple[str, int]] = field(default_factory=list)


#: A central directory record's fixed part: signature, versions made by / needed, flags, method,
#: time, date, crc, sizes, name / extra / comment lengths, disk, attributes, local header offset.
_CENTRAL = struct.Struct("<4s6H3I5HII")


def _u16(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<H", b, o)[0])


def _u32(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<I", b, o)[0])


def _u64(b: bytes, o: int) -> int:
    return int(struct.unpack_from("<Q", b, o)[0])


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", "replace")
    return raw.decode("cp437")


def _zip64_end(source: ByteSource, eocd: int) -> Optional[Tuple[int, int, int, int]]:
    """(record offset, entries, cd size, cd offset) of a zip64 end record located before ``eocd``."""
    if eocd < 20:
        return None
    loc = source.read_at(eocd - 20, 20)
    if len(loc) != 20 or loc[:4] != ZIP64_LOCATOR_SIG:
        return None
    rec_offset = _u64(loc, 8)
    # The record normally sits right before the locator; with prepended data its stated offset
    # is relative to the archive start, so look where it must be first (zipfile does the same).
    for candidate in (eocd - 20 - 56, rec_offset):
        if candidate < 0:
            continue
        rec = source.read_at(candidate, 56)
        if len(rec) == 56 and rec[:4] == ZIP64_EOCD_SIG:
            return candidate, _u64(rec, 32), _u64(rec, 40), _u64(rec, 48)
    return None


def _tail(source: ByteSource) -> Tuple[int, bytes]:
    """(offset, bytes) of the region where an end-of-central-directory record may sit."""
    tail_start = max(0, source.size - EOCD_SEARCH)
    return tail_start, source.read_at(tail_start, source.size - tail_start)


def find_directory(source: ByteSource, end: Optional[Tuple[int, bytes]] = None) -> Optional[ZipDirectory]:
    """Locate a plausible end-of-central-directory record (the last one that points at a directory)."""
    size = source.size
    if size < EOCD_SIZE:
        return None
    tail_start, tail = end or _tail(source)
    pos = tail.rfind(EOCD_SIG)
    while pos >= 0:
        eocd = tail_start + pos
        rec = tail[pos:pos + EOCD_SIZE]
        if len(rec) == EOCD_SIZE:
            found = _directory_from_eocd(source, eocd, rec)
            if found is not None:
                return found
        pos = tail.rfind(EOCD_SIG, 0, pos)
    return None


def _directory_from_eocd(source: ByteSource, eocd: int, rec: bytes) -> Optional[ZipDirectory]:
    entries = _u16(rec, 10)
    cd_size = _u32(rec, 12)
    cd_offset = _u32(rec, 16)
    zip64 = False
    end_of_cd = eocd
    z64 = _zip64_end(source, eocd)
    if z64 is not None and (entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF):
        rec_offset, entries, cd_size, cd_offset = z64
        end_of_cd = rec_offset
        zip64 = True
    elif z64 is not None:
        end_of_cd = z64[0]
        zip64 = True
    if entries == 0 and cd_size == 0:
        return ZipDirectory(eocd, end_of_cd, 0, 0, 0, zip64)
    # Where the directory must be if the stated size is right (data may precede the archive, as
    # zipfile allows), else where the stated offset puts it: the first that holds a record wins.
    for cd_start in (end_of_cd - cd_size, cd_offset):
        if 0 <= cd_start < end_of_cd and source.read_at(cd_start, 4) == CENTRAL_SIG:
            base = cd_start - cd_offset if cd_start == end_of_cd - cd_size else 0
            return ZipDirectory(eocd, cd_start, cd_size, entries, max(0, base), zip64)
    return None


def damaged_end(source: ByteSource, end: Optional[Tuple[int, bytes]] = None) -> Optional[int]:
    """Offset of an end record that closes the file exactly but points at no directory.

    The record sitting at exactly ``size - 22 - comment length`` is too specific to be chance, so
    the file is a damaged zip: reported as such (fail closed) rather than passed over.
    """
    size = source.size
    tail_start, tail = end or _tail(source)
    pos = tail.rfind(EOCD_SIG)
    while pos >= 0:
        rec = tail[pos:pos + EOCD_SIZE]
        if len(rec) == EOCD_SIZE and tail_start + pos + EOCD_SIZE + _u16(rec, 20) == size:
            return tail_start + pos
        pos = tail.rfind(EOCD_SIG, 0, pos)
    return None


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> Tuple[int, int, int]:
    """Replace 0xFFFFFFFF fields by the values of the zip64 extra field (in its fixed order)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 0x0001:
            q = 0
            if usize == 0xFFFFFFFF and q + 8 <= len(body):
                usize = _u64(body, q)
                q += 8
            if csize == 0xFFFFFFFF and q + 8 <= len(body):
                csize = _u64(body, q)
                q += 8
            if offset == 0xFFFFFFFF and q + 8 <= len(body):
                offset = _u64(body, q)
            break
        pos += 4 + length
    return usize, csize, offset


def read_central_directory(source: ByteSource, directory: ZipDirectory, max_bytes: int,
                           max_entries: int = 1 << 20) -> None:
    """Fill ``directory.entries`` from the central directory (problems go to ``directory.problems``).

    Records are read one after the other for as long as their signature continues, not just
    within the stated directory size: zipfile reads a name that runs past a short stated size,
    so an understated size must not hide an entry.
    """
    # Read in windows: the stated size may be anything, records are taken while they continue.
    window = min(max(directory.cd_size, 1 << 16), max(1 << 16, min(max_bytes, 1 << 20)))
    data = source.read_at(directory.cd_start, window)
    base = directory.cd_start
    pos = 0
    index = 0
    while index < max_entries:
        if pos + CENTRAL_SIZE > len(data) and base + pos + CENTRAL_SIZE <= source.size:
            data = data[pos:] + source.read_at(base + len(data), window)
            base += pos
            pos = 0
        if pos + CENTRAL_SIZE > len(data) or data[pos:pos + 4] != CENTRAL_SIG:
            break
        (_, _, _, flags, method, _, _, crc, csize, usize, nlen, elen, clen, _, _, _, lho) = \
            _CENTRAL.unpack_from(data, pos)
        if pos + CENTRAL_SIZE + nlen + elen + clen > len(data):
            data = data[pos:] + source.read_at(base + len(data), CENTRAL_SIZE + nlen + elen + clen + window)
            base += pos
            pos = 0
        raw_name = data[pos + CENTRAL_SIZE:pos + CENTRAL_SIZE + nlen]
        if len(raw_name) != nlen:
            directory.problems.append(("central directory record is truncated", base + pos))
            break
        if 0xFFFFFFFF in (usize, csize, lho):  # only then can the zip64 extra field change them
            extra = data[pos + CENTRAL_SIZE + nlen:pos + CENTRAL_SIZE + nlen + elen]
            usize, csize, lho = _zip64_extra(extra, usize, csize, lho)
        directory.entries.append(CentralEntry(
            index=index, raw_name=raw_name, name=_decode_name(raw_name, flags), flags=flags,
            method=method, crc=crc, csize=csize, usize=usize, local_offset=lho + directory.base,
            central_offset=base + pos))
        index += 1
        pos += CENTRAL_SIZE + nlen + elen + clen
    parsed = base + pos - directory.cd_start
    if parsed != directory.cd_size:
        directory.problems.append((f"end record states a central directory of {directory.cd_size} bytes, its "
                                   f"records take {parsed}", directory.eocd_offset))
    if directory.declared_entries != len(directory.entries):
        directory.problems.append((f"end record declares {directory.declared_entries} entries, the central "
                                   f"directory holds {len(directory.entries)}", directory.eocd_offset))


@dataclass
class LocalHeader:
    offset: int
    raw_name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    data_start: int


def read_local_header(source: ByteSource, offset: int) -> Optional[LocalHeader]:
    """The local header at ``offset``, or None when no local header signature is there."""
    fixed = source.read_at(offset, LOCAL_SIZE)
    if len(fixed) != LOCAL_SIZE or fixed[:4] != LOCAL_SIG:
        return None
    flags, method, crc, csize, usize, nlen, elen = (
        _u16(fixed, 6), _u16(fixed, 8), _u32(fixed, 14), _u32(fixed, 18), _u32(fixed, 22),
        _u16(fixed, 26), _u16(fixed, 28))
    var = source.read_at(offset + LOCAL_SIZE, nlen + elen)
    raw_name = var[:nlen]
    usize, csize, _ = _zip64_extra(var[nlen:], usize, csize, 0)
    return LocalHeader(offset, raw_name, flags, method, crc, csize, usize, offset + LOCAL_SIZE + nlen + elen)


def top_folders(entries: List[CentralEntry]) -> List[str]:
    """Top-level folders of the entries, in order of first appearance ("" for entries at the top)."""
    seen: List[str] = []
    for e in entries:
        root = e.name.split("/", 1)[0] if "/" in e.name else ""
        if root not in seen:
            seen.append(root)
    return seen


def member_stream(source: ByteSource, entry: CentralEntry, data_start: int):  # type: ignore[no-untyped-def]
    """(method name, compressed data start, decompressor) for a compressed entry, None if unsupported."""
    if entry.method == METHOD_DEFLATED:
        return "zlib-raw", data_start, None
    if entry.method == METHOD_BZIP2:
        return "bz2", data_start, None
    if entry.method == METHOD_LZMA:
        hdr = source.read_at(data_start, 4)
        if len(hdr) < 4:
            return None
        psize = _u16(hdr, 2)
        props = source.read_at(data_start + 4, psize)
        try:
            filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]
        except (lzma.LZMAError, ValueError):
            return None
        return "lzma-raw", data_start + 4 + psize, raw_lzma_stream([filt])
    return None


def member_head(source: ByteSource, entry: CentralEntry, data_start: int, n: int) -> Optional[bytes]:
    """The first ``n`` bytes of the member's content (decompressed), None when they cannot be had."""
    if entry.method == METHOD_STORED:
        return source.read_at(data_start, min(entry.csize, n))
    stream = member_stream(source, entry, data_start)
    if stream is None:
        return None
    method, start, dec = stream
    window = SliceSource(source, start, data_start + entry.csize - start)
    try:
        return decompress_head(window, method, n, stream=dec)
    except DecompressionError:
        return None


def read_member(source: ByteSource, entry: CentralEntry, ctx: ScanContext) -> Optional[bytes]:
    """The decompressed bytes of a (small) code member, None when it cannot be had."""
    local = read_local_header(source, entry.local_offset)
    if local is None or local.data_start + entry.csize > source.size:
        return None
    limit = ctx.limits.max_in_memory_bytes
    if entry.method == METHOD_STORED:
        return source.read_at(local.data_start, entry.csize) if entry.csize <= limit else None
    stream = member_stream(source, entry, local.data_start)
    if stream is None:
        return None
    method, start, dec = stream
    try:
        out = decompress_to_source(source, method, ctx, f"{source.name}:{entry.name}", start=start,
                                   end=local.data_start + entry.csize, stream=dec)
    except DecompressionError:
        return None
    with out:
        return out.read_at(0, out.size) if out.size <= limit else None


def crc_of(member: ByteSource) -> int:
    """CRC-32 of a whole member, read in chunks."""
    crc = 0
    pos = 0
    while pos < member.size:
        data = member.read_at(pos, CHUNK * 16)
        crc = zlib.crc32(data, crc)
        pos += len(data)
    return crc & 0xFFFFFFFF


def after_descriptor(source: ByteSource, pos: int) -> int:
    """End of the data descriptor that starts at ``pos`` (signature optional, 32 or 64-bit sizes)."""
    data = source.read_at(pos, DESCRIPTOR_MAX + 4)
    skip = 4 if data[:4] == DESCRIPTOR_SIG else 0
    for size in (12, 20):
        nxt = data[skip + size:skip + size + 4]
        if nxt in (LOCAL_SIG, CENTRAL_SIG, ZIP64_EOCD_SIG, EOCD_SIG):
            return pos + skip + size
    return pos + skip + 12
