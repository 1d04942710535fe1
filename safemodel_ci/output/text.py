"""Plain text: one line per finding, ``path[:member]: SEVERITY rule-id message``, then a summary."""

from __future__ import annotations

from typing import List

from ..findings import ScanReport, Severity
from .interface import ReportWriter


def finding_line(finding, show_offset: bool = True) -> str:  # type: ignore[no-untyped-def]
    where = f" (offset {finding.offset})" if show_offset and finding.offset is not None else ""
    label = "UNSCANNED" if finding.unscanned else finding.severity.name
    return f"{finding.location}: {label} {finding.rule_id} {finding.message}{where}"


def summary_line(report: ScanReport) -> str:
    n_files = len(report.files)
    blocking = report.blocking
    counts = report.counts()
    parts = [f"{v} {k.lower()}" for k, v in counts.items() if v and k != Severity.INFO.name]
    incomplete = len(report.incomplete)
    verdict = {0: "PASS", 1: "FAIL", 2: "INCOMPLETE"}.get(report.exit_code, "FAIL")
    text = f"{verdict}: scanned {n_files} file{'s' if n_files != 1 else ''}"
    text += f", {len(blocking)} blocking finding{'s' if len(blocking) != 1 else ''}"
    text += f" (fail-on {report.fail_on.name.lower()})"
    if parts:
        text += "; " + ", ".join(parts)
    if incomplete:
        text += f"; {incomplete} file{'s' if incomplete != 1 else ''} not fully scanned"
    if report.errors:
        text += f"; {len(report.errors)} error{'s' if len(report.errors) != 1 else ''}"
    return text


class TextWriter(ReportWriter):
    name = "text"

    def render(self, report: ScanReport) -> str:
        lines: List[str] = []
        remedies: List[str] = []
        for result in report.files:
            for f in result.findings:
                lines.append(finding_line(f))
                if (f.unscanned or f.severity >= report.fail_on) and f.remedy not in remedies:
                    remedies.append(f.remedy)
        for target, message in report.errors:
            lines.append(f"{target}: ERROR {message}")
        if remedies:
            lines.append("")
            lines.append("What to do:")
            lines.extend(f"  - {r}" for r in remedies)
        # Source-specific one-liners (a Hub repo's pinned sha and bytes fetched) before the verdict.
        lines.extend(str(note) for note in report.extra.get("notes", ()))
        lines.append(summary_line(report))
        return "\n".join(lines) + "\n"
