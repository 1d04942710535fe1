"""A Hub-compatible HTTP server on 127.0.0.1 for tests: enough of the API for the real huggingface_hub.

Serves repos built from test fixtures: model/dataset info with ``sha`` and ``siblings``, the tree API,
``paths-info``, and ``HEAD``/``GET`` on ``/{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, quoted
``ETag``/``X-Linked-Etag``, ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges`` and ``206`` +
``Content-Range`` answers to ``Range``. Errors carry ``X-Error-Code`` as the Hub's do. Every body byte
served is counted per file, so tests can assert how much a scan fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

#: Files stored with Git LFS on the fake Hub (as a typical .gitattributes does), or bigger than 10 MB.
LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".onnx", ".gguf", ".npy",
                ".joblib", ".zip", ".msgpack")
LFS_MIN_SIZE = 10 << 20
if TYPE_CHECKING:  # pragma: no cover
    import pytest

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class HubFile:
    """One file of one commit: bytes in memory or a path on disk (a sparse multi-GB file)."""

    path: str
    data: Optional[bytes] = None
    disk_path: Optional[Path] = None
    #: Declared LFS sha256 for huge sparse fixtures, so the server does not hash gigabytes.
    declared_sha256: Optional[str] = None
    _sha256: Optional[str] = None
    _git_oid: Optional[str] = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else os.path.getsize(self.disk_path)  # type: ignore[arg-type]

    @property
    def is_lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES) or self.size >= LFS_MIN_SIZE

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        with open(self.disk_path, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(start)
            return fh.read(end - start)

    def _hash(self, h: "hashlib._Hash", prefix: bytes = b"") -> str:
        h.update(prefix)
        pos = 0
        while pos < self.size:
            chunk = self.read(pos, pos + (1 << 20))
            h.update(chunk)
            pos += len(chunk)
        return h.hexdigest()

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = self.declared_sha256 or self._hash(hashlib.sha256())
        return self._sha256

    @property
    def git_oid(self) -> str:
        """The git blob sha1 of what git stores: the pointer file for LFS files, else the content."""
        if self._git_oid is None:
            if self.is_lfs:
                pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                           f"size {self.size}\n").encode()
                self._git_oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
            else:
                self._git_oid = self._hash(hashlib.sha1(), b"blob %d\0" % self.size)
        return self._git_oid

    @property
    def etag(self) -> str:
        return self.sha256 if self.is_lfs else self.git_oid

    def tree_entry(self) -> dict:
        entry = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return entry


@dataclass
class HubRepo:
    repo_id: str
    repo_type: str = "model"
    #: commit sha -> {path: file}
    commits: Dict[str, Dict[str, HubFile]] = field(default_factory=dict)
    #: branch or tag -> commit sha
    refs: Dict[str, str] = field(default_factory=dict)
    gated: bool = False

    def resolve(self, revision: str) -> Optional[str]:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


FileSpec = Union[bytes, Path, Tuple[Path, str]]


class FakeHub:
    """The server and its repos. ``fail_status[repo_id] = 500`` makes every answer about that repo a 500."""

    def __init__(self, latency: float = 0.0) -> None:
        #: Seconds every request waits before it is answered (a distant server: the benchmark's 50 ms).
        self.latency = latency
        self.repos: Dict[Tuple[str, str], HubRepo] = {}
        self.fail_status: Dict[str, int] = {}
        #: repo_id -> 500: only file downloads (resolve) of that repo fail, the API answers.
        self.fail_resolve: Dict[str, int] = {}
        self.served: Dict[Tuple[str, str], int] = {}
        # -- a hostile endpoint (each loop below is bounded: HOSTILE_SECONDS, or the client leaving) --
        #: repo_id -> seconds per byte: file bodies trickle one byte at a time (slow loris).
        self.trickle_resolve: Dict[str, float] = {}
        #: repo_id -> seconds per byte: API answers trickle their status line and headers.
        self.trickle_api: Dict[str, float] = {}
        #: repo_id -> files per page: the tree listing never ends (each page links to a next one).
        self.endless_tree: Dict[str, int] = {}
        #: repo_id -> entries: the tree lists this many folders, 1,000 per page, made as they are sent.
        self.huge_tree: Dict[str, int] = {}
        #: repo_id -> bytes: the tree listing is one page this large, streamed as it is made.
        self.huge_page: Dict[str, int] = {}
        #: repo_ids whose API answers come gzip-compressed whatever the client asked for.
        self.gzip_api: set = set()
        #: repo_ids whose file bodies come gzip-compressed although the client asked for identity.
        self.gzip_resolve: set = set()
        #: repo_id -> tree pages answered.
        self.tree_pages: Dict[str, int] = {}
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        self.valid_token: Optional[str] = None
        self._lock = threading.Lock()
        #: requests being answered; served_bytes waits for none, since a handler counts its bytes
        #: after its last write, which the client may have read before the handler thread counts it.
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- fixtures -----------------------------------------------------------------------------
    def add_commit(self, repo_id: str, files: Dict[str, FileSpec], refs: Tuple[str, ...] = ("main",),
                   repo_type: str = "model", gated: bool = False) -> str:
        """Add a commit holding ``files`` (bytes, a path, or (path, declared sha256)); returns its sha."""
        repo = self.repos.setdefault((repo_type, repo_id), HubRepo(repo_id, repo_type))
        repo.gated = repo.gated or gated
        commit: Dict[str, HubFile] = {}
        for path, spec in files.items():
            if isinstance(spec, bytes):
                commit[path] = HubFile(path, data=spec)
            elif isinstance(spec, tuple):
                commit[path] = HubFile(path, disk_path=spec[0], declared_sha256=spec[1])
            else:
                commit[path] = HubFile(path, disk_path=Path(spec))
        seed = json.dumps([repo_id, len(repo.commits), sorted((p, f.etag) for p, f in commit.items())])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = commit
        for ref in refs:
            repo.refs[ref] = sha
        return sha

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def served_bytes(self, repo_id: str, path: Optional[str] = None) -> int:
        with self._lock:
            self._idle.wait_for(lambda: self._active == 0, timeout=10)
            return sum(n for (r, p), n in self.served.items() if r == repo_id and (path is None or p == path))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> str:
        hub = self

        class Handler(_HubHandler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self.endpoint

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


#: How long a hostile answer keeps going at most, so that no server thread outlives a test for long.
HOSTILE_SECONDS = 20.0


_API = re.compile(r"^/api/(models|datasets|spaces)/(.+?)(?:/(revision|tree|paths-info)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?(.+?)/resolve/([^/]+)/(.+)$")


class _HubHandler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"
    #: Headers and body go out in two writes; with Nagle the body waits for the ACK of the headers,
    #: which the client delays (up to 40 ms on Linux loopback). Real Hub front ends answer at once.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass

    # -- helpers --------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None,
              content_type: str = "application/json", head: bool = False) -> None:
        if getattr(self, "_gzip_body", False) and status < 400:
            import gzip

            body = gzip.compress(body)
            headers = {**(headers or {}), "Content-Encoding": "gzip"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: object, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: Optional[str], message: str, head: bool = False,
               headers: Optional[Dict[str, str]] = None) -> None:
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        h["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(), h, head=head)

    def _record(self) -> None:
        with self.fake._lock:
            self.fake.requests.append((self.command, self.path, dict(self.headers.items())))

    def _repo(self, repo_type: str, repo_id: str, head: bool = False) -> Optional[HubRepo]:
        """The repo, or None after answering with the Hub's error for it."""
        status = self.fake.fail_status.get(repo_id)
        if status is not None:
            extra = {"Retry-After": "1"} if status == 429 else {}
            self._error(status, None, f"simulated HTTP {status}", head=head, headers=extra)
            return None
        repo = self.fake.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return None
        if repo.gated:
            auth = self.headers.get("Authorization", "")
            if not self.fake.valid_token or auth != f"Bearer {self.fake.valid_token}":
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.", head=head)
                return None
        return repo

    # -- verbs ----------------------------------------------------------------------------------
    def _wait(self) -> None:
        """The injected latency: each request waits in its own handler thread, as on a real network."""
        if self.fake.latency > 0:
            time.sleep(self.fake.latency)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        with self.fake.answering():
            self._record()
            self._wait()
            self._dispatch(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        with self.fake.answering():
            self._record()
            self._wait()
            self._dispatch(head=True)

    def do_POST(self) -> None:  # noqa: N802
        self._record()
        self._wait()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        m = _API.match(unquote(parts.path))
        if not m or m.group(3) != "paths-info":
            self._error(404, None, "not found")
            return
        repo = self._repo(_TYPES[m.group(1)], m.group(2))
        if repo is None:
            return
        sha = repo.resolve(m.group(4))
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        if "json" in (self.headers.get("Content-Type") or ""):
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        files = repo.commits[sha]
        self._json(200, [files[p].tree_entry() for p in paths if p in files])

    def _dispatch(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        m = _API.match(path)
        if m:
            self._api(m, query, head)
            return
        m = _RESOLVE.match(path)
        if m:
            self._resolve(_TYPES.get(f"{m.group(1)}", "model") if m.group(1) else "model",
                          m.group(2), m.group(3), m.group(4), head)
            return
        self._error(404, None, f"no route for {path}", head=head)

    def _api(self, m: "re.Match[str]", query: Dict[str, List[str]], head: bool) -> None:
        repo_type = _TYPES[m.group(1)]
        repo_id, kind, revision, sub = m.group(2), m.group(3), m.group(4), m.group(5)
        self._gzip_body = repo_id in self.fake.gzip_api
        slow = self.fake.trickle_api.get(repo_id)
        if slow is not None:  # the status line itself, a byte at a time: headers never complete
            self._trickle(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100_000, slow)
            return
        repo = self._repo(repo_type, repo_id, head)
        if repo is None:
            return
        sha = repo.resolve(revision or "main")
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
            return
        files = repo.commits[sha]
        if kind == "tree":
            with self.fake._lock:
                self.fake.tree_pages[repo_id] = self.fake.tree_pages.get(repo_id, 0) + 1
            if self._hostile_tree(repo_id, sha, query):
                return
        if kind in (None, "revision"):
            self._json(200, {"id": repo_id, "sha": sha, "private": False, "gated": repo.gated or False,
                             "siblings": [{"rfilename": p} for p in sorted(files)], "tags": []})
            return
        # tree
        prefix = (sub or "").strip("/")
        recursive = (query.get("recursive", ["false"])[0]).lower() in ("1", "true")
        entries: List[dict] = []
        folders = set()
        for p in sorted(files):
            if prefix and not p.startswith(prefix + "/"):
                continue
            rest = p[len(prefix) + 1:] if prefix else p
            pieces = rest.split("/")
            for i in range(1, len(pieces)):
                folder = "/".join(([prefix] if prefix else []) + pieces[:i])
                if folder not in folders and (recursive or i == 1):
                    folders.add(folder)
                    entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                    "size": 0, "path": folder})
            if recursive or len(pieces) == 1:
                entries.append(files[p].tree_entry())
        if prefix and not entries:
            self._error(404, "EntryNotFound", f"{prefix} does not exist", head=head)
            return
        self._json(200, entries)

    # -- a hostile endpoint --------------------------------------------------------------------------
    def _trickle(self, data: bytes, seconds_per_byte: float) -> None:
        """Write ``data`` one byte at a time, for at most HOSTILE_SECONDS or until the client leaves."""
        end = time.monotonic() + HOSTILE_SECONDS
        try:
            for i in range(len(data)):
                if time.monotonic() > end:
                    break
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(seconds_per_byte)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _hostile_tree(self, repo_id: str, sha: str, query: Dict[str, List[str]]) -> bool:
        """Answer a tree request the hostile way configured for ``repo_id``; False when none is."""
        per_page = self.fake.endless_tree.get(repo_id)
        if per_page is not None:
            page = int(query.get("cursor", ["0"])[0])
            entries = [{"type": "file", "oid": "0" * 40, "size": 2, "path": f"page{page}/file{i}.json"}
                       for i in range(per_page)]
            nxt = f"/api/models/{repo_id}/tree/{sha}?recursive=true&cursor={page + 1}"
            self._json(200, entries, headers={"Link": f'<{nxt}>; rel="next"'})
            return True
        total = self.fake.huge_tree.get(repo_id)
        if total is not None:
            page = int(query.get("cursor", ["0"])[0])
            first = page * 1000
            entries = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f"d/{n:07d}"}
                       for n in range(first, min(total, first + 1000))]
            headers = {}
            if first + 1000 < total:
                nxt = f"/api/models/{repo_id}/tree/{sha}?recursive=true&cursor={page + 1}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            self._json(200, entries, headers=headers)
            return True
        size = self.fake.huge_page.get(repo_id)
        if size is not None:
            entry = json.dumps({"type": "directory", "oid": "0" * 40, "size": 0, "path": "d/" + "x" * 200})
            per_chunk = 1000
            chunk = ("," + ",".join([entry] * per_chunk)).encode()
            body_len = 1 + len(entry) + ((size // len(chunk)) + 1) * len(chunk) + 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(body_len))
            self.end_headers()
            try:
                self.wfile.write(b"[" + entry.encode())
                for _ in range((size // len(chunk)) + 1):
                    self.wfile.write(chunk)
                self.wfile.write(b"]")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return True
        return False

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self._repo(repo_type, repo_id, head)
        if repo is None:
            return
        status = self.fake.fail_resolve.get(repo_id)
        if status is not None:
            self._error(status, None, f"simulated HTTP {status}", head=head)
            return
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
            return
        f = repo.commits[sha].get(path)
        if f is None:
            self._error(404, "EntryNotFound", f"{path} does not exist at {sha}", head=head,
                        headers={"X-Repo-Commit": sha})
            return
        size = f.size
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.is_lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(size)
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{size}"
                self._error(416, None, "Requested Range Not Satisfiable", head=head, headers=headers)
                return
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if repo_id in self.fake.gzip_resolve:
            import gzip

            body = gzip.compress(f.read(start, end))
            self.send_response(status)
            for k, v in {**headers, "Content-Encoding": "gzip", "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if head:
            return
        pos = start
        slow = self.fake.trickle_resolve.get(repo_id)
        if slow is not None:
            self._trickle(f.read(start, end), slow)
            return
        try:
            while pos < end:
                chunk = f.read(pos, min(end, pos + (256 << 10)))
                if not chunk:
                    break
                self.wfile.write(chunk)
                pos += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: count what went out
        finally:
            with self.fake._lock:
                key = (repo_id, path)
                self.fake.served[key] = self.fake.served.get(key, 0) + (pos - start)


def fake_hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Start a fake Hub; point huggingface_hub at it, isolated from the user's login and cache."""
    from huggingface_hub import constants

    server = FakeHub()
    endpoint = server.start()
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    # huggingface_hub 0.x has no stored-tokens file; 1.x and 2.x do.
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"), raising=False)
    try:
        yield server
    finally:
        server.stop()


def _parse_range(value: str, size: int) -> Optional[Tuple[int, int]]:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> [start, end) or None when unsatisfiable."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = int(m.group(2))
        return (max(0, size - n), size) if n > 0 and size > 0 else None
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size
    end = min(end, size)
    if start >= size or end <= start:
        return None
    return start, end
