"""Scanning many local files: cache, ignores and worker processes, in the order the files were given.

``scan_paths`` is what the CLI (and every other entry point scanning local files) calls. With
``jobs=1`` it scans in this process; otherwise files are sent in batches to a
``ProcessPoolExecutor`` and the results come back in input order, so the report is byte-identical
to a serial run. Batches keep the per-file process overhead small for thousands of small pickles;
big files go alone so that one worker is not left with all of them.
"""

from __future__ import annotations

import gc
import os
from collections import Counter, deque

from . import Terminated
from .cache import _REC, Judged, ResultCache, _read_nonblocking_fd, cached_result, options_fingerprint, \
    scan_file_cached
from .config import Config
from .findings import FileResult, Location, Severity
from .formats import readers
from .policy import Policy
from .record import Record
from .scanner import ScanOptions

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Deque, Iterable, Iterator, List, Optional, Tuple
    from concurrent.futures import Future

#: Fewer files than this are scanned in-process: starting workers would cost more than it saves.
MIN_FILES_FOR_PROCESSES = 32
#: Files at least this large go in a batch of their own.
LARGE_FILE = 16 << 20
#: Most files in one batch (one round trip to a worker).
MAX_BATCH = 128
#: multiprocessing start method for workers; None is the platform default (everything sent to a
#: worker is picklable and every worker function is top-level, so "spawn" works too).
START_METHOD: Optional[str] = None


class ScanPlan(Record, frozen=True):
    """How to scan local files: options, the config (ignores), the cache. Picklable for workers. (A
    plain record, not a dataclass: see safemodel_ci/record.py.)"""

    __slots__ = ("options", "config", "cache_dir")
    options: ScanOptions
    config: Config
    #: Result cache directory; None scans without a cache.
    cache_dir: Optional[str]

    def __init__(self, options: Optional[ScanOptions] = None, config: Optional[Config] = None,
                 cache_dir: Optional[str] = None) -> None:
        object.__setattr__(self, "options", ScanOptions() if options is None else options)
        object.__setattr__(self, "config", Config() if config is None else config)
        object.__setattr__(self, "cache_dir", cache_dir)


def default_jobs() -> int:
    """Worker processes to use when not told: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def judged_sha256(path: str, judged: Judged) -> Optional[str]:
    """The sha256 of the exact content a result was judged on, or None when that is not known.

    A scan served from one read of the whole file gave its hash. Otherwise the file is hashed in
    one pass that also keeps the ranges the scan read; replaying the scan's read log on those kept
    bytes must give the scan's digest, so the hash is of content holding exactly the bytes judged (a
    file swapped between the scan and this read does not match).
    """
    if judged.sha256 is not None:
        return judged.sha256
    if judged.log is None or judged.digest is None:
        return None
    import hashlib

    log = judged.log
    spans = sorted({(log[i], log[i] + log[i + 1]) for i in range(0, len(log), 2) if log[i + 1]})
    merged: List[List[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    kept = [bytearray() for _ in merged]
    digest = hashlib.sha256()
    try:
        fd = _read_nonblocking_fd(path)
    except OSError:
        return None
    try:
        pos, first = 0, 0
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            end = pos + len(block)
            digest.update(block)
            while first < len(merged) and merged[first][1] <= pos:
                first += 1
            k = first
            while k < len(merged) and merged[k][0] < end:
                lo, hi = max(merged[k][0], pos), min(merged[k][1], end)
                if hi > lo:
                    kept[k] += block[lo - pos:hi - pos]
                k += 1
            pos = end
    except OSError:
        return None
    finally:
        os.close(fd)
    starts = [m[0] for m in merged]
    import bisect

    replay = hashlib.sha256()
    for i in range(0, len(log), 2):
        offset, n = log[i], log[i + 1]
        data = b""
        if n:
            k = bisect.bisect_right(starts, offset) - 1
            if k >= 0:
                data = bytes(kept[k][offset - merged[k][0]:offset - merged[k][0] + n])
            if len(data) != n:
                return None
        replay.update(_REC.pack(offset, n))
        replay.update(data)
    return digest.hexdigest() if replay.hexdigest() == judged.digest else None


def apply_ignores(result: FileResult, path: str, config: Config,
                  judged: Optional[Judged] = None, policy: Optional[Policy] = None) -> FileResult:
    """Replace the findings of a file pinned by an ``ignore`` entry with one ``ignored-by-config``
    (made through ``policy``, default the config's, like every finding).

    Only files with something to suppress are hashed, so clean files cost nothing here. The hash
    is of the exact bytes the scan judged (``judged``, see :func:`judged_sha256`), never of a second
    read after the scan: a file swapped in between keeps its findings. Without ``judged`` the
    entry is not applied (fail closed).
    """
    if not config.ignores or not any(f.unscanned or f.severity > Severity.INFO for f in result.findings):
        return result
    digest = judged_sha256(path, judged) if judged is not None else None
    if digest is None:
        return result
    entry = config.ignore_for(path, digest)
    if entry is None:
        return result
    suppressed = Counter(f.rule_id for f in result.findings)
    note = (policy or config.policy()).finding(
        "ignored-by-config", result.location,
        f"accepted by {entry.origin} (sha256 {digest[:12]}…): {entry.reason}; "
        f"{sum(suppressed.values())} finding(s) not counted: " +
        ", ".join(f"{k} x{v}" for k, v in sorted(suppressed.items())),
        details={"sha256": digest, "reason": entry.reason, "entry": entry.origin,
                 "suppressed": dict(sorted(suppressed.items()))})
    return result.replace(formats=list(result.formats), findings=[note])


class _Scanner:
    """Scans one path with a plan; one per process (the cache and fingerprint are made once)."""

    def __init__(self, plan: ScanPlan) -> None:
        self.plan = plan
        self.cache = ResultCache(plan.cache_dir) if plan.cache_dir is not None else None
        self.fingerprint = options_fingerprint(plan.options) if self.cache is not None else None

    def scan(self, path: str, lookup: bool = True) -> FileResult:
        judged: Optional[List[Judged]] = [] if self.plan.config.ignores else None
        result = scan_file_cached(path, self.plan.options, self.cache, fingerprint=self.fingerprint,
                                  lookup=lookup, judged=judged)
        return apply_ignores(result, path, self.plan.config, judged[0] if judged else None,
                             self.plan.options.policy)

    def cached(self, path: str) -> Optional[FileResult]:
        """The cached result for ``path`` (ignores applied), or None: nothing is scanned."""
        if self.cache is None:
            return None
        judged: Optional[List[Judged]] = [] if self.plan.config.ignores else None
        result = cached_result(path, self.plan.options, self.cache, fingerprint=self.fingerprint,
                               judged=judged)
        if result is None:
            return None
        return apply_ignores(result, path, self.plan.config, judged[0] if judged else None,
                             self.plan.options.policy)


_worker: Optional[_Scanner] = None


def _init_worker(plan: ScanPlan) -> None:
    global _worker
    import signal

    # A forked worker inherits the parent's SIGTERM handler (which raises to unwind the parent):
    # here SIGTERM must simply end the process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker = _Scanner(plan)


def _scan_batch(paths: List[str]) -> List[FileResult]:
    assert _worker is not None, "worker not initialised"
    return [_worker.scan(p, lookup=False) for p in paths]  # the parent looked them up already


def _batches(paths: List[str], jobs: int) -> Iterator[List[str]]:
    """Consecutive runs of paths; about 8 batches per worker, a large file alone."""
    size = max(1, min(MAX_BATCH, -(-len(paths) // (jobs * 8))))
    batch: List[str] = []
    for path in paths:
        try:
            large = os.path.getsize(path) >= LARGE_FILE
        except OSError:
            large = False
        if large:
            if batch:
                yield batch
                batch = []
            yield [path]
            continue
        batch.append(path)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _failed(path: str, error: BaseException, policy: Policy) -> FileResult:
    """A worker died (killed, out of memory): the file is reported unscanned, never clean."""
    at = Location.local(path)
    return FileResult(path=path, location=at, findings=[policy.finding(
        "scanner-error", at, f"worker process failed: {type(error).__name__}: {error}")])


def scan_paths(paths: Iterable[str], plan: ScanPlan, jobs: Optional[int] = None,
               on_result: Optional[Callable[[FileResult], None]] = None) -> Iterator[FileResult]:
    """Scan local files (cache, ignores, ``jobs`` processes) and yield results in input order.

    ``jobs`` None means one process per CPU; 1 scans in this process. ``on_result`` is called in
    this process, in order, as each result becomes available (progress display).
    """
    paths = list(paths)
    jobs = default_jobs() if jobs is None else max(1, jobs)
    scanner = _Scanner(plan)
    if min(jobs, len(paths)) <= 1 or len(paths) < MIN_FILES_FOR_PROCESSES:
        for path in paths:
            result = scanner.scan(path)
            if on_result is not None:
                on_result(result)
            yield result
        return
    # Cache hits cost less than a round trip to a worker: take them here, send only misses out.
    hits = [scanner.cached(p) for p in paths] if scanner.cache is not None else [None] * len(paths)
    misses = _scan_in_processes([p for p, hit in zip(paths, hits) if hit is None], plan, jobs)
    for hit in hits:
        result = hit if hit is not None else next(misses)
        if on_result is not None:
            on_result(result)
        yield result


def _scan_in_processes(paths: List[str], plan: ScanPlan, jobs: int) -> Iterator[FileResult]:
    """Results for ``paths`` (cache misses) from worker processes, in order; serially when few."""
    jobs = min(jobs, len(paths))
    if jobs <= 1 or len(paths) < MIN_FILES_FOR_PROCESSES:
        scanner = _Scanner(plan)
        for path in paths:
            yield scanner.scan(path, lookup=False)
        return
    # Imported here: a serial scan (one file from pre-commit) should not pay for multiprocessing.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Import every format reader before forking, so that workers start with them loaded.
    readers()
    pending: Deque[Tuple[List[str], "Future[List[FileResult]]"]] = deque()
    batches = _batches(paths, jobs)
    context = multiprocessing.get_context(START_METHOD) if START_METHOD else None
    previous = _catch_sigterm()
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(plan,),
                             mp_context=context) as pool:

        def submit(batch: List[str]) -> "Future[List[FileResult]]":
            try:
                return pool.submit(_scan_batch, batch)
            except RuntimeError as exc:  # the pool broke (a worker died): the rest fail closed
                return _failed_future([_failed(p, exc, plan.options.policy) for p in batch])

        # A bounded window of batches in flight: memory stays small for any number of files.
        # The workers are forked at the first submit. Objects frozen then are never visited by the
        # workers' garbage collector, so their pages stay shared instead of being copied (the
        # pattern the gc module documents for fork); this process unfreezes its own at once.
        try:
            gc.freeze()
            try:
                for batch in batches:
                    pending.append((batch, submit(batch)))
                    if len(pending) >= jobs * 4:
                        break
            finally:
                gc.unfreeze()
            while pending:
                batch, future = pending.popleft()
                try:
                    results = future.result()
                except Exception as exc:  # noqa: BLE001 - BrokenProcessPool and the like
                    results = [_failed(p, exc, plan.options.policy) for p in batch]
                yield from results
                nxt = next(batches, None)
                if nxt is not None:
                    pending.append((nxt, submit(nxt)))
        except BaseException:
            # Terminated, interrupted, or the consumer went away: the workers stop now, not after
            # their current batch (the pool's exit would wait for them).
            _terminate_workers(pool)
            raise
        finally:
            if previous is not None:
                import signal

                signal.signal(signal.SIGTERM, previous)


def _catch_sigterm() -> "Optional[object]":
    """While workers run, SIGTERM raises :class:`~safemodel_ci.Terminated` in the main thread, so
    they are terminated on the way out (the default action would orphan them); returns the
    previous handler. A serial scan keeps the default and does not import ``signal``."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        return None


def _terminate_workers(pool: "object") -> None:
    """SIGTERM every worker process of a ``ProcessPoolExecutor`` and drop its queued work."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        try:
            process.terminate()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        pool.shutdown(wait=False, cancel_futures=True)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - best effort while unwinding
        pass
    for process in processes:
        try:
            process.join(5)
        except (OSError, ValueError, AssertionError, AttributeError):
            pass


def _failed_future(results: List[FileResult]) -> "Future[List[FileResult]]":
    from concurrent.futures import Future

    future: "Future[List[FileResult]]" = Future()
    future.set_result(results)
    return future


__all__ = ["ScanPlan", "scan_paths", "apply_ignores", "default_jobs"]
