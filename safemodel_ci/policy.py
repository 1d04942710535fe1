"""Policy: which imported globals are safe, which are dangerous, and how severities may be tuned.

Allowlist first: a global on the safe table gives no finding, one on the dangerous table (matched by
package prefix, so submodules count) is CRITICAL, and every other import is HIGH ("not on the
allowlist"), naming the exact global so a project can allow it in its config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import FrozenSet, Mapping, NamedTuple, Optional

from .findings import Finding, Severity
from .rules import RULES_BY_ID


class GlobalVerdict(NamedTuple):
    """How the policy judges one imported global. ``rule_id`` None means allowed.

    ``allowed_by`` is set when a config entry allowed what the built-in tables would report
    (``turned_off`` is that rule id): the scan then reports an INFO ``allowed-by-config`` finding.
    """

    rule_id: Optional[str]
    severity: Severity
    reason: str
    allowed_by: Optional[str] = None
    turned_off: Optional[str] = None


@dataclass(frozen=True)
class Policy:
    """The tunable part of a scan. Frozen and picklable: it travels to worker processes."""

    #: Extra ``module.name`` or ``module.*`` entries the project trusts (from config).
    allow_globals: FrozenSet[str] = frozenset()
    #: Rule id -> severity, from config. Code-execution rules cannot be lowered this way.
    severity_overrides: Mapping[str, Severity] = field(default_factory=dict)
    #: allow-globals entry -> "reason (file:line)", quoted by ``allowed-by-config`` findings.
    allow_reasons: Mapping[str, str] = field(default_factory=dict)

    def classify_global(self, module: str, name: str) -> GlobalVerdict:
        """Judge ``module.name`` (already mapped from Python 2 names, dotted ``name`` allowed)."""
        from .pickle_policy import classify_global

        return classify_global(module, name, self.allow_globals, self.allow_reasons)

    def adjust(self, finding: Finding) -> Finding:
        """Apply ``severity-overrides``; never lowers a code-execution finding."""
        new = self.severity_overrides.get(finding.rule_id)
        if new is None or new == finding.severity:
            return finding
        rule = RULES_BY_ID.get(finding.rule_id)
        if rule is not None and rule.code_execution and new < finding.severity:
            return finding
        return replace(finding, severity=new)

    def fingerprint(self) -> str:
        """Stable hash of everything in the policy (part of the result-cache key)."""
        import hashlib  # here: a scan without the cache needs neither (~4 ms of start-up)
        import json

        from . import pickle_policy

        data = {
            "allow": sorted(self.allow_globals),
            "overrides": sorted((k, int(v)) for k, v in self.severity_overrides.items()),
            # the reasons are quoted in allowed-by-config findings: a cached report must not go stale
            "reasons": sorted(self.allow_reasons.items()),
            "tables": pickle_policy.tables_version(),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
