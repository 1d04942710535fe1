"""Tar archives: every member scanned by content (the legacy torch tar format among them).

Detection is by a valid header checksum (``ustar`` is not required: old v7 archives lack it).
Members are read with ``tarfile`` over the byte source, which is exactly how ``torch.load``
opens a legacy tar checkpoint; only headers are read while walking, member data is handed over
as slices. In a legacy torch tar (members ``sys_info``, ``pickle``, ``storages``, ``tensors``) the
``storages`` and ``tensors`` members interleave pickles with binary records: every pickle in
them is scanned.
"""

from __future__ import annotations

from ..context import ScanContext
from ..source import ByteSource, SliceSource, SourceIO
from .interface import FormatReader

BLOCK = 512
_HIGH_BYTES = bytes(range(128, 256))


def header_checksum_ok(block: bytes) -> bool:
    """True when ``block`` is a tar header whose checksum field matches its bytes."""
    if len(block) < BLOCK or block[:BLOCK] == b"\0" * BLOCK:
        return False
    field = block[148:156]
    try:
        stated = int(field.replace(b"\0", b" ").strip() or b"x", 8)
    except ValueError:
        return False
    body = block[:148] + b" " * 8 + block[156:BLOCK]
    unsigned = sum(body)
    if stated == unsigned:
        return True
    high = len(body) - len(body.translate(None, _HIGH_BYTES))  # bytes over 127, signed negative
    return stated == unsigned - 256 * high


class TarReader(FormatReader):
    """A tar archive; each regular member is sniffed and scanned."""

    name = "tar"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return header_checksum_ok(head[:BLOCK])

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        import tarfile  # only when a tar is found: most scans never need it

        try:
            archive = tarfile.open(fileobj=SourceIO(source), mode="r:")  # noqa: SIM115 - closed below
        except tarfile.TarError as exc:
            ctx.report("unscanned-parse-error", f"tar archive could not be read: {exc}", offset=0)
            return
        with archive:
            members = []
            try:
                for info in archive:
                    members.append(info)
                    if len(members) > ctx.limits.max_members:
                        ctx.report("unscanned-limit",
                                   f"more than {ctx.limits.max_members} members; the rest were not scanned",
                                   details={"limit": "max_members"})
                        members.pop()
                        break
            except tarfile.TarError as exc:
                ctx.report("unscanned-parse-error",
                           f"tar archive is damaged after {len(members)} members: {exc}",
                           offset=archive.offset)
        names = {m.name for m in members}
        torch_tar = {"pickle", "storages"} <= names
        if torch_tar:
            ctx.add_format("torch-legacy-tar")
        for info in members:
            ctx.check_deadline()
            if torch_tar and info.name in ("pickle", "storages", "tensors") and not info.isfile():
                # torch.load extracts storages/tensors into a temporary directory with tarfile's default
                # (fully trusted) filter and opens them there, and reads pickle through extractfile: a
                # link makes it unpickle a file outside the archive (or another member) instead.
                what = ("a symlink to " if info.issym() else "a hard link to " if info.islnk() else "")
                ctx.child(info.name).report(
                    "torch-tar-link",
                    f"legacy torch tar member {info.name!r} is not a regular file "
                    f"({what or 'tar type '}{info.linkname if what else repr(info.type)}); torch.load "
                    "would unpickle what it points to, which is not in this file",
                    offset=info.offset, details={"type": info.type.decode("latin-1"),
                                                 "linkname": info.linkname})
                continue
            if not info.isfile():
                continue
            if info.sparse:
                ctx.child(info.name).report("unscanned-unsupported", "sparse tar member; not scanned")
                continue
            member = SliceSource(source, info.offset_data, info.size, name=f"{source.name}:{info.name}")
            if torch_tar and info.name in ("storages", "tensors"):
                from .torch_storages import scan_legacy_tar_member

                mctx = ctx.child(info.name)
                mctx.add_format("torch-legacy-records")
                scan_legacy_tar_member(member, mctx, info.name)
            elif torch_tar and info.name in ("pickle", "sys_info"):
                # torch.load unpickles these two members of a legacy tar: read as pickles.
                ctx.scan_as("pickle", member, info.name)
            else:
                ctx.scan(member, info.name)
