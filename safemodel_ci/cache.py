"""Result cache shared by every entry point (CLI, pre-commit hook, GitHub Action, Hub commands).

A re-run over unchanged multi-GB checkpoints must take well under a second, and hashing a whole
2 GB file alone costs a second or two. So a local file's entry is keyed by *the bytes the scan
actually read*: while scanning, every read the readers make is logged (offset, length, in order)
and hashed together with the bytes returned. On a later run the same reads are replayed and hashed;
if the digest matches, the readers would see exactly the same bytes, make exactly the same
decisions (what to read next depends only on what was read before), and so produce the same result.
Bytes the scan never looked at cannot change it. Replaying costs what the scan read (a zip's
central directory and pickles, a safetensors header), not the size of the file.

An entry is only reused when everything else that decides a result is the same too: the tool (its
version and its code), the policy fingerprint, the limits, the file's size and its displayed name
(findings quote it). Results that are incomplete (an unscanned finding: a time budget, an LFS
object not fetched yet) or that read other files (shards named by an index, an LFS object) are not
stored. Whole-file sha256 keys (a Hub LFS oid) are offered too, for callers that know the hash
without reading the file.

Entries are JSON files written atomically (temporary file + ``os.replace``), so concurrent runs
never see half an entry; an unreadable or corrupt entry is a miss, never an error.

Trust: the cache decides verdicts, so whoever can write an entry could make a malicious file pass.
Every entry is authenticated with an HMAC-SHA256 whose key lives in the cache directory's own key
file (created with mode 0600); an entry without a valid MAC is a miss. Like ssh with its files, a
cache directory or key file owned by another user, or writable by group or others, is refused: the
run goes on without a cache and says why. Entries are opened without following links and without
blocking (a FIFO planted at an entry path is refused, not waited on), and read with a size bound.
A replayed read log must cover the head of the file: an entry that checks no bytes of a non-empty
file is refused.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import stat
import struct
import sys
import zlib

# hashlib (OpenSSL), hmac, json, base64 and secrets are imported where used: a scan without the cache
# (--no-cache, SAFEMODEL_NO_CACHE) needs none of them, and they cost ~5 ms of its start-up; array only
# logs the reads of a file too big to hash whole.
from . import __version__
from .context import ScanContext
from .findings import FileResult, Location, sort_findings
from .scanner import ScanOptions, _local_siblings, scan_file, scan_source
from .source import ByteSource, BytesSource, FileSource, SourceError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:
    from .context import SiblingOpener
    from typing import Any, Dict, List, Optional, Tuple
    from array import array

#: Bumped when the entry layout changes; old entries are then misses.
CACHE_FORMAT = 1
#: Entries of other tool versions (their own directories) unused for this long are deleted.
STALE_AFTER_DAYS = 14
#: A scan that makes more reads than this is not cached (the log would outweigh the benefit).
MAX_LOGGED_READS = 2_000_000
#: Environment variables: where the cache lives, and a switch to turn it off everywhere.
ENV_DIR = "SAFEMODEL_CACHE_DIR"
ENV_DISABLE = "SAFEMODEL_NO_CACHE"

#: The HMAC key file in the cache directory (32 random bytes, mode 0600).
KEY_FILE = "hmac-key"
KEY_BYTES = 32
#: Largest entry read (a log of MAX_LOGGED_READS reads is 32 MB before base64).
MAX_ENTRY_BYTES = 64 << 20
#: Every entry file starts with this, then the 64 hex digits of the MAC of the rest, then '",'.
_MAC_PREFIX = b'{"mac":"'
_MAC_END = len(_MAC_PREFIX) + 64 + 2

_REC = struct.Struct("<QQ")
#: Third-party libraries some readers parse content with (their installed version is in the key).
READER_LIBRARIES = ("h5py", "py7zr", "lz4")


def default_cache_dir() -> str:
    """``$SAFEMODEL_CACHE_DIR``, else the user cache dir (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return env
    if sys.platform == "win32":  # pragma: no cover
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "safemodel-ci")


def cache_disabled_by_env() -> bool:
    return os.environ.get(ENV_DISABLE, "").strip().lower() in ("1", "true", "yes", "on")


class UntrustedCache(Exception):
    """The cache directory or its key file may be written by someone else: the cache is not used."""


def _owner_problem(st: os.stat_result, what: str, private: bool) -> Optional[str]:
    """Why a file with this stat may not be trusted (ssh's rule), or None.

    ``private``: group and others may not even read it (the key file).
    """
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is not None and st.st_uid != euid:
        return f"{what} is owned by uid {st.st_uid}, not by this user (uid {euid})"
    mask = 0o077 if private else 0o022
    if stat.S_IMODE(st.st_mode) & mask:
        kind = "readable or writable" if private else "writable"
        return f"{what} is {kind} by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def check_cache_dir(directory: str) -> Optional[str]:
    """Why the cache directory may not be trusted, or None (also None when it does not exist yet)."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot stat {directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory"
    problem = _owner_problem(st, f"cache directory {directory}", private=False)
    if problem is not None:
        return problem
    key = os.path.join(directory, KEY_FILE)
    try:
        kst = os.lstat(key)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot stat {key}: {exc.strerror or exc}"
    if not stat.S_ISREG(kst.st_mode):
        return f"key file {key} is not a regular file"
    return _owner_problem(kst, f"key file {key}", private=True)


def _read_nonblocking_fd(path: str, follow: bool = True) -> int:
    """A descriptor for a regular file, opened without blocking (a FIFO or device put at the path
    is refused at once, not waited on); ``follow=False`` refuses a symlink too."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_bounded(path: str, limit: int) -> bytes:
    """A regular file's bytes, opened without following a link or blocking (a FIFO is refused at
    once), at most ``limit`` bytes (more is an error)."""
    fd = _read_nonblocking_fd(path, follow=False)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise OSError(errno.EFBIG, "too large")
        chunks = []
        left = size  # entries are replaced atomically, never grown: the size read is the size
        while left > 0:
            data = os.read(fd, left)
            if not data:
                break
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_key(directory: str, create: bool) -> bytes:
    """The cache directory's HMAC key, checked as ssh checks its files; made (mode 0600) if absent
    and ``create``. Raises :class:`UntrustedCache` (with the reason) or FileNotFoundError."""
    problem = check_cache_dir(directory)
    if problem is not None:
        raise UntrustedCache(problem)
    path = os.path.join(directory, KEY_FILE)
    for _ in range(3):
        try:
            raw = _read_bounded(path, KEY_BYTES)
        except FileNotFoundError:
            if not create:
                raise
            _create_key(directory, path)
            continue
        except OSError as exc:
            raise UntrustedCache(f"key file {path}: {exc.strerror or exc}") from None
        problem = check_cache_dir(directory)  # the file just read (not a link) passes the owner rule
        if problem is not None:
            raise UntrustedCache(problem)
        if len(raw) != KEY_BYTES:
            raise UntrustedCache(f"key file {path} does not hold {KEY_BYTES} bytes")
        return raw
    raise UntrustedCache(f"key file {path} could not be created")


#: How :func:`_private_file` opens: what ``tempfile.mkstemp`` uses (new, not through a symlink, not
#: inherited, binary on Windows).
_PRIVATE_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                  | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _private_file(directory: str, prefix: str, suffix: str = "") -> Tuple[int, str]:
    """A new file only this user can read, as ``tempfile.mkstemp(suffix, prefix, directory)`` makes
    one (mode 0600, ``O_EXCL``, a random name, retried when taken), without importing ``tempfile``
    (and with it ``shutil`` and ``random``: ~2 ms of a hook run that stores a result)."""
    for _ in range(100):
        path = os.path.join(directory, prefix + os.urandom(8).hex() + suffix)
        try:
            return os.open(path, _PRIVATE_FLAGS, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name found", directory)


def _create_key(directory: str, path: str) -> None:
    """Write a new random key: a private temporary file, then ``link`` (fails if another process won)."""
    import secrets

    fd, tmp = _private_file(directory, ".tmp-key-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def tool_fingerprint() -> str:
    """The tool's version plus a digest of its code files' names, sizes and mtimes.

    The version alone is not enough: an editable install (or a patched package) changes behaviour
    without changing the version, and a stale result would be silently wrong.
    """
    import hashlib

    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256(f"safemodel-ci {__version__}\n".encode())
    for top, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith((".py", ".json")):
                continue
            full = os.path.join(top, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            rel = full[len(package) + 1:]  # what os.path.relpath gives, without its ~4 us a file
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    # Readers hand some content to libraries (h5py, py7zr, lz4) and the standard library (tarfile,
    # lzma, the pickle opcode table): their versions decide results too. Located, not imported.
    digest.update(sys.version.encode())
    for module in READER_LIBRARIES:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        try:
            lib = os.stat(origin) if origin else None
        except OSError:
            lib = None
        digest.update(f"{module}\0{origin}\0{lib.st_size if lib else -1}\0{lib.st_mtime_ns if lib else -1}\n"
                      .encode())
    return f"{__version__}+{digest.hexdigest()[:16]}"


def options_fingerprint(options: ScanOptions) -> str:
    """Everything besides the content that decides a result: tool, policy, limits."""
    import hashlib
    import json

    data = {
        "tool": tool_fingerprint(),
        "policy": options.policy.fingerprint(),
        "limits": options.limits.as_dict(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class RecordingSource(ByteSource):
    """Wraps a source and logs every read (offset, length, in order) with a digest of the bytes.

    Readers see the same bytes as from the wrapped source; the log is what :func:`replay_digest`
    repeats on a later run.
    """

    def __init__(self, inner: ByteSource) -> None:
        import hashlib
        from array import array  # here: a small file's scan logs no reads (0.2 ms of start-up)

        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.log = array("Q")
        self.digest = hashlib.sha256()
        #: True once more than MAX_LOGGED_READS reads were made: the result is then not cached.
        self.overflow = False

    @property
    def size(self) -> int:
        return self.inner.size

    def _read(self, offset: int, n: int) -> bytes:
        data = self.inner.read_at(offset, n)
        if not self.overflow:
            if len(self.log) >= 2 * MAX_LOGGED_READS:
                self.overflow = True
                from array import array

                self.log = array("Q")
            else:
                self.log.append(offset)
                self.log.append(len(data))
                self.digest.update(_REC.pack(offset, len(data)))
                self.digest.update(data)
        return data

    def close(self) -> None:
        self.inner.close()


#: Files up to this size are replayed from one read of the whole file (a scan of a small file
#: makes many small reads: detectors, headers, buffers), bigger ones read by read.
REPLAY_WHOLE = 1 << 20


def replay_digest(source: ByteSource, log: "array[int]") -> Optional[str]:
    """Repeat the logged reads on ``source`` and return their digest (None on a short read)."""
    import hashlib

    digest = hashlib.sha256()
    whole: Optional[bytes] = None
    if source.size <= REPLAY_WHOLE and len(log) > 2:
        whole = source.read_at(0, source.size)
    for i in range(0, len(log), 2):
        offset, n = log[i], log[i + 1]
        data = whole[offset:offset + n] if whole is not None else source.read_at(offset, n)
        if len(data) != n:
            return None
        digest.update(_REC.pack(offset, n))
        digest.update(data)
    return digest.hexdigest()


def _encode_log(log: "array[int]") -> str:
    import base64

    raw = log.tobytes() if sys.byteorder == "little" else _swapped(log).tobytes()
    if len(raw) <= 1024:  # a small file's few reads: compressing costs more than it saves
        return "r:" + base64.b64encode(raw).decode("ascii")
    return "z:" + base64.b64encode(zlib.compress(raw, 1)).decode("ascii")


def _decode_log(text: str) -> "array[int]":
    import base64
    from array import array

    log = array("Q")
    kind, _, body = text.partition(":")
    raw = base64.b64decode(body)
    if kind == "z":
        raw = zlib.decompress(raw)
    elif kind != "r":
        raise ValueError("unknown read-log encoding")
    log.frombytes(raw)
    return log if sys.byteorder == "little" else _swapped(log)


def _swapped(log: "array[int]") -> "array[int]":  # pragma: no cover - big-endian hosts
    from array import array

    copy = array("Q", log)
    copy.byteswap()
    return copy


class _TrackingContext(ScanContext):
    """Top-level context that notes when a reader looks beyond the scanned bytes (real path)."""

    used_outside = False

    @property  # type: ignore[override]
    def real_path(self) -> Optional[str]:
        value = ScanContext.real_path.fget(self)  # type: ignore[attr-defined]
        if value is not None:
            self.used_outside = True
        return value


class ResultCache:
    """A directory of result entries. Every method fails soft: trouble means "not cached"."""

    def __init__(self, directory: Optional[str] = None) -> None:
        self.directory = os.path.abspath(directory or default_cache_dir())
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self._made_dirs: set = set()
        #: Set after a failed write (read-only or full disk): this process stops trying to store.
        self._unwritable = False
        self._tool_dir_for: Tuple[Optional[str], str] = (None, "")
        self._key: Optional[bytes] = None
        #: Why this cache is not used (its directory or key file is not trusted), or None.
        self.problem: Optional[str] = check_cache_dir(self.directory)

    def _mac_key(self, create: bool) -> Optional[bytes]:
        """The HMAC key (made when ``create``); None when the cache is refused or has no key yet."""
        if self._key is not None or self.problem is not None:
            return self._key
        try:
            if create:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._key = load_key(self.directory, create)
        except FileNotFoundError:
            return None
        except UntrustedCache as exc:
            self.problem = str(exc)
            print(f"safemodel: warning: result cache not used: {self.problem}", file=sys.stderr)
        except OSError:
            self._unwritable = True
        return self._key

    # -- entries ----------------------------------------------------------------------------
    def _tool_dir(self) -> str:
        """Entries live under the tool fingerprint, so that an upgrade leaves a directory to delete."""
        fingerprint = tool_fingerprint()
        if self._tool_dir_for[0] != fingerprint:  # joined once per fingerprint, not once per look-up
            self._tool_dir_for = (fingerprint, os.path.join(self.directory, f"v{CACHE_FORMAT}",
                                                            fingerprint.replace("/", "_")))
        return self._tool_dir_for[1]

    def _entry_path(self, key: str) -> str:
        return f"{self._tool_dir()}{os.sep}{key[:2]}{os.sep}{key}.json"

    def prune(self, max_age_days: float = STALE_AFTER_DAYS) -> int:
        """Delete the entries of other tool versions and formats not used for ``max_age_days``.

        Each process marks its own version's directory as used when it first stores an entry, so
        two installed versions sharing the cache (the CLI and a pre-commit environment) keep theirs.
        """
        import time

        removed = 0
        current = self._tool_dir()
        cutoff = time.time() - max_age_days * 86400
        candidates = []
        try:
            for fmt in os.scandir(self.directory):
                if not fmt.is_dir(follow_symlinks=False) or not fmt.name.startswith("v"):
                    continue
                if fmt.name != f"v{CACHE_FORMAT}":
                    candidates.append(fmt.path)
                    continue
                candidates += [d.path for d in os.scandir(fmt.path) if d.is_dir(follow_symlinks=False)]
        except OSError:
            return 0
        for path in candidates:
            try:
                if path != current and os.stat(path).st_mtime < cutoff:
                    import shutil  # only when there is something to remove (~1 ms of a first store)

                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
            except OSError:
                continue
        return removed

    def _load(self, key: str) -> Optional[Dict[str, Any]]:
        import hashlib
        import hmac
        import json

        mac_key = self._mac_key(create=False)
        if mac_key is None:
            return None
        try:
            raw = _read_bounded(self._entry_path(key), MAX_ENTRY_BYTES)
            if not raw.startswith(_MAC_PREFIX) or raw[_MAC_END - 2:_MAC_END] != b'",':
                return None
            body = b"{" + raw[_MAC_END:]
            expected = hmac.new(mac_key, body, hashlib.sha256).hexdigest().encode()
            if not hmac.compare_digest(expected, raw[len(_MAC_PREFIX):_MAC_END - 2]):
                return None  # not written by a holder of this cache's key
            entry = json.loads(raw)
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
            return None
        return entry

    def _store(self, key: str, entry: Dict[str, Any]) -> bool:
        import hashlib
        import hmac
        import json

        if self._unwritable:
            return False
        mac_key = self._mac_key(create=True)
        if mac_key is None:
            return False
        path = self._entry_path(key)
        entry = dict(entry, format=CACHE_FORMAT, key=key)
        body = json.dumps(entry, separators=(",", ":")).encode()  # one write, not json.dump's many
        mac = hmac.new(mac_key, body, hashlib.sha256).hexdigest().encode()
        tmp = None
        try:
            directory = os.path.dirname(path)
            if directory not in self._made_dirs:  # one mkdir per directory and process, not per entry
                if not self._made_dirs:
                    self._first_store()
                os.makedirs(directory, mode=0o700, exist_ok=True)
                self._made_dirs.add(directory)
            fd, tmp = _private_file(os.path.dirname(path), ".tmp-", ".json")
            with os.fdopen(fd, "wb") as fh:
                fh.write(_MAC_PREFIX + mac + b'",' + body[1:])
            os.replace(tmp, path)  # atomic: readers see the old entry or the new one, never half
            tmp = None
            self.stores += 1
            return True
        except OSError:
            self._unwritable = True
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _first_store(self) -> None:
        """Once per process: mark this version's entries as in use, drop stale versions' entries."""
        tool_dir = self._tool_dir()
        os.makedirs(tool_dir, mode=0o700, exist_ok=True)
        os.utime(tool_dir)
        self.prune()

    @staticmethod
    def _entry(size: int, result: FileResult) -> Dict[str, Any]:
        """A result as stored: its report form, plus each finding's member chain (the report names
        a finding's member with the chain joined by ``:``, which a member name may itself hold)."""
        return {"size": size, "result": result.to_dict(),
                "members": [list(f.location.members) for f in result.findings]}

    @staticmethod
    def _result(entry: Dict[str, Any], display: str, at: Optional[Location] = None) -> Optional[FileResult]:
        """The stored result, if it was stored under ``display``: at ``at`` (where the caller's source
        says the file is) with each finding's member chain as stored; without ``at``, where its
        name reads (:meth:`FileResult.from_dict`)."""
        try:
            result = FileResult.from_dict(entry["result"])
        except (KeyError, TypeError, ValueError):
            return None
        if result.path != display or any(f.path != display for f in result.findings):
            return None
        where = at if at is not None else result.location
        chains = entry.get("members")
        if not (isinstance(chains, list) and len(chains) == len(result.findings)):
            chains = [None] * len(result.findings)
        placed = result.placed(where)  # an entry without chains: each joined member as one element
        for i, (f, chain) in enumerate(zip(result.findings, chains)):
            if (isinstance(chain, list) and all(isinstance(m, str) for m in chain)
                    and (":".join(chain) if chain else None) == f.member):
                placed.findings[i] = f.moved(where._replace(members=tuple(chain)))
        placed.cached = True
        return placed

    # -- local files, keyed by the bytes read -----------------------------------------------
    def file_key(self, real: str, size: int, display: str, fingerprint: str) -> str:
        import hashlib
        import json

        text = json.dumps(["file", fingerprint, real, size, display])
        return hashlib.sha256(text.encode()).hexdigest()

    def lookup_file(self, source: ByteSource, real: str, display: str,
                    fingerprint: str, judged: Optional[List[Judged]] = None) -> Optional[FileResult]:
        """The stored result for this file if the bytes its scan read are unchanged.

        On a hit, what the check hashed is appended to ``judged`` (when given)."""
        import hashlib

        evidence = Judged()
        key = self.file_key(real, source.size, display, fingerprint)
        entry = self._load(key)
        if entry is None or entry.get("size") != source.size:
            self.misses += 1
            return None
        try:
            if "whole_sha256" in entry:  # a small file: its whole content, hashed in one go
                digest: Optional[str] = hashlib.sha256(source.read_at(0, source.size)).hexdigest()
                expected = entry["whole_sha256"]
                evidence.sha256 = digest
            else:
                log = _decode_log(entry["reads"])
                # The log must check the head of a non-empty file (every scan reads it first): a log
                # that checks nothing would match any content of this size.
                if source.size and (len(log) < 2 or log[0] != 0 or log[1] == 0):
                    raise ValueError("read log covers no content")
                digest = replay_digest(source, log)
                expected = entry.get("digest")
                evidence.log, evidence.digest = log, digest
        except (KeyError, TypeError, ValueError, zlib.error, SourceError):
            digest, expected = None, True
        result = self._result(entry, display, Location.local(display)) if digest == expected else None
        if result is None:
            self.misses += 1
            return None
        # bytes_read stays what the scan read, so that a cached report is identical to a fresh one.
        self.hits += 1
        if judged is not None:
            judged.append(evidence)
        return result

    def store_file(self, recording: RecordingSource, real: str, display: str, fingerprint: str,
                   result: FileResult) -> bool:
        import hashlib

        key = self.file_key(real, recording.size, display, fingerprint)
        entry = self._entry(recording.size, result)
        whole = recording.inner.read_at(0, recording.size) if recording.size <= REPLAY_WHOLE else None
        scanned = recording.digest.hexdigest()
        if whole is not None and replay_digest(BytesSource(whole), recording.log) == scanned:
            # The file as it is now holds exactly the bytes the scan read (checked, so a file
            # changed during the scan is not paired with the old result): key it by its whole
            # content, which a re-run hashes in one call instead of replaying every read.
            entry["whole_sha256"] = hashlib.sha256(whole).hexdigest()
        else:
            entry["reads"] = _encode_log(recording.log)
            entry["digest"] = scanned
        return self._store(key, entry)

    def store_snapshot(self, source: FileSource, real: str, display: str, fingerprint: str,
                       result: FileResult) -> bool:
        """Store the result of a small file whose scan read only :meth:`FileSource.snapshot`."""
        import hashlib

        whole = source.snapshot()
        if whole is None:
            return False
        key = self.file_key(real, source.size, display, fingerprint)
        entry = self._entry(source.size, result)
        entry["whole_sha256"] = hashlib.sha256(whole).hexdigest()
        return self._store(key, entry)

    # -- content-addressed: a whole-file sha256 known without reading (a Hub LFS oid) --------
    def digest_key(self, sha256: str, size: int, display: str, fingerprint: str) -> str:
        import hashlib
        import json

        text = json.dumps(["sha256", fingerprint, sha256.lower(), size, display])
        return hashlib.sha256(text.encode()).hexdigest()

    def get_by_sha256(self, sha256: str, size: int, display: str,
                      options: ScanOptions, at: Optional[Location] = None) -> Optional[FileResult]:
        """The stored result for content with this sha256 and size, shown as ``display``, at ``at``
        (the Hub or cache file whose name ``display`` is)."""
        entry = self._load(self.digest_key(sha256, size, display, options_fingerprint(options)))
        result = self._result(entry, display, at) if entry is not None else None
        if result is None:
            self.misses += 1
            return None
        result.bytes_read = 0
        self.hits += 1
        return result

    def put_by_sha256(self, sha256: str, size: int, display: str, options: ScanOptions,
                      result: FileResult) -> bool:
        """Store a complete result for content with this sha256 (the caller vouches for the hash)."""
        if not result.complete:
            return False
        key = self.digest_key(sha256, size, display, options_fingerprint(options))
        return self._store(key, self._entry(size, result))


class Judged:
    """What a result was judged on, so that an ``ignore`` entry can be matched against exactly those
    bytes (never a second read made after the scan): the whole content's sha256 when the scan was
    served from one read of the whole file, else the scan's read log and the digest of its bytes.

    A plain class with the methods its dataclass had (init, repr, eq, no hash): creating a dataclass
    costs ~0.25 ms of every start-up (docs/benchmark.md, "Start-up").
    """

    __slots__ = ("sha256", "log", "digest")

    def __init__(self, sha256: Optional[str] = None, log: Optional["array[int]"] = None,
                 digest: Optional[str] = None) -> None:
        self.sha256 = sha256
        self.log = log
        self.digest = digest

    def __repr__(self) -> str:
        return f"Judged(sha256={self.sha256!r}, log={self.log!r}, digest={self.digest!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.sha256, self.log, self.digest) == (other.sha256, other.log, other.digest)  # type: ignore

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as the dataclass was


def tracking_siblings(open_sibling: SiblingOpener) -> Tuple[SiblingOpener, List[str]]:
    """``open_sibling`` plus the list of what it is asked for: a result that opened other files
    (shards of an index) depends on more than its own content and is not cached."""
    opened: List[str] = []

    def tracked(relative: str) -> Optional[ByteSource]:
        opened.append(relative)
        return open_sibling(relative)

    return tracked, opened


def cached_result(path: str, options: ScanOptions, cache: ResultCache, display_path: Optional[str] = None,
                  fingerprint: Optional[str] = None,
                  judged: Optional[List[Judged]] = None) -> Optional[FileResult]:
    """The cached result for a local file if the bytes its scan read are unchanged; never scans."""
    shown = display_path or path
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        source = FileSource(path, name=shown)
    except (OSError, SourceError):
        return None
    with source:
        return cache.lookup_file(source, os.path.abspath(path), shown,
                                 fingerprint or options_fingerprint(options), judged)


def scan_file_cached(path: str, options: ScanOptions, cache: Optional[ResultCache],
                     display_path: Optional[str] = None,
                     fingerprint: Optional[str] = None, lookup: bool = True,
                     judged: Optional[List[Judged]] = None) -> FileResult:
    """Scan one local file, reusing a cached result when the bytes its scan reads are unchanged.

    Without a cache (or for anything but a regular file) this is :func:`scanner.scan_file`.
    ``lookup=False`` skips the look-up (the caller just missed) but still stores the result.
    With ``judged`` (a list), what the result was judged on is appended to it (see :class:`Judged`);
    nothing is appended when that is not known (not a regular file, too many reads to log).
    """
    shown = display_path or path
    if cache is None and judged is None:
        return scan_file(path, options, shown)
    try:
        st = os.stat(path)
    except OSError:
        return scan_file(path, options, shown)
    if not stat.S_ISREG(st.st_mode):
        return scan_file(path, options, shown)
    try:
        source = FileSource(path, name=shown)
    except SourceError:
        return scan_file(path, options, shown)
    # The content is checked by replaying the reads, so the key needs no symlink resolution.
    real = os.path.abspath(path)
    fp = (fingerprint or options_fingerprint(options)) if cache is not None else ""
    with source:
        hit = cache.lookup_file(source, real, shown, fp, judged) if cache is not None and lookup else None
        if hit is not None:
            return hit
        # A small file is read once, whole, and every read served from that copy: its hash is the
        # key, and logging each read (to replay it later) would cost more than the scan.
        recording = None if source.snapshot() is not None else RecordingSource(source)
        start = source.bytes_read
        tracked_sibling, siblings_used = tracking_siblings(_local_siblings(path))
        ctx = _TrackingContext(shown, options.policy, options.limits, siblings=tracked_sibling)
        ctx._state.real_path = path
        scan_source(source if recording is None else recording, ctx)
        result = FileResult(path=shown, size=source.size, formats=list(ctx.formats),
                            findings=sort_findings(ctx.findings), bytes_read=source.bytes_read - start)
        if judged is not None:
            if recording is None:
                import hashlib

                judged.append(Judged(sha256=hashlib.sha256(source.snapshot() or b"").hexdigest()))
            elif not recording.overflow:
                judged.append(Judged(log=recording.log, digest=recording.digest.hexdigest()))
        if cache is not None and result.complete and not ctx.used_outside and not siblings_used:
            if recording is None:
                cache.store_snapshot(source, real, shown, fp, result)
            elif not recording.overflow:
                cache.store_file(recording, real, shown, fp, result)
    return result


__all__ = ["Judged", "ResultCache",
           "RecordingSource", "scan_file_cached", "cached_result", "tracking_siblings",
           "default_cache_dir", "options_fingerprint", "tool_fingerprint", "replay_digest"]
