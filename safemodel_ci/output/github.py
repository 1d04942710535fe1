"""GitHub Actions workflow commands: one annotation per file (``safemodel scan --format github``).

Escaping is exactly what ``@actions/core`` does (``packages/core/src/command.ts``): the message
gets ``%``→``%25``, CR→``%0D``, LF→``%0A``; property values additionally ``:``→``%3A`` and
``,``→``%2C``; empty properties are left out. The runner (``ActionCommand.TryParseV2``) only
treats a line as a command when it starts with ``::`` after leading whitespace, and splits the
properties at ``,`` and the data at the first ``::``; with these escapes a file name holding
``%``, newlines, ``::`` or ``,`` stays inside its own annotation. Every other line this module
emits is free of untrusted text.

Annotations are per file, not per finding: GitHub shows only the first few annotations of each
kind per step, so a pickle with forty unknown globals must not hide the next file. Files are
ordered errors first. Levels are relative to ``--fail-on``: ``error`` when the file fails the run
(a finding at or above fail-on, or content that could not be scanned), ``warning`` for MEDIUM and
above below fail-on, ``notice`` for the rest.
"""

from __future__ import annotations


from ..findings import FileResult, Finding, ScanReport, Severity
from ..rules import RULES_BY_ID
from .interface import ReportWriter, escape_surrogates
from .repo_paths import find_repo_root, local_path, repo_relative
from .text import summary_line

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, Iterable, List, Mapping, Optional, Tuple

LEVELS = ("error", "warning", "notice")

#: Findings listed in one annotation before "... and N more" (the summary has all of them).
MAX_FINDINGS_PER_ANNOTATION = 20

#: Annotations printed per run; GitHub displays only a handful per step anyway.
MAX_ANNOTATIONS = 50

LFS_RULE = "lfs-pointer-missing"
LFS_ADVICE = ("The checkout holds Git LFS pointers instead of the model files, so the models were NOT "
              "scanned. Add `lfs: true` to the actions/checkout step (with: lfs: true), or run "
              "`git lfs pull` before this step.")


def escape_data(value: str) -> str:
    """A workflow command's message, escaped as ``@actions/core`` ``escapeData`` does."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A workflow command property value, escaped as ``@actions/core`` ``escapeProperty`` does."""
    return (value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            .replace(":", "%3A").replace(",", "%2C"))


def workflow_command(command: str, properties: Mapping[str, Optional[str]], message: str) -> str:
    """``::command key=value,key=value::message`` (no trailing newline); empty values are omitted."""
    props = ",".join(f"{k}={escape_property(escape_surrogates(v))}" for k, v in properties.items() if v)
    return f"::{command}{' ' + props if props else ''}::{escape_data(escape_surrogates(message))}"


def finding_level(finding: Finding, fail_on: Severity) -> str:
    """``error`` if it fails the run (or was not scanned), ``warning`` for MEDIUM+, else ``notice``."""
    if finding.unscanned or finding.severity >= fail_on:
        return "error"
    if finding.severity >= Severity.MEDIUM:
        return "warning"
    return "notice"


def _by_level(findings: Iterable[Finding], fail_on: Severity) -> List[Finding]:
    return sorted(findings, key=lambda f: (LEVELS.index(finding_level(f, fail_on)), -int(f.severity)))


def _worst(findings: Iterable[Finding], fail_on: Severity) -> Tuple[int, Finding]:
    ranked = _by_level(findings, fail_on)
    return LEVELS.index(finding_level(ranked[0], fail_on)), ranked[0]


def _finding_text(finding: Finding) -> str:
    where = finding.member or ""
    if finding.offset is not None:
        where += f"{' ' if where else ''}@{finding.offset}"
    label = "UNSCANNED" if finding.unscanned else finding.severity.name
    return f"- {label} {finding.rule_id}{' [' + where + ']' if where else ''}: {finding.message}"


def file_annotation(result: FileResult, fail_on: Severity, root: str) -> Optional[Tuple[int, str]]:
    """``(level index, command line)`` for one file's findings, or None when it has none."""
    if not result.findings:
        return None
    level_index, worst = _worst(result.findings, fail_on)
    rule = RULES_BY_ID.get(worst.rule_id)
    title = f"safemodel: {rule.title if rule else worst.rule_id} ({worst.rule_id})"
    if len(result.findings) > 1:
        title += f" and {len(result.findings) - 1} more"
    ordered = _by_level(result.findings, fail_on)
    lines = [f"{result.path}:"]
    lines += [_finding_text(f) for f in ordered[:MAX_FINDINGS_PER_ANNOTATION]]
    if len(ordered) > MAX_FINDINGS_PER_ANNOTATION:
        lines.append(f"... and {len(ordered) - MAX_FINDINGS_PER_ANNOTATION} more (see the job summary)")
    remedies: List[str] = []
    for f in ordered:
        if f.remedy not in remedies and finding_level(f, fail_on) != "notice":
            remedies.append(f.remedy)
    if remedies:
        lines.append("What to do: " + " ".join(remedies[:3]))
    if any(f.rule_id == LFS_RULE for f in result.findings):
        lines.append(LFS_ADVICE)
    local = local_path(result.location)
    relative = repo_relative(local, root) if local is not None else None
    props: Dict[str, Optional[str]] = {"file": relative, "line": "1" if relative else None, "title": title}
    return level_index, workflow_command(LEVELS[level_index], props, "\n".join(lines))


def annotation_lines(report: ScanReport, repo_root: Optional[str] = None,
                limit: int = MAX_ANNOTATIONS) -> List[str]:
    """Annotation lines for a report: per file, errors first, at most ``limit`` (plus a note)."""
    root = find_repo_root(repo_root)
    ranked: List[Tuple[int, int, str]] = []
    for position, result in enumerate(report.files):
        made = file_annotation(result, report.fail_on, root)
        if made is not None:
            ranked.append((made[0], position, made[1]))
    for position, (target, message) in enumerate(report.errors):
        ranked.append((0, -1 - position, workflow_command(
            "error", {"title": "safemodel: not scanned"}, f"{target}: {message}")))
    ranked.sort()
    lines = [line for _, _, line in ranked[:limit]]
    if len(ranked) > limit:
        lines.append(workflow_command("warning", {"title": "safemodel: more findings"},
                                      f"{len(ranked) - limit} more files have findings; see the job summary "
                                      "or the SARIF report."))
    lfs_files = sum(1 for r in report.files if any(f.rule_id == LFS_RULE for f in r.findings))
    if lfs_files:
        lines.insert(0, workflow_command(
            "error", {"title": "safemodel: Git LFS content missing, set lfs: true on actions/checkout"},
            f"{lfs_files} file{'s' if lfs_files != 1 else ''}: {LFS_ADVICE}"))
    return lines


class GithubWriter(ReportWriter):
    """Annotations, then the one-line verdict (which holds no file names)."""

    name = "github"

    def render(self, report: ScanReport) -> str:
        lines = annotation_lines(report, self.repo_root)
        lines.append(summary_line(report))
        return "\n".join(lines) + "\n"
