"""The GitHub job summary: GitHub-flavoured Markdown for ``$GITHUB_STEP_SUMMARY``.

A verdict line, the Git LFS advice when pointers were found, a table of findings (file, member and
offset, severity, rule id, message; blocking and unscanned ones first), then what to do per rule.
Everything that comes from scanned content or file names is escaped: control characters are shown
as ``\\xNN``, ``&``, ``<`` and ``>`` become entities (no HTML gets through) and every other ASCII
punctuation character is backslash-escaped (no emphasis, links, table breaks or mentions).
GitHub accepts at most 1 MiB per step summary; the table is cut to fit with a note saying so.
"""

from __future__ import annotations

import re

from ..convert import convert_command
from ..findings import Finding, ScanReport, Severity
from ..rules import RULES_BY_ID
from .github import LFS_ADVICE, LFS_RULE, finding_level
from .interface import escape_surrogates

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List, Optional

#: GitHub's limit for one step's summary.
SUMMARY_LIMIT = 1024 * 1024

#: Longest message shown in one table cell (the SARIF and JSON reports hold the rest).
MAX_CELL = 400

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_PUNCT = re.compile(r"([!\"#$%'()*+,\-./:;=?@\[\\\]^_`{|}~])")


def md_text(value: str, limit: Optional[int] = None) -> str:
    """Untrusted text as inert Markdown (see the module docstring); cut to ``limit`` characters."""
    if limit is not None and len(value) > limit:
        value = value[:limit] + "…"
    value = escape_surrogates(value)  # a non-UTF-8 file name: \xNN, never a write error
    value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                         else f"\\u{ord(m.group()):04x}", value)
    value = _PUNCT.sub(r"\\\1", value)
    # Entities last, so their own "&", "#" and ";" are not backslash-escaped.
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _verdict(report: ScanReport) -> str:
    code = report.exit_code
    if code == 0:
        return "✅ PASS"
    if code == 1:
        return "❌ FAIL: findings at or above the fail-on severity"
    return "⚠️ INCOMPLETE: some content could not be scanned (never treated as clean)"


def _row(finding: Finding, fail_on: Severity) -> str:
    member = finding.location.member
    where = md_text(member, 200) if member else ""
    if finding.offset is not None:
        where += f"{' ' if where else ''}@{finding.offset}"
    level = finding_level(finding, fail_on)
    severity = "UNSCANNED" if finding.unscanned else finding.severity.name
    if level == "error":
        severity = f"**{severity}**"
    return (f"| {md_text(finding.location.display, 300)} | {where} | {severity} | `{finding.rule_id}` | "
            f"{md_text(finding.message, MAX_CELL)} |")


def render_job_summary(report: ScanReport, limit: int = SUMMARY_LIMIT, title: str = "safemodel-ci") -> str:
    """The summary Markdown, at most ``limit`` bytes of UTF-8."""
    fail_on = report.fail_on
    findings = [f for r in report.files for f in r.findings]
    findings.sort(key=lambda f: (["error", "warning", "notice"].index(finding_level(f, fail_on)),
                                 -int(f.severity)))
    n_files, n_incomplete = len(report.files), len(report.incomplete)
    head: List[str] = [f"## {md_text(title)}: {_verdict(report)}", ""]
    head.append(f"Scanned {n_files} file{'s' if n_files != 1 else ''}; "
                f"{len(report.blocking)} blocking finding{'s' if len(report.blocking) != 1 else ''} "
                f"(fail-on `{fail_on.name.lower()}`); "
                f"{n_incomplete} file{'s' if n_incomplete != 1 else ''} not fully scanned.")
    head.append("")
    lfs = [r.path for r in report.files if any(f.rule_id == LFS_RULE for f in r.findings)]
    if lfs:
        head += [f"> **Git LFS content missing ({len(lfs)} file{'s' if len(lfs) != 1 else ''}).** "
                 + LFS_ADVICE, ""]  # our own text: its code spans stay code spans
    caches = report.extra.get("cache")  # safemodel cache (one report, or merged reports: a list)
    for cache in caches if isinstance(caches, list) else [caches]:
        if isinstance(cache, dict) and cache.get("verification"):
            where = f" {md_text(str(cache.get('cache_dir', '')), 200)}" if cache.get("cache_dir") else ""
            head += [f"**Hugging Face cache{where}:** {md_text(str(cache['verification']), MAX_CELL)}", ""]
    for note in report.extra.get("config_notes", ()):
        head += [f"> **Config:** {md_text(str(note), MAX_CELL)}", ""]
    excluded = list(report.extra.get("excluded_by_config", ()))
    if excluded:
        shown = ", ".join(md_text(str(e.get("path")), 200) + f" ({md_text(str(e.get('pattern')), 100)})"
                          for e in excluded[:50])
        more = f", and {len(excluded) - 50} more (see the JSON report)" if len(excluded) > 50 else ""
        head += [f"**Excluded by the config ({len(excluded)} file{'s' if len(excluded) != 1 else ''}, not "
                 f"scanned):** {shown}{more}", ""]
    if report.errors:
        head.append("**Not scanned:**")
        head += [f"- {md_text(t, 300)}: {md_text(m, MAX_CELL)}" for t, m in report.errors]
        head.append("")

    tail: List[str] = []
    rule_ids: List[str] = []
    for f in findings:
        if f.rule_id not in rule_ids and (f.unscanned or f.severity > Severity.INFO):
            rule_ids.append(f.rule_id)
    if rule_ids:
        tail += ["", "### What to do", ""]
        for rid in rule_ids:
            rule = RULES_BY_ID.get(rid)
            if rule is not None:
                tail.append(f"- `{rid}` ({md_text(rule.title)}): {md_text(rule.remedy)}")
    commands = [c for c in (convert_command(r, fail_on) for r in report.files) if c]
    if commands:
        tail += ["", "Convertible to safetensors without loading (`safemodel convert` copies the tensors "
                     "and never makes the objects the findings name):", "", "```sh", *commands, "```"]
    tail += ["", "_Rule reference: `safemodel rules`. Full details: the SARIF report (code scanning) "
                 "and `safemodel scan --format json`._", ""]

    table: List[str] = []
    if findings:
        table = ["### Findings", "", "| File | Member @ offset | Severity | Rule | Finding |",
                 "| --- | --- | --- | --- | --- |"]
    elif not report.errors:
        table = ["No findings."]

    def size(lines: List[str]) -> int:
        return len("\n".join(lines).encode("utf-8")) + 1

    # Reserve room for the truncation note so adding it never breaks the limit.
    budget = limit - size(head) - size(tail) - size(table) - 200
    rows: List[str] = []
    used = 0
    for f in findings:
        row = _row(f, fail_on)
        cost = len(row.encode("utf-8")) + 1
        if used + cost > budget:
            break
        rows.append(row)
        used += cost
    omitted = len(findings) - len(rows)
    body = head + table + rows
    if omitted:
        body += ["", f"_{omitted} more finding{'s' if omitted != 1 else ''} not shown: the job summary is "
                     "limited to 1 MiB. See the SARIF report or the step log._"]
    text = "\n".join(body + tail)
    encoded = text.encode("utf-8")
    if len(encoded) > limit:  # a tiny limit: keep a valid prefix rather than fail
        text = encoded[:limit].decode("utf-8", "ignore")
    return text
