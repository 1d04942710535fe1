"""Hugging Face Hub repos scanned in place: HTTP range reads through a block cache, nothing downloaded whole.

``safemodel hub REPO_ID...`` (the command line runs :func:`scan_repos` and prints its report) resolves
the requested revision to its commit sha, lists the tree at that sha and hands every file to the
scanner as a :class:`HubFileSource`. Readers ask that source for the bytes they need (a safetensors
header, a zip's central directory and pickle members, HDF5 attributes) and only those blocks are
fetched, with ``Range`` requests through huggingface_hub's HTTP session.
The bytes fetched over the network are counted per repo and reported.
"""

from __future__ import annotations

import importlib
import json
import posixpath
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple,
                    TypeVar)
from urllib.parse import quote, urljoin, urlsplit

from ..context import Limits, ScanLimitExceeded
from ..findings import HUB, FileResult, Finding, Location, ScanReport, sort_findings
from ..policy import Policy
from ..scanner import ScanOptions, scan_byte_source
from ..source import ByteSource, SourceError

if TYPE_CHECKING:  # pragma: no cover
    from ..context import SiblingOpener
    from ..cache import ResultCache

#: Bytes per cached block. Reads of consecutive missing blocks go out as one request, so small blocks
#: cost few extra requests, while large ones over-fetch: a torch zip reads 4 KiB of each tensor storage
#: (measured on a 13 MB, 100-tensor checkpoint: 64 KiB blocks fetch 3.6 MB, 16 KiB blocks 1.2 MB).
DEFAULT_BLOCK_SIZE = 16 << 10
#: Blocks kept per repo (16 MiB with the default block size), least recently used dropped first.
DEFAULT_CACHE_BLOCKS = 1024
#: Reads longer than this many blocks bypass the cache (a raw pickle read whole) so they do not flush it.
_UNCACHED_READ_BLOCKS = 256
#: Retries of a block fetch after a rate limit, a server error or a network error.
DEFAULT_RETRIES = 2
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

#: Seconds one socket operation (a connect, one receive) may block. The whole exchange is bounded by
#: the file's time budget besides (``limits.max-seconds-per-file``), however the server trickles bytes.
DEFAULT_SOCKET_TIMEOUT = 30.0
#: Bytes of one API answer (revision info, one page of the tree listing) read into memory. A real page
#: of 1,000 tree entries is about 250 KB; the info of a 100,000-file repo about 8 MB.
MAX_API_BODY_BYTES = 32 << 20
#: Bytes taken from the socket per read while streaming a body; small enough that the deadline is
#: checked often, large enough to cost little.
_CHUNK = 64 << 10

#: How a repo type shows in URLs and in reported paths (``datasets/org/name@sha:file``).
_TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def format_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``: short, for summaries and progress."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``: counts in messages read as English."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def display_repo(repo_id: str, repo_type: str = "model") -> str:
    """``org/name`` for models, ``datasets/org/name`` and ``spaces/org/name`` otherwise."""
    return f"{_TYPE_PREFIX.get(repo_type, '')}{repo_id}"


# ---- fetching ---------------------------------------------------------------------------------

@dataclass
class FetchStats:
    """Network bytes and requests for one repo, all of its files together."""

    bytes_fetched: int = 0
    requests: int = 0
    #: Set once a fetch failed after its retries: later fetches of the repo fail fast instead of waiting.
    failing: bool = False
    #: The file during whose fetch the server stalled past the time budget: the repo's later fetches
    #: fail at once instead of each waiting out a budget of its own (a trickling server would
    #: otherwise cost one full budget per file).
    stalled: Optional[str] = None
    #: ``time.monotonic()`` by which the file being scanned must be done (0: none set yet); every HTTP
    #: exchange of the repo's sources, siblings included, ends by then.
    deadline: float = 0.0


class BlockCache:
    """A bounded LRU of fixed-size blocks, shared by every file of one repo.

    Keys are ``(url, block index)``; memory stays under ``max_blocks * block_size`` however many
    files or bytes are scanned.
    """

    def __init__(self, max_blocks: int = DEFAULT_CACHE_BLOCKS) -> None:
        self.max_blocks = max(1, max_blocks)
        self._blocks: "OrderedDict[Tuple[str, int], bytes]" = OrderedDict()

    def get(self, key: Tuple[str, int]) -> Optional[bytes]:
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
        return data

    def __contains__(self, key: Tuple[str, int]) -> bool:
        return key in self._blocks

    def put(self, key: Tuple[str, int], data: bytes) -> None:
        self._blocks[key] = data
        self._blocks.move_to_end(key)
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)

    def __len__(self) -> int:
        return len(self._blocks)


def _origin(url: str) -> Tuple[str, str, Optional[int]]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class HubDeadline(ScanLimitExceeded, SourceError):
    """The time budget ran out during an HTTP exchange (a slow, stalled or trickling server).

    Both a limit (readers report ``unscanned-limit``) and a read failure (format detection reports
    ``unscanned-unreadable``): either way the file is not passed.
    """


class HubStalled(HubDeadline):
    """The server was still answering when the time budget ran out: it is slow, stalled or hostile."""


class _Transient(Exception):
    """A failure worth retrying (rate limit, server error, network error, short read)."""


_T = TypeVar("_T")


@dataclass
class HttpResponse:
    """What :meth:`HubHttp.get` hands its callback: status, headers, final URL and the raw body."""

    status: int
    headers: Mapping[str, str]
    url: str
    #: Raw (not content-decoded) body chunks as they arrive; raises :class:`HubDeadline` when the
    #: deadline passes between two chunks.
    chunks: Iterator[bytes]

    def read(self, limit: int, what: str) -> bytes:
        """The whole body, or :class:`ScanLimitExceeded` once it passes ``limit`` bytes."""
        parts: List[bytes] = []
        got = 0
        for chunk in self.chunks:
            got += len(chunk)
            if got > limit:
                raise ScanLimitExceeded(f"{what}: answer larger than {format_bytes(limit)}")
            parts.append(chunk)
        return b"".join(parts)


class HubHttp:
    """GET requests through huggingface_hub's own HTTP session, each bounded by a deadline.

    huggingface_hub 0.x builds on ``requests``, 1.x on ``httpx`` and 2.x on ``httpx2``; the session
    its ``get_session()`` returns carries the user's proxy, CA and header settings, so it is the one
    used, with that library's own transport errors. Every exchange runs in a helper thread that the
    caller waits for until the deadline: a server that trickles its status line or headers one byte
    at a time (which resets socket timeouts and loops inside the HTTP library) cannot hold the scan
    past it. The body is read in chunks as they arrive with the deadline checked between chunks, and
    every socket operation has a timeout, so an abandoned helper thread ends soon after.
    """

    def __init__(self, session: Any = None, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT) -> None:
        if session is None:
            from huggingface_hub.utils import get_session

            session = get_session()
        self.session = session
        self.socket_timeout = socket_timeout
        #: "requests", "httpx" or "httpx2": the library the session comes from.
        self.library = type(session).__module__.split(".")[0]
        lib = importlib.import_module(self.library)
        errors: List[type] = []
        if self.library == "requests":
            errors += [lib.exceptions.ConnectionError, lib.exceptions.Timeout,
                       lib.exceptions.ChunkedEncodingError]
            try:  # reading the raw body raises urllib3's own errors, not requests'
                import urllib3

                errors.append(urllib3.exceptions.HTTPError)
            except ImportError:  # pragma: no cover - requests depends on urllib3
                pass
        elif hasattr(lib, "TransportError"):
            errors.append(lib.TransportError)
        #: Exceptions that mean "the network failed" (worth a retry), whatever the library.
        self.transport_errors: Tuple[type, ...] = tuple(errors)

    def is_transport_error(self, exc: BaseException) -> bool:
        """Is ``exc`` a network failure of the session's library (or a socket error)?"""
        return isinstance(exc, self.transport_errors) or (
            isinstance(exc, OSError) and not isinstance(exc, SourceError))

    def get(self, url: str, headers: Mapping[str, str], deadline: float,
            handle: Callable[[HttpResponse], _T], what: str) -> _T:
        """GET ``url`` (following redirects) and return ``handle(response)``, all before ``deadline``.

        ``handle`` runs while the response is open and should read the body through
        ``response.chunks``; whatever it raises is raised here. :class:`HubDeadline` when the time is up.
        """
        box: Dict[str, Any] = {}
        cancelled = threading.Event()

        def work() -> None:
            try:
                box["value"] = self._exchange(url, headers, deadline, handle, cancelled, box)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HubDeadline(f"{what}: time budget spent before the request")
        # A daemon thread, not an executor: an abandoned exchange must never delay the process's exit.
        worker = threading.Thread(target=work, name="safemodel-hub-http", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            cancelled.set()
            close = box.get("close")
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - best effort: the socket timeout ends it anyway
                    pass
            raise HubStalled(f"{what}: no complete answer within the time budget (a slow or stalled "
                              f"server); raise limits.max-seconds-per-file only for a trusted endpoint")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _exchange(self, url: str, headers: Mapping[str, str], deadline: float,
                  handle: Callable[[HttpResponse], _T], cancelled: threading.Event,
                  box: Dict[str, Any]) -> _T:
        timeout = max(0.05, min(self.socket_timeout, deadline - time.monotonic()))
        if self.library == "requests":
            response = self.session.get(url, headers=dict(headers), stream=True, allow_redirects=True,
                                        timeout=(timeout, timeout))
            box["close"] = response.close
            try:
                return handle(HttpResponse(response.status_code, response.headers, str(response.url),
                                           self._requests_chunks(response, deadline, cancelled)))
            finally:
                response.close()
        with self.session.stream("GET", url, headers=dict(headers), follow_redirects=True,
                                 timeout=timeout) as response:
            box["close"] = response.close
            return handle(HttpResponse(response.status_code, response.headers, str(response.url),
                                       _bounded(response.iter_raw(), deadline, cancelled)))

    @staticmethod
    def _requests_chunks(response: Any, deadline: float, cancelled: threading.Event) -> Iterator[bytes]:
        raw = response.raw
        read1 = getattr(raw, "read1", None)  # urllib3 2: what has arrived, without waiting for more

        def chunks() -> Iterator[bytes]:
            while True:
                data = read1(_CHUNK, decode_content=False) if read1 is not None else \
                    raw.read(_CHUNK, decode_content=False)
                if not data:
                    return
                yield data

        return _bounded(chunks(), deadline, cancelled)


def _bounded(chunks: Iterator[bytes], deadline: float, cancelled: threading.Event) -> Iterator[bytes]:
    for chunk in chunks:
        if cancelled.is_set() or time.monotonic() > deadline:
            raise HubStalled("time budget spent while the body was arriving (a trickling server)")
        if chunk:
            yield chunk


class HubFileSource(ByteSource):
    """One file of a Hub repo at a pinned commit, read with HTTP ``Range`` requests.

    Reads are rounded out to ``block_size`` blocks kept in a shared :class:`BlockCache`, so the many
    small reads of a format reader cost few requests. A server that ignores ``Range`` is only
    accepted for reads from offset 0 (the body is cut off after the bytes wanted); anything else is a
    :class:`SourceError`, which the scanner turns into an unscanned finding, never a pass.
    """

    def __init__(self, url: str, size: int, name: str, *, headers: Mapping[str, str],
                 cache: Optional[BlockCache] = None, stats: Optional[FetchStats] = None,
                 block_size: int = DEFAULT_BLOCK_SIZE, retries: int = DEFAULT_RETRIES,
                 retry_wait: float = 0.5, session: Any = None, http: Optional[HubHttp] = None) -> None:
        super().__init__()
        self.url = url
        self.name = name
        self._size = size
        self._headers = dict(headers)
        self._cache = cache if cache is not None else BlockCache()
        self.stats = stats if stats is not None else FetchStats()
        self.block_size = max(1, block_size)
        self._retries = max(0, retries)
        self._retry_wait = retry_wait
        self._session = session
        self._http_client = http
        #: Network bytes for this file alone.
        self.bytes_fetched = 0
        #: Where the resolve URL redirected to last (a CDN); reused so each block costs one request.
        self._location: Optional[str] = None

    @property
    def size(self) -> int:
        return self._size

    # -- block cache ----------------------------------------------------------------------------
    def _read(self, offset: int, n: int) -> bytes:
        bs = self.block_size
        first, last = offset // bs, (offset + n - 1) // bs
        if last - first + 1 > _UNCACHED_READ_BLOCKS:
            return self._fetch(offset, offset + n)
        pieces: List[bytes] = []
        index = first
        while index <= last:
            block = self._cache.get((self.url, index))
            if block is not None:
                pieces.append(block)
                index += 1
                continue
            run_end = index  # fetch every consecutive missing block in one request
            while run_end + 1 <= last and (self.url, run_end + 1) not in self._cache:
                run_end += 1
            start, end = index * bs, min((run_end + 1) * bs, self._size)
            data = self._fetch(start, end)
            for k in range(index, run_end + 1):
                block = data[(k - index) * bs:(k - index + 1) * bs]
                self._cache.put((self.url, k), block)
                pieces.append(block)
            index = run_end + 1
        joined = b"".join(pieces)
        rel = offset - first * bs
        return joined[rel:rel + n]

    # -- HTTP -----------------------------------------------------------------------------------
    def _http(self) -> HubHttp:
        if self._http_client is None:
            self._http_client = HubHttp(self._session)
        return self._http_client

    def _deadline(self) -> float:
        """The deadline of the file being scanned (set per file by the repo scan), else a fresh budget."""
        return self.stats.deadline or time.monotonic() + Limits().max_seconds_per_file

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` from the server, retrying transient failures."""
        if self.stats.stalled is not None:
            raise SourceError(f"{self.name}: not fetched: the server stalled past the time budget on "
                              f"{self.stats.stalled} earlier in this repo (a slow or hostile endpoint)")
        attempt = 0
        while True:
            try:
                return self._fetch_once(start, end)
            except HubStalled:
                self.stats.stalled = self.name
                raise
            except _Transient as exc:
                attempt += 1
                if attempt > self._retries or self.stats.failing:
                    self.stats.failing = True
                    raise SourceError(f"{self.name}: {exc}") from None
                self._location = None  # a signed CDN URL may have expired: resolve again
                wait = self._retry_wait * (2 ** (attempt - 1))
                if time.monotonic() + wait > self._deadline():
                    raise HubDeadline(f"{self.name}: {exc}; no time left in the budget to retry") from None
                time.sleep(wait)

    def _fetch_once(self, start: int, end: int) -> bytes:
        url = self._location or self.url
        headers = dict(self._headers)
        if self._location and _origin(self._location) != _origin(self.url):
            headers.pop("authorization", None)  # never send the Hub token to a CDN
            headers.pop("Authorization", None)
        headers["Range"] = f"bytes={start}-{end - 1}"
        headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets in the file
        want = end - start
        self.stats.requests += 1
        http = self._http()

        def handle(response: HttpResponse) -> bytes:
            status = response.status
            if status in _RETRY_STATUS:
                raise _Transient(_status_message(status, response.headers))
            if status >= 400:
                raise SourceError(f"{self.name}: {_status_message(status, response.headers)}")
            if status == 206:
                got, total = _content_range(response.headers.get("Content-Range"))
                if got is not None and got != start:
                    raise SourceError(f"{self.name}: range answered from byte {got}, asked {start}")
                if total is not None and total != self._size:
                    # The tree listed another size: not the file that was listed at this commit.
                    raise SourceError(f"{self.name}: server reports {total} bytes, the tree listed "
                                      f"{self._size}")
            elif start != 0:
                raise SourceError(f"{self.name}: server ignored the Range request (HTTP {status}); "
                                  "a remote scan needs range support")
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":  # offsets in an encoded body are not offsets in the file
                raise SourceError(f"{self.name}: the server sent the bytes {encoding}-encoded although "
                                  "identity was asked for; a remote scan needs the file's own bytes")
            if response.url != url:
                self._location = response.url
            return self._read_body(response.chunks, want)

        try:
            data = http.get(url, headers, self._deadline(), handle, self.name)
        except (SourceError, _Transient, ScanLimitExceeded):
            raise
        except Exception as exc:  # noqa: BLE001 - offline mode and friends: fail closed with a message
            if http.is_transport_error(exc):
                raise _Transient(f"network error: {type(exc).__name__}: {exc}") from None
            raise SourceError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        if len(data) < want:
            raise _Transient(f"short read: wanted {want} bytes at offset {start}, got {len(data)}")
        return data

    def _read_body(self, chunks: Iterator[bytes], want: int) -> bytes:
        parts: List[bytes] = []
        got = 0
        for chunk in chunks:
            take = chunk[:want - got]
            parts.append(take)
            got += len(take)
            self.bytes_fetched += len(chunk)
            self.stats.bytes_fetched += len(chunk)
            if got >= want:  # a 200 answer to a range request: stop instead of reading the whole file
                break
        return b"".join(parts)


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """``bytes 0-99/1234`` -> (0, 1234); a part that cannot be read is None (``*`` for the total)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    try:
        start: Optional[int] = int(span.split("-", 1)[0])
    except ValueError:
        start = None
    return start, (int(total) if total.strip().isdigit() else None)


def _status_message(status: int, headers: Mapping[str, str]) -> str:
    code = headers.get("X-Error-Code")
    if status == 429:
        wait = headers.get("Retry-After")
        return "rate limited by the Hub (HTTP 429)" + (f"; retry after {wait} s" if wait else "")
    if status >= 500:
        return f"Hub server error (HTTP {status}); try again later"
    if status == 404 and code == "EntryNotFound":
        return "file not found at this commit (HTTP 404, EntryNotFound)"
    if status in (401, 403):
        return f"access denied (HTTP {status}{', ' + code if code else ''})"
    return f"HTTP {status}{' ' + code if code else ''}"


# ---- repo-level checks -----------------------------------------------------------------------

#: Weight file names loaders pick by name, per library: (safetensors names, pickle names).
#: transformers' from_pretrained and diffusers prefer the safetensors file when both exist.
LOADER_WEIGHTS: Tuple[Tuple[str, Tuple[str, ...], Tuple[str, ...]], ...] = (
    ("transformers", ("model.safetensors", "model.safetensors.index.json"),
     ("pytorch_model.bin", "pytorch_model.bin.index.json")),
    ("diffusers", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
     ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")),
    ("peft", ("adapter_model.safetensors",), ("adapter_model.bin",)),
)


def loader_choice_findings(paths: Sequence[str], place: Callable[[str], Location],
                           policy: Policy) -> Dict[str, List[Finding]]:
    """Findings about which weights a loader picks, keyed by repo path of the file they concern.

    Per folder (diffusers keeps one model per subfolder): when a pickle weight file sits beside the
    safetensors one, the loader picks safetensors, yet the pickle is still downloaded by
    ``snapshot_download`` and loaded by ``torch.load`` or ``use_safetensors=False``; when only the
    pickle exists, it is what gets loaded.
    """
    present = set(paths)
    out: Dict[str, List[Finding]] = {}
    folders = sorted({posixpath.dirname(p) for p in paths})
    for folder in folders:
        for library, safe_names, pickle_names in LOADER_WEIGHTS:
            safe = [p for p in (posixpath.join(folder, n) for n in safe_names) if p in present]
            pickles = [p for p in (posixpath.join(folder, n) for n in pickle_names) if p in present]
            for path in pickles:
                if safe:
                    rule_id = "repo-pickle-beside-safetensors"
                    message = (f"{library} loads {posixpath.basename(safe[0])} from this folder, but this "
                               "pickle-based weight file is still downloaded by snapshot_download and loaded "
                               "by torch.load or use_safetensors=False; its own findings are listed too")
                else:
                    rule_id = "repo-loader-picks-pickle"
                    message = (f"{library} loads this pickle-based weight file: there is no safetensors "
                               "alternative in this folder")
                out.setdefault(path, []).append(policy.finding(
                    rule_id, place(path), message, details={"library": library, "safetensors": safe}))
    return out


# ---- scanning a repo --------------------------------------------------------------------------

@dataclass
class HubRepoScan:
    """What scanning one repo produced: its files, its pinned sha, the bytes fetched, or an error."""

    repo_id: str
    repo_type: str
    revision: Optional[str]
    sha: Optional[str] = None
    files: List[FileResult] = field(default_factory=list)
    stats: FetchStats = field(default_factory=FetchStats)
    error: Optional[str] = None
    #: Files whose result came from the result cache (same LFS sha256 at the same commit): not fetched.
    from_cache: int = 0

    @property
    def label(self) -> str:
        return display_repo(self.repo_id, self.repo_type)

    @property
    def target(self) -> Location:
        """The repo as a location (at its pinned sha once resolved): where a repo error is."""
        return Location.in_repo(HUB, self.label, self.sha)

    def summary(self) -> Dict[str, Any]:
        return {"repo_id": self.repo_id, "repo_type": self.repo_type, "revision": self.revision,
                "sha": self.sha, "files": len(self.files), "bytes_fetched": self.stats.bytes_fetched,
                "requests": self.stats.requests, "from_cache": self.from_cache, "error": self.error}


@dataclass(frozen=True)
class HubClientConfig:
    """Where and as whom to talk to the Hub; the token is never printed."""

    endpoint: str
    token: Optional[str] = None
    block_size: int = DEFAULT_BLOCK_SIZE
    cache_blocks: int = DEFAULT_CACHE_BLOCKS
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_environment(cls) -> "HubClientConfig":
        """``HF_ENDPOINT`` and ``HF_TOKEN`` (or the saved login), read now rather than at import time."""
        import os

        from huggingface_hub import constants, get_token

        endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        return cls(endpoint=endpoint, token=get_token())

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"HubClientConfig(endpoint={self.endpoint!r}, token={'***' if self.token else None})"


def describe_hub_error(exc: BaseException, config: HubClientConfig, revision: Optional[str],
                       http: Optional[HubHttp] = None) -> str:
    """One line saying what went wrong with a repo and what to do, without the token or a traceback.

    Knows huggingface_hub's error types (from ``huggingface_hub.utils``, where every version from
    0.20 to 2.x has them) and the network errors of its HTTP library.
    """
    from huggingface_hub import utils as hf_utils

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(exc, hf_utils.OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: the Hub cannot be reached; unset it to scan remote repos"
    if isinstance(exc, hf_utils.HfHubHTTPError) and status is not None:
        headers = response.headers if response is not None else {}
        return _api_error_message(int(status), headers, config, revision)
    if isinstance(exc, ScanLimitExceeded):
        return f"not scanned: {exc}"
    if http is not None and http.is_transport_error(exc):
        return f"network error reaching {config.endpoint}: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _api_error_message(status: int, headers: Mapping[str, str], config: HubClientConfig,
                       revision: Optional[str]) -> str:
    """The Hub's API errors (told apart by ``X-Error-Code``, as huggingface_hub does) as one line."""
    code = headers.get("X-Error-Code")
    if code == "GatedRepo":
        hint = "accept its conditions on the Hub, then set HF_TOKEN" if not config.token else \
            "the token in use has not been granted access: accept the conditions on the Hub with that account"
        return f"gated repository (HTTP {status}): {hint}"
    if code == "RepoNotFound" or (status == 401 and not code):
        hint = "" if config.token else "; set HF_TOKEN if it is private or gated"
        return f"repository not found (HTTP {status}): check the id and --repo-type{hint}"
    if code == "RevisionNotFound":
        return f"revision {revision!r} not found (HTTP {status})"
    return _status_message(status, headers)


class _ApiError(Exception):
    """An API answer that ends a repo's scan; the message says why and what to do."""


_SHA = re.compile(r"[0-9a-f]{40}")
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


@dataclass
class TreeListing:
    """The files of a repo at one commit, kept compact: ``path -> (size, LFS sha256 or None)``."""

    files: Dict[str, Tuple[int, Optional[str]]] = field(default_factory=dict)
    entries: int = 0
    pages: int = 0
    #: Why the listing stopped before its end (a limit reached), or None when it is complete.
    limit: Optional[str] = None

    def add(self, entry: Any) -> None:
        """One entry of a tree page; files are kept, folders skipped, a malformed entry is an error."""
        if not isinstance(entry, dict):
            raise _ApiError("the tree listing holds an entry that is not an object; not scanned")
        if entry.get("type") != "file":
            return
        path, size, lfs = entry.get("path"), entry.get("size"), entry.get("lfs")
        if not isinstance(path, str) or not path or not isinstance(size, int) or isinstance(size, bool) \
                or size < 0:
            raise _ApiError(f"the tree listing holds a file entry without a usable path and size "
                            f"({str(path)[:100]!r}); not scanned")
        sha256 = None
        if isinstance(lfs, dict):
            oid = lfs.get("oid", lfs.get("sha256"))
            sha256 = oid if isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) else None
        self.files[path] = (size, sha256)


class HubRepoScanner:
    """Scans Hub repos one by one, through huggingface_hub's HTTP session, every exchange time-bounded."""

    def __init__(self, config: HubClientConfig, options: ScanOptions,
                 on_progress: Optional[Callable[[HubRepoScan, int, int], None]] = None,
                 result_cache: "Optional[ResultCache]" = None, http: Optional[HubHttp] = None) -> None:
        self.config = config
        self.options = options
        self.result_cache = result_cache
        self.http = http or HubHttp()
        self.on_progress = on_progress

    def _headers(self) -> Dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.config.token or False, library_name="safemodel-ci")

    def _api_url(self, repo_type: str, repo_id: str, *parts: str) -> str:
        tail = "".join("/" + quote(p, safe="") for p in parts)
        return f"{self.config.endpoint}/api/{repo_type}s/{repo_id}{tail}"

    def _api_json(self, url: str, deadline: float, what: str,
                  revision: Optional[str]) -> Tuple[Any, Optional[str]]:
        """The JSON of an API answer and the URL of its next page (``Link: <...>; rel="next"``)."""
        def handle(response: HttpResponse) -> Tuple[bytes, Optional[str]]:
            if response.status >= 400:
                raise _ApiError(_api_error_message(response.status, response.headers, self.config, revision))
            body = response.read(MAX_API_BODY_BYTES, what)
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding in ("gzip", "x-gzip", "deflate"):  # sent although identity was asked for
                body = _inflate(body, encoding, MAX_API_BODY_BYTES, what)
            elif encoding != "identity":
                raise _ApiError(f"{what}: the Hub answered in {encoding} encoding; not scanned")
            return body, response.headers.get("Link")

        # The body is read raw (the bound is on bytes received); ask for it uncompressed.
        headers = {**self._headers(), "Accept-Encoding": "identity"}
        body, link = self.http.get(url, headers, deadline, handle, what)
        try:
            data = json.loads(body)
        except ValueError:
            raise _ApiError(f"{what}: the Hub's answer is not JSON; not scanned") from None
        following = None
        if link:
            m = _LINK_NEXT.search(link)
            if m:
                following = urljoin(url, m.group(1))
                if _origin(following) != _origin(self.config.endpoint):
                    # The token goes with every API request: never to a server the user did not name.
                    raise _ApiError(f"{what}: the next page is on another server ({_origin(following)[1]}); "
                                    "not followed")
        return data, following

    def resolve(self, repo_id: str, revision: Optional[str], repo_type: str, deadline: float) -> str:
        """The commit sha ``revision`` (default: the main branch) points to."""
        url = self._api_url(repo_type, repo_id, "revision", revision) if revision else \
            self._api_url(repo_type, repo_id)
        info, _ = self._api_json(url, deadline, "repo info", revision)
        sha = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            raise _ApiError("the Hub did not return the commit sha of this revision; not scanned")
        return sha

    def list_tree(self, repo_id: str, sha: str, repo_type: str, deadline: float) -> TreeListing:
        """Every file at ``sha``, page by page, keeping only (path, size, LFS sha256) of each.

        Bounded by ``limits.hub-max-tree-entries``, ``limits.hub-max-tree-pages``, the answer size of
        one page and the time budget; reaching one ends the listing with :attr:`TreeListing.limit` set.
        """
        limits = self.options.limits
        listing = TreeListing()
        url: Optional[str] = self._api_url(repo_type, repo_id, "tree", sha) + "?recursive=true&expand=false"
        while url is not None:
            if listing.pages >= limits.hub_max_tree_pages:
                listing.limit = (f"the tree listing goes on past {limits.hub_max_tree_pages} pages "
                                 "(limits.hub-max-tree-pages)")
                break
            listing.pages += 1
            try:
                page, url = self._api_json(url, deadline, f"tree listing page {listing.pages}", None)
            except ScanLimitExceeded as exc:  # the time budget, or a page too large to hold
                listing.limit = str(exc)
                break
            if not isinstance(page, list):
                raise _ApiError("the tree listing is not a list; not scanned")
            for entry in page:
                if listing.entries >= limits.hub_max_tree_entries:
                    listing.limit = (f"the tree lists more than {limits.hub_max_tree_entries} entries "
                                     "(limits.hub-max-tree-entries)")
                    url = None
                    break
                listing.entries += 1
                listing.add(entry)
            del page  # one page in memory at a time
        return listing

    def scan(self, repo_id: str, revision: Optional[str] = None, repo_type: str = "model") -> HubRepoScan:
        """Resolve ``revision`` to its sha, list the tree there and scan every file by range reads."""
        from huggingface_hub import constants

        result = HubRepoScan(repo_id=repo_id, repo_type=repo_type, revision=revision)
        if constants.HF_HUB_OFFLINE:
            result.error = "HF_HUB_OFFLINE is set: the Hub cannot be reached; unset it to scan remote repos"
            return result
        # Resolving and listing share one time budget, the same as one file's.
        deadline = time.monotonic() + self.options.limits.max_seconds_per_file
        try:
            sha = self.resolve(repo_id, revision, repo_type, deadline)
        except _ApiError as exc:
            result.error = str(exc)
            return result
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message for this repo
            result.error = describe_hub_error(exc, self.config, revision, self.http)
            return result
        result.sha = sha

        def at(path: str = "") -> Location:
            return Location.in_repo(HUB, result.label, sha, path)
        try:
            listing = self.list_tree(repo_id, sha, repo_type, deadline)
        except _ApiError as exc:
            result.error = str(exc)
            return result
        except Exception as exc:  # noqa: BLE001
            result.error = describe_hub_error(exc, self.config, revision, self.http)
            return result

        files = listing.files
        paths = sorted(files)
        cache = BlockCache(self.config.cache_blocks)
        headers = self._headers()
        sources: Dict[str, HubFileSource] = {}

        def open_file(path: str) -> HubFileSource:
            if path not in sources:
                from huggingface_hub import hf_hub_url

                url = hf_hub_url(repo_id, path, repo_type=repo_type, revision=sha,
                                 endpoint=self.config.endpoint)
                sources[path] = HubFileSource(url, files[path][0], at(path).display, headers=headers,
                                              cache=cache, stats=result.stats,
                                              block_size=self.config.block_size,
                                              retries=self.config.retries, http=self.http)
            return sources[path]

        def siblings_of(path: str, opened: List[str]) -> SiblingOpener:
            folder = posixpath.dirname(path)

            def open_sibling(relative: str) -> Optional[ByteSource]:
                opened.append(relative)  # a result that depends on other files is not cached
                # Same rule as for local files: the named file sits in this folder or below it.
                inner = posixpath.normpath(relative.replace("\\", "/"))
                if inner.startswith("../") or inner == ".." or posixpath.isabs(inner):
                    return None
                rel = posixpath.join(folder, inner) if folder else inner
                if rel not in files:
                    return None
                return open_file(rel)

            return open_sibling

        loader_findings = loader_choice_findings(paths, at, self.options.policy)
        for n, path in enumerate(paths, 1):
            size, sha256 = files[path]
            file_result = self._scan_file(path, at(path), size, sha256, open_file, siblings_of, result)
            extra = loader_findings.get(path)
            if extra:
                file_result.findings = sort_findings(file_result.findings + extra)
            result.files.append(file_result)
            if self.on_progress is not None:
                self.on_progress(result, n, len(paths))
        if listing.limit is not None:
            result.files.append(listing_limit_result(at(), listing, self.options.policy))
        return result

    def _scan_file(self, path: str, where: Location, size: int, sha256: Optional[str],
                   open_file: Callable[[str], HubFileSource],
                   siblings_of: Callable[[str, List[str]], SiblingOpener], repo: HubRepoScan) -> FileResult:
        """One file, its findings born at ``where`` (the file in the repo at its commit): from the
        result cache when its LFS sha256 was scanned here before, else by ranges."""
        display = where.display
        cache = self.result_cache if sha256 else None
        if cache is not None:
            hit = cache.get_by_sha256(sha256, size, display, self.options, where)  # type: ignore[arg-type]
            if hit is not None:
                repo.from_cache += 1
                return hit
        opened: List[str] = []
        # Every HTTP exchange for this file (and the siblings it opens) ends by the file's deadline.
        repo.stats.deadline = time.monotonic() + self.options.limits.max_seconds_per_file
        file_result = scan_byte_source(open_file(path), where, self.options,
                                       siblings=siblings_of(path, opened))
        if cache is not None and not opened:
            cache.put_by_sha256(sha256, size, display, self.options, file_result)  # type: ignore[arg-type]
        return file_result


def _inflate(body: bytes, encoding: str, limit: int, what: str) -> bytes:
    """A gzip or deflate body, decompressed to at most ``limit`` bytes (else ScanLimitExceeded)."""
    import zlib

    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        try:  # "deflate" is sometimes raw deflate, without the zlib header
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _ApiError(f"{what}: the Hub's {encoding} answer does not decompress ({exc})") from None
    if len(out) > limit:
        raise ScanLimitExceeded(f"{what}: answer larger than {format_bytes(limit)} once decompressed")
    return out


def listing_limit_result(target: Location, listing: TreeListing, policy: Policy) -> FileResult:
    """The repo itself as an ``unscanned-limit`` result: its listing stopped before its end."""
    message = (f"{listing.limit}; the {plural(len(listing.files), 'file')} listed in "
               f"{plural(listing.pages, 'page')} were scanned, the rest of the repo was not")
    return FileResult(path=target.display, location=target, findings=[policy.finding(
        "unscanned-limit", target, message, details={"entries": listing.entries, "pages": listing.pages})])


# ---- the command ------------------------------------------------------------------------------

def build_report(scans: Sequence[HubRepoScan], fail_on: Any) -> ScanReport:
    """One report for all repos: files in order, one error per repo that could not be scanned."""
    files = [f for s in scans for f in s.files]
    targets = {s.target.display: s.target for s in scans if s.error}
    errors = [(s.target.display, s.error) for s in scans if s.error]
    notes = []
    for s in scans:
        if s.sha is not None:
            rev = f" (revision {s.revision})" if s.revision and s.revision != s.sha else ""
            cached = f" ({s.from_cache} from the result cache)" if s.from_cache else ""
            notes.append(f"{s.label}@{s.sha}{rev}: {plural(len(s.files), 'file')}{cached}, "
                         f"{format_bytes(s.stats.bytes_fetched)} fetched in "
                         f"{plural(s.stats.requests, 'request')}")
    report = ScanReport(files, fail_on=fail_on, errors=errors, targets=targets)  # type: ignore[arg-type]
    report.extra = {"hub": [s.summary() for s in scans], "notes": notes}
    return report


def parse_repo_target(target: str, default_revision: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``org/name@rev`` -> (``org/name``, ``rev``); without ``@`` the ``--revision`` given applies.

    Repo ids cannot contain ``@``, so the first one separates the revision (which may hold ``/``,
    as in ``refs/pr/1``).
    """
    repo_id, sep, revision = target.partition("@")
    return repo_id, (revision if sep and revision else default_revision)


def scan_repos(scanner: HubRepoScanner, targets: Sequence[Tuple[str, Optional[str]]],
               repo_type: str = "model", jobs: int = 1) -> List[HubRepoScan]:
    """Scan each ``(repo_id, revision)`` target with ``scanner``, ``jobs`` repos at once; an error is
    kept per repo (:attr:`HubRepoScan.error`) and the others go on. Results keep the order given."""

    def scan_one(target: Tuple[str, Optional[str]]) -> HubRepoScan:
        return scanner.scan(target[0], revision=target[1], repo_type=repo_type)

    jobs = max(1, min(jobs or 1, len(targets)))
    if jobs == 1:
        return [scan_one(t) for t in targets]
    # Threads: a repo scan waits on the network most of the time.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="safemodel-hub") as pool:
        return list(pool.map(scan_one, targets))
