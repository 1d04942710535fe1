"""Git LFS pointer files standing in for a model (``git-lfs/git-lfs docs/spec.md``).

A pointer is a small text file (< 1024 bytes): ``version <spec url>``, then sorted ``key value``
lines with ``oid sha256:<64 hex>`` and ``size <bytes>``. When the repository that holds the
pointer has the object (``$(git rev-parse --git-common-dir)/lfs/objects/aa/bb/<oid>``, the common
dir worked out from ``.git`` on disk, no process started), the
object is verified against the oid and size and scanned in place of the pointer. Otherwise the
real model was not scanned: ``lfs-pointer-missing`` (exit 2), never clean.
"""

from __future__ import annotations

import hashlib
import os
import re

from ..context import ScanContext
from ..source import ByteSource, FileSource, SourceError
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, Optional, Tuple

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


def _git_dirs(start: str) -> Optional[Tuple[str, str]]:
    """(work tree top, common git dir) of the repository holding ``start``, found on disk.

    This is what ``git rev-parse --show-toplevel --git-common-dir`` answers, worked out from the
    ``.git`` directory (or the ``.git`` file of a worktree or submodule and its ``commondir``),
    so that a scan never starts a process.
    """
    directory = start
    while True:
        dot_git = os.path.join(directory, ".git")
        if os.path.isdir(dot_git):
            git_dir = dot_git
            break
        if os.path.isfile(dot_git):
            try:
                with open(dot_git, encoding="utf-8") as fh:
                    line = fh.readline().strip()
            except OSError:
                return None
            if not line.startswith("gitdir:"):
                return None
            git_dir = os.path.normpath(os.path.join(directory, line[len("gitdir:"):].strip()))
            break
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
    common = git_dir
    try:
        with open(os.path.join(git_dir, "commondir"), encoding="utf-8") as fh:
            common = os.path.normpath(os.path.join(git_dir, fh.readline().strip()))
    except OSError:
        pass
    return directory, common


def _lfs_storage(common: str) -> Optional[str]:
    """``lfs.storage`` from the repository config, when set (objects then live there)."""
    try:
        with open(os.path.join(common, "config"), encoding="utf-8", errors="replace") as fh:
            text = fh.read(1 << 20)
    except OSError:
        return None
    m = re.search(r"^\s*\[lfs\]\s*$(.*?)(?=^\s*\[|\Z)", text, re.M | re.S)
    if not m:
        return None
    v = re.search(r"^\s*storage\s*=\s*(.+?)\s*$", m.group(1), re.M)
    return v.group(1).strip('"') if v else None


def lfs_object_dirs(path: str) -> Tuple[str, ...]:
    """Directories that may hold LFS objects for the repository containing ``path`` (cached)."""
    found = _git_dirs(os.path.dirname(os.path.abspath(path)))
    if found is None:
        return ()
    top, common = found
    if top in _OBJECT_DIRS:
        return _OBJECT_DIRS[top]
    dirs = [os.path.join(common, "lfs", "objects")]
    storage = _lfs_storage(common)
    if storage:
        base = storage if os.path.isabs(storage) else os.path.join(common, storage)
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
