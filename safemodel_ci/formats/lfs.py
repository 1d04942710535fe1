"""Git LFS pointer files standing in for a model (``git-lfs/git-lfs docs/spec.md``).

A pointer is a small text file (< 1024 bytes): ``version <spec url>``, then sorted ``key value``
lines with ``oid sha256:<64 hex>`` and ``size <bytes>``. When the repository that holds the
pointer has the object (``$(git rev-parse --git-common-dir)/lfs/objects/aa/bb/<oid>``), the
object is verified against the oid and size and scanned in place of the pointer. Otherwise the
real model was not scanned: ``lfs-pointer-missing`` (exit 2), never clean.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from typing import Dict, Optional, Tuple

from ..context import ScanContext
from ..source import ByteSource, FileSource, SourceError
from .interface import FormatReader

MAX_POINTER = 1024
#: Spec URLs git-lfs accepts in the version line (``lfs/pointer.go`` v1Aliases).
VERSIONS = (b"https://git-lfs.github.com/spec/v1", b"https://hawser.github.com/spec/v1",
            b"http://git-media.io/v/2")
_OID_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_FETCH_HINT = ("fetch the LFS content (git lfs pull --include=<path>, or actions/checkout with "
               "lfs: true) and scan again")

#: Repository top-level (or start directory) -> LFS object directories, per process.
_OBJECT_DIRS: Dict[str, Tuple[str, ...]] = {}


def parse_pointer(data: bytes) -> Optional[Tuple[str, int]]:
    """(sha256 hex, size) of a Git LFS pointer, or None when ``data`` is not one."""
    if len(data) >= MAX_POINTER or not data.startswith(b"version "):
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    fields: Dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(" ")
        if not sep or not key or key in fields:
            return None
        fields[key] = value
    if fields.get("version", "").encode() not in VERSIONS:
        return None
    m = _OID_RE.match(fields.get("oid", ""))
    size = fields.get("size", "")
    if not m or not size.isdigit():
        return None
    return m.group(1), int(size)


def _git(cwd: str, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def lfs_object_dirs(path: str) -> Tuple[str, ...]:
    """Directories that may hold LFS objects for the repository containing ``path`` (cached)."""
    directory = os.path.dirname(os.path.abspath(path))
    top = _git(directory, "rev-parse", "--show-toplevel") or directory
    if top in _OBJECT_DIRS:
        return _OBJECT_DIRS[top]
    dirs = []
    common = _git(directory, "rev-parse", "--git-common-dir")
    if common:
        dirs.append(os.path.join(os.path.join(directory, common), "lfs", "objects"))
    storage = _git(directory, "config", "--get", "lfs.storage")
    if storage and common:
        base = storage if os.path.isabs(storage) else os.path.join(directory, common, storage)
        dirs.append(os.path.join(base, "objects"))
    _OBJECT_DIRS[top] = tuple(dirs)
    return _OBJECT_DIRS[top]


def _sha256(source: ByteSource) -> str:
    digest = hashlib.sha256()
    pos = 0
    while pos < source.size:
        chunk = source.read_at(pos, 1 << 20)
        digest.update(chunk)
        pos += len(chunk)
    return digest.hexdigest()


class LfsPointerReader(FormatReader):
    """A Git LFS pointer: the object it names is scanned instead, or the file is reported unscanned."""

    name = "lfs-pointer"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return source.size < MAX_POINTER and parse_pointer(head) is not None

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        parsed = parse_pointer(source.read_at(0, MAX_POINTER))
        if parsed is None:
            return
        oid, size = parsed
        where = f"sha256:{oid[:12]}…, {size} bytes"
        if ctx.real_path is None:
            ctx.report("lfs-pointer-missing",
                       f"Git LFS pointer ({where}) that is not a file in a local checkout; the model it "
                       f"stands for was not scanned: {_FETCH_HINT}", details={"oid": oid, "size": size})
            return
        obj = None
        for base in lfs_object_dirs(ctx.real_path):
            candidate = os.path.join(base, oid[0:2], oid[2:4], oid)
            if os.path.isfile(candidate):
                obj = candidate
                break
        if obj is None:
            ctx.report("lfs-pointer-missing",
                       f"Git LFS pointer ({where}) whose object is not in this clone; the model was not "
                       f"scanned: {_FETCH_HINT}", details={"oid": oid, "size": size})
            return
        try:
            content = FileSource(obj, name=f"{ctx.path}:<lfs object>")
        except SourceError as exc:
            ctx.report("unscanned-unreadable", f"LFS object {obj} could not be opened: {exc}")
            return
        with content:
            ctx.add_format("lfs-object")
            actual_size = content.size
            actual = _sha256(content) if actual_size == size else None
            if actual_size != size or actual != oid:
                ctx.report("lfs-object-mismatch",
                           f"LFS object {obj} has size {actual_size} and sha256 "
                           f"{actual or '(not computed)'}, "
                           f"the pointer says {size} and {oid}; the object was scanned anyway",
                           details={"object": obj, "oid": oid, "size": size, "actual_size": actual_size})
            ctx.scan(content, "<lfs object>")
