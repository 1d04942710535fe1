"""ZIP archives (PyTorch checkpoints, TorchScript, .npz, .keras, plain zips), parsed by hand.

Python's ``zipfile`` raises on CRC errors, flag bits and name mismatches that torch's miniz reader
ignores, so a scanner that lets ``zipfile`` decide crashes (and passes) where torch loads the
payload. This reader parses the end-of-central-directory record (zip64 included), the central
directory and every local header itself, reports each anomaly, and scans **every** entry by
content, duplicates included (torch loads the first of two equal names, ``zipfile`` the last).

Reading is minimal: the central directory, each local header, the members that are not raw
tensor storage, and only the first 4 KiB of each ``<root>/data/<key>`` storage member of a torch
archive (enough to see whether it is something other than raw numbers).
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..context import ScanContext
from ..findings import Severity
from ..decompress import CHUNK, DecompressionError, decompress_head, decompress_to_source, raw_lzma_stream
from ..source import ByteSource, BytesSource, SliceSource
from .carve import carve
from .interface import FormatReader

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
METHOD_DEFLATE64 = 9
METHOD_BZIP2 = 12
METHOD_LZMA = 14
METHOD_NAMES = {0: "stored", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd",
                95: "xz", 98: "ppmd"}

#: Storage members of a torch archive are only sniffed: this many leading bytes.
STORAGE_SNIFF = 4096
#: Stored members up to this size get their CRC checked (they are read whole anyway, or nearly).
CRC_CHECK_STORED_MAX = 16 << 20
#: Trailing slack tolerated after an entry that uses a data descriptor (zip64 descriptor size).
DESCRIPTOR_MAX = 24
#: Files whose presence marks a torch archive root (``torch.save``, TorchScript, torch.package).
TORCH_ROOT_MARKERS = ("data.pkl", "constants.pkl", "bytecode.pkl")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def torch_key(name: str) -> str:
    """``name`` as torch's reader looks records up: miniz's sorted-directory search (no
    ``MZ_ZIP_FLAG_CASE_SENSITIVE``) compares names with ASCII-only ``MZ_TOLOWER``, so
    ``get_record("code/__torch__.py")`` also finds ``archive/CODE/__torch__.PY``."""
    return name.translate(_ASCII_LOWER)


def torch_pickle_kind(name: str, torch_roots: List[str]) -> str:
    """Whether torch unpickles the member ``name`` of a torch archive: ``"data"`` for
    ``<root>/data.pkl`` (``torch.load``), ``"other"`` for every other ``.pkl`` in a root or below
    it (TorchScript's ``constants.pkl``, mobile ``bytecode.pkl`` and debug handles, torch.package
    resources read with ``load_pickle``, TorchScript ``code/*.debug_pkl`` source ranges), ``""`` for
    the rest (storages, code, version records, ``extra/`` files)."""
    for root in torch_roots:
        if name == root + "/data.pkl":
            return "data"
        if name.startswith(root + "/") and name.endswith((".pkl", ".debug_pkl")) \
                and not name.startswith((root + "/data/", root + "/extra/")):
            # (extra/ holds _extra_files, which torch.jit.load returns as bytes, unparsed)
            return "other"
    return ""


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


def _roots(entries: List[CentralEntry]) -> List[str]:
    seen: List[str] = []
    for e in entries:
        root = e.name.split("/", 1)[0] if "/" in e.name else ""
        if root not in seen:
            seen.append(root)
    return seen


class ZipReader(FormatReader):
    """Every entry of a zip, by content; torch/TorchScript/npz structure on top."""

    name = "zip"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        # torch decides by the local header magic at 0; zipfile/Keras by the end record.
        if head[:4] in (LOCAL_SIG, EOCD_SIG):
            return True
        tail = _tail(source)
        if EOCD_SIG not in tail[1]:
            return False
        return find_directory(source, tail) is not None or damaged_end(source, tail) is not None

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        directory = find_directory(source)
        if directory is None:
            self._scan_without_directory(source, ctx)
            return
        read_central_directory(source, directory, ctx.limits.max_in_memory_bytes,
                               max_entries=ctx.limits.max_members + 1)
        for message, offset in directory.problems:
            ctx.report("zip-malformed", message, offset=offset)
        if len(directory.entries) < directory.declared_entries:
            ctx.report("unscanned-parse-error",
                       f"the end record promises {directory.declared_entries} entries, only "
                       f"{len(directory.entries)} could be read: the rest of the archive was not scanned",
                       offset=directory.cd_start)
        if directory.zip64:
            ctx.add_format("zip64")
        entries = directory.entries
        if len(entries) > ctx.limits.max_members:
            ctx.report("unscanned-limit",
                       f"{len(entries)} entries exceed the members-per-archive limit of "
                       f"{ctx.limits.max_members}; only the first {ctx.limits.max_members} were scanned",
                       offset=directory.cd_start, details={"limit": "max_members"})
            entries = entries[:ctx.limits.max_members]

        torch_roots = self._torch_roots(entries, ctx)
        self._report_structure(source, ctx, directory, entries, torch_roots)
        from .torchscript import root_contexts, scan_torchscript

        # Pickles of a TorchScript root are read by torch.jit's unpickler: judged as it resolves them.
        script_ctx = root_contexts(entries, torch_roots, ctx)

        counts: Dict[bytes, int] = {}
        spans: List[Tuple[int, int, CentralEntry]] = []
        for entry in entries:
            ctx.check_deadline()
            counts[entry.raw_name] = counts.get(entry.raw_name, 0) + 1
            label = entry.name if counts[entry.raw_name] == 1 else f"{entry.name}#{counts[entry.raw_name]}"
            ectx = script_ctx.get(torch_key(entry.name).split("/", 1)[0], ctx) if script_ctx else ctx
            end = self._scan_entry(source, ectx, entry, label, torch_roots)
            if end is not None:
                spans.append((entry.local_offset, end, entry))

        duplicates = {n: c for n, c in counts.items() if c > 1}
        for raw, count in duplicates.items():
            name = _decode_name(raw, 0)
            ctx.report("zip-duplicate-member",
                       f"{count} entries are named {name!r}: torch loads the first, zipfile the last; "
                       f"every copy was scanned (the later ones as {name}#2 ...)",
                       details={"name": name, "count": count})
        # torch's record lookup ignores ASCII case (torch_key): names that differ only in case are
        # one record to torch, which of them it reads depends on miniz's sort, zipfile reads each.
        folded: Dict[str, List[str]] = {}
        for raw in counts:
            name = _decode_name(raw, 0)
            folded.setdefault(torch_key(name), []).append(name)
        for names in folded.values():
            if len(names) > 1 and torch_roots:
                ctx.report("zip-duplicate-member",
                           f"{len(names)} entries are one name to torch's case-insensitive record lookup "
                           f"({', '.join(repr(n) for n in names[:5])}): which one torch reads depends on the "
                           "archive's sort order, zipfile reads each by its exact name; every copy was "
                           "scanned",
                           details={"name": names[0], "names": names[:20], "count": len(names)})
        self._scan_gaps(source, ctx, directory, spans)
        scan_torchscript(self, source, ctx, entries, torch_roots)
        from .torch_export import scan_export_programs

        scan_export_programs(self, source, ctx, entries)

    # -- structure -------------------------------------------------------------------------
    def _torch_roots(self, entries: List[CentralEntry], ctx: ScanContext) -> List[str]:
        roots = []
        for e in entries:
            # Roots are kept as torch_key(): torch finds data.pkl, code/ ... case-insensitively.
            parts = torch_key(e.name).split("/")
            marker = (len(parts) == 2 and parts[1] in TORCH_ROOT_MARKERS) or \
                (len(parts) == 3 and parts[1:] == [".data", "version"])  # torch.package
            if marker and parts[0] not in roots:
                roots.append(parts[0])
        if roots:
            ctx.add_format("torch-zip")
        return roots

    def _report_structure(self, source: ByteSource, ctx: ScanContext, directory: ZipDirectory,
                          entries: List[CentralEntry], torch_roots: List[str]) -> None:
        if entries:
            first = min(e.local_offset for e in entries)
            if first > 0:
                ctx.report("zip-prepended-data",
                           f"{first} bytes precede the first zip entry: pickle.load/np.load read them, "
                           "zip readers skip them", offset=0, details={"length": first})
                self._scan_prefix(source, ctx, first)
        roots = _roots(entries)
        if torch_roots and len(roots) > 1:
            ctx.report("zip-multiple-roots",
                       f"torch archive with {len(roots)} top-level folders ({', '.join(roots[:5])}): torch "
                       f"reads the folder of the first entry ({roots[0]!r}); every folder was scanned",
                       details={"roots": roots[:20]})

    def _scan_prefix(self, source: ByteSource, ctx: ScanContext, length: int) -> None:
        """Scan bytes before the archive unless another reader already reads the file from offset 0."""
        if any(name != self.name for name in ctx.detect(source)):
            return  # the polyglot reading (pickle + zip ...) already covers offset 0
        self._scan_or_carve(source, ctx, 0, length, "<before zip>", "zip-prepended-data")

    @staticmethod
    def _scan_or_carve(source: ByteSource, ctx: ScanContext, start: int, length: int, member: str,
                       rule_id: str) -> None:
        """Scan bytes outside every entry as a member; when no format claims them, carve them.

        Carving finds a pickle whose first bytes were damaged or hidden behind junk; a loader that
        reads from offset 0 (pickle.load) may still run its opcodes.
        """
        part = SliceSource(source, start, length, name=f"{source.name}:{member}")
        if ctx.detect(part):
            ctx.scan(part, member)
        else:
            carve(source, ctx, start, start + length, rule_id)

    # -- one entry -------------------------------------------------------------------------
    def _scan_entry(self, source: ByteSource, ctx: ScanContext, entry: CentralEntry, label: str,
                    torch_roots: List[str]) -> Optional[int]:
        """Check and scan one entry; returns where its data ends (None when unreadable)."""
        mctx = ctx.enter(label)
        if mctx is None:
            return None
        local = read_local_header(source, entry.local_offset)
        if local is None:
            mctx.report("unscanned-parse-error",
                        f"central directory points at offset {entry.local_offset} where there is no local "
                        "header; the member could not be read", details={"local_header": entry.local_offset})
            return None
        if local.raw_name != entry.raw_name:
            local_name = _decode_name(local.raw_name, local.flags)
            mctx.report("zip-name-mismatch",
                        f"local header at offset {entry.local_offset} names {local_name!r}, "
                        f"the central directory {entry.name!r}: zipfile refuses it, torch does not check",
                        details={"local_name": local_name,
                                 "central_name": entry.name})
        if local.method != entry.method:
            mctx.report("zip-malformed",
                        f"local header says compression {local.method}, central directory {entry.method}",
                        offset=None, details={"local_header": entry.local_offset})
        flags = entry.flags | local.flags
        odd = [text for bit, text in FLAG_NAMES.items() if flags & bit]
        data_start = local.data_start
        csize = entry.csize
        end = data_start + csize
        if data_start + csize > source.size:
            mctx.report("unscanned-parse-error",
                        f"member data ({csize} bytes at offset {data_start}) runs past the end of the file")
            return None
        if entry.name.endswith("/") and csize == 0:
            return end

        key = torch_key(entry.name)
        is_storage = any(key.startswith(r + "/data/") for r in torch_roots)
        encrypted = bool(flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION))
        if is_storage or encrypted:
            head = self._member_head(source, entry, data_start, mctx)
            if head is None or not ctx.detect(BytesSource(head)):
                if encrypted:
                    mctx.report("unscanned-encrypted", "member is encrypted (" + ", ".join(odd) +
                                "); its content cannot be inspected")
                # Otherwise a raw tensor storage: torch copies these bytes, it never parses them.
                return end
        if odd:
            mctx.report("zip-flag-bits",
                        "flag bits set (" + ", ".join(odd) + ") but the content is readable as is: torch "
                        "ignores these bits while zipfile refuses the member; it was scanned",
                        details={"flags": flags})
        if is_storage:
            self._scan_storage(source, mctx, entry, local, data_start)
        else:
            self._scan_content(source, mctx, entry, local, data_start,
                               torch_pickle_kind(torch_key(entry.name), torch_roots))
        return end

    def _scan_storage(self, source: ByteSource, ctx: ScanContext, entry: CentralEntry, local: LocalHeader,
                      data_start: int) -> None:
        """A storage member whose head looks like a format: scan it, but keep only what matters.

        torch never parses storage bytes, and random tensor bytes start like a pickle often
        enough (``80 02`` + an opcode) to matter over thousands of tensors. So the scan runs in a
        private context and its findings are kept when the content really is a format (read
        completely) or shows something blocking; a reading that merely broke is raw numbers.
        """
        trial = ctx.isolated()
        self._scan_content(source, trial, entry, local, data_start)
        blocking = any(not f.unscanned and f.severity >= Severity.HIGH for f in trial.findings)
        ctx.adopt(trial, keep_findings=blocking or not any(f.unscanned for f in trial.findings))

    def _member_head(self, source: ByteSource, entry: CentralEntry, data_start: int,
                     ctx: ScanContext) -> Optional[bytes]:
        """The first bytes of the member's content (decompressed), None when they cannot be had."""
        if entry.method == METHOD_STORED:
            return source.read_at(data_start, min(entry.csize, STORAGE_SNIFF))
        stream = self._stream(source, entry, data_start)
        if stream is None:
            return None
        method, start, dec = stream
        window = SliceSource(source, start, data_start + entry.csize - start)
        try:
            return decompress_head(window, method, STORAGE_SNIFF, stream=dec)
        except DecompressionError:
            return None

    def _stream(self, source: ByteSource, entry: CentralEntry, data_start: int):  # type: ignore[no-untyped-def]
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

    def _scan_content(self, source: ByteSource, ctx: ScanContext, entry: CentralEntry, local: LocalHeader,
                      data_start: int, torch_pickle: str = "") -> None:
        if entry.method == METHOD_STORED:
            member = SliceSource(source, data_start, entry.csize, name=f"{source.name}:{ctx.member}")
            if entry.csize <= CRC_CHECK_STORED_MAX:
                self._check_crc(ctx, entry, local, self._crc_of(member))
            self._scan_member(member, ctx, torch_pickle)
            return
        stream = self._stream(source, entry, data_start)
        if stream is None:
            method = METHOD_NAMES.get(entry.method, f"method {entry.method}")
            ctx.report("unscanned-unsupported",
                       f"member is compressed with {method}, which this scanner cannot decompress",
                       details={"method": entry.method})
            return
        method, start, dec = stream
        try:
            out = decompress_to_source(source, method, ctx, f"{source.name}:{ctx.member}", start=start,
                                       end=data_start + entry.csize, stream=dec)
        except DecompressionError as exc:
            ctx.report("unscanned-parse-error", f"member could not be decompressed: {exc}",
                       details={"method": entry.method})
            return
        with out:
            if out.size != entry.usize:
                ctx.report("zip-malformed", f"member decompresses to {out.size} bytes, the directory says "
                           f"{entry.usize}", details={"local_header": entry.local_offset})
            self._check_crc(ctx, entry, local, self._crc_of(out))
            self._scan_member(out, ctx, torch_pickle)

    @staticmethod
    def _scan_member(member: ByteSource, ctx: ScanContext, torch_pickle: str) -> None:
        """Scan a member by content; a member torch unpickles is read as a pickle whatever it
        looks like (``torch_pickle``: ``"data"`` for ``data.pkl``, ``"other"`` for the other
        pickles of a torch archive, ``""`` for everything else)."""
        if torch_pickle == "data":
            # torch unpickles data.pkl once; the VM then knows to expect protocol 2 only. What it
            # cannot walk to STOP is its finding (pickle-broken-stream), never "not a pickle".
            ctx.add_format("pickle")
            result = ctx.scan_pickle_at(member, 0, torch_archive=True)
            if result.complete and result.end is not None and result.end < member.size:
                ctx.scan_pickle_stream(member, result.end)
            return
        if torch_pickle:
            ctx.scan_as("pickle", member)
            return
        ctx.scan(member)

    @staticmethod
    def _crc_of(member: ByteSource) -> int:
        crc = 0
        pos = 0
        while pos < member.size:
            data = member.read_at(pos, CHUNK * 16)
            crc = zlib.crc32(data, crc)
            pos += len(data)
        return crc & 0xFFFFFFFF

    @staticmethod
    def _check_crc(ctx: ScanContext, entry: CentralEntry, local: LocalHeader, actual: int) -> None:
        stated = {entry.crc}
        if not (local.flags & FLAG_DESCRIPTOR):
            stated.add(local.crc)
        if actual not in stated or len(stated) > 1:
            ctx.report("zip-crc-mismatch",
                       f"CRC-32 of the content is {actual:08x}, the headers say "
                       + "/".join(f"{c:08x}" for c in sorted(stated))
                       + ": zipfile refuses the member, torch does not check; it was scanned",
                       details={"actual": f"{actual:08x}", "stated": [f"{c:08x}" for c in sorted(stated)]})

    # -- bytes no entry accounts for -------------------------------------------------------
    def _scan_gaps(self, source: ByteSource, ctx: ScanContext, directory: ZipDirectory,
                   spans: List[Tuple[int, int, CentralEntry]]) -> None:
        """Bytes between entries (or before the directory) that no entry claims: hidden members."""
        if not spans:
            return
        spans.sort(key=lambda s: s[0])
        cursor = spans[0][0]
        gaps: List[Tuple[int, int]] = []
        for start, data_end, entry in spans:
            if start > cursor:
                gaps.append((cursor, start))
            end = self._after_descriptor(source, data_end) if entry.flags & FLAG_DESCRIPTOR else data_end
            cursor = max(cursor, end)
        if directory.cd_start > cursor:
            gaps.append((cursor, directory.cd_start))
        for start, end in gaps:
            ctx.report("zip-unaccounted-bytes",
                       f"{end - start} bytes at offset {start} belong to no entry of the central directory; "
                       "they were scanned as a member", offset=start, details={"length": end - start})
            self._scan_or_carve(source, ctx, start, end - start, f"<gap@{start}>", "zip-unaccounted-bytes")

    @staticmethod
    def _after_descriptor(source: ByteSource, pos: int) -> int:
        """End of the data descriptor that starts at ``pos`` (signature optional, 32 or 64-bit sizes)."""
        data = source.read_at(pos, DESCRIPTOR_MAX + 4)
        skip = 4 if data[:4] == DESCRIPTOR_SIG else 0
        for size in (12, 20):
            nxt = data[skip + size:skip + size + 4]
            if nxt in (LOCAL_SIG, CENTRAL_SIG, ZIP64_EOCD_SIG, EOCD_SIG):
                return pos + skip + size
        return pos + skip + 12

    # -- no central directory --------------------------------------------------------------
    def _scan_without_directory(self, source: ByteSource, ctx: ScanContext) -> None:
        """A zip without a usable directory: walk the local headers, scan what they hold, fail closed."""
        ctx.report("unscanned-parse-error",
                   "zip whose end-of-central-directory record is missing or points at no directory "
                   "(truncated or damaged): torch and zipfile refuse it; entries found by walking local "
                   "headers were scanned", offset=0)
        # The first local header, searched for when the file does not start with one.
        head = source.read_at(0, min(source.size, ctx.limits.max_in_memory_bytes))
        pos = head.find(LOCAL_SIG)
        if pos != 0:
            carve(source, ctx, 0, pos if pos > 0 else source.size, "zip-prepended-data")
            if pos < 0:
                return
        count = 0
        while count < ctx.limits.max_members:
            local = read_local_header(source, pos)
            if local is None:
                break
            ctx.check_deadline()
            count += 1
            name = _decode_name(local.raw_name, local.flags)
            entry = CentralEntry(count - 1, local.raw_name, name, local.flags, local.method, local.crc,
                                 local.csize, local.usize, pos, -1)
            if local.flags & FLAG_DESCRIPTOR and local.csize == 0:
                ctx.child(name).report("unscanned-parse-error",
                                       "member size is only in the missing central directory; not scanned")
                break
            if local.data_start + local.csize > source.size:
                ctx.child(name).report("unscanned-parse-error", "member is truncated; not scanned")
                break
            self._scan_content(source, ctx.child(name), entry, local, local.data_start)
            pos = local.data_start + local.csize
