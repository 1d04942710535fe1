"""Policy: which imported globals are safe, which are dangerous, and how severities may be tuned.

Allowlist first: a global on the safe table gives no finding, one on the dangerous table (matched by
package prefix, so submodules count) is CRITICAL, and every other import is HIGH ("not on the
allowlist"), naming the exact global so a project can allow it in its config.
"""

from __future__ import annotations


from . import pickle_policy
from .findings import Finding, Location, Severity
from .pickle_policy import GlobalVerdict
from .record import Record
from .rules import RULES_BY_ID, rule

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, FrozenSet, Mapping, Optional


class Policy(Record, frozen=True):
    """The tunable part of a scan. Frozen and picklable: it travels to worker processes. (A plain
    record, not a dataclass: see safemodel_ci/record.py.)"""

    __slots__ = ("allow_globals", "severity_overrides", "allow_reasons")
    #: Extra ``module.name`` or ``module.*`` entries the project trusts (from config).
    allow_globals: FrozenSet[str]
    #: Rule id -> severity, from config. Code-execution rules cannot be lowered this way.
    severity_overrides: Mapping[str, Severity]
    #: allow-globals entry -> "reason (file:line)", quoted by ``allowed-by-config`` findings.
    allow_reasons: Mapping[str, str]

    def __init__(self, allow_globals: FrozenSet[str] = frozenset(),
                 severity_overrides: Optional[Mapping[str, Severity]] = None,
                 allow_reasons: Optional[Mapping[str, str]] = None) -> None:
        set_ = object.__setattr__  # frozen: fields are set once, here
        set_(self, "allow_globals", allow_globals)
        set_(self, "severity_overrides", {} if severity_overrides is None else severity_overrides)
        set_(self, "allow_reasons", {} if allow_reasons is None else allow_reasons)

    def classify_global(self, module: str, name: str) -> GlobalVerdict:
        """Judge ``module.name`` (already mapped from Python 2 names, dotted ``name`` allowed)."""
        return pickle_policy.classify_global(module, name, self.allow_globals, self.allow_reasons)

    def finding(self, rule_id: str, at: Location, message: str, *, offset: Optional[int] = None,
                details: Optional[Mapping[str, Any]] = None, severity: Optional[Severity] = None,
                remedy: Optional[str] = None) -> Finding:
        """The one door for findings: a finding of ``rule_id`` (severity and remedy from the rules
        table) at ``at``, judged by this policy. ``ScanContext.report``, the sources, the CLI and
        the worker pool all make findings here, so a ``severity-overrides`` entry reaches every one.
        """
        return self.judge(rule(rule_id).finding(at, message, offset=offset, details=details,
                                                severity=severity, remedy=remedy))

    def judge(self, finding: Finding) -> Finding:
        """Apply ``severity-overrides``; never lowers a code-execution finding. Idempotent."""
        new = self.severity_overrides.get(finding.rule_id)
        if new is None or new == finding.severity:
            return finding
        r = RULES_BY_ID.get(finding.rule_id)
        if r is not None and r.code_execution and new < finding.severity:
            return finding
        return finding.replace(severity=new)

    def fingerprint(self) -> str:
        """Stable hash of everything in the policy (part of the result-cache key)."""
        import hashlib  # here: a scan without the cache needs neither (~4 ms of start-up)
        import json

        data = {
            "allow": sorted(self.allow_globals),
            "overrides": sorted((k, int(v)) for k, v in self.severity_overrides.items()),
            # the reasons are quoted in allowed-by-config findings: a cached report must not go stale
            "reasons": sorted(self.allow_reasons.items()),
            "tables": pickle_policy.tables_version(),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["GlobalVerdict", "Policy"]
