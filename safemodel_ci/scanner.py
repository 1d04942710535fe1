"""The scan: sniff a source, run every reader that applies, collect a :class:`FileResult`."""

from __future__ import annotations

import os
import posixpath
import stat

from .context import Limits, ScanContext, ScanEngine, ScanLimitExceeded, install_engine
from .findings import FileResult, Location, sort_findings
from . import formats
from .formats import load, load_named
from .formats.interface import FormatReader
from .loader_names import check_binding, pickle_fails_at_once
from .policy import Policy
from .record import Record
from .source import ByteSource, FileSource, SourceError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from .context import SiblingOpener
    from typing import Any, Dict, List, Optional, Tuple, Union

#: Bytes handed to every detector. Detectors needing more read it from the source themselves.
HEAD_SIZE = 4096

#: Extensions of files that are meant to be models: an unrecognised one gets a notice.
MODEL_EXTENSIONS = frozenset({
    ".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".npy", ".npz", ".h5", ".hdf5",
    ".keras", ".safetensors", ".gguf", ".onnx", ".pb", ".msgpack", ".dill", ".sav", ".model",
    ".mar", ".pt2", ".ptl", ".tar", ".7z", ".zip", ".pdparams", ".nemo", ".llamafile", ".tflite",
})


#: Extensions of files whose loaders unpickle whatever they are given (pickle.load, joblib.load,
#: torch.load of a file that is not a zip): content no reader detects is still read as a pickle.
#: ``.bin`` is left out: raw tensor data (ONNX external weights, GGML) is named so as well.


class ScanOptions(Record, frozen=True):
    """Everything that decides a scan's result (and so belongs in a result-cache key). (A plain
    record, not a dataclass: see safemodel_ci/record.py.)"""

    __slots__ = ("policy", "limits")
    policy: Policy
    limits: Limits

    def __init__(self, policy: Optional[Policy] = None, limits: Optional[Limits] = None) -> None:
        object.__setattr__(self, "policy", Policy() if policy is None else policy)
        object.__setattr__(self, "limits", Limits() if limits is None else limits)


#: Contents this short are detected once per process: detection depends on the content alone, and
#: the same few bytes recur (every torch checkpoint has "version", "byteorder", ... members).
TINY_CONTENT = 64
#: content -> (readers that accept it, bytes the detectors read)
_tiny_detected: Dict[bytes, Tuple[List[FormatReader], int]] = {}


def detect(source: ByteSource, head: Optional[bytes] = None) -> List[FormatReader]:
    """Every reader whose detector accepts the source, minus those another one supersedes.

    Readers are asked in the detector table's order; a reader's module is imported only when its
    row's gate passes (see :mod:`safemodel_ci.formats`), and its own ``detect`` then decides."""
    if head is None:
        head = source.head(HEAD_SIZE)
    rows = formats.ROWS
    by_content, by_name = formats.split_rows()
    # Readers that go by the file's name are asked every time; only content detection is remembered.
    named = [load(i) for i in by_name if rows[i].gate(source, head) and load(i).detect(source, head)]
    tiny = source.size <= TINY_CONTENT and len(head) == source.size
    if tiny:
        known = _tiny_detected.get(head)
        if known is not None:
            found, cost = known
            _charge(source, cost)
            return list(found) + named
        before = source.bytes_read
    matched = [load(i) for i in by_content if rows[i].gate(source, head) and load(i).detect(source, head)]
    names = {r.name for r in matched}
    superseded = {s for r in matched for s in r.supersedes if s in names}
    found = [r for r in matched if r.name not in superseded]
    if tiny and len(_tiny_detected) < 4096:
        _tiny_detected[head] = (found, source.bytes_read - before)
    return list(found) + named


def _charge(source: ByteSource, n: int) -> None:
    """Read ``n`` bytes of a tiny source again, as its detectors did: byte counts in reports (and
    the result cache's read log) come out the same whether detection was remembered or not."""
    while n > 0:
        got = len(source.read_at(0, min(n, source.size)))
        if not got:
            break
        n -= got


def _run_reader(reader: FormatReader, source: ByteSource, ctx: ScanContext) -> None:
    """Run one reader; whatever goes wrong becomes a finding, never a crash and never a pass."""
    try:
        ctx.check_deadline()
        reader.scan(source, ctx)
    except ScanLimitExceeded as exc:
        ctx.report("unscanned-limit", f"{reader.name}: {exc}")
    except SourceError as exc:
        ctx.report("unscanned-unreadable", f"{reader.name}: could not read: {exc}")
    except (RecursionError, MemoryError) as exc:
        ctx.report("unscanned-limit",
                   f"{reader.name}: structure too deep or too large ({type(exc).__name__})")
    except Exception as exc:  # noqa: BLE001 - any reader bug must fail closed, with a message
        ctx.report("scanner-error", f"{reader.name} reader failed: {type(exc).__name__}: {exc}")


def _sniff(source: ByteSource, ctx: ScanContext) -> Tuple[Optional[bytes], Optional[List[FormatReader]]]:
    """The head and the readers that detect ``source``; a failure is reported into ``ctx`` (head
    None: nothing could be read; readers None: detection itself failed)."""
    try:
        head = source.head(HEAD_SIZE)
    except SourceError as exc:
        ctx.report("unscanned-unreadable", f"could not read: {exc}")
        return None, None
    try:
        return head, detect(source, head)
    except SourceError as exc:
        ctx.report("unscanned-unreadable", f"could not read: {exc}")
        return None, None
    except Exception as exc:  # noqa: BLE001
        ctx.report("scanner-error", f"format detection failed: {type(exc).__name__}: {exc}")
        return head, None


def scan_source(source: ByteSource, ctx: ScanContext) -> None:
    """Sniff ``source`` and scan it with every applicable reader, reporting into ``ctx``."""
    _, found = _sniff(source, ctx)
    if found is not None:
        _scan_found(source, ctx, found)


def reader_named(name: str) -> FormatReader:
    """The registered reader called ``name`` (KeyError when there is none); imports only its module."""
    return load_named(name)


def scan_claimed(source: ByteSource, ctx: ScanContext, fmt: str) -> None:
    """Scan ``source`` as ``fmt`` because its place says it is one (a torch archive's ``data.pkl``,
    a joblib file's decompressed stream, a legacy torch tar's ``pickle``): the loader reads it as
    that format whatever its first bytes look like, so the reader runs without asking its detector,
    and what it cannot read is its finding (never "not this format", never a pass). Readers whose
    detectors also accept the content run as well (a polyglot is read every way)."""
    claimed = reader_named(fmt)
    head, detected = _sniff(source, ctx)
    if head is None:
        return
    found = detected if detected is not None else []
    if fmt == "pickle" and any(r.name != fmt for r in found) and pickle_fails_at_once(head):
        # Another format reads these bytes and every unpickler raises on the first byte before
        # doing anything (not an opcode, or an opcode that pops from the empty stack): the
        # pickle reading has nothing to scan (a gzip'd tar handed to joblib, say).
        found = [r for r in found if r.name != fmt]
    elif all(r.name != fmt for r in found):
        # A reader the claimed one supersedes (or that supersedes it) reads the same bytes: the
        # claimed reading replaces the other only where the claimed reader covers it.
        found = [claimed] + [r for r in found if r.name not in claimed.supersedes]
    _scan_found(source, ctx, found)


def _scan_found(source: ByteSource, ctx: ScanContext, found: List[FormatReader]) -> None:
    for reader in found:
        ctx.add_format(reader.name)
    if len(found) > 1:
        names = [r.name for r in found]
        clash = [a for a in found for b in found
                 if a is not b and b.name not in a.compatible and a.name not in b.compatible]
        if clash:
            ctx.report("polyglot", "content is valid as " + " and as ".join(names) +
                       ": different loaders would read different things; every reading was scanned",
                       offset=0, details={"formats": names})
    # A name that binds a loader (model.safetensors, x.pkl) is checked against what that loader reads.
    bound = check_binding(source, ctx, [r.name for r in found])
    # A pickle-loader name (x.pkl, x.pt) is read by the pickle VM there, up to where the loader
    # would fail: what it cannot walk to STOP is a finding, never an unrecognised file.
    if not found and ctx.member is None and not bound:
        ext = os.path.splitext(ctx.path)[1].lower()
        if ext in MODEL_EXTENSIONS:
            ctx.report("unrecognized-format",
                       f"named like a model ({ext}) but the content matches no model format")
    for reader in found:
        _run_reader(reader, source, ctx)


class Engine(ScanEngine):
    """The scanner's side of :class:`ScanContext`'s reader operations: detection and dispatch over
    the registry, and the pickle VM for readers that find pickles inside their own layout (numpy
    object arrays, legacy torch files, torch archives). Readers reach these only through the context."""

    def detect(self, source: ByteSource) -> List[str]:
        return [r.name for r in detect(source)]

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        scan_source(source, ctx)

    def scan_as(self, fmt: str, source: ByteSource, ctx: ScanContext) -> None:
        scan_claimed(source, ctx, fmt)

    def scan_pickle_at(self, source: ByteSource, ctx: ScanContext, offset: int,
                       end: Optional[int] = None, **options: Any) -> Any:
        from .formats.pickle import scan_pickle_at

        return scan_pickle_at(source, ctx, offset, end, **options)

    def scan_pickle_stream(self, source: ByteSource, ctx: ScanContext, offset: int = 0) -> None:
        from .formats.pickle import scan_pickle_stream

        scan_pickle_stream(source, ctx, offset)

    def looks_like_pickle(self, source: ByteSource, offset: int = 0) -> bool:
        from .formats.pickle import looks_like_pickle

        return looks_like_pickle(source, offset)

    def pickle_literal(self, value: Any, keep_globals: bool = False) -> Any:
        from .formats.pickle import _maybe_literal

        return _maybe_literal(value, keep_globals=keep_globals)


#: The engine every context of a scan uses (contexts made elsewhere find it through the context module).
ENGINE = Engine()
install_engine(ENGINE)


def _local_siblings(path: str) -> SiblingOpener:
    base = os.path.dirname(os.path.abspath(path))

    def open_sibling(relative: str) -> Optional[ByteSource]:
        rel = posixpath.normpath(relative.replace("\\", "/"))
        if rel.startswith("../") or rel == ".." or posixpath.isabs(rel):
            return None
        full = os.path.join(base, rel)
        if not os.path.isfile(full):
            return None
        try:
            return FileSource(full, name=os.path.join(os.path.dirname(path), rel))
        except SourceError:
            return None

    return open_sibling


def scan_byte_source(source: ByteSource, where: Union[str, Location], options: ScanOptions,
                     siblings: Optional[SiblingOpener] = None,
                     real_path: Optional[str] = None) -> FileResult:
    """Scan one top-level source (a local file, a Hub file, a cache blob) into a :class:`FileResult`.

    ``where`` is the file's :class:`Location` (a Hub or cache source says where its bytes came from,
    so every finding is born there), or the displayed name of a local file. ``real_path`` is the
    local filesystem path when there is one (readers such as the Git LFS one need it to find the
    repository holding the file).
    """
    at = Location.local(where) if isinstance(where, str) else where
    ctx = ScanContext(at.display, options.policy, options.limits, siblings=siblings, engine=ENGINE,
                      location=at)
    ctx._state.real_path = real_path
    start = source.bytes_read
    scan_source(source, ctx)
    return FileResult(path=at.display, size=source.size, formats=list(ctx.formats),
                      findings=sort_findings(ctx.findings), bytes_read=source.bytes_read - start, location=at)


def scan_file(path: str, options: ScanOptions, display_path: Optional[str] = None,
              location: Optional[Location] = None) -> FileResult:
    """Scan one local file, reported as ``location`` (default: the local file ``display_path``, else
    ``path``)."""
    at = location if location is not None else Location.local(display_path or path)
    shown = at.display
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        mode = None
        error = exc.strerror or str(exc)
    if mode is None or not stat.S_ISREG(mode):
        ctx = ScanContext(shown, options.policy, options.limits, engine=ENGINE, location=at)
        if mode is None:
            ctx.report("unscanned-unreadable", f"could not open: {error}")
        elif stat.S_ISDIR(mode):  # a directory the walk could not list: its files were not scanned
            ctx.report("unscanned-unreadable", "a directory that could not be listed; its files were not "
                                               "scanned")
        else:
            ctx.report("skipped-not-regular", "not a regular file (fifo, device or socket); not read")
        return FileResult(path=shown, findings=list(ctx.findings), location=at)
    try:
        source = FileSource(path, name=shown)
    except SourceError as exc:
        ctx = ScanContext(shown, options.policy, options.limits, engine=ENGINE, location=at)
        ctx.report("unscanned-unreadable", f"could not open: {exc}")
        return FileResult(path=shown, findings=list(ctx.findings), location=at)
    with source:
        return scan_byte_source(source, at, options, siblings=_local_siblings(path), real_path=path)


__all__ = ["ENGINE", "Engine", "ScanOptions", "detect", "scan_source", "scan_claimed",
           "reader_named", "scan_byte_source", "scan_file"]
