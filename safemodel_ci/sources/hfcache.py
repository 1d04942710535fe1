"""The local Hugging Face cache: every cached repo and revision, scanned, and every blob hash-checked.

The cache keeps each file once, as ``<repo>/blobs/<etag>``, and links it from every snapshot
(revision) that has it. The etag is the sha256 of the content for LFS files and the git blob sha1
for the others, so a blob that no longer hashes to its name was altered after download. Each blob
is hashed and scanned once however many revisions point at it; its result is repeated for every
``repo_id@revision:path`` that shows it.

The cache is not trusted further than the files in it: a snapshot link that resolves outside the
cache directory is ``cache-link-outside`` (its target is still scanned), a file not named by a hash
cannot be checked (``cache-blob-unverified``), and a fifo, device or socket is never opened (its
type is checked first; ``unscanned-unreadable``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import posixpath
import re
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..cache import ResultCache, _read_nonblocking_fd, tracking_siblings
from ..context import SiblingOpener
from ..findings import EXIT_USAGE, FileResult, Finding, ScanReport, sort_findings
from ..rules import rule
from ..scanner import ScanOptions, scan_byte_source
from ..source import ByteSource, FileSource, SourceError
from .hub import display_repo, format_bytes, plural

#: Bytes hashed per read: memory stays bounded whatever the blob size.
HASH_CHUNK = 1 << 20
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_SHA1_NAME = re.compile(r"[0-9a-f]{40}")


def expected_digest(name: str) -> Optional[str]:
    """The digest a blob named ``name`` must have: ``sha256`` (64 hex), ``git-sha1`` (40 hex) or None.

    Other names (a copy made where symlinks are not available) cannot be checked.
    """
    if _SHA256_NAME.fullmatch(name):
        return "sha256"
    if _SHA1_NAME.fullmatch(name):
        return "git-sha1"
    return None


def file_digest(path: str, algorithm: str) -> str:
    """``sha256`` of the content, or ``git-sha1`` (``sha1("blob <size>\\0" + content)``), streamed."""
    fd = _read_nonblocking_fd(path)  # a fifo or device is refused, never waited on
    if algorithm == "sha256":
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1()  # noqa: S324 - git's object id, not a security hash
        digest.update(f"blob {os.fstat(fd).st_size}\0".encode())
    with os.fdopen(fd, "rb") as fh:
        while True:
            chunk = fh.read(HASH_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def blob_digest_mismatch(path: str, name: str) -> Optional[Tuple[str, str, str]]:
    """``(algorithm, expected, actual)`` when the blob's content does not hash to ``name``, else None."""
    algorithm = expected_digest(name)
    if algorithm is None:
        return None
    actual = file_digest(path, algorithm)
    return None if actual == name else (algorithm, name, actual)


@dataclass
class CacheScan:
    """Results of one cache scan, with counts that show each blob was read once."""

    cache_dir: str
    files: List[FileResult] = field(default_factory=list)
    errors: List[Tuple[str, str]] = field(default_factory=list)
    repos: int = 0
    revisions: int = 0
    #: Distinct blobs whose content was checked (scanned now, or a result-cache hit).
    blobs_scanned: int = 0
    #: Of those, the ones whose result came from the result cache (same content, same name).
    blobs_from_cache: int = 0
    bytes_hashed: int = 0
    #: Files the scan will go through (for progress: done / total).
    total_files: int = 0

    def summary(self) -> Dict[str, Any]:
        return {"cache_dir": self.cache_dir, "repos": self.repos, "revisions": self.revisions,
                "files": len(self.files), "blobs_scanned": self.blobs_scanned,
                "blobs_from_cache": self.blobs_from_cache, "bytes_hashed": self.bytes_hashed}


def _snapshot_siblings(snapshot: Path, file_path: Path) -> SiblingOpener:
    """Files of the same snapshot, by path relative to ``file_path``'s folder (shards of an index)."""
    folder = posixpath.dirname(file_path.relative_to(snapshot).as_posix())

    def open_sibling(relative: str) -> Optional[ByteSource]:
        inner = posixpath.normpath(relative.replace("\\", "/"))
        if inner.startswith("../") or inner == ".." or posixpath.isabs(inner):
            return None
        full = snapshot / folder / inner
        if not full.is_file():
            return None
        try:
            return FileSource(full, name=str(full))
        except SourceError:
            return None

    return open_sibling


def _mismatch_finding(display: str, mismatch: Tuple[str, str, str], blob: str) -> Finding:
    r = rule("cache-blob-mismatch")
    algorithm, expected, actual = mismatch
    return Finding(rule_id=r.id, severity=r.severity, path=display,
                   message=f"blob {blob} should have {algorithm} {expected} but has {actual}: "
                           "the cached file was changed after download",
                   remedy=r.remedy, unscanned=r.unscanned,
                   details={"blob": blob, "algorithm": algorithm, "expected": expected, "actual": actual})


def scan_cache(cache_dir: Optional[str], options: ScanOptions,
               on_file: Optional[Callable[[CacheScan], None]] = None,
               result_cache: Optional[ResultCache] = None, repos: Optional[List[str]] = None) -> CacheScan:
    """Scan every repo and revision of the cache at ``cache_dir`` (default: huggingface_hub's).

    ``repos`` keeps only those repos, named ``org/name`` (any type) or ``datasets/org/name``.

    With ``result_cache``, a blob's result is taken from it when the same content (by sha256) was
    scanned under the same name before, and stored after a scan (see :func:`_scan_blob`).
    """
    from huggingface_hub import scan_cache_dir

    info = _list_cache(scan_cache_dir, cache_dir)  # CacheNotFound / ValueError go to the caller
    if cache_dir is None and getattr(info, "cache_dir", None) is None:  # huggingface_hub 0.x does not say
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    result = CacheScan(cache_dir=str(getattr(info, "cache_dir", None) or cache_dir or ""))
    cache_root = os.path.realpath(result.cache_dir)
    for warning in info.warnings:
        result.errors.append((result.cache_dir, f"corrupted cache entry, not scanned: {warning}"))
    #: realpath of a blob -> its scan result (hash checks apart), scanned the first time it is seen
    scanned: Dict[str, FileResult] = {}
    #: (realpath, algorithm) -> digest: each blob is hashed once per kind of name pointing at it
    digests: Dict[Tuple[str, str], str] = {}
    selected = [r for r in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id))
                if repos is None or display_repo(r.repo_id, r.repo_type) in repos or r.repo_id in repos]
    result.total_files = sum(len(rev.files) for r in selected for rev in r.revisions)
    for repo in selected:
        label = display_repo(repo.repo_id, repo.repo_type)
        result.repos += 1
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            result.revisions += 1
            snapshot = Path(revision.snapshot_path)
            for cached in sorted(revision.files, key=lambda f: str(f.file_path)):
                rel = Path(cached.file_path).relative_to(snapshot).as_posix()
                display = f"{label}@{revision.commit_hash}:{rel}"
                real = os.path.realpath(cached.blob_path)
                link_findings = _link_findings(real, cache_root, display)
                if link_findings is None:  # not a regular file: never opened, never hashed
                    result.files.append(FileResult(path=display, findings=_not_regular(real, display)))
                    if on_file is not None:
                        on_file(result)
                    continue
                first = scanned.get(real)
                if first is None:
                    result.blobs_scanned += 1
                    first = _scan_blob(real, display, snapshot, Path(cached.file_path), options,
                                       result_cache, digests, result)
                    scanned[real] = first
                    result.blobs_from_cache += first.cached
                    file_result = FileResult(path=display, size=first.size, formats=list(first.formats),
                                             findings=list(first.findings), bytes_read=first.bytes_read)
                else:
                    # Same bytes as a file already scanned: repeat its findings under this name.
                    file_result = FileResult(path=display, size=first.size, formats=list(first.formats),
                                             findings=[replace(f, path=display) for f in first.findings],
                                             cached=True)
                # The name is checked for every link: another repo's link may name other content.
                file_result.findings.extend(
                    _hash_check(real, _blob_name(cached), display, options, digests, result))
                file_result.findings.extend(options.policy.adjust(f) if hasattr(options.policy, "adjust")
                                            else f for f in link_findings)
                file_result.findings = sort_findings(file_result.findings)
                result.files.append(file_result)
                if on_file is not None:
                    on_file(result)
    return result


def _list_cache(scan_cache_dir: Callable[[Any], Any], cache_dir: Optional[str]) -> Any:
    """``huggingface_hub.scan_cache_dir``, which lists snapshots recursively (pathlib's ``**``): a
    snapshot nested deeper than the recursion limit is listed again in a thread with a large stack
    and limit. Paths are at most PATH_MAX long, so a depth of about 2,000 folders is the most there is."""
    try:
        return scan_cache_dir(cache_dir)
    except RecursionError:
        pass
    import threading

    box: Dict[str, Any] = {}

    def run() -> None:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 100_000))
        try:
            box["info"] = scan_cache_dir(cache_dir)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
        finally:
            sys.setrecursionlimit(old)

    previous = threading.stack_size(512 << 20)
    try:
        worker = threading.Thread(target=run, name="safemodel-list-cache")
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join()
    if "error" in box:
        error = box["error"]
        if isinstance(error, RecursionError):
            raise ValueError(f"{cache_dir}: the cache's folders are nested too deep to list") from None
        raise error
    return box["info"]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _link_findings(real: str, cache_root: str, display: str) -> Optional[List[Finding]]:
    """Findings about where a snapshot file resolves to; None when it is not a regular file."""
    try:
        st = os.stat(real)
    except OSError:
        return []  # opening it fails later and says so (unscanned-unreadable)
    if not stat.S_ISREG(st.st_mode):
        return None
    out: List[Finding] = []
    if not _inside(real, cache_root):
        r = rule("cache-link-outside")
        out.append(Finding(r.id, r.severity, display, f"resolves to {real}, outside the cache {cache_root}",
                           r.remedy, details={"target": real}))
    name = os.path.basename(real)
    if expected_digest(name) is None:
        r = rule("cache-blob-unverified")
        out.append(Finding(r.id, r.severity, display, f"resolves to {name!r}, not a sha256 or git sha1 "
                                                      "name: its content cannot be checked", r.remedy,
                           details={"target": real}))
    return out


def _not_regular(real: str, display: str) -> List[Finding]:
    r = rule("unscanned-unreadable")
    return [Finding(r.id, r.severity, display, f"resolves to {real}, which is not a regular file (fifo, "
                                               "device or socket): not opened", r.remedy, unscanned=True,
                    details={"target": real})]


def _blob_name(cached: Any) -> str:
    """The blob name the snapshot link names (what the hash check compares the content with).

    huggingface_hub 0.x reports ``blob_path`` with every link resolved, so a blob that is itself a
    link to other content would be checked under that content's own name; the link's first step
    is read instead.
    """
    try:
        return os.path.basename(os.readlink(cached.file_path))
    except OSError:  # not a link (a copied file on a filesystem without symlinks)
        return os.path.basename(cached.blob_path)


def _scan_blob(real: str, display: str, snapshot: Path, file_path: Path, options: ScanOptions,
               cache: Optional[ResultCache], digests: Dict[Tuple[str, str], str],
               tally: CacheScan) -> FileResult:
    """Scan one blob, or take its result from ``cache`` when the same content was scanned before
    under the same name (see :func:`_content_key`)."""
    try:
        source = FileSource(real, name=display)
    except SourceError as exc:
        r = rule("unscanned-unreadable")
        return FileResult(path=display, findings=[Finding(r.id, r.severity, display, f"could not open: {exc}",
                                                          r.remedy, unscanned=True)])
    with source:
        key = _content_key(source, real, digests, tally) if cache is not None else None
        if cache is not None and key is not None:
            hit = cache.get_by_sha256(key[0], source.size, display, options)
            if hit is not None:
                return hit
        tracked_sibling, opened = tracking_siblings(_snapshot_siblings(snapshot, file_path))
        result = scan_byte_source(source, display, options, siblings=tracked_sibling, real_path=None)
        # Stored only when it depends on this content alone (no shard of an index was opened) and,
        # for a blob hashed apart from the scan's reads, the file did not change in between.
        if cache is not None and key is not None and not opened:
            digest, stamp = key
            if stamp is None or stamp == _stamp(real):
                cache.put_by_sha256(digest, source.size, display, options, result)
        return result


def _content_key(source: FileSource, real: str, digests: Dict[Tuple[str, str], str],
                 tally: CacheScan) -> Optional[Tuple[str, Optional[Tuple[int, int, int]]]]:
    """The sha256 of a blob's content as its result-cache key, when it is cheap to have, and the
    file's stamp when that hash was taken apart from the scan's reads (else None).

    A small blob is hashed from the one read every reader is then served from. A bigger blob only
    when it is named by its sha256 (an LFS file): the name check needs that hash anyway, and gets
    this one. Other big blobs have no key (hashing them would read them whole for a cache).
    """
    named_by_sha256 = expected_digest(os.path.basename(real)) == "sha256"
    try:
        whole = source.snapshot()
        if whole is not None:
            digest, stamp = hashlib.sha256(whole).hexdigest(), None
        elif named_by_sha256:
            stamp = _stamp(real)
            if stamp is None:
                return None
            digest = file_digest(real, "sha256")
        else:
            return None
    except (OSError, SourceError):
        return None
    if named_by_sha256:
        digests[(real, "sha256")] = digest
        tally.bytes_hashed += source.size
    return digest, stamp


def _stamp(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _hash_check(real: str, name: str, display: str, options: ScanOptions,
                digests: Dict[Tuple[str, str], str], result: CacheScan) -> List[Finding]:
    algorithm = expected_digest(name)
    if algorithm is None:
        return []
    actual = digests.get((real, algorithm))
    if actual is None:
        try:
            actual = digests[(real, algorithm)] = file_digest(real, algorithm)
        except OSError as exc:
            r = rule("unscanned-unreadable")
            return [Finding(r.id, r.severity, display, f"could not hash the blob: {exc}", r.remedy,
                            unscanned=True)]
        result.bytes_hashed += os.path.getsize(real)
    if actual == name:
        return []
    finding = _mismatch_finding(display, (algorithm, name, actual), name)
    return [options.policy.adjust(finding) if hasattr(options.policy, "adjust") else finding]


def scan_cache_command(args: argparse.Namespace) -> int:
    """``safemodel cache``: scan the local Hugging Face cache."""
    from huggingface_hub.utils import CacheNotFound  # in .utils for every version 0.20 to 2.x

    from .. import cli

    progress = cli.show_progress(args)

    def on_file(scan: CacheScan) -> None:
        print(f"\rcache: {len(scan.files)}/{scan.total_files} files, "
              f"{plural(scan.blobs_scanned, 'blob')} scanned, {format_bytes(scan.bytes_hashed)} hashed",
              end="", file=sys.stderr, flush=True)

    try:
        scan = scan_cache(args.cache_dir, cli.scan_options(args), on_file=on_file if progress else None,
                          result_cache=cli.result_cache(args), repos=getattr(args, "repo", None))
    except (CacheNotFound, ValueError) as exc:
        print(f"safemodel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "repo", None) and scan.repos == 0:
        print(f"safemodel: {', '.join(args.repo)}: not in the cache {scan.cache_dir}", file=sys.stderr)
        return EXIT_USAGE
    if progress:
        print(file=sys.stderr)
    report = ScanReport(scan.files, fail_on=cli.fail_on(args), errors=scan.errors)
    report.extra = {"cache": scan.summary(),
                    "notes": [f"cache {scan.cache_dir}: {plural(scan.repos, 'repo')}, "
                              f"{plural(scan.revisions, 'revision')}, {plural(len(scan.files), 'file')}, "
                              f"{plural(scan.blobs_scanned, 'blob')} scanned and hashed "
                              f"({format_bytes(scan.bytes_hashed)})" +
                              (f", {scan.blobs_from_cache} results from the result cache"
                               if scan.blobs_from_cache else "")]}
    return cli.emit(report, args)
