"""Hugging Face Hub repos scanned in place: HTTP range reads through a block cache, nothing downloaded whole.

``safemodel hub REPO_ID...`` resolves the requested revision to its commit sha, lists the tree at that
sha and hands every file to the scanner as a :class:`HubFileSource`. Readers ask that source for the
bytes they need (a safetensors header, a zip's central directory and pickle members, HDF5 attributes)
and only those blocks are fetched, with ``Range`` requests through huggingface_hub's HTTP session.
The bytes fetched over the network are counted per repo and reported.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ..context import SiblingOpener
from ..findings import EXIT_USAGE, FileResult, Finding, ScanReport, sort_findings
from ..rules import rule
from ..scanner import ScanOptions, scan_byte_source
from ..source import ByteSource, SourceError

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import HfApi

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

REPO_TYPES = ("model", "dataset", "space")
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
                 retry_wait: float = 0.5, session: Any = None) -> None:
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
    def _client(self) -> Any:
        if self._session is not None:
            return self._session
        from huggingface_hub import get_session

        return get_session()

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` from the server, retrying transient failures."""
        attempt = 0
        while True:
            try:
                return self._fetch_once(start, end)
            except _Transient as exc:
                attempt += 1
                if attempt > self._retries or self.stats.failing:
                    self.stats.failing = True
                    raise SourceError(f"{self.name}: {exc}") from None
                self._location = None  # a signed CDN URL may have expired: resolve again
                time.sleep(self._retry_wait * (2 ** (attempt - 1)))

    def _fetch_once(self, start: int, end: int) -> bytes:
        import httpx2  # huggingface_hub's HTTP library

        url = self._location or self.url
        headers = dict(self._headers)
        if self._location and _origin(self._location) != _origin(self.url):
            headers.pop("authorization", None)  # never send the Hub token to a CDN
            headers.pop("Authorization", None)
        headers["Range"] = f"bytes={start}-{end - 1}"
        headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets in the file
        want = end - start
        self.stats.requests += 1
        try:
            with self._client().stream("GET", url, headers=headers, follow_redirects=True) as response:
                status = response.status_code
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
                final = str(response.url)
                if final != url:
                    self._location = final
                data = self._read_body(response, want)
        except httpx2.TransportError as exc:
            raise _Transient(f"network error: {type(exc).__name__}: {exc}") from None
        except SourceError:
            raise
        except _Transient:
            raise
        except Exception as exc:  # noqa: BLE001 - offline mode and friends: fail closed with a message
            raise SourceError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        if len(data) < want:
            raise _Transient(f"short read: wanted {want} bytes at offset {start}, got {len(data)}")
        return data

    def _read_body(self, response: Any, want: int) -> bytes:
        chunks: List[bytes] = []
        got = 0
        for chunk in response.iter_raw():
            take = chunk[:want - got]
            chunks.append(take)
            got += len(take)
            self.bytes_fetched += len(chunk)
            self.stats.bytes_fetched += len(chunk)
            if got >= want:  # a 200 answer to a range request: stop instead of reading the whole file
                break
        return b"".join(chunks)


class _Transient(Exception):
    """A failure worth retrying (rate limit, server error, network error, short read)."""


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


def loader_choice_findings(paths: Sequence[str], display: Callable[[str], str]) -> Dict[str, List[Finding]]:
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
                    r = rule("repo-pickle-beside-safetensors")
                    message = (f"{library} loads {posixpath.basename(safe[0])} from this folder, but this "
                               "pickle-based weight file is still downloaded by snapshot_download and loaded "
                               "by torch.load or use_safetensors=False; its own findings are listed too")
                else:
                    r = rule("repo-loader-picks-pickle")
                    message = (f"{library} loads this pickle-based weight file: there is no safetensors "
                               "alternative in this folder")
                out.setdefault(path, []).append(Finding(
                    rule_id=r.id, severity=r.severity, path=display(path), message=message,
                    remedy=r.remedy, unscanned=r.unscanned,
                    details={"library": library, "safetensors": safe}))
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


def describe_hub_error(exc: BaseException, config: HubClientConfig, revision: Optional[str]) -> str:
    """One line saying what went wrong with a repo and what to do, without the token or a traceback."""
    from huggingface_hub import errors

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(exc, errors.GatedRepoError):
        hint = "accept its conditions on the Hub, then set HF_TOKEN" if not config.token else \
            "the token in use has not been granted access: accept the conditions on the Hub with that account"
        return f"gated repository (HTTP {status}): {hint}"
    if isinstance(exc, errors.RepositoryNotFoundError):
        hint = "" if config.token else "; set HF_TOKEN if it is private or gated"
        return f"repository not found (HTTP {status}): check the id and --repo-type{hint}"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"revision {revision!r} not found (HTTP {status})"
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: the Hub cannot be reached; unset it to scan remote repos"
    if isinstance(exc, errors.HfHubHTTPError) and status is not None:
        headers = response.headers if response is not None else {}
        return _status_message(int(status), headers)
    try:
        import httpx2

        if isinstance(exc, httpx2.TransportError):
            return f"network error reaching {config.endpoint}: {type(exc).__name__}: {exc}"
    except ImportError:  # pragma: no cover
        pass
    return f"{type(exc).__name__}: {exc}"


class HubRepoScanner:
    """Scans Hub repos one by one through one ``HfApi`` client."""

    def __init__(self, config: HubClientConfig, options: ScanOptions,
                 api: "Optional[HfApi]" = None,
                 on_progress: Optional[Callable[[HubRepoScan, int, int], None]] = None,
                 result_cache: "Optional[ResultCache]" = None) -> None:
        from huggingface_hub import HfApi

        self.config = config
        self.options = options
        self.result_cache = result_cache
        self.api = api or HfApi(endpoint=config.endpoint, token=config.token or False)
        self.on_progress = on_progress

    def _headers(self) -> Dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.config.token or False, library_name="safemodel-ci")

    def scan(self, repo_id: str, revision: Optional[str] = None, repo_type: str = "model") -> HubRepoScan:
        """Resolve ``revision`` to its sha, list the tree there and scan every file by range reads."""
        from huggingface_hub.hf_api import RepoFile

        result = HubRepoScan(repo_id=repo_id, repo_type=repo_type, revision=revision)
        try:
            info = self.api.repo_info(repo_id, revision=revision, repo_type=repo_type,
                                      token=self.config.token or False)
            sha = getattr(info, "sha", None)
            if not sha:
                result.error = "the Hub did not return the commit sha of this revision; not scanned"
                return result
            result.sha = sha
            tree = self.api.list_repo_tree(repo_id, recursive=True, revision=sha, repo_type=repo_type,
                                           token=self.config.token or False)
            entries = [e for e in tree if isinstance(e, RepoFile)]
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message for this repo
            result.error = describe_hub_error(exc, self.config, revision)
            return result

        sizes = {e.path: int(e.size) for e in entries}
        lfs_sha256 = {e.path: e.lfs.sha256 for e in entries if e.lfs is not None and e.lfs.get("sha256")}
        paths = sorted(sizes)
        cache = BlockCache(self.config.cache_blocks)
        headers = self._headers()
        sources: Dict[str, HubFileSource] = {}
        prefix = f"{result.label}@{sha}:"

        def open_file(path: str) -> HubFileSource:
            if path not in sources:
                from huggingface_hub import hf_hub_url

                url = hf_hub_url(repo_id, path, repo_type=repo_type, revision=sha,
                                 endpoint=self.config.endpoint)
                sources[path] = HubFileSource(url, sizes[path], prefix + path, headers=headers, cache=cache,
                                              stats=result.stats, block_size=self.config.block_size,
                                              retries=self.config.retries)
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
                if rel not in sizes:
                    return None
                return open_file(rel)

            return open_sibling

        loader_findings = loader_choice_findings(paths, lambda p: prefix + p)
        for n, path in enumerate(paths, 1):
            file_result = self._scan_file(path, prefix + path, sizes[path], lfs_sha256.get(path), open_file,
                                          siblings_of, result)
            extra = loader_findings.get(path)
            if extra:
                file_result.findings = sort_findings(file_result.findings + [
                    self.options.policy.adjust(f) if hasattr(self.options.policy, "adjust") else f
                    for f in extra])
            result.files.append(file_result)
            if self.on_progress is not None:
                self.on_progress(result, n, len(paths))
        return result

    def _scan_file(self, path: str, display: str, size: int, sha256: Optional[str],
                   open_file: Callable[[str], HubFileSource],
                   siblings_of: Callable[[str, List[str]], SiblingOpener], repo: HubRepoScan) -> FileResult:
        """One file: from the result cache when its LFS sha256 was scanned here before, else by ranges."""
        cache = self.result_cache if sha256 else None
        if cache is not None:
            hit = cache.get_by_sha256(sha256, size, display, self.options)  # type: ignore[arg-type]
            if hit is not None:
                repo.from_cache += 1
                return hit
        opened: List[str] = []
        file_result = scan_byte_source(open_file(path), display, self.options,
                                       siblings=siblings_of(path, opened))
        if cache is not None and not opened:
            cache.put_by_sha256(sha256, size, display, self.options, file_result)  # type: ignore[arg-type]
        return file_result


# ---- the command ------------------------------------------------------------------------------

def build_report(scans: Sequence[HubRepoScan], fail_on: Any) -> ScanReport:
    """One report for all repos: files in order, one error per repo that could not be scanned."""
    files = [f for s in scans for f in s.files]
    errors = [(s.label if s.sha is None else f"{s.label}@{s.sha}", s.error) for s in scans if s.error]
    notes = []
    for s in scans:
        if s.sha is not None:
            rev = f" (revision {s.revision})" if s.revision and s.revision != s.sha else ""
            cached = f" ({s.from_cache} from the result cache)" if s.from_cache else ""
            notes.append(f"{s.label}@{s.sha}{rev}: {len(s.files)} files{cached}, "
                         f"{format_bytes(s.stats.bytes_fetched)} fetched in {s.stats.requests} requests")
    report = ScanReport(files, fail_on=fail_on, errors=errors)  # type: ignore[arg-type]
    report.extra = {"hub": [s.summary() for s in scans], "notes": notes}
    return report


def parse_repo_target(target: str, default_revision: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``org/name@rev`` -> (``org/name``, ``rev``); without ``@`` the ``--revision`` given applies.

    Repo ids cannot contain ``@``, so the first one separates the revision (which may hold ``/``,
    as in ``refs/pr/1``).
    """
    repo_id, sep, revision = target.partition("@")
    return repo_id, (revision if sep and revision else default_revision)


def scan_hub_command(args: argparse.Namespace) -> int:
    """``safemodel hub``: scan each repo, report errors per repo, keep going."""
    from .. import cli

    try:
        config = HubClientConfig.from_environment()
    except Exception as exc:  # noqa: BLE001 - e.g. an OIDC token exchange (HF_OIDC_RESOURCE) that failed
        print(f"safemodel: cannot get a Hugging Face token: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = cli.show_progress(args)

    def on_progress(scan: HubRepoScan, done: int, total: int) -> None:
        fetched = format_bytes(scan.stats.bytes_fetched)
        print(f"\r{scan.label}: {done}/{total} files scanned, {fetched} fetched", end="", file=sys.stderr,
              flush=True)

    scanner = HubRepoScanner(config, cli.scan_options(args), on_progress=on_progress if progress else None,
                             result_cache=cli.result_cache(args))
    scans = []
    for target in args.repo_ids:
        repo_id, revision = parse_repo_target(target, args.revision)
        scan = scanner.scan(repo_id, revision=revision, repo_type=args.repo_type)
        if progress:
            print(file=sys.stderr)
        scans.append(scan)
    report = build_report(scans, cli.fail_on(args))
    if getattr(args, "shard_label", None):
        report.extra["shard"] = args.shard_label  # lets 'safemodel merge' notice a missing shard
    return cli.emit(report, args)
