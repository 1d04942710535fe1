"""What a scan produces: severities, findings, per-file results and the whole report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class Finding:
    """One thing found in one file.

    ``member`` is the path inside a container (nested containers joined with ``:``), ``offset`` the
    byte offset inside the innermost member (or the file), ``unscanned`` marks findings that mean the
    file could not be fully inspected (those never make a file clean).
    """

    rule_id: str
    severity: Severity
    path: str
    message: str
    remedy: str
    member: Optional[str] = None
    offset: Optional[int] = None
    unscanned: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

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


@dataclass
class FileResult:
    """Everything found in one scanned file (or Hub file, or cache entry)."""

    path: str
    size: int = 0
    formats: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    bytes_read: int = 0
    cached: bool = False

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
        return cls(
            path=data["path"],
            size=int(data.get("size", 0)),
            formats=list(data.get("formats", [])),
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            bytes_read=int(data.get("bytes_read", 0)),
        )


@dataclass
class ScanReport:
    """The results of one run, in a stable order, and the verdict they add up to."""

    files: List[FileResult]
    fail_on: Severity = Severity.HIGH
    #: Problems that concern a whole target rather than one file (a Hub repo that cannot be listed).
    errors: List[Tuple[str, str]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    #: Paths left out without being read because the config excludes them (counted as skipped).
    excluded: int = 0
    #: On a copy made by :meth:`filtered`: findings left out of the output, by severity name.
    hidden: Dict[str, int] = field(default_factory=dict)
    #: On a copy made by :meth:`filtered`: the report of the whole run (counts, kinds of files).
    whole: Optional["ScanReport"] = field(default=None, repr=False)

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
            files.append(result if len(kept) == len(result.findings) else replace(result, findings=kept))
        return ScanReport(files, self.fail_on, list(self.errors), dict(self.extra), excluded=self.excluded,
                          hidden=hidden, whole=self.whole or self)

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
