"""Command line: parses arguments and wires sources, the scanner and a writer together."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys

from . import Terminated, __version__, exit_process
from .findings import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_USAGE, FileResult, Location, ScanReport, Severity
from .output import FORMATS, writer
from .policy import Policy
from .config import Config, ConfigError
from .settings import Settings, UsageParser, fail_on_type, from_namespace, jobs_type, severity_type
from .sources.paths import iter_paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Dict, List, Optional, Sequence, Tuple
    from .sources.hfcache import CacheScan
    from .sources.hub import HubRepoScan

EXIT_CODES_HELP = """\
exit codes:
  0  nothing found at or above the --fail-on severity
  1  findings at or above the --fail-on severity (the file could run code or is invalid)
  2  something could not be scanned fully (truncated, encrypted, LFS pointer without content,
     limit reached, unreadable) and nothing blocking was found: never treat as clean
  3  usage or configuration error
"""




def shown_report(report: ScanReport, settings: Settings) -> ScanReport:
    """The report as it is written: ``--min-severity``, else INFO left out of text unless ``--show-info``.
    The exit code and verdict are the run's either way (see :meth:`ScanReport.filtered`)."""
    minimum = settings.min_severity
    if minimum is None and settings.format == "text" and not settings.show_info:
        minimum = Severity.LOW
    return report.filtered(minimum) if minimum is not None and minimum > Severity.INFO else report


def add_output_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that produces a report."""
    p.add_argument("--format", "-f", choices=FORMATS, default="text",
                   help="output format (default: text)")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the report to FILE instead of standard output")
    p.add_argument("--fail-on", type=fail_on_type, default=None, metavar="SEVERITY",
                   help="lowest severity that fails the run: low, medium, high (default), critical")
    p.add_argument("--min-severity", type=severity_type, default=None, metavar="SEVERITY",
                   help="list only findings at or above SEVERITY (info, low, medium, high, critical), in "
                        "every format; findings that decide the exit code are always listed. Default: "
                        "text lists LOW and above, json/sarif/github list every finding")
    p.add_argument("--show-info", "-v", action="store_true",
                   help="text: list INFO findings too (files that are not models, notices)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress messages on standard error")
    p.add_argument("--repo-root", metavar="DIR",
                   help="repository root that SARIF and GitHub file locations are relative to (default: "
                        "SAFEMODEL_REPO_ROOT, GITHUB_WORKSPACE, or the Git work tree around the current "
                        "directory)")
    p.add_argument("--config", metavar="FILE",
                   help="config file (.safemodel.yaml or a pyproject.toml with [tool.safemodel]); "
                        "default: the first one found from the working directory up to the repository root")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the result cache ($SAFEMODEL_CACHE_DIR, default "
                        "~/.cache/safemodel-ci)")


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``safemodel`` parser; with ``command``, only that sub-command's parser is built (:func:`main`
    builds the one it runs when the command line starts with it: all six cost ~2 ms of every run, and
    a command line that starts with a sub-command's name shows nothing of the others: no top-level
    help, and the usage line names ``COMMAND``, not the list)."""

    def full(name: str) -> bool:
        return command is None or command == name

    parser = UsageParser(
        prog="safemodel",
        description="Find machine-learning model files that would run code when loaded "
                    "(pickle, PyTorch, joblib, NumPy, Keras, TensorFlow, GGUF, ONNX) and validate "
                    "safetensors headers, without ever loading them.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"safemodel-ci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UsageParser)

    if full("scan"):
        scan = sub.add_parser(
            "scan", help="scan files and directories",
            description="Scan files and directories (recursively). Formats are detected from content, "
                        "not from file names.",
            epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        scan.add_argument("paths", nargs="+", metavar="PATH",
                          help="files or directories to scan; - reads a list of paths from standard input, "
                               "one per line")
        scan.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                          help="skip paths matching GLOB (the config's exclude syntax, relative to the "
                               "working directory); repeatable, added to the config's")
        scan.add_argument("--follow-symlinks", action="store_true",
                          help="follow symlinks found in directories even when they point outside the "
                               "scanned paths (default: only links into the scanned paths are followed)")
        scan.add_argument("--jobs", "-j", type=jobs_type, default=None, metavar="N",
                          help="worker processes (default: one per CPU; 1 scans in this process)")
        add_output_options(scan)
        scan.set_defaults(func=cmd_scan)

    if full("hub"):
        hub = sub.add_parser(
            "hub", help="scan Hugging Face Hub repos remotely, fetching only the bytes each format needs",
            description="Scan Hub repos in place: the revision is resolved to a commit sha (reported), "
                        "the tree at that sha is listed and every file is read with HTTP range requests. "
                        "Token from HF_TOKEN or the saved login, endpoint from HF_ENDPOINT.",
            epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        hub.add_argument("repo_ids", nargs="*", metavar="REPO_ID",
                         help="repos to scan, e.g. org/name, or org/name@REVISION for one repo's revision")
        hub.add_argument("--repos-file", metavar="FILE",
                         help="more repos, one org/name[@REVISION] a line (# comments; - reads standard "
                              "input)")
        hub.add_argument("--shard", metavar="K/N",
                         help="scan only shard K of N of the repos (stable: a repo's shard depends on its "
                              "name alone); run N jobs, then 'safemodel merge' their JSON reports")
        hub.add_argument("--revision", help="branch, tag or commit to scan (default: the main branch)")
        hub.add_argument("--repo-type", choices=("model", "dataset", "space"), default="model",
                         help="repository type (default: model)")
        hub.add_argument("--jobs", "-j", type=jobs_type, default=1, metavar="N",
                         help="repos scanned at once (default: 1)")
        add_output_options(hub)
        hub.set_defaults(func=cmd_hub)

    if full("cache"):
        cache = sub.add_parser(
            "cache", help="scan every repo and revision in the local Hugging Face cache",
            description="Scan every cached repo and revision (huggingface_hub.scan_cache_dir) and check "
                        "that every blob still hashes to its name.",
            epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        cache.add_argument("--cache-dir", metavar="DIR",
                           help="cache to scan (default: HF_HUB_CACHE, or HF_HOME/hub)")
        cache.add_argument("--repo", action="append", metavar="REPO_ID",
                           help="scan only this repo (org/name, or datasets/org/name); repeatable")
        cache.add_argument("--no-verify", action="store_true",
                           help="scan without hashing the blobs: a file changed after download is not "
                                "detected (the report says 'not verified')")
        add_output_options(cache)
        cache.set_defaults(func=cmd_cache)

    if full("convert"):
        convert = sub.add_parser(
            "convert", help="convert PyTorch pickle checkpoints that scan clean to safetensors",
            description="Scan each checkpoint, then convert the ones with no finding at or above --fail-on "
                        "to safetensors. Tensors are copied from the checkpoint's storages by a strict "
                        "reader that imports and calls nothing; the written files are validated and "
                        "compared tensor by tensor. Takes torch.save files (zip or legacy format) and "
                        "pytorch_model.bin.index.json shard indexes.",
            epilog=CONVERT_EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        convert.add_argument("paths", nargs="+", metavar="PATH",
                             help="checkpoints (.bin, .pt, .pth, .ckpt) or a *.bin.index.json shard index")
        convert.add_argument("--output-dir", "-o", metavar="DIR",
                             help="where to write (default: beside each input)")
        convert.add_argument("--key", metavar="KEY",
                             help="convert the dict at this key of a training checkpoint (e.g. state_dict; "
                                  "dotted for nested keys)")
        convert.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                             help="split the output above this size, as transformers does (default: 5GB)")
        convert.add_argument("--fail-on", type=fail_on_type, default=None, metavar="SEVERITY",
                             help="refuse files with findings at or above this severity (default: from the "
                                  "config, else high)")
        convert.add_argument("--config", metavar="FILE", help="config file (default: .safemodel.yaml found "
                                                              "from the working directory)")
        convert.add_argument("--no-cache", action="store_true", help="do not use the result cache")
        convert.set_defaults(func=cmd_convert)

    if full("merge"):
        merge = sub.add_parser(
            "merge", help="combine JSON reports (e.g. of 'hub --shard K/N' jobs) into one report",
            description="Combine JSON reports into one JSON, SARIF, Markdown or text report whose exit "
                        "code follows the usual rules. When the reports come from 'hub --shard K/N', a "
                        "missing or repeated shard is reported (exit 2 at least): a shard job that died "
                        "never looks clean.",
            epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        merge.add_argument("reports", nargs="+", metavar="REPORT.json",
                           help="JSON reports of safemodel-ci")
        merge.add_argument("--format", "-f", choices=FORMATS + ("markdown",), default="text",
                           help="output format (default: text; markdown is the Action's job summary)")
        merge.add_argument("--output", "-o", metavar="FILE", help="write the report here instead of stdout")
        merge.add_argument("--fail-on", type=fail_on_type, default=None, metavar="SEVERITY",
                           help="lowest severity that fails (default: the strictest of the reports')")
        merge.add_argument("--repo-root", metavar="DIR", help=argparse.SUPPRESS)
        merge.add_argument("--quiet", "-q", action="store_true", help=argparse.SUPPRESS)
        merge.set_defaults(func=cmd_merge)

    if full("rules"):
        rules = sub.add_parser("rules", help="list every rule id with its severity and meaning")
        rules.add_argument("--format", choices=("text", "markdown", "json"), default="text")
        rules.set_defaults(func=cmd_rules)
    return parser


def emit(report: ScanReport, settings: Settings,
         render: "Optional[Callable[[ScanReport], str]]" = None) -> int:
    """Write the report where asked (``render``, else the writer of ``--format``) and return the
    exit code."""
    from .output.interface import escape_surrogates

    report = shown_report(report, settings)
    if render is None:
        render = writer(settings.format, repo_root=settings.repo_root).render
    # A non-UTF-8 file name is shown as \xNN (the JSON report keeps it as a \udcNN escape).
    text = escape_surrogates(render(report))
    if settings.output:
        try:
            with open(settings.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"safemodel: cannot write {settings.output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        if settings.format != "text":
            # The verdict still shows in the log when the report itself goes to a file.
            from .output.text import summary_line
            print(summary_line(report), file=sys.stderr)
    else:
        try:
            if sys.stdout is None:  # started with standard output closed (>&-)
                raise OSError(errno.EBADF, "standard output is closed")
            sys.stdout.write(text)
            sys.stdout.flush()
        except (OSError, ValueError) as exc:  # ValueError: a closed file object
            return stdout_failed(exc)
    return report.exit_code


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^(?:www\.)?(?:huggingface\.co|hf\.co)/")


def scan_targets(args: argparse.Namespace) -> Optional[List[str]]:
    """The paths to scan (``-`` replaced by the lines of standard input), or None after a usage error."""
    paths: List[str] = []
    for p in args.paths:
        if p == "-":
            paths.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            paths.append(p)
    urls = [p for p in paths if _URL.match(p)]
    for url in urls:
        print(f"safemodel: {url} is a URL and scan reads local files only: for a Hugging Face repo use "
              "`safemodel hub org/name`", file=sys.stderr)
    return None if urls else paths


def cmd_scan(args: argparse.Namespace) -> int:
    targets = scan_targets(args)
    if targets is None:
        return EXIT_USAGE
    args.paths = targets
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        for p in missing:
            print(f"safemodel: {p}: no such file or directory", file=sys.stderr)
        return EXIT_USAGE
    from .parallel import scan_paths

    settings: Settings = args._settings  # built by main
    plan = settings.scan_plan()
    cfg = plan.config
    progress = settings.show_progress()
    results: List[FileResult] = []
    skipped: List[Tuple[str, str]] = []
    unscanned: List[Tuple[str, str, str]] = []
    paths: List[str] = []
    excluded: List[Dict[str, str]] = []
    cli_excludes = settings.command_line_excludes()
    for p in iter_paths(args.paths, settings.follow_symlinks, skipped, unscanned):
        pattern, where = cfg.excluding_pattern(p), cfg.path or ""
        if pattern is None:
            pattern, where = cli_excludes.excluding_pattern(p), "--exclude"
        if pattern is None:
            paths.append(p)
        else:
            excluded.append({"path": p, "pattern": pattern, "config": where})
    done_bytes = 0
    for result in scan_paths(paths, plan, jobs=settings.jobs):
        results.append(result)
        done_bytes += result.size
        if progress:
            from .sources.hub import format_bytes

            print(f"\rscanned {len(results)}/{len(paths)} files, {format_bytes(done_bytes)}", end="",
                  file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    policy = plan.options.policy
    results.extend(skipped_result(path, reason, policy=policy) for path, reason in skipped)
    results.extend(skipped_result(path, reason, rule_id, policy=policy) for rule_id, path, reason in unscanned
                   if not cfg.is_excluded(path) and not cli_excludes.is_excluded(path))
    report = ScanReport(results, fail_on=settings.fail_on, excluded=len(excluded))
    config_extra(report, cfg, excluded)
    return emit(report, settings)


def config_extra(report: ScanReport, cfg: Config, excluded: List[Dict[str, str]]) -> None:
    """Say in the report what the config left out: every excluded file (JSON ``extra``, SARIF run
    properties, the job summary) and a one-line note (text), so an exclusion is never silent."""
    if not excluded:
        return
    report.extra["excluded_by_config"] = [dict(e) for e in excluded]
    notes = list(report.extra.get("notes", ()))
    for where in sorted({e["config"] for e in excluded}):
        mine = [e for e in excluded if e["config"] == where]
        patterns = sorted({e["pattern"] for e in mine})
        notes.append(f"{len(mine)} file{'s' if len(mine) != 1 else ''} not scanned: excluded by "
                     f"{where or 'the config'} ({', '.join(patterns)})")
    report.extra["notes"] = notes


def skipped_result(path: str, reason: str, rule_id: str = "skipped-not-regular", *,
                   policy: Policy) -> FileResult:
    """A finding for a path the walk passed over (a notice for a link to a directory scanned
    anyway; unscanned for a directory link leaving the scanned paths or an unlistable directory),
    judged by the scan's ``policy`` like every other finding."""
    at = Location.local(path)
    return FileResult(path=path, location=at, findings=[policy.finding(rule_id, at, reason)])


def cmd_hub(args: argparse.Namespace) -> int:
    from .fanout import FanoutError, load_targets, parse_shard, select_shard

    try:
        targets = list(args.repo_ids) + (load_targets(args.repos_file) if args.repos_file else [])
        if not targets:
            print("safemodel hub: name at least one repo, or --repos-file", file=sys.stderr)
            return EXIT_USAGE
        shard_label = None
        if args.shard:
            k, n = parse_shard(args.shard)
            targets = select_shard(targets, k, n)
            shard_label = f"{k}/{n}"
    except FanoutError as exc:
        print(f"safemodel hub: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # huggingface_hub is imported only when a hub command runs.
    from .sources.hub import HubClientConfig, HubRepoScanner, build_report, parse_repo_target, scan_repos

    settings: Settings = args._settings  # built by main
    try:
        client = HubClientConfig.from_environment()
    except Exception as exc:  # noqa: BLE001 - e.g. an OIDC token exchange (HF_OIDC_RESOURCE) that failed
        print(f"safemodel: cannot get a Hugging Face token: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = settings.show_progress()
    line = _HubProgressLine()
    scanner = HubRepoScanner(client, settings.options, on_progress=line.update if progress else None,
                             result_cache=settings.result_cache())
    scans = scan_repos(scanner, [parse_repo_target(t, args.revision) for t in targets],
                       repo_type=args.repo_type, jobs=settings.jobs or 1)
    if progress and line.open:
        print(file=sys.stderr)
    report = build_report(scans, settings.fail_on)
    if shard_label:
        report.extra["shard"] = shard_label  # lets 'safemodel merge' notice a missing shard
    return emit(report, settings)


class _HubProgressLine:
    """One progress line per repo on standard error; repos scanned at once (``--jobs``) take turns."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        #: A repo's line is still open (its last update ends it).
        self.open = False

    def update(self, scan: "HubRepoScan", done: int, total: int) -> None:
        from .sources.hub import format_bytes

        fetched = format_bytes(scan.stats.bytes_fetched)
        with self._lock:
            # A repo's last update ends its line, so the next repo does not overwrite it.
            print(f"\r{scan.label}: {done}/{total} files scanned, {fetched} fetched",
                  end="\n" if done == total else "", file=sys.stderr, flush=True)
            self.open = done != total


def cmd_cache(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import CacheNotFound  # in .utils for every version 0.20 to 2.x

    from .sources.hfcache import cache_report, scan_cache
    from .sources.hub import format_bytes, plural

    settings: Settings = args._settings  # built by main
    progress = settings.show_progress()

    def on_file(scan: "CacheScan") -> None:
        print(f"\rcache: {len(scan.files)}/{scan.total_files} files, "
              f"{plural(scan.blobs_scanned, 'blob')} scanned, {format_bytes(scan.bytes_hashed)} hashed",
              end="", file=sys.stderr, flush=True)

    try:
        scan = scan_cache(args.cache_dir, settings.options, on_file=on_file if progress else None,
                          result_cache=settings.result_cache(), verify=not args.no_verify, repos=args.repo)
    except (CacheNotFound, ValueError) as exc:
        print(f"safemodel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.repo and scan.repos == 0:
        print(f"safemodel: {', '.join(args.repo)}: not in the cache {scan.cache_dir}", file=sys.stderr)
        return EXIT_USAGE
    if progress:
        print(file=sys.stderr)
    return emit(cache_report(scan, settings.fail_on), settings)


CONVERT_EXIT_CODES_HELP = """exit codes:
  0  every file was converted and verified
  1  a file was refused: its scan found something at or above --fail-on (nothing written for it)
  2  a file scanned clean but could not be converted (not a torch.save checkpoint, no tensors, a
     storage type safetensors has no dtype for, ...)
  3  usage or configuration error
"""


def cmd_convert(args: argparse.Namespace) -> int:
    from . import convert as conv
    from .scanner import scan_file

    try:
        max_shard = conv.parse_size(args.max_shard_size)
    except ValueError as exc:
        print(f"safemodel convert: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings: Settings = args._settings  # built by main
    threshold = settings.fail_on
    options = settings.options
    worst = 0
    for path in args.paths:
        if not os.path.isfile(path):
            print(f"safemodel convert: {path}: not a file", file=sys.stderr)
            return EXIT_USAGE
        try:
            inputs = conv.shard_files(path) if path.endswith(".index.json") else [path]
        except conv.ConvertError as exc:
            print(f"{path}: not converted: {exc}")
            worst = max(worst, EXIT_INCOMPLETE)
            continue
        refused = False
        for item in inputs:
            result = scan_file(item, options)
            bad = [f for f in result.findings if f.unscanned or f.severity >= threshold]
            for f in bad:
                where = f"{f.path}:{f.member}" if f.member else f.path
                print(f"{where}: {f.severity.name} {f.rule_id} {f.message}")
            refused = refused or bool(bad)
        if refused:
            print(f"{path}: not converted: the scan found what is listed above (at or above "
                  f"{threshold.name.lower()}); the file was not loaded")
            worst = max(worst, EXIT_FINDINGS)
            continue
        out_dir = args.output_dir or os.path.dirname(os.path.abspath(path))
        try:
            if path.endswith(".index.json"):
                done = conv.convert_sharded(path, out_dir, key=args.key)
            else:
                done = [conv.convert_checkpoint(path, out_dir, key=args.key, max_shard_size=max_shard)]
        except (conv.ConvertError, OSError) as exc:
            print(f"{path}: not converted: {exc}")
            worst = max(worst, EXIT_INCOMPLETE)
            continue
        for c in done:
            for line in c.skipped:
                print(f"{c.source}: left out: {line}")
            aliases = f", {len(c.aliases)} aliases kept once" if c.aliases else ""
            print(f"{c.source}: converted {c.tensors} tensors{aliases} -> {', '.join(c.outputs)}")
    return worst
def cmd_merge(args: argparse.Namespace) -> int:
    from .fanout import FanoutError, merge_reports

    settings: Settings = args._settings  # built by main
    try:
        # Without --fail-on, the strictest of the reports' (not the config's: merge reads none).
        report = merge_reports(args.reports, fail_on=settings.fail_on_flag)
    except FanoutError as exc:
        print(f"safemodel merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.format == "markdown":
        from .output.job_summary import render_job_summary

        return emit(report, settings, render=render_job_summary)
    return emit(report, settings)


def cmd_rules(args: argparse.Namespace) -> int:
    from .rules import RULES

    if args.format == "json":
        import json

        print(json.dumps([{"id": r.id, "severity": r.severity.name, "unscanned": r.unscanned,
                           "code_execution": r.code_execution, "title": r.title,
                           "description": r.description, "remedy": r.remedy} for r in RULES], indent=2))
    elif args.format == "markdown":
        print("| rule id | severity | what it means | what to do |")
        print("| --- | --- | --- | --- |")
        for r in RULES:
            sev = "unscanned (exit 2)" if r.unscanned else r.severity.name
            cells = [f"`{r.id}`", sev, f"{r.title}: {r.description}", r.remedy]
            print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    else:
        for r in RULES:
            sev = "UNSCANNED" if r.unscanned else r.severity.name
            print(f"{r.id:40} {sev:9} {r.title}")
    return 0


def main(argv: Optional[Sequence[str]] = None, config: Optional[Config] = None,
         settings: Optional[Settings] = None) -> int:
    """Run a command line. ``config``: the config to use instead of ``--config`` or the look-up.
    ``settings``: the settings to run with instead of those of the command line's options (the
    GitHub Action maps its inputs to settings and passes only the command and its operands)."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(words))
    args = parser.parse_args(words)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args._settings = settings if settings is not None else from_namespace(args, config)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"safemodel: invalid config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("safemodel: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("safemodel: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError as exc:  # a write to standard output outside emit (safemodel rules | head)
        return stdout_failed(exc)


#: The sub-commands, as :func:`build_parser` adds them.
COMMANDS = ("scan", "hub", "cache", "convert", "merge", "rules")


def _command(words: Sequence[str]) -> Optional[str]:
    """The sub-command a command line runs when its first word names one; None otherwise (a top-level
    option first, as in ``--help scan``, or no command: then every sub-command's parser is built, so
    the help or error is the full one)."""
    return words[0] if words and words[0] in COMMANDS else None


def stdout_failed(exc: BaseException) -> int:
    """Standard output is closed, a closed pipe or a full disk: one line on stderr, exit 3.

    Standard output is pointed at /dev/null afterwards, so the interpreter's last flush of what is
    still buffered does not fail again with a traceback.
    """
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    try:
        print(f"safemodel: cannot write the report to standard output: {reason}", file=sys.stderr)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_USAGE


def run() -> None:
    """Console entry point (``safemodel``): :func:`main`, then exit with its code."""
    exit_process(main())
