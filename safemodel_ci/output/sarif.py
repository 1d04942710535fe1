"""SARIF 2.1.0 for GitHub code scanning (``safemodel scan --format sarif``).

Follows GitHub's "SARIF support for code scanning" subset: one ``reportingDescriptor`` per rule id
of :data:`safemodel_ci.rules.RULES` (all of them, so rule indexes are stable; a few dozen rules are
far below the 25,000 rules-per-run limit) with short/full descriptions, help text, ``tags`` and a
``security-severity`` string; one result per finding with the file's path relative to the
repository root as ``artifactLocation.uri`` and ``region.startLine: 1`` (model files are binary).

Choices:
- ``level`` is relative to ``--fail-on``: ``error`` for findings that fail the run and for every
  unscanned finding (a file that could not be inspected must be as visible as a malicious one),
  ``warning`` for lower findings, ``note`` for INFO notices.
- INFO rules carry no ``security-severity`` (so they show as notes, not as low security alerts).
- Every result carries ``partialFingerprints``: all results sit on "line 1" of a binary file, so
  the line hash upload-sarif computes is the same for every finding of a file; our own fingerprint
  (rule, path, member, message without offsets) keeps distinct findings distinct across runs.
- Results are capped at 25,000 per run (GitHub's hard limit), worst first, with a note in
  ``invocations`` when some were left out.
- Whole-target errors (a Hub repo that could not be listed) become ``unscanned-unreadable``
  results and tool execution notifications.
"""

from __future__ import annotations

import hashlib
import json
import re

from .. import __version__
from ..findings import Finding, Location, ScanReport, Severity
from ..rules import RULES, RULES_BY_ID, Rule
from .interface import ReportWriter, escape_surrogates
from .repo_paths import file_uri, find_repo_root, hub_url, local_path, path_to_uri, repo_relative

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
TOOL_NAME = "safemodel-ci"
INFORMATION_URI = "https://github.com/safemodel-ci/safemodel-ci"
SRCROOT = "%SRCROOT%"

#: GitHub's hard limit on results per run.
MAX_RESULTS = 25_000

#: GitHub buckets: >= 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low.
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.8",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
}

#: Rule used for errors that concern a whole target rather than one file.
TARGET_ERROR_RULE = "unscanned-unreadable"

_OFFSETS = re.compile(r"\b(?:offset|at byte|byte) \d+\b")


def result_level(finding: Finding, fail_on: Severity) -> str:
    """SARIF level: ``error`` when it fails the run or was not scanned, then warning, then note."""
    if finding.unscanned or finding.severity >= fail_on:
        return "error"
    if finding.severity > Severity.INFO:
        return "warning"
    return "note"


def _rule_descriptor(rule: Rule) -> Dict[str, Any]:
    kind = "could not be scanned fully" if rule.unscanned else f"{rule.severity.name.lower()} severity"
    help_text = f"{rule.description}\n\nWhat to do: {rule.remedy}"
    help_md = (f"**{rule.title}** ({kind}).\n\n{rule.description}\n\n**What to do:** {rule.remedy}\n\n"
               f"List every rule with `safemodel rules`.")
    tags = ["security", "model-file"]
    if rule.code_execution:
        tags.append("code-execution")
    if rule.unscanned:
        tags.append("unscanned")
    properties: Dict[str, Any] = {"tags": tags, "precision": "high",
                                  "safemodel-severity": "UNSCANNED" if rule.unscanned else rule.severity.name}
    if rule.severity in SECURITY_SEVERITY:
        properties["security-severity"] = SECURITY_SEVERITY[rule.severity]
    default_level = "error" if rule.unscanned or rule.severity >= Severity.HIGH else (
        "warning" if rule.severity > Severity.INFO else "note")
    return {
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.split("-")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.description},
        "help": {"text": help_text, "markdown": help_md},
        "defaultConfiguration": {"level": default_level},
        "properties": properties,
    }


def _jsonable(value: Any) -> Any:
    """Finding details as plain JSON (details are meant to be JSON already; never fail on them)."""
    return json.loads(json.dumps(value, default=str))


def _fingerprint(rule_id: str, location: str, finding: Optional[Finding], text: str) -> str:
    # Offsets shift when a file is re-saved; the identity of a finding is what and where, not bytes.
    identity = "\x00".join([rule_id, location, (finding.member or "") if finding else "",
                            _OFFSETS.sub("", text)])
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()


class SarifWriter(ReportWriter):
    name = "sarif"

    def render(self, report: ScanReport) -> str:
        # Compact: indenting forces json's pure-Python encoder (5x slower on 25,000 results).
        text = json.dumps(self.sarif(report), ensure_ascii=False, separators=(",", ":")) + "\n"
        return escape_surrogates(text, in_json=True)  # a non-UTF-8 file name, shown as \xNN

    def sarif(self, report: ScanReport) -> Dict[str, Any]:
        """The SARIF log as a dict."""
        root = find_repo_root(self.repo_root)
        locations: Dict[Location, Dict[str, Any]] = {}  # per file: findings of one file share it
        rules = list(RULES)
        index = {r.id: i for i, r in enumerate(rules)}

        entries: List[Tuple[int, Dict[str, Any]]] = []
        for file_result in report.files:
            for finding in file_result.findings:
                rule = RULES_BY_ID.get(finding.rule_id)
                if rule is None:  # a rule id outside the table still gets a (generic) descriptor
                    rule = Rule(finding.rule_id, finding.severity, finding.rule_id, finding.message,
                                finding.remedy, unscanned=finding.unscanned)
                    index[rule.id] = len(rules)
                    rules.append(rule)
                where = finding.location.file
                if where not in locations:
                    locations[where] = self._location(where, root)
                entries.append((self._rank(finding, report.fail_on),
                                self._result(finding, index[rule.id], locations[where], report.fail_on)))
        for target, message in report.errors:
            entries.append((0, self._error_result(target, report.target_location(target), message,
                                                  index[TARGET_ERROR_RULE], root)))

        entries.sort(key=lambda e: e[0])  # stable: worst first, report order within a rank
        omitted = max(0, len(entries) - MAX_RESULTS)
        results = [r for _, r in entries[:MAX_RESULTS]]

        notifications: List[Dict[str, Any]] = [
            {"level": "error", "message": {"text": f"{target}: {message}"}}
            for target, message in report.errors
        ]
        # What the config changed (issue 17): a pull request's config change, every excluded file.
        for note in report.extra.get("config_notes", ()):
            notifications.append({"level": "warning", "message": {"text": str(note)}})
        excluded = list(report.extra.get("excluded_by_config", ()))
        if excluded:
            notifications.append({"level": "note", "message": {
                "text": f"{len(excluded)} file(s) not scanned: excluded by the config (listed in the run's "
                        "properties, excludedByConfig)"}})
        if omitted:
            notifications.append({"level": "warning", "message": {
                "text": f"{omitted} lower-ranked results were left out to stay within GitHub's limit of "
                        f"{MAX_RESULTS} results per run; see the full report (--format json)."}})
        invocation: Dict[str, Any] = {
            "executionSuccessful": not report.errors,
            "exitCode": report.exit_code,
            "properties": {"fail-on": report.fail_on.name.lower(), "files": len(report.files),
                           "incomplete-files": len(report.incomplete)},
        }
        if notifications:
            invocation["toolExecutionNotifications"] = notifications

        return {
            "$schema": SARIF_SCHEMA_URI,
            "version": SARIF_VERSION,
            "runs": [{
                "tool": {"driver": {
                    "name": TOOL_NAME,
                    "version": __version__,
                    "semanticVersion": __version__,
                    "informationUri": INFORMATION_URI,
                    "rules": [_rule_descriptor(r) for r in rules],
                }},
                "originalUriBaseIds": {SRCROOT: {"uri": file_uri(root, directory=True)}},
                "invocations": [invocation],
                "results": results,
                **({"properties": {"excludedByConfig": [
                    {"path": str(e.get("path")), "pattern": str(e.get("pattern"))}
                    for e in excluded[:MAX_RESULTS]
                ]}} if excluded else {}),
            }],
        }

    @staticmethod
    def _rank(finding: Finding, fail_on: Severity) -> int:
        level = result_level(finding, fail_on)
        return {"error": 0, "warning": 1, "note": 2}[level] * 10 + (4 - int(finding.severity))

    @staticmethod
    def _location(where: Location, root: str) -> Dict[str, Any]:
        """A file as code scanning links it: relative to the repository root, else the Hub's web
        page of the file (or repo), else a ``file://`` URI; a URL given as a target as it is."""
        local = local_path(where)
        relative = repo_relative(local, root) if local is not None else None
        if relative is not None:
            artifact = {"uri": path_to_uri(relative), "uriBaseId": SRCROOT}
        elif local is not None:
            artifact = {"uri": file_uri(local)}
        else:
            artifact = {"uri": hub_url(where) or where.path}
        return {"physicalLocation": {"artifactLocation": artifact, "region": {"startLine": 1}}}

    def _result(self, finding: Finding, rule_index: int, location: Dict[str, Any],
                fail_on: Severity) -> Dict[str, Any]:
        where = []
        if finding.member:
            where.append(f"member {finding.member}")
        if finding.offset is not None:
            where.append(f"offset {finding.offset}")
        prefix = "Not fully scanned: " if finding.unscanned else ""
        text = f"{prefix}{finding.message}"
        if where:
            text += f" ({', '.join(where)})"
        text += f". What to do: {finding.remedy}"
        properties: Dict[str, Any] = {
            "severity": finding.severity.name,
            "unscanned": finding.unscanned,
            "path": finding.path,
        }
        if finding.member is not None:
            properties["member"] = finding.member
        if finding.offset is not None:
            properties["offset"] = finding.offset
        if finding.details:
            properties["details"] = _jsonable(dict(finding.details))
        return {
            "ruleId": finding.rule_id,
            "ruleIndex": rule_index,
            "level": result_level(finding, fail_on),
            "message": {"text": text},
            "locations": [location],
            "partialFingerprints": {
                "safemodelFinding/v1": _fingerprint(finding.rule_id, finding.path, finding, finding.message)},
            "properties": properties,
        }

    def _error_result(self, target: str, where: Location, message: str, rule_index: int,
                      root: str) -> Dict[str, Any]:
        rule = RULES_BY_ID[TARGET_ERROR_RULE]
        return {
            "ruleId": rule.id,
            "ruleIndex": rule_index,
            "level": "error",
            "message": {"text": f"Not scanned: {target}: {message}. What to do: {rule.remedy}"},
            "locations": [self._location(where, root)],
            "partialFingerprints": {"safemodelFinding/v1": _fingerprint(rule.id, target, None, message)},
            "properties": {"target": target, "unscanned": True},
        }
