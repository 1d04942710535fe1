"""What a scan produces: severities, findings, per-file results and the whole report."""

from __future__ import annotations

import enum
import os
from collections import namedtuple

from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

#: Exit codes shared by every entry point (CLI, pre-commit hook, GitHub Action, Hub commands).
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INCOMPLETE = 2
EXIT_USAGE = 3

#: INFO findings that say the config changed a verdict (an allow or ignore entry): every output
#: lists them, whatever its minimum severity, so an exception the config makes is never silent.
CONFIG_DECISIONS = frozenset({"allowed-by-config", "ignored-by-config"})


class Severity(enum.IntEnum):
    """Severities as ModelScan names them, plus INFO for notices that never block."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls if s is not cls.INFO)
            raise ValueError(f"unknown severity {text!r} (expected one of: {names})") from None


#: Kinds of :class:`Location`: where the bytes of a reported file came from.
LOCAL = "file"
HUB = "hub"
HF_CACHE = "hf-cache"


class Location(namedtuple("Location", ("kind", "path", "repo", "revision", "members"),
                          defaults=(LOCAL, "", None, None, ()))):
    """Where a finding (or a file, or a whole target) is, as data: the writers format it.

    ``kind`` (str) says where the bytes came from (:data:`LOCAL`, :data:`HUB`, :data:`HF_CACHE`);
    ``repo`` and ``revision`` (str or None) name a Hub repo (``org/name``, with a ``datasets/`` or
    ``spaces/`` prefix for those types) at a commit; ``path`` (str) is the local path, or the path
    inside the repo (empty for the repo itself); ``members`` (a tuple of str) is the chain of
    containers inside the file, outermost first. Immutable, hashable and picklable (a named tuple:
    cheap to make once per finding; ``collections.namedtuple``, as ``typing.NamedTuple`` would
    compile each field's annotation at import: start-up).
    """

    __slots__ = ()

    @classmethod
    def local(cls, path: str, member: Optional[str] = None) -> "Location":
        """A local file (``member``: the member path inside it, as a reader names it)."""
        return cls(LOCAL, path, members=(member,) if member else ())

    @classmethod
    def in_repo(cls, kind: str, repo: str, revision: Optional[str], path: str = "") -> "Location":
        """A file of a Hub repo at ``revision`` (``path`` empty: the repo itself)."""
        return cls(kind, path, repo=repo, revision=revision)

    @property
    def display(self) -> str:
        """How every report names the file: the local path, or ``repo[@revision][:path]``."""
        if self.repo is None:
            return self.path
        text = self.repo
        if self.revision:
            text += f"@{self.revision}"
        return f"{text}:{self.path}" if self.path else text

    @property
    def member(self) -> Optional[str]:
        """The member chain as reports show it (``outer:inner``), None at the top of the file."""
        return ":".join(self.members) if self.members else None

    @property
    def file(self) -> "Location":
        """The same file, without the member chain."""
        return self._replace(members=()) if self.members else self

    def inside(self, member: Optional[str]) -> "Location":
        """A member inside this location (the chain grows by one; None: this location). An empty
        name is a member too (a crafted archive's nameless entry), so reports show it as before."""
        if member is None:
            return self
        kind, path, repo, revision, members = self
        # tuple.__new__, not _replace: a context is made per archive member (~0.3 us against ~0.8 us).
        return tuple.__new__(Location, (kind, path, repo, revision, members + (member,)))

    def at(self, file: "Location") -> "Location":
        """This member chain inside another ``file`` (a result shown under the name its source gave it)."""
        return file._replace(members=self.members) if self.members else file.file

    def __str__(self) -> str:
        member = self.member
        return f"{self.display}:{member}" if member else self.display

    @classmethod
    def parse(cls, text: str, member: Optional[str] = None, target: bool = False) -> "Location":
        """The location that ``text`` names in a report read back from JSON (``safemodel merge``,
        the Action): the one place a displayed name is taken apart, because report schema v1
        carries names, not locations. Writers never parse; they format :class:`Location`. A scan
        never parses either: sources hand their location to the scanner, and contexts grow it.

        Why read-back still parses: schema v1 (``schemas/report-v1.json``) closes files, findings and
        errors with ``additionalProperties: false``, and consumers validate reports against their own
        copy of it. A structured location field, even an optional one, would make every new report
        invalid under the schema they hold, and the JSON report must stay byte-for-byte what it is.
        Structured locations in reports wait for a schema v2. What a name cannot tell is lost on
        read-back: an ``hf-cache`` file reads as a Hub file (both are shown ``org/name@rev:path``), and
        the member chain comes back as one element (``member`` joins the chain with ``:``, which a
        member name may hold too). The result cache, which is not a report, keeps the chains.

        ``org/name@revision:path`` (``datasets/`` or ``spaces/`` prefix allowed) is a Hub file and,
        for a ``target`` (a whole-target error), ``org/name[@revision]`` is a Hub repo; unless such a
        path exists locally. Anything else is a local path.
        """
        members = (member,) if member else ()
        head, colon, inner = text.partition(":")
        repo, at, revision = head.partition("@")
        if colon:
            hub = bool(at and inner) and _revision(revision) and _repo_id(repo)
        else:
            hub = target and (not at or _revision(revision)) and _repo_id(repo)
        if not hub or os.path.lexists(text):
            return cls(LOCAL, text, members=members)
        return cls(HUB, inner, repo=repo, revision=revision or None, members=members)


def _repo_id(text: str) -> bool:
    """``org/name``, ``datasets/org/name`` or ``spaces/org/name``; no whitespace, ``@`` or ``:``."""
    parts = text.split("/")
    if len(parts) == 3 and parts[0] in ("datasets", "spaces"):
        parts = parts[1:]
    return len(parts) == 2 and all(p and not any(c.isspace() or c in "@:" for c in p) for p in parts)


def _revision(text: str) -> bool:
    """A revision as reports print it: letters, digits, ``.``, ``_``, ``-``."""
    return bool(text) and all(c.isascii() and (c.isalnum() or c in "._-") for c in text)


class Finding(Record, frozen=True):
    """One thing found in one file.

    Made by :meth:`safemodel_ci.policy.Policy.finding` (a rule id of the rules table, a
    :class:`Location`, judged by the policy); readers report through ``ScanContext.report``, which
    goes through the same door.

    ``location`` is where it is, as data; ``path`` (the file as reports name it) and ``member`` (the
    path inside a container, nested containers joined with ``:``) follow from it. ``offset`` is the
    byte offset inside the innermost member (or the file), ``unscanned`` marks findings that mean the
    file could not be fully inspected (those never make a file clean).
    """

    # A plain record, not a dataclass: see safemodel_ci/record.py (start-up cost).
    __slots__ = ("rule_id", "severity", "path", "message", "remedy", "member", "offset", "unscanned",
                 "details", "location")
    rule_id: str
    severity: Severity
    path: str
    message: str
    remedy: str
    member: Optional[str]
    offset: Optional[int]
    unscanned: bool
    details: Mapping[str, Any]
    #: Where it is; None (a finding made from ``path`` and ``member`` alone) means a local file.
    location: Location

    def __init__(self, rule_id: str, severity: Severity, path: str, message: str, remedy: str,
                 member: Optional[str] = None, offset: Optional[int] = None, unscanned: bool = False,
                 details: Optional[Mapping[str, Any]] = None, location: Optional[Location] = None) -> None:
        set_ = object.__setattr__  # frozen: fields are set once, here
        set_(self, "rule_id", rule_id)
        set_(self, "severity", severity)
        set_(self, "message", message)
        set_(self, "remedy", remedy)
        set_(self, "offset", offset)
        set_(self, "unscanned", unscanned)
        set_(self, "details", {} if details is None else details)
        # One truth: path and member follow the location when there is one.
        if location is None:
            set_(self, "path", path)
            set_(self, "member", member)
            set_(self, "location", Location.local(path, member))
        else:
            set_(self, "path", location.display)
            set_(self, "member", location.member)
            set_(self, "location", location)

    def placed(self, file: Location) -> "Finding":
        """The same finding in another file location (its member chain kept)."""
        return self.moved(self.location.at(file))

    def moved(self, location: Location) -> "Finding":
        """The same finding at ``location`` (a result read back from the result cache, whose entry
        keeps each finding's member chain)."""
        return self.replace(location=location)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.name,
            "path": self.path,
            "member": self.member,
            "offset": self.offset,
            "message": self.message,
            "remedy": self.remedy,
            "unscanned": self.unscanned,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Finding":
        return cls(
            rule_id=data["rule_id"],
            severity=Severity[data["severity"]],
            path=data["path"],
            message=data["message"],
            remedy=data["remedy"],
            member=data.get("member"),
            offset=data.get("offset"),
            unscanned=bool(data.get("unscanned", False)),
            details=dict(data.get("details") or {}),
        )


class FileResult(Record):
    """Everything found in one scanned file (or Hub file, or cache entry)."""

    __slots__ = ("path", "size", "formats", "findings", "bytes_read", "cached", "location")
    path: str
    size: int
    formats: List[str]
    findings: List[Finding]
    bytes_read: int
    cached: bool
    #: Where the file is; None (a result made from ``path`` alone) means a local file.
    location: Location

    def __init__(self, path: str, size: int = 0, formats: Optional[List[str]] = None,
                 findings: Optional[List[Finding]] = None, bytes_read: int = 0, cached: bool = False,
                 location: Optional[Location] = None) -> None:
        self.size = size
        self.formats = [] if formats is None else formats
        self.findings = [] if findings is None else findings
        self.bytes_read = bytes_read
        self.cached = cached
        if location is None:
            self.path = path
            self.location = Location.local(path)
        else:
            self.path = location.display
            self.location = location

    def placed(self, file: Location) -> "FileResult":
        """This result under the location its source gives the file, every finding with it (a
        source scans bytes under their displayed name and says where they are)."""
        return self.replace(location=file, findings=[f.placed(file) for f in self.findings])

    @property
    def complete(self) -> bool:
        """True when every byte that a loader would act on was inspected."""
        return not any(f.unscanned for f in self.findings)

    def blocking(self, fail_on: Severity) -> List[Finding]:
        return [f for f in self.findings if not f.unscanned and f.severity >= fail_on]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "formats": list(self.formats),
            "complete": self.complete,
            "bytes_read": self.bytes_read,
            "findings": [f.to_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FileResult":
        """A result read back from a JSON report or the result cache (its location from its name,
        see :meth:`Location.parse`)."""
        result = cls(
            path=data["path"],
            size=int(data.get("size", 0)),
            formats=list(data.get("formats", [])),
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            bytes_read=int(data.get("bytes_read", 0)),
        )
        where = Location.parse(result.path)
        return result.placed(where) if where.kind != LOCAL else result


class ScanReport(Record):
    """The results of one run, in a stable order, and the verdict they add up to."""

    __slots__ = ("files", "fail_on", "errors", "extra", "excluded", "hidden", "whole", "targets")
    _repr_skip = frozenset({"whole"})
    files: List[FileResult]
    fail_on: Severity
    #: Problems that concern a whole target rather than one file (a Hub repo that cannot be listed).
    errors: List[Tuple[str, str]]
    extra: Dict[str, Any]
    #: Paths left out without being read because the config excludes them (counted as skipped).
    excluded: int
    #: On a copy made by :meth:`filtered`: findings left out of the output, by severity name.
    hidden: Dict[str, int]
    #: On a copy made by :meth:`filtered`: the report of the whole run (counts, kinds of files).
    whole: Optional["ScanReport"]
    #: Where each target of ``errors`` is (a Hub repo), by the target's name.
    targets: Dict[str, Location]

    def __init__(self, files: List[FileResult], fail_on: Severity = Severity.HIGH,
                 errors: Optional[List[Tuple[str, str]]] = None, extra: Optional[Dict[str, Any]] = None,
                 excluded: int = 0, hidden: Optional[Dict[str, int]] = None,
                 whole: Optional["ScanReport"] = None, targets: Optional[Dict[str, Location]] = None) -> None:
        self.files = files
        self.fail_on = fail_on
        self.errors = [] if errors is None else errors
        self.extra = {} if extra is None else extra
        self.excluded = excluded
        self.hidden = {} if hidden is None else hidden
        self.whole = whole
        self.targets = {} if targets is None else targets

    def target_location(self, target: str) -> Location:
        """Where an error's target is: as its source said, else as its name reads (a report read
        back from JSON, see :meth:`Location.parse`)."""
        where = self.targets.get(target)
        return where if where is not None else Location.parse(target, target=True)

    def filtered(self, min_severity: Severity) -> "ScanReport":
        """A copy that lists only findings at or above ``min_severity`` (``--min-severity``, and the
        text report's default of LOW), for output only.

        A finding that decides the exit code (blocking, or unscanned), and one that says the config
        changed a verdict (:data:`CONFIG_DECISIONS`), is always kept, so the copy's
        verdict and exit code are the run's; :meth:`counts` still covers every finding.
        """
        hidden: Dict[str, int] = {}
        files: List[FileResult] = []
        for result in self.files:
            kept: List[Finding] = []
            for f in result.findings:
                if (f.severity >= min_severity or f.unscanned or f.severity >= self.fail_on
                        or f.rule_id in CONFIG_DECISIONS):
                    kept.append(f)
                else:
                    hidden[f.severity.name] = hidden.get(f.severity.name, 0) + 1
            files.append(result if len(kept) == len(result.findings) else result.replace(findings=kept))
        return ScanReport(files, self.fail_on, list(self.errors), dict(self.extra), excluded=self.excluded,
                          hidden=hidden, whole=self.whole or self, targets=dict(self.targets))

    @property
    def findings(self) -> List[Finding]:
        return [f for r in self.files for f in r.findings]

    @property
    def blocking(self) -> List[Finding]:
        return [f for r in self.files for f in r.blocking(self.fail_on)]

    @property
    def incomplete(self) -> List[FileResult]:
        return [r for r in self.files if not r.complete]

    @property
    def exit_code(self) -> int:
        if self.blocking:
            return EXIT_FINDINGS
        if self.incomplete or self.errors:
            return EXIT_INCOMPLETE
        return EXIT_OK

    def counts(self) -> Dict[str, int]:
        """Findings by severity name (unscanned ones apart), of the whole run even on a filtered copy."""
        if self.whole is not None:
            return self.whole.counts()
        out = {s.name: 0 for s in sorted(Severity, reverse=True)}
        for f in self.findings:
            if not f.unscanned:
                out[f.severity.name] += 1
        return out


def sort_findings(findings: Sequence[Finding]) -> List[Finding]:
    """Stable, meaningful order: by member, then offset, then severity (worst first)."""
    return sorted(findings, key=lambda f: (f.member or "", f.offset if f.offset is not None else -1,
                                           -int(f.severity), f.rule_id, f.message))
