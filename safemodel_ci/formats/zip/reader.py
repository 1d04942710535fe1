"""ZIP archives (PyTorch checkpoints, TorchScript, .npz, .keras, plain zips), parsed by hand.

Python's ``zipfile`` raises on CRC errors, flag bits and name mismatches that torch's miniz reader
ignores, so a scanner that lets ``zipfile`` decide crashes (and passes) where torch loads the
payload. This reader parses the end-of-central-directory record (zip64 included), the central
directory and every local header itself (:mod:`.container`), reports each anomaly, and scans
**every** entry by content, duplicates included (torch loads the first of two equal names,
``zipfile`` the last).

Reading is minimal: the central directory, each local header, the members that are not raw
tensor storage, and only the first 4 KiB of each ``<root>/data/<key>`` storage member of a torch
archive (enough to see whether it is something other than raw numbers; :mod:`.torch_archive`).
"""

from __future__ import annotations


from ...context import ScanContext
from ...decompress import DecompressionError, decompress_to_source
from ...findings import Severity
from ...source import ByteSource, BytesSource, SliceSource
from ..carve import carve
from ..interface import FormatReader
from .container import (CRC_CHECK_STORED_MAX, EOCD_SIG, FLAG_DESCRIPTOR, FLAG_ENCRYPTED,
                        FLAG_NAMES, FLAG_STRONG_ENCRYPTION, LOCAL_SIG, METHOD_NAMES, METHOD_STORED,
                        CentralEntry, LocalHeader, ZipDirectory, _decode_name, _tail, after_descriptor,
                        crc_of, damaged_end, find_directory, member_head, member_stream,
                        read_central_directory, read_local_header, top_folders)
from .torch_archive import STORAGE_SNIFF, scan_member, torch_key, torch_pickle_kind
from .torch_archive import torch_roots as torch_roots_of

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, List, Optional, Tuple


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

        torch_roots = torch_roots_of(entries)
        if torch_roots:
            ctx.add_format("torch-zip")
        self._report_structure(source, ctx, directory, entries, torch_roots)
        from ..torchscript import root_contexts, scan_torchscript  # torch archives only: not at import

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
        scan_torchscript(source, ctx, entries, torch_roots)
        from ..torch_export import scan_export_programs

        scan_export_programs(source, ctx, entries)

    # -- structure -------------------------------------------------------------------------
    def _report_structure(self, source: ByteSource, ctx: ScanContext, directory: ZipDirectory,
                          entries: List[CentralEntry], torch_roots: List[str]) -> None:
        if entries:
            first = min(e.local_offset for e in entries)
            if first > 0:
                ctx.report("zip-prepended-data",
                           f"{first} bytes precede the first zip entry: pickle.load/np.load read them, "
                           "zip readers skip them", offset=0, details={"length": first})
                self._scan_prefix(source, ctx, first)
        roots = top_folders(entries)
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
            head = member_head(source, entry, data_start, STORAGE_SNIFF)
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

    def _scan_content(self, source: ByteSource, ctx: ScanContext, entry: CentralEntry, local: LocalHeader,
                      data_start: int, torch_pickle: str = "") -> None:
        if entry.method == METHOD_STORED:
            member = SliceSource(source, data_start, entry.csize, name=f"{source.name}:{ctx.member}")
            if entry.csize <= CRC_CHECK_STORED_MAX:
                self._check_crc(ctx, entry, local, crc_of(member))
            scan_member(member, ctx, torch_pickle)
            return
        stream = member_stream(source, entry, data_start)
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
            self._check_crc(ctx, entry, local, crc_of(out))
            scan_member(out, ctx, torch_pickle)

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
            end = after_descriptor(source, data_end) if entry.flags & FLAG_DESCRIPTOR else data_end
            cursor = max(cursor, end)
        if directory.cd_start > cursor:
            gaps.append((cursor, directory.cd_start))
        for start, end in gaps:
            ctx.report("zip-unaccounted-bytes",
                       f"{end - start} bytes at offset {start} belong to no entry of the central directory; "
                       "they were scanned as a member", offset=start, details={"length": end - start})
            self._scan_or_carve(source, ctx, start, end - start, f"<gap@{start}>", "zip-unaccounted-bytes")

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
