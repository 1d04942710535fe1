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

Hashing runs at the disk's speed: blobs bigger than :attr:`FileSource.SLURP_SIZE` are hashed in a
pool of threads (:class:`BlobHasher`; hashlib releases the GIL on big updates) while the main
thread scans, each into a reused buffer, each once; a small blob is hashed from the one read its
scan is served from. ``verify=False`` (``--no-verify``) scans without hashing, and the summary says
so.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from ..cache import ResultCache, _read_nonblocking_fd, tracking_siblings
from ..findings import HF_CACHE, FileResult, Finding, Location, ScanReport, Severity, sort_findings
from ..policy import Policy
from ..scanner import ScanOptions, scan_byte_source
from ..source import ByteSource, FileSource, SourceError
from .hub import display_repo, format_bytes, plural

if TYPE_CHECKING:  # pragma: no cover
    from ..context import SiblingOpener

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


class BlobHash(NamedTuple):
    """A blob's digest, the bytes it was computed over, and the file's stamp when it was opened."""

    digest: str
    size: int
    stamp: Tuple[int, int, int]


_BUFFERS = threading.local()


class HashCancelled(Exception):
    """The scan ended (interrupted, or an error) while a blob was being hashed."""


def hash_blob(path: str, algorithm: str, buffer: Optional[bytearray] = None,
              stop: Optional[threading.Event] = None) -> BlobHash:
    """Hash a regular file (``sha256`` or ``git-sha1``) with ``readinto`` into ``buffer`` (default: a
    buffer kept per thread), so that no chunk is allocated. A fifo or device is refused at once
    (``OSError``), never waited on. The stamp is taken from the descriptor that is read: a result
    stored under this digest must first find the file with the same stamp (see :func:`_scan_blob`)."""
    if buffer is None:
        buffer = getattr(_BUFFERS, "buffer", None)
        if buffer is None:
            buffer = _BUFFERS.buffer = bytearray(HASH_CHUNK)
    fd = _read_nonblocking_fd(path)  # a fifo or device is refused, never waited on
    with os.fdopen(fd, "rb", buffering=0) as fh:
        st = os.fstat(fd)
        if algorithm == "sha256":
            digest = hashlib.sha256()
        else:
            digest = hashlib.sha1()  # noqa: S324 - git's object id, not a security hash
            digest.update(f"blob {st.st_size}\0".encode())
        view = memoryview(buffer)
        total = 0
        while True:
            if stop is not None and stop.is_set():
                raise HashCancelled(path)
            n = fh.readinto(view)
            if not n:
                break
            # A full buffer is handed over as is (no slice object); the GIL is released meanwhile.
            digest.update(view if n == len(view) else view[:n])
            total += n
    return BlobHash(digest.hexdigest(), total, (st.st_ino, st.st_size, st.st_mtime_ns))


def digest_bytes(data: bytes, algorithm: str) -> str:
    """The digest ``algorithm`` (``sha256`` or ``git-sha1``) of content already in memory."""
    if algorithm == "sha256":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


def hash_workers() -> int:
    """Threads hashing blobs: ``$SAFEMODEL_HASH_THREADS`` when set (1 for a disk that seeks, where
    reads in parallel are slower), else one per CPU this process may run on, at most 8 (past that
    the disk, not the CPU, is the limit)."""
    configured = os.environ.get("SAFEMODEL_HASH_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return min(64, int(configured))
    try:
        cpus = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class BlobHasher:
    """Hashes blobs against their names, each (blob, algorithm) once.

    Big blobs are queued (:meth:`queue`) to a thread pool before the scan starts, in scan order, so
    the pool hashes ahead of the scan; small ones are recorded (:meth:`record`) from the bytes their
    scan read.
    :meth:`result` gives a digest, waiting for the pool if it must, or hashes the file now.
    Counts (``blobs``, ``bytes``) cover the hashes made for name checks.
    """

    def __init__(self, workers: Optional[int] = None) -> None:
        self.workers = workers or hash_workers()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._futures: Dict[Tuple[str, str], "Future[BlobHash]"] = {}
        self._done: Dict[Tuple[str, str], BlobHash] = {}
        self._failed: Dict[Tuple[str, str], OSError] = {}
        self._wanted: Dict[str, Set[str]] = {}
        self._stop = threading.Event()
        self._hashed: Set[str] = set()
        self.bytes = 0

    @property
    def blobs(self) -> int:
        """Distinct blobs hashed (a blob hashed under both kinds of name counts once)."""
        return len(self._hashed)

    def want(self, real: str, algorithm: str) -> None:
        """Note that a name of kind ``algorithm`` points at ``real`` (its check will need that hash)."""
        self._wanted.setdefault(real, set()).add(algorithm)

    def wanted(self, real: str) -> List[str]:
        """The kinds of hash the names pointing at ``real`` need, sorted."""
        return sorted(self._wanted.get(real, ()))

    def queue(self, real: str, algorithm: str) -> None:
        """Start hashing ``real`` in the pool (once per algorithm)."""
        key = (real, algorithm)
        if self.has(real, algorithm):
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="safemodel-hash")
        self._futures[key] = self._pool.submit(hash_blob, real, algorithm, None, self._stop)

    def has(self, real: str, algorithm: str) -> bool:
        """Whether that hash was made, failed, or is queued."""
        key = (real, algorithm)
        return key in self._done or key in self._futures or key in self._failed

    def record(self, real: str, algorithm: str, digest: str, size: int) -> None:
        """A digest computed by the caller from the bytes it read (a small blob's one read)."""
        if (real, algorithm) not in self._done:
            self._account(real, algorithm, BlobHash(digest, size, (0, 0, 0)))

    def result(self, real: str, algorithm: str) -> BlobHash:
        """The blob's hash: from the pool (waiting for it), recorded, or computed now. ``OSError``
        when it could not be read."""
        key = (real, algorithm)
        done = self._done.get(key)
        if done is not None:
            return done
        if key in self._failed:
            raise self._failed[key]
        future = self._futures.pop(key, None)
        try:
            hashed = future.result() if future is not None else hash_blob(real, algorithm)
        except OSError as exc:
            self._failed[key] = exc  # reported for every name pointing at it, read once
            raise
        self._account(real, algorithm, hashed)
        return hashed

    def _account(self, real: str, algorithm: str, hashed: BlobHash) -> None:
        self._done[(real, algorithm)] = hashed
        self._hashed.add(real)
        self.bytes += hashed.size

    def close(self) -> None:
        """Stop the pool: queued blobs are dropped and a blob being hashed is left at its next chunk,
        so an interrupted scan ends at once, not after the biggest blob."""
        if self._pool is not None:
            self._stop.set()
            for future in self._futures.values():
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None


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
    #: False with ``--no-verify``: no blob was hashed against its name.
    verified: bool = True
    #: Distinct blobs hashed against their names, and the bytes those hashes read.
    blobs_hashed: int = 0
    bytes_hashed: int = 0
    #: Files the scan will go through (for progress: done / total).
    total_files: int = 0

    def summary(self) -> Dict[str, Any]:
        return {"cache_dir": self.cache_dir, "repos": self.repos, "revisions": self.revisions,
                "files": len(self.files), "blobs_scanned": self.blobs_scanned,
                "blobs_from_cache": self.blobs_from_cache, "bytes_hashed": self.bytes_hashed,
                "verified": self.verified, "blobs_hashed": self.blobs_hashed,
                "verification": self.verification()}

    def verification(self) -> str:
        """What was verified, in words (the text note, the JSON extra and the job summary say it)."""
        if not self.verified:
            return ("not verified (--no-verify): no blob was hashed, so a cached file changed after "
                    "download is not detected")
        return (f"verified: {self.blobs_hashed} of {self.blobs_scanned} blobs hashed against their names "
                f"({format_bytes(self.bytes_hashed)})")


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


def _mismatch_finding(at: Location, mismatch: Tuple[str, str, str], blob: str, policy: Policy) -> Finding:
    algorithm, expected, actual = mismatch
    return policy.finding("cache-blob-mismatch", at,
                          f"blob {blob} should have {algorithm} {expected} but has {actual}: "
                          "the cached file was changed after download",
                          details={"blob": blob, "algorithm": algorithm, "expected": expected,
                                   "actual": actual})


def scan_cache(cache_dir: Optional[str], options: ScanOptions,
               on_file: Optional[Callable[[CacheScan], None]] = None,
               result_cache: Optional[ResultCache] = None, verify: bool = True,
               repos: Optional[List[str]] = None) -> CacheScan:
    """Scan every repo and revision of the cache at ``cache_dir`` (default: huggingface_hub's).

    With ``result_cache``, a blob's result is taken from it when the same content (by sha256) was
    scanned under the same name before, and stored after a scan (see :func:`_scan_blob`).
    ``repos`` keeps only those repos, named ``org/name`` (any type) or ``datasets/org/name``.
    ``verify=False`` skips the hash checks (nothing is hashed but a small blob's result-cache key).
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
    #: Each blob is hashed once per kind of name pointing at it; big ones in threads, ahead of the scan.
    hasher = BlobHasher() if verify else None
    result.verified = verify
    #: (file result, blob, name, display): hash checks made once the scan is done, so the main thread
    #: never waits for a hash it does not need yet
    pending: List[Tuple[FileResult, str, str, str]] = []
    #: The repos in the order they are scanned (and their big blobs queued to be hashed).
    wanted = repos
    repos = [r for r in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id))
             if wanted is None or display_repo(r.repo_id, r.repo_type) in wanted or r.repo_id in wanted]
    result.total_files = sum(len(rev.files) for r in repos for rev in r.revisions)
    try:
        if hasher is not None:
            _queue_hashes(hasher, repos)
        _scan_revisions(repos, options, on_file, result_cache, hasher, result, cache_root, scanned, pending)
        if hasher is not None:
            _check_names(pending, hasher, options, on_file, result)
    finally:
        if hasher is not None:
            hasher.close()
            result.blobs_hashed, result.bytes_hashed = hasher.blobs, hasher.bytes
    return result


def _queue_hashes(hasher: BlobHasher, repos: List[Any]) -> None:
    """Note the hash every snapshot file's blob name needs, and queue the big regular blobs to the
    pool, in the order the scan takes them (so the hash a result-cache key needs comes first)."""
    sizes: Dict[str, int] = {}
    for repo in repos:
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            for cached in sorted(revision.files, key=lambda f: str(f.file_path)):
                algorithm = expected_digest(_blob_name(cached))
                if algorithm is None:
                    continue
                real = os.path.realpath(cached.blob_path)
                hasher.want(real, algorithm)
                if real not in sizes:
                    try:
                        st = os.stat(real)
                    except OSError:
                        st = None
                    # -1: not a regular file (never opened) or gone (the scan says why)
                    sizes[real] = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else -1
                if sizes[real] > FileSource.SLURP_SIZE:
                    hasher.queue(real, algorithm)


def _check_names(pending: List[Tuple[FileResult, str, str, str]], hasher: BlobHasher,
                 options: ScanOptions, on_file: Optional[Callable[[CacheScan], None]],
                 result: CacheScan) -> None:
    """Every link's blob name checked against its content's hash (waiting for the pool)."""
    for file_result, real, name, _ in pending:
        file_result.findings.extend(_hash_check(real, name, file_result.location, options, hasher))
        file_result.findings = sort_findings(file_result.findings)
        if on_file is not None:
            result.bytes_hashed = hasher.bytes
            on_file(result)


def _scan_revisions(repos: List[Any], options: ScanOptions, on_file: Optional[Callable[[CacheScan], None]],
                    result_cache: Optional[ResultCache], hasher: Optional[BlobHasher], result: CacheScan,
                    cache_root: str, scanned: Dict[str, FileResult],
                    pending: List[Tuple[FileResult, str, str, str]]) -> None:
    """Scan each blob once, in order, and show its result under every name that links to it."""
    for repo in repos:
        result.repos += 1
        label = display_repo(repo.repo_id, repo.repo_type)
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            result.revisions += 1
            snapshot = Path(revision.snapshot_path)
            for cached in sorted(revision.files, key=lambda f: str(f.file_path)):
                rel = Path(cached.file_path).relative_to(snapshot).as_posix()
                at = Location.in_repo(HF_CACHE, label, revision.commit_hash, rel)
                display = at.display
                real = os.path.realpath(cached.blob_path)
                link_findings = _link_findings(real, cache_root, at, options.policy)
                if link_findings is None:  # not a regular file: never opened, never hashed
                    result.files.append(FileResult(path=display, location=at,
                                                   findings=_not_regular(real, at, options.policy)))
                    if on_file is not None:
                        on_file(result)
                    continue
                first = scanned.get(real)
                if first is None:
                    result.blobs_scanned += 1
                    # Scanned at its place in the cache: its findings are born there.
                    first = _scan_blob(real, at, snapshot, Path(cached.file_path), options,
                                       result_cache, hasher)
                    scanned[real] = first
                    result.blobs_from_cache += first.cached
                    file_result = FileResult(path=display, size=first.size, formats=list(first.formats),
                                             findings=list(first.findings), bytes_read=first.bytes_read,
                                             location=at)
                else:
                    # Same bytes as a file already scanned (another name linking to the same blob):
                    # its findings repeated under this name, the one place a result is moved.
                    file_result = FileResult(path=display, size=first.size, formats=list(first.formats),
                                             findings=list(first.findings), cached=True).placed(at)
                file_result.findings.extend(link_findings)
                file_result.findings = sort_findings(file_result.findings)
                if hasher is not None:
                    # The name is checked for every link: another repo's link may name other content.
                    pending.append((file_result, real, _blob_name(cached), display))
                result.files.append(file_result)
                if on_file is not None:
                    if hasher is not None:
                        result.bytes_hashed = hasher.bytes
                    on_file(result)


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


def _link_findings(real: str, cache_root: str, at: Location, policy: Policy) -> Optional[List[Finding]]:
    """Findings about where a snapshot file resolves to; None when it is not a regular file."""
    try:
        st = os.stat(real)
    except OSError:
        return []  # opening it fails later and says so (unscanned-unreadable)
    if not stat.S_ISREG(st.st_mode):
        return None
    out: List[Finding] = []
    if not _inside(real, cache_root):
        out.append(policy.finding("cache-link-outside", at,
                                  f"resolves to {real}, outside the cache {cache_root}",
                                  details={"target": real}))
    name = os.path.basename(real)
    if expected_digest(name) is None:
        out.append(policy.finding("cache-blob-unverified", at, f"resolves to {name!r}, not a sha256 or git "
                                                               "sha1 name: its content cannot be checked",
                                  details={"target": real}))
    return out


def _not_regular(real: str, at: Location, policy: Policy) -> List[Finding]:
    return [policy.finding("unscanned-unreadable", at, f"resolves to {real}, which is not a regular file "
                                                       "(fifo, device or socket): not opened",
                           details={"target": real})]


def _scan_blob(real: str, at: Location, snapshot: Path, file_path: Path, options: ScanOptions,
               cache: Optional[ResultCache], hasher: Optional[BlobHasher]) -> FileResult:
    """Scan one blob, its findings born at ``at`` (the file in the cache), or take its result from
    ``cache`` when the same content was scanned before under the same name (see :func:`_content_key`)."""
    display = at.display
    try:
        source = FileSource(real, name=display)
    except SourceError as exc:
        return FileResult(path=display, location=at, findings=[options.policy.finding(
            "unscanned-unreadable", at, f"could not open: {exc}")])
    with source:
        from_snapshot = _hash_snapshot(source, real, hasher)
        key = _content_key(source, real, hasher, from_snapshot) if cache is not None else None
        if cache is not None and key is not None:
            hit = cache.get_by_sha256(key[0], source.size, display, options, at)
            if hit is not None:
                return hit
        tracked_sibling, opened = tracking_siblings(_snapshot_siblings(snapshot, file_path))
        result = scan_byte_source(source, at, options, siblings=tracked_sibling, real_path=None)
        # Stored only when it depends on this content alone (no shard of an index was opened) and,
        # for a blob hashed apart from the scan's reads, the file did not change in between.
        if cache is not None and key is not None and not opened:
            digest, stamp = key
            if stamp is None or stamp == _stamp(real):
                cache.put_by_sha256(digest, source.size, display, options, result)
        return result


def _hash_snapshot(source: FileSource, real: str, hasher: Optional[BlobHasher]) -> Dict[str, str]:
    """A small blob's name-check digests, from the one read its scan is served from (no second read);
    recorded in ``hasher``. Returns them by algorithm (empty for a big blob, or without verifying)."""
    if hasher is None:
        return {}
    try:
        whole = source.snapshot()
    except SourceError:
        return {}
    if whole is None:
        return {}
    out: Dict[str, str] = {}
    for algorithm in hasher.wanted(real):
        if not hasher.has(real, algorithm):  # queued when it was big at listing time: that one counts
            out[algorithm] = digest_bytes(whole, algorithm)
            hasher.record(real, algorithm, out[algorithm], len(whole))
    return out


def _content_key(source: FileSource, real: str, hasher: Optional[BlobHasher],
                 from_snapshot: Dict[str, str]) -> Optional[Tuple[str, Optional[Tuple[int, int, int]]]]:
    """The sha256 of a blob's content as its result-cache key, when it is cheap to have, and the
    file's stamp when that hash was taken apart from the scan's reads (else None).

    A small blob is hashed from the one read every reader is then served from. A bigger blob only
    when a name pointing at it is its sha256 (an LFS file) and names are verified: the name check
    needs that hash anyway (the pool made it, or is making it), and the key is the same hash. Other
    big blobs have no key (hashing them would read them whole for a cache).
    """
    try:
        whole = source.snapshot()
        if whole is not None:
            return from_snapshot.get("sha256") or hashlib.sha256(whole).hexdigest(), None
        if hasher is not None and hasher.has(real, "sha256"):
            hashed = hasher.result(real, "sha256")
            return hashed.digest, hashed.stamp
    except (OSError, SourceError, HashCancelled):
        return None
    return None


def _stamp(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _hash_check(real: str, name: str, at: Location, options: ScanOptions,
                hasher: BlobHasher) -> List[Finding]:
    algorithm = expected_digest(name)
    if algorithm is None:
        return []
    try:
        actual = hasher.result(real, algorithm).digest
    except OSError as exc:
        return [options.policy.finding("unscanned-unreadable", at, f"could not hash the blob: {exc}")]
    if actual == name:
        return []
    return [_mismatch_finding(at, (algorithm, name, actual), name, options.policy)]


def cache_report(scan: CacheScan, fail_on: Severity) -> ScanReport:
    """The report of a cache scan: its files and errors, and a note saying what was scanned and
    verified (``safemodel cache`` writes it)."""
    report = ScanReport(scan.files, fail_on=fail_on, errors=scan.errors)
    report.extra = {"cache": scan.summary(),
                    "notes": [f"cache {scan.cache_dir}: {plural(scan.repos, 'repo')}, "
                              f"{plural(scan.revisions, 'revision')}, {plural(len(scan.files), 'file')}, "
                              f"{plural(scan.blobs_scanned, 'blob')} scanned" +
                              (f", {scan.blobs_from_cache} results from the result cache"
                               if scan.blobs_from_cache else "") + f"; {scan.verification()}"]}
    return report


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
