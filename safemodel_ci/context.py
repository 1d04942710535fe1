"""What a format reader gets besides its bytes: where it is, the policy, the limits, a place to report,
and the operations it may use on other bytes (detect, scan, scan as a format, read a pickle at an
offset). Those operations are carried out by a :class:`ScanEngine` that the scanner injects: readers
never import the scanner or each other, and the context does not import the scanner either."""

from __future__ import annotations

import importlib
import os
import threading
import time
from abc import ABC, abstractmethod

from .findings import Finding, Location, Severity
from .record import Record
from .source import ByteSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, List, Mapping, Optional

    from .policy import Policy


class ScanLimitExceeded(Exception):
    """Raised by a reader (or :meth:`ScanContext.check_deadline`) when a limit is reached."""


class Limits(Record, frozen=True):
    """Bounds on the work done for one file. Exceeding one is an ``unscanned-limit`` finding. (A plain
    record, not a dataclass: see safemodel_ci/record.py.)"""

    __slots__ = ("max_depth", "max_members", "max_decompressed_bytes", "max_compression_ratio",
                 "max_seconds_per_file", "max_in_memory_bytes", "max_json_bytes", "max_pickle_stack",
                 "max_pickle_memo", "max_native_parse_seconds", "hub_max_tree_entries", "hub_max_tree_pages")

    #: Containers inside containers (zip in zip, pickle in pickle ...).
    max_depth: int
    #: Members read from one archive.
    max_members: int
    #: Bytes produced by decompression, per file (all members together).
    max_decompressed_bytes: int
    #: Decompressed / compressed size, once output exceeds 1 MiB.
    max_compression_ratio: int
    #: Wall-clock seconds spent on one top-level file.
    max_seconds_per_file: float
    #: Size of a single in-memory buffer (a JSON config, a protobuf, a header) a reader may hold.
    max_in_memory_bytes: int
    #: Size of a JSON document parsed into objects (a safetensors header, a shard index, a Keras,
    #: tokenizer or SavedModel metadata config). Parsing costs about ten bytes of memory per byte;
    #: real headers and configs stay far below (a 100,000-tensor safetensors header is ~10 MB).
    max_json_bytes: int
    #: Pickle VM: stack, memo and mark depth.
    max_pickle_stack: int
    max_pickle_memo: int
    #: Seconds a native parser (libhdf5 through h5py) may take in its isolated child process.
    max_native_parse_seconds: float
    #: ``safemodel hub``: entries and pages of one repo's tree listing (a real page holds 1,000).
    #: Reaching either is ``unscanned-limit`` for the repo; the files listed so far are scanned.
    hub_max_tree_entries: int
    hub_max_tree_pages: int

    def __init__(self, max_depth: int = 6, max_members: int = 100_000,
                 max_decompressed_bytes: int = 8 << 30, max_compression_ratio: int = 1000,
                 max_seconds_per_file: float = 300.0, max_in_memory_bytes: int = 256 << 20,
                 max_json_bytes: int = 16 << 20, max_pickle_stack: int = 1_000_000,
                 max_pickle_memo: int = 1_000_000, max_native_parse_seconds: float = 20.0,
                 hub_max_tree_entries: int = 200_000, hub_max_tree_pages: int = 1_000) -> None:
        set_ = object.__setattr__  # frozen: fields are set once, here
        set_(self, "max_depth", max_depth)
        set_(self, "max_members", max_members)
        set_(self, "max_decompressed_bytes", max_decompressed_bytes)
        set_(self, "max_compression_ratio", max_compression_ratio)
        set_(self, "max_seconds_per_file", max_seconds_per_file)
        set_(self, "max_in_memory_bytes", max_in_memory_bytes)
        set_(self, "max_json_bytes", max_json_bytes)
        set_(self, "max_pickle_stack", max_pickle_stack)
        set_(self, "max_pickle_memo", max_pickle_memo)
        set_(self, "max_native_parse_seconds", max_native_parse_seconds)
        set_(self, "hub_max_tree_entries", hub_max_tree_entries)
        set_(self, "hub_max_tree_pages", hub_max_tree_pages)

if TYPE_CHECKING:  # pragma: no cover
    #: Opens a file next to the one being scanned (same directory or repo), by relative path; None if
    #: absent. (Only annotations use it.)
    SiblingOpener = Callable[[str], Optional[ByteSource]]


class ScanEngine(ABC):
    """What a context asks of the scanner on a reader's behalf.

    The scanner implements it (``safemodel_ci.scanner.ENGINE``) and hands it to every context it
    makes; children inherit it. Readers reach it only through :class:`ScanContext` methods, so the
    import graph runs one way: scanner -> formats -> context.
    """

    @abstractmethod
    def detect(self, source: ByteSource) -> List[str]:
        """Names of the readers whose detectors accept ``source`` (after supersession), in order."""

    @abstractmethod
    def scan(self, source: ByteSource, ctx: "ScanContext") -> None:
        """Sniff ``source`` and run every reader that applies, reporting into ``ctx``."""

    @abstractmethod
    def scan_as(self, fmt: str, source: ByteSource, ctx: "ScanContext") -> None:
        """Scan ``source`` as the format ``fmt`` (a reader name) because its place claims it."""

    @abstractmethod
    def scan_pickle_at(self, source: ByteSource, ctx: "ScanContext", offset: int,
                       end: Optional[int] = None, **options: Any) -> Any:
        """Run the pickle VM over one stream starting at ``offset``; returns its result (``complete``,
        ``end``, ``start``, ``value``, ``top``, ``persistent_ids``)."""

    @abstractmethod
    def scan_pickle_stream(self, source: ByteSource, ctx: "ScanContext", offset: int = 0) -> None:
        """Scan every pickle stream from ``offset`` on, as the pickle reader does for a file."""

    @abstractmethod
    def looks_like_pickle(self, source: ByteSource, offset: int = 0) -> bool:
        """True when a pickle stream starts at ``offset`` (the pickle reader's detector)."""

    @abstractmethod
    def pickle_literal(self, value: Any, keep_globals: bool = False) -> Any:
        """A value the pickle VM built, as plain Python data when it is one (else unchanged)."""


_engine_lock = threading.Lock()
_default_engine: Optional[ScanEngine] = None


def install_engine(engine: ScanEngine) -> None:
    """Make ``engine`` the one used by contexts created without one (the scanner calls this)."""
    global _default_engine
    _default_engine = engine


def default_engine() -> ScanEngine:
    """The installed engine. A context made outside the scanner (a test, a tool) takes the
    scanner's, which is imported by name here: the context never imports the scanner statically,
    so the import graph keeps readers below the scanner."""
    if _default_engine is None:
        with _engine_lock:
            if _default_engine is None:
                importlib.import_module("safemodel_ci.scanner")  # installs its engine on import
    assert _default_engine is not None, "safemodel_ci.scanner did not install its engine"
    return _default_engine


class _FileState(Record):
    __slots__ = ("path", "findings", "formats", "deadline", "real_path", "decompressed_bytes")
    path: str
    findings: List[Finding]
    formats: List[str]
    deadline: float
    #: Filesystem path of the top-level file when it is a local file (``path`` is only for display).
    real_path: Optional[str]
    #: Bytes produced by decompression so far, all members together (``Limits.max_decompressed_bytes``).
    decompressed_bytes: int

    def __init__(self, path: str, findings: Optional[List[Finding]] = None,
                 formats: Optional[List[str]] = None, deadline: float = 0.0, real_path: Optional[str] = None,
                 decompressed_bytes: int = 0) -> None:
        self.path = path
        self.findings = [] if findings is None else findings
        self.formats = [] if formats is None else formats
        self.deadline = deadline
        self.real_path = real_path
        self.decompressed_bytes = decompressed_bytes


class ScanContext:
    """Per-member view of the scan of one top-level file.

    Readers call :meth:`report` for findings, :meth:`child` to descend into a member and
    :meth:`scan` to have a member's bytes sniffed and scanned by every reader that applies.
    """

    def __init__(self, path: str, policy: "Policy", limits: Limits = Limits(),
                 member: Optional[str] = None, depth: int = 0,
                 siblings: Optional[SiblingOpener] = None,
                 _state: Optional[_FileState] = None, engine: Optional[ScanEngine] = None,
                 location: Optional[Location] = None) -> None:
        # Where this context is, as data: the file's location (local unless the source says where
        # its bytes came from) and the chain of members down to here, one element per level.
        if location is None:
            location = Location.local(path, member)
        self.location = location
        #: The file as reports name it, and the member chain as reports show it (``outer:inner``).
        self.path = location.display
        self.member = location.member
        self._engine = engine
        self.policy = policy
        self.limits = limits
        self.depth = depth
        self.siblings = siblings
        self._state = _state or _FileState(self.path, deadline=time.monotonic() + limits.max_seconds_per_file)

    # -- reporting -------------------------------------------------------------------------
    def json_too_large(self, size: int, what: str, offset: Optional[int] = None) -> bool:
        """True (and an ``unscanned-limit`` finding) when a JSON document of ``size`` bytes is over
        :attr:`Limits.max_json_bytes`: it is not parsed, and the file is not reported clean."""
        limit = self.limits.max_json_bytes
        if size <= limit:
            return False
        self.report("unscanned-limit",
                    f"{what} of {size:,} bytes was not parsed: over the limit of {limit:,} bytes for "
                    "JSON documents (parsing takes about ten bytes of memory per byte); raise "
                    "limits.max-json-bytes in the config to check it", offset=offset,
                    details={"limit": "max_json_bytes", "size": size, "max_json_bytes": limit})
        return True

    def report(self, rule_id: str, message: str, *, offset: Optional[int] = None,
               severity: Optional[Severity] = None, details: Optional[Mapping[str, Any]] = None,
               remedy: Optional[str] = None) -> Finding:
        """Record a finding of ``rule_id`` at this context's member (and ``offset`` inside it)."""
        # The one door (rules table, then the policy), at this context's location: the file where
        # the source says its bytes came from, and the member chain down to here.
        finding = self.policy.finding(rule_id, self.location, message,
                                      offset=offset, details=details, severity=severity, remedy=remedy)
        self._state.findings.append(finding)
        return finding

    def add_format(self, name: str) -> None:
        label = f"{self.member}={name}" if self.member else name
        if label not in self._state.formats:
            self._state.formats.append(label)

    @property
    def findings(self) -> List[Finding]:
        return self._state.findings

    @property
    def formats(self) -> List[str]:
        return self._state.formats

    # -- descending ------------------------------------------------------------------------
    def child(self, member: str) -> "ScanContext":
        """Context for a member inside the current one: its location's member chain grows by one
        element (reports show the chain as ``outer:inner``)."""
        return ScanContext(self.path, self.policy, self.limits, depth=self.depth + 1, siblings=None,
                           _state=self._state, engine=self._engine, location=self.location.inside(member))

    def enter(self, member: str, what: str = "not scanned") -> Optional["ScanContext"]:
        """The child context for ``member``, or None (and an ``unscanned-limit`` finding there) when
        it would nest deeper than :attr:`Limits.max_depth`. The one place depth is checked."""
        ctx = self.child(member)
        if ctx.depth > self.limits.max_depth:
            ctx.report("unscanned-limit", f"nesting deeper than {self.limits.max_depth} levels; {what}",
                       details={"limit": "max_depth"})
            return None
        return ctx

    def with_policy(self, policy: "Policy") -> "ScanContext":
        """The same place and findings, judged with another policy (TorchScript pickles: torch.jit's
        unpickler resolves globals differently from Python's)."""
        return ScanContext(self.path, policy, self.limits, depth=self.depth, siblings=self.siblings,
                           _state=self._state, engine=self._engine, location=self.location)

    def isolated(self) -> "ScanContext":
        """A context at the same place whose findings and formats are kept apart (a trial reading
        of bytes that may not be what they look like). The time and decompression budgets stay
        the file's: hand the context back with :meth:`adopt`."""
        state = _FileState(self._state.path, deadline=self._state.deadline,
                           decompressed_bytes=self._state.decompressed_bytes)
        return ScanContext(self.path, self.policy, self.limits, depth=self.depth, siblings=None,
                           _state=state, engine=self._engine, location=self.location)

    def adopt(self, trial: "ScanContext", keep_findings: bool) -> None:
        """Take back an :meth:`isolated` context: its budget use always, its findings if asked."""
        self._state.decompressed_bytes = max(self._state.decompressed_bytes, trial._state.decompressed_bytes)
        if keep_findings:
            self._state.findings.extend(trial._state.findings)
            for label in trial._state.formats:
                if label not in self._state.formats:
                    self._state.formats.append(label)

    # -- what a reader may do with other bytes (through the engine) ---------------------------
    @property
    def engine(self) -> ScanEngine:
        """The engine this context's operations run on (the scanner's unless one was injected)."""
        return self._engine if self._engine is not None else default_engine()

    def _at(self, member: Optional[str]) -> Optional["ScanContext"]:
        if member is not None:
            return self.enter(member)
        if self.depth > self.limits.max_depth:  # a child made with child(), not enter()
            self.report("unscanned-limit", f"nesting deeper than {self.limits.max_depth} levels; not scanned",
                        details={"limit": "max_depth"})
            return None
        return self

    def detect(self, source: ByteSource) -> List[str]:
        """Names of the readers that detect ``source`` (nothing is scanned or reported)."""
        return self.engine.detect(source)

    def scan(self, source: ByteSource, member: Optional[str] = None) -> None:
        """Sniff ``source`` and run every reader that applies (in a child context if ``member``)."""
        ctx = self._at(member)
        if ctx is not None:
            self.engine.scan(source, ctx)

    def scan_as(self, fmt: str, source: ByteSource, member: Optional[str] = None) -> None:
        """Scan ``source`` as format ``fmt`` (a reader name, e.g. ``"pickle"``) because its place
        claims it: a loader reads it as that format whatever its bytes look like, so the reader runs
        without sniffing and what it cannot read is a finding. Other readers that detect the content
        run too. ``member``: descend into a child context first, as :meth:`scan` does."""
        ctx = self._at(member)
        if ctx is not None:
            self.engine.scan_as(fmt, source, ctx)

    def scan_pickle_at(self, source: ByteSource, offset: int = 0, end: Optional[int] = None,
                       **options: Any) -> Any:
        """Read one pickle stream at ``offset`` (up to ``end``) with the pickle VM, reporting here.
        Returns the VM's result: ``complete``, ``start``, ``end``, ``value``, ``top``,
        ``persistent_ids``. ``options``: the VM's keyword options (``torch_archive=True``)."""
        return self.engine.scan_pickle_at(source, self, offset, end, **options)

    def scan_pickle_stream(self, source: ByteSource, offset: int = 0) -> None:
        """Scan every pickle stream from ``offset`` to the end (what follows a STOP included)."""
        self.engine.scan_pickle_stream(source, self, offset)

    def looks_like_pickle(self, source: ByteSource, offset: int = 0) -> bool:
        """True when a pickle stream starts at ``offset`` (nothing is reported)."""
        return self.engine.looks_like_pickle(source, offset)

    def pickle_literal(self, value: Any, keep_globals: bool = False) -> Any:
        """A value the pickle VM built (``result.top``) as plain data when it is one."""
        return self.engine.pickle_literal(value, keep_globals)

    @property
    def real_path(self) -> Optional[str]:
        """Filesystem path of the scanned file itself (None for members and non-local sources)."""
        return self._state.real_path if self.member is None else None

    def charge_decompressed(self, n: int) -> None:
        """Count ``n`` decompressed bytes against the per-file budget; raise once it is spent."""
        self._state.decompressed_bytes += n
        if self._state.decompressed_bytes > self.limits.max_decompressed_bytes:
            raise ScanLimitExceeded(
                f"decompressed-bytes limit of {self.limits.max_decompressed_bytes} bytes per file reached")

    def check_deadline(self) -> None:
        """Raise :class:`ScanLimitExceeded` once the per-file time budget is spent."""
        if time.monotonic() > self._state.deadline:
            raise ScanLimitExceeded(f"time budget of {self.limits.max_seconds_per_file:g}s per file spent")

    def open_sibling(self, relative: str) -> Optional[ByteSource]:
        """A file beside the scanned one (a shard named by an index), when the source offers them."""
        if self.siblings is None or self.member is not None:
            return None
        return self.siblings(relative)

    @property
    def display_name(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

    @property
    def basename(self) -> str:
        """Name of the innermost member or file (an extension hint for messages only)."""
        name = self.member.rsplit(":", 1)[-1] if self.member else self.path
        return os.path.basename(name.replace("\\", "/"))
