"""GitHub Action adapter: action inputs -> ``safemodel scan``/``safemodel hub`` -> GitHub's outputs.

``action.yml`` runs this file with the action's inputs in ``SAFEMODEL_ACTION_*`` environment
variables (composite actions get no ``INPUT_*`` variables, and inputs are never inlined into a
script). It decides nothing about files: it asks the CLI for a JSON report, then writes
- the text report to the log, inside a ``stop-commands`` block so no file name in it can be read
  as a workflow command;
- annotations (``safemodel_ci.output.github``) to stdout;
- the job summary (``safemodel_ci.output.job_summary``) to ``$GITHUB_STEP_SUMMARY``;
- SARIF (``safemodel_ci.output.sarif``) to the ``sarif-file`` input;
- ``findings``, ``blocking`` and ``sarif-file`` to ``$GITHUB_OUTPUT``;
and exits with the CLI's exit code (0 pass, 1 blocking findings, 2 incomplete scan, 3 usage error).

On ``pull_request`` and ``pull_request_target`` events the config comes from the pull request's base
commit (``git show <base-sha>:<path>``), never from its head: a pull request could otherwise exclude,
allow or ignore its own malicious file. When the pull request changes the config, the summary, the
annotations and SARIF say so. The ``config-from-head`` input opts into the head's config for
pull requests from the same repository (never from a fork).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import secrets
import sys
import tempfile
import traceback
from dataclasses import dataclass

from safemodel_ci import cli
from safemodel_ci.config import CONFIG_FILENAMES, PYPROJECT, Config, ConfigError, find_config, load_config
from safemodel_ci.findings import EXIT_USAGE, FileResult, ScanReport, Severity
from safemodel_ci.output import writer
from safemodel_ci.output.github import annotation_lines, workflow_command
from safemodel_ci.output.job_summary import SUMMARY_LIMIT, md_text, render_job_summary
from safemodel_ci.output.text import summary_line
from safemodel_ci.settings import InputError, Settings, action_fail_on, from_action_inputs

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List, Mapping, Optional, Sequence, Tuple

PREFIX = "SAFEMODEL_ACTION_"
#: A commit id: sha1 (40) or sha256 (64) hex digits. Anything else is refused before git sees it.
_SHA_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
PR_EVENTS = ("pull_request", "pull_request_target")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u0085\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True)
class ActionInputs:
    """The action's inputs, parsed (see ``action.yml`` for their documentation)."""

    paths: Tuple[str, ...]
    changed_only: bool
    hub_repos: Tuple[str, ...]
    #: The ``fail-on`` input, parsed by the settings module (None: the config's, else high).
    fail_on: Optional[Severity]
    sarif_file: str
    summary: bool
    annotations: bool
    config: str
    config_from_head: bool = False


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(PREFIX + name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "yes", "1", "on"):
        return True
    if raw in ("false", "no", "0", "off"):
        return False
    raise InputError(f"input {name.lower().replace('_', '-')} must be true or false, not {raw!r}")


def read_inputs(env: Mapping[str, str]) -> ActionInputs:
    """Parse the ``SAFEMODEL_ACTION_*`` variables ``action.yml`` sets from the inputs."""
    paths = tuple(line.strip() for line in env.get(PREFIX + "PATHS", "").splitlines() if line.strip())
    hub = tuple(r for r in re.split(r"[\s,]+", env.get(PREFIX + "HUB_REPOS", "")) if r)
    return ActionInputs(
        paths=paths,
        changed_only=_bool(env, "CHANGED_ONLY", False),
        hub_repos=hub,
        fail_on=action_fail_on(env.get(PREFIX + "FAIL_ON", "")),
        sarif_file=env.get(PREFIX + "SARIF_FILE", "").strip(),
        summary=_bool(env, "SUMMARY", True),
        annotations=_bool(env, "ANNOTATIONS", True),
        config=env.get(PREFIX + "CONFIG", "").strip(),
        config_from_head=_bool(env, "CONFIG_FROM_HEAD", False),
    )


# ---- changed-only ------------------------------------------------------------------------------

def read_event(event_path: Optional[str]) -> Mapping:
    """The event payload (empty when there is none)."""
    if not event_path or not os.path.isfile(event_path):
        return {}
    with open(event_path, encoding="utf-8") as fh:
        payload = json.load(fh)
    return payload if isinstance(payload, dict) else {}


def valid_sha(value: object) -> Optional[str]:
    """``value`` when it is a full commit id in lower-case hex, else None (never an option or a
    revision expression handed to git)."""
    return value if isinstance(value, str) and _SHA_RE.fullmatch(value) else None


def event_base(event_path: Optional[str]) -> Optional[str]:
    """The commit to diff against: ``pull_request.base.sha``, else a push's ``before``.

    Raises :class:`InputError` when the event names a base that is not a commit id.
    """
    payload = read_event(event_path)
    base = ((payload.get("pull_request") or {}).get("base") or {}).get("sha") or payload.get("before")
    if base is None or (isinstance(base, str) and not base.strip("0")):  # new branch: before = 000...0
        return None
    if valid_sha(base) is None:
        raise InputError(f"the event's base commit is not a commit id: {str(base)[:80]!r}")
    return base


def changed_files(workspace: str, base: str) -> List[str]:
    """Files added, copied, modified, renamed or retyped between ``base`` and ``HEAD`` (merge-base diff).

    Paths are returned relative to ``workspace``. Raises ``git.GitCommandError`` when ``base`` is
    not in the clone (a shallow checkout).
    """
    import git  # gitpython: only needed for changed-only

    with git.Repo(workspace, search_parent_directories=True) as repo:
        top = repo.working_tree_dir or workspace
        if valid_sha(base) is None:  # never an option or a revision expression
            raise ValueError(f"not a commit id: {base!r}")
        raw = repo.git.execute(["git", "diff", "--name-only", "-z", "--no-renames", "--diff-filter=ACMRT",
                                "--end-of-options", f"{base}...HEAD"], stdout_as_string=False)
    names = [os.fsdecode(n) for n in bytes(raw).split(b"\0") if n]
    return [os.path.relpath(os.path.join(top, n), workspace) for n in names]


# ---- the config of a pull request's base ---------------------------------------------------------

@dataclass
class ConfigChoice:
    """The config a run uses: ``config`` (None: the CLI's own look-up or ``--config``), and what to
    tell the reader about it (notes for the summary and SARIF, workflow commands for the log)."""

    config: Optional[Config] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    commands: List[str] = dataclasses.field(default_factory=list)


def _git_show(repo, sha: str, rel: str) -> Optional[bytes]:  # type: ignore[no-untyped-def]
    """The bytes of ``rel`` at commit ``sha`` (None when it is not there)."""
    import git

    try:
        return bytes(repo.git.execute(["git", "show", "--end-of-options", f"{sha}:{rel}"],
                                      stdout_as_string=False, strip_newline_in_stdout=False))
    except git.GitCommandError:
        return None


def _has_commit(repo, sha: str) -> bool:  # type: ignore[no-untyped-def]
    import git

    try:
        repo.git.execute(["git", "cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}"])
        return True
    except git.GitCommandError:
        return False


def _candidates(workspace: str, top: str, config_input: str) -> List[str]:
    """Config paths (relative to the repository top, ``/``-separated) to look for, nearest first:
    the ``config`` input, else the look-up's names from the workspace up to the repository top."""
    if config_input:
        return [os.path.relpath(os.path.abspath(config_input), top).replace(os.sep, "/")]
    out: List[str] = []
    directory = os.path.abspath(workspace)
    while True:
        rel = os.path.relpath(directory, top)
        for name in (*CONFIG_FILENAMES, PYPROJECT):
            out.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
        if rel == "." or rel.startswith(".."):
            break
        directory = os.path.dirname(directory)
    return out


def _load_bytes(data: bytes, rel: str, top: str, label: str) -> Optional[Config]:
    """A config from the bytes of ``rel`` (None for a pyproject.toml without a safemodel table)."""
    from safemodel_ci.config import _pyproject_has_table

    with tempfile.TemporaryDirectory(prefix="safemodel-base-config-") as tmp:
        path = os.path.join(tmp, os.path.basename(rel))
        with open(path, "wb") as fh:
            fh.write(data)
        if os.path.basename(rel) == PYPROJECT and not _pyproject_has_table(path):
            return None
        cfg = load_config(path)
    # Patterns and ignore paths stay relative to where the file sits in the repository.
    return cfg.replace(path=label, root=os.path.join(top, os.path.dirname(rel)))


def choose_config(env: Mapping[str, str], inputs: ActionInputs, workspace: str) -> ConfigChoice:
    """The config for this run (see the module docstring): the base commit's on pull requests."""
    if env.get("GITHUB_EVENT_NAME") not in PR_EVENTS:
        return ConfigChoice()
    import git

    payload = read_event(env.get("GITHUB_EVENT_PATH"))
    pr = payload.get("pull_request") or {}
    base = valid_sha((pr.get("base") or {}).get("sha"))
    if base is None:
        raise InputError("a pull request event without a valid base commit id: the base branch's config "
                         "cannot be read")
    head_repo = ((pr.get("head") or {}).get("repo") or {}).get("full_name")
    base_repo = ((pr.get("base") or {}).get("repo") or {}).get("full_name")
    same_repo = isinstance(head_repo, str) and bool(head_repo) and head_repo == base_repo
    choice = ConfigChoice()
    with git.Repo(workspace, search_parent_directories=True) as repo:
        top = repo.working_tree_dir or workspace
        if not _has_commit(repo, base):  # a shallow checkout: fetch just that commit
            try:
                repo.git.execute(["git", "fetch", "--quiet", "--no-tags", "--depth=1", "origin",
                                  "--end-of-options", base])
            except git.GitCommandError:
                pass
        if not _has_commit(repo, base):
            choice.config = Config()
            message = (f"The base commit {base} is not in the checkout, so the base branch's config could "
                       "not be read; this scan used the default config (no excludes, allows or ignores). "
                       "Use actions/checkout with fetch-depth: 0.")
            choice.notes.append(message)
            choice.commands.append(workflow_command("warning", {"title": "safemodel: base config"}, message))
            return choice
        base_rel, base_bytes = None, None
        for rel in _candidates(workspace, top, inputs.config):
            data = _git_show(repo, base, rel)
            if data is not None:
                if os.path.basename(rel) == PYPROJECT and b"safemodel" not in data:
                    continue
                base_rel, base_bytes = rel, data
                break
    try:
        head_path = (os.path.abspath(inputs.config) if inputs.config else find_config(workspace))
    except ConfigError:
        head_path = None
    head_rel = os.path.relpath(head_path, top).replace(os.sep, "/") if head_path else None
    head_bytes = None
    if head_path and os.path.isfile(head_path):
        with open(head_path, "rb") as fh:
            head_bytes = fh.read()
    neither = head_bytes is None and base_bytes is None
    changed = not neither and (head_rel, head_bytes) != (base_rel, base_bytes)
    shown = head_rel or base_rel or "the config"
    if inputs.config_from_head and same_repo:
        if changed:
            message = (f"This pull request changes the config ({shown}); config-from-head is on and the pull "
                       "request comes from this repository, so its own config was used.")
            choice.notes.append(message)
            title = "safemodel: config changed by the pull request"
            choice.commands.append(workflow_command("warning", {"title": title, "file": shown}, message))
        return choice
    label = f"{base_rel} at base {base[:12]}" if base_rel else None
    if base_bytes is None:
        choice.config = Config()
    else:
        try:
            loaded = _load_bytes(base_bytes, base_rel or "", top, label or "")
        except ConfigError as exc:
            raise InputError(f"the base branch's config is invalid: {exc}") from None
        choice.config = loaded if loaded is not None else Config()
    if inputs.config_from_head and not same_repo:
        choice.notes.append("config-from-head is ignored for a pull request from another repository "
                            "(a fork): the base branch's config was used.")
    if changed:
        what = "adds" if base_bytes is None else "removes" if head_bytes is None else "changes"
        message = (f"This pull request {what} the config ({shown}). The scan used the base branch's "
                   f"config ({label or 'none: defaults'}), not the pull request's: a config change takes "
                   "effect once it is merged.")
        choice.notes.append(message)
        choice.commands.append(workflow_command("warning", {"title": "safemodel: config changed by the pull "
                                                                      "request", "file": shown}, message))
    return choice


def _inside(path: str, roots: Sequence[str]) -> bool:
    full = os.path.abspath(path)
    for root in roots:
        r = os.path.abspath(root)
        if full == r or full.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


# ---- running the CLI -----------------------------------------------------------------------------

def run_cli(command: str, operands: Sequence[str], settings: Settings
            ) -> Tuple[int, Optional[ScanReport], str]:
    """Run ``safemodel COMMAND -- OPERANDS`` in process with the Action's ``settings``, its JSON report
    going to a temporary file.

    Returns (exit code, report or None, everything it printed).
    """
    fd, out = tempfile.mkstemp(prefix="safemodel-", suffix=".json")
    os.close(fd)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                code = cli.main([command, "--", *operands],
                                settings=settings.replace(output=out))
            except SystemExit as exc:  # argparse exits on usage errors
                code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
        report = None
        if code != EXIT_USAGE and os.path.getsize(out):
            with open(out, encoding="utf-8") as fh:
                report = report_from_json(json.load(fh))
        return code, report, log.getvalue()
    finally:
        os.unlink(out)


def report_from_json(data: Mapping) -> ScanReport:
    """A :class:`ScanReport` back from ``--format json`` (schema ``report-v1``)."""
    return ScanReport(
        files=[FileResult.from_dict(f) for f in data.get("files", [])],
        fail_on=Severity[data.get("fail_on", "HIGH")],
        errors=[(e["target"], e["message"]) for e in data.get("errors", [])],
        extra=dict(data.get("extra") or {}),
    )


def merge(reports: Sequence[ScanReport], fail_on: Severity) -> ScanReport:
    files: List[FileResult] = []
    errors: List[Tuple[str, str]] = []
    notes: List[str] = []
    excluded: List[Mapping] = []
    for r in reports:
        files += r.files
        errors += r.errors
        notes += [str(n) for n in r.extra.get("notes", ())]
        excluded += list(r.extra.get("excluded_by_config", ()))
    extra: dict = {"notes": notes} if notes else {}
    if excluded:
        extra["excluded_by_config"] = excluded
    return ScanReport(files, fail_on=fail_on, errors=errors, extra=extra)


# ---- writing GitHub's files ----------------------------------------------------------------------

def inert(text: str) -> str:
    """Control characters shown as ``\\xNN`` so one log line stays one line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\x{ord(m.group()) - 0xdc00:02x}" if 0xdc80 <= ord(m.group()) <= 0xdcff
                        else f"\\u{ord(m.group()):04x}", text.replace("\r\n", "\n"))


def print_block(title: str, text: str, out=None) -> None:  # type: ignore[no-untyped-def]
    """``text`` in a collapsed log group, with workflow commands switched off around it."""
    out = out or sys.stdout
    token = secrets.token_hex(16)
    out.write(f"::group::{title}\n::stop-commands::{token}\n")
    out.write(inert(text).rstrip("\n") + "\n")
    out.write(f"::{token}::\n::endgroup::\n")
    out.flush()


def write_outputs(path: Optional[str], values: Mapping[str, str]) -> None:
    """Append ``name<<DELIM`` ... ``DELIM`` blocks (random delimiter) to ``$GITHUB_OUTPUT``."""
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        for name, value in values.items():
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            while delimiter in value:  # never happens in practice; the format breaks if it does
                delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def append_summary(path: Optional[str], report: ScanReport) -> None:
    if not path:
        return
    try:
        used = os.path.getsize(path)
    except OSError:
        used = 0
    budget = SUMMARY_LIMIT - used - 1
    if budget < 1024:
        return  # the step's summary is already full
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(render_job_summary(report, limit=budget) + "\n")


def counted_findings(report: ScanReport) -> int:
    """Findings a person must look at: everything but INFO notices, plus whole-target errors."""
    return sum(1 for f in report.findings if f.unscanned or f.severity > Severity.INFO) + len(report.errors)


def did_not_run(env: Mapping[str, str], title: str, message: str) -> int:
    """The step could not scan: say so everywhere a result would have been, and fail (exit 3)."""
    print(workflow_command("error", {"title": title}, message))
    write_outputs(env.get("GITHUB_OUTPUT"), {"findings": "0", "blocking": "true", "sarif-file": ""})
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(f"## safemodel\\-ci: ❌ did not run\n\n{md_text(title)}: {md_text(message, 2000)}\n")
    return EXIT_USAGE


def main(env: Optional[Mapping[str, str]] = None) -> int:
    """Run the action; returns its exit code (a crash is reported in the log, never a pass)."""
    env = os.environ if env is None else env
    try:
        return run(env)
    except Exception:  # noqa: BLE001 - the traceback may hold file names: print it inertly
        print_block("safemodel crashed", traceback.format_exc())
        return did_not_run(env, "safemodel: internal error",
                           "The action failed before finishing the scan; see the step log "
                           "(group 'safemodel crashed').")


def run(env: Mapping[str, str]) -> int:
    """The action's work (see the module docstring)."""
    workspace = env.get("GITHUB_WORKSPACE") or os.getcwd()
    os.chdir(workspace)
    try:
        inputs = read_inputs(env)
        choice = choose_config(env, inputs, workspace)
        if choice.config is None and inputs.config and not os.path.isfile(inputs.config):
            raise InputError(f"input config: no such file: {inputs.config}")
    except InputError as exc:
        return did_not_run(env, "safemodel: bad action input", str(exc))
    for command in choice.commands:
        print(command)

    settings = from_action_inputs(inputs.fail_on, inputs.config, choice.config)

    roots = list(inputs.paths) or ([] if inputs.hub_repos else ["."])
    targets = roots
    if roots and inputs.changed_only:
        try:
            base = event_base(env.get("GITHUB_EVENT_PATH"))
        except InputError as exc:
            return did_not_run(env, "safemodel: changed-only", str(exc))
        if base is None:
            print(workflow_command("notice", {"title": "safemodel: changed-only"},
                                   "No base commit in this event (not a pull request or push); "
                                   "scanning every path."))
        else:
            try:
                changed = changed_files(workspace, base)
            except Exception as exc:  # noqa: BLE001 - a missing base must not silently skip the scan
                print(workflow_command("warning", {"title": "safemodel: changed-only"},
                                       f"Could not diff against the base commit {base} "
                                       f"({type(exc).__name__}); scanning every path. Use actions/checkout "
                                       "with fetch-depth: 0 to scan only the changed files."))
            else:
                targets = [p for p in changed if _inside(p, roots) and os.path.lexists(p)]
                print(f"safemodel: changed-only: {len(targets)} changed file"
                      f"{'s' if len(targets) != 1 else ''} to scan")

    reports: List[ScanReport] = []
    code = 0
    log_parts: List[str] = []
    if targets:
        code, report, log = run_cli("scan", targets, settings)
        log_parts.append(log)
        if report is not None:
            reports.append(report)
    if inputs.hub_repos and code != EXIT_USAGE:
        hub_code, report, log = run_cli("hub", inputs.hub_repos, settings)
        log_parts.append(log)
        if hub_code == EXIT_USAGE:
            code = EXIT_USAGE
        if report is not None:
            reports.append(report)
    # The CLI's own verdict line is repeated below; show its log only when it says more than that.
    messages = [line for part in log_parts for line in part.splitlines()
                if line.strip() and not line.startswith(("PASS:", "FAIL:", "INCOMPLETE:"))]
    if messages:
        print_block("safemodel messages", "\n".join(messages))
    if code == EXIT_USAGE:
        return did_not_run(env, "safemodel: usage error",
                           "safemodel could not run with these inputs; see the step log "
                           "(group 'safemodel messages').")

    # The CLI settled fail-on (the input, else the config's, else high); its report says which.
    fail_on = inputs.fail_on or (reports[0].fail_on if reports else Severity.HIGH)
    report = merge(reports, fail_on)
    if choice.notes:
        report.extra["config_notes"] = list(choice.notes)
        report.extra["notes"] = list(report.extra.get("notes", ())) + list(choice.notes)
    print_block("safemodel report", writer("text").render(report))
    if inputs.annotations:
        for line in annotation_lines(report):
            print(line)
    if inputs.summary:
        append_summary(env.get("GITHUB_STEP_SUMMARY"), report)
    if inputs.sarif_file:
        directory = os.path.dirname(inputs.sarif_file)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(inputs.sarif_file, "w", encoding="utf-8") as fh:
            fh.write(writer("sarif").render(report))
    write_outputs(env.get("GITHUB_OUTPUT"), {
        "findings": str(counted_findings(report)),
        "blocking": "true" if report.exit_code != 0 else "false",
        "sarif-file": inputs.sarif_file,
    })
    print(summary_line(report))
    return report.exit_code


if __name__ == "__main__":
    from safemodel_ci import exit_process

    exit_process(main())
