"""Plain text: one line per finding, ``path[:member]: SEVERITY rule-id message``, what to do, a line
counting the files (scanned as models, not models, skipped) and the verdict.

Which findings are listed is decided before (``ScanReport.filtered``: the command line shows LOW
and above unless ``--show-info`` or ``--min-severity``); the verdict always covers every finding."""

from __future__ import annotations


from ..findings import FileResult, Finding, ScanReport, Severity
from .interface import ReportWriter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List

#: Files the walk passed over without reading them carry this notice.
SKIPPED_RULE = "skipped-not-regular"
#: Formats every file of some kind has (any JSON object is read as a possible config): a file with
#: only these is not counted as a model (a Keras or tokenizer config adds its own format name).
GENERIC_FORMATS = frozenset({"json-config"})


def is_model(result: FileResult) -> bool:
    """True when the file was read as a model format (not only as a JSON object)."""
    return any(fmt not in GENERIC_FORMATS for fmt in result.formats)


def finding_line(finding: Finding, show_offset: bool = True) -> str:
    """``path[:member]: SEVERITY rule-id message (offset N)``; the place as its location formats it."""
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
    if not any(is_model(r) for r in report.files):
        text += "; no model files found"
    return text


def _plural(n: int, word: str, plural: str = "") -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def files_line(report: ScanReport) -> str:
    """What the files were: scanned as models, not models (read, no model format), skipped (never
    read: not regular files, links not followed, excluded by the config), and what was not shown."""
    whole = report.whole or report  # the notices of skipped files may not be listed
    models = skipped = unread = 0
    for r in whole.files:
        if is_model(r):
            models += 1
        elif any(f.rule_id == SKIPPED_RULE for f in r.findings):
            skipped += 1
        elif not r.complete:
            unread += 1
    not_models = len(whole.files) - models - skipped - unread
    parts = [f"{_plural(models, 'file')} scanned as models", _plural(not_models, "not a model", "not models")]
    if unread:
        parts.append(f"{unread:,} not fully read")
    parts.append(f"{skipped + report.excluded:,} skipped")
    text = "Files: " + ", ".join(parts)
    if report.excluded:
        text += f" ({report.excluded:,} excluded by the config)"
    hidden = sum(report.hidden.values())
    if hidden:
        what = " and ".join(name for name in report.hidden)
        text += f"; {_plural(hidden, what + ' finding')} not shown"
        if set(report.hidden) == {Severity.INFO.name}:
            text += " (--show-info lists them)"
        else:
            text += " (--min-severity)"
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
        lines.append(files_line(report))
        lines.append(summary_line(report))
        return "\n".join(lines) + "\n"
