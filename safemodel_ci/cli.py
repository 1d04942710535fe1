"""Command line: parses arguments and wires sources, the scanner and a writer together."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from . import __version__, exit_process
from .findings import EXIT_USAGE, FileResult, Finding, ScanReport, Severity
from .output import FORMATS, writer
from .rules import RULES_BY_ID
from .config import Config, ConfigError, load_config
from .scanner import ScanOptions
from .sources.paths import iter_paths

if TYPE_CHECKING:  # pragma: no cover
    from .cache import ResultCache

EXIT_CODES_HELP = """\
exit codes:
  0  nothing found at or above the --fail-on severity
  1  findings at or above the --fail-on severity (the file could run code or is invalid)
  2  something could not be scanned fully (truncated, encrypted, LFS pointer without content,
     limit reached, unreadable) and nothing blocking was found: never treat as clean
  3  usage or configuration error
"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; 2 means "incomplete scan" here, so use 3."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _severity(text: str) -> Severity:
    try:
        sev = Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if sev is Severity.INFO:
        raise argparse.ArgumentTypeError("fail-on must be low, medium, high or critical")
    return sev


def add_output_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that produces a report."""
    p.add_argument("--format", "-f", choices=FORMATS, default="text",
                   help="output format (default: text)")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the report to FILE instead of standard output")
    p.add_argument("--fail-on", type=_severity, default=None, metavar="SEVERITY",
                   help="lowest severity that fails the run: low, medium, high (default), critical")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="safemodel",
        description="Find machine-learning model files that would run code when loaded "
                    "(pickle, PyTorch, joblib, NumPy, Keras, TensorFlow, GGUF, ONNX) and validate "
                    "safetensors headers, without ever loading them.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"safemodel-ci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    scan = sub.add_parser(
        "scan", help="scan files and directories",
        description="Scan files and directories (recursively). Formats are detected from content, "
                    "not from file names.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    scan.add_argument("paths", nargs="+", metavar="PATH",
                      help="files or directories to scan; - reads a list of paths from standard input, "
                           "one per line")
    scan.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                      help="skip paths matching GLOB (the config's exclude syntax, relative to the working "
                           "directory); repeatable, added to the config's")
    scan.add_argument("--follow-symlinks", action="store_true",
                      help="follow symlinks found in directories even when they point outside the "
                           "scanned paths (default: only links into the scanned paths are followed)")
    scan.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N",
                      help="worker processes (default: one per CPU; 1 scans in this process)")
    add_output_options(scan)
    scan.set_defaults(func=cmd_scan)

    hub = sub.add_parser(
        "hub", help="scan Hugging Face Hub repos remotely, fetching only the bytes each format needs",
        description="Scan Hub repos in place: the revision is resolved to a commit sha (reported), "
                    "the tree at that sha is listed and every file is read with HTTP range requests. "
                    "Token from HF_TOKEN or the saved login, endpoint from HF_ENDPOINT.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    hub.add_argument("repo_ids", nargs="+", metavar="REPO_ID",
                     help="repos to scan, e.g. org/name, or org/name@REVISION for one repo's revision")
    hub.add_argument("--revision", help="branch, tag or commit to scan (default: the main branch)")
    hub.add_argument("--repo-type", choices=("model", "dataset", "space"), default="model",
                     help="repository type (default: model)")
    hub.add_argument("--jobs", "-j", type=_jobs, default=1, metavar="N",
                     help="repos scanned at once (default: 1)")
    add_output_options(hub)
    hub.set_defaults(func=cmd_hub)

    cache = sub.add_parser(
        "cache", help="scan every repo and revision in the local Hugging Face cache",
        description="Scan every cached repo and revision (huggingface_hub.scan_cache_dir) and check "
                    "that every blob still hashes to its name.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache.add_argument("--cache-dir", metavar="DIR",
                       help="cache to scan (default: HF_HUB_CACHE, or HF_HOME/hub)")
    cache.add_argument("--repo", action="append", metavar="REPO_ID",
                       help="scan only this repo (org/name, or datasets/org/name); repeatable")
    add_output_options(cache)
    cache.set_defaults(func=cmd_cache)

    rules = sub.add_parser("rules", help="list every rule id with its severity and meaning")
    rules.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    rules.set_defaults(func=cmd_rules)
    return parser


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs wants a positive number, not {text!r}")
    return n


def config(args: argparse.Namespace) -> Config:
    """The config in force (``--config`` or the one found from the working directory), loaded once.

    Raises :class:`ConfigError` (exit code 3 in :func:`main`) when it is invalid.
    """
    loaded = getattr(args, "_config", None)
    if loaded is None:
        loaded = load_config(getattr(args, "config", None))
        args._config = loaded
    return loaded


def scan_options(args: argparse.Namespace) -> ScanOptions:
    """The scan options a command line asks for (policy and limits from the config)."""
    cfg = config(args)
    return ScanOptions(policy=cfg.policy(), limits=cfg.limits)


def fail_on(args: argparse.Namespace) -> Severity:
    """``--fail-on``, else the config's ``fail-on``, else high."""
    if args.fail_on is not None:
        return args.fail_on
    cfg = config(args)
    return cfg.fail_on if cfg.fail_on is not None else Severity.HIGH


def cache_dir(args: argparse.Namespace) -> Optional[str]:
    """The result cache directory, or None with ``--no-cache`` / ``SAFEMODEL_NO_CACHE=1``."""
    from .cache import cache_disabled_by_env, default_cache_dir

    if getattr(args, "no_cache", False) or cache_disabled_by_env():
        return None
    return default_cache_dir()


def result_cache(args: argparse.Namespace) -> "Optional[ResultCache]":
    """The result cache a command uses, or None (``--no-cache``, ``SAFEMODEL_NO_CACHE=1``)."""
    directory = cache_dir(args)
    if directory is None:
        return None
    from .cache import ResultCache

    return ResultCache(directory)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress goes to a terminal only: never in CI logs, never when quiet."""
    return not args.quiet and sys.stderr.isatty() and not os.environ.get("CI")


def emit(report: ScanReport, args: argparse.Namespace) -> int:
    """Write the report where asked and return the exit code."""
    text = writer(args.format, repo_root=getattr(args, "repo_root", None)).render(report)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"safemodel: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.format != "text":
            # The verdict still shows in the log when the report itself goes to a file.
            from .output.text import summary_line
            print(summary_line(report), file=sys.stderr)
    else:
        sys.stdout.write(text)
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
    from .parallel import ScanPlan, scan_paths

    cfg = config(args)
    plan = ScanPlan(options=scan_options(args), config=cfg, cache_dir=cache_dir(args))
    progress = show_progress(args)
    results: List[FileResult] = []
    skipped: List[Tuple[str, str]] = []
    excluded = command_line_excludes(args)
    paths = [p for p in iter_paths(args.paths, args.follow_symlinks, skipped)
             if not cfg.is_excluded(p) and not excluded.is_excluded(p)]
    done_bytes = 0
    for result in scan_paths(paths, plan, jobs=args.jobs):
        results.append(result)
        done_bytes += result.size
        if progress:
            from .sources.hub import format_bytes

            print(f"\rscanned {len(results)}/{len(paths)} files, {format_bytes(done_bytes)}", end="",
                  file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    results.extend(skipped_result(path, reason) for path, reason in skipped)
    return emit(ScanReport(results, fail_on=fail_on(args)), args)


def command_line_excludes(args: argparse.Namespace) -> Config:
    """``--exclude`` patterns as a config rooted at the working directory; a bad one is a ConfigError."""
    from .config import _compiled_glob

    patterns = tuple(p.strip() for p in getattr(args, "exclude", None) or ())
    for p in patterns:
        try:
            if not p:
                raise re.error("empty pattern")
            _compiled_glob(p)
        except re.error as exc:
            raise ConfigError("--exclude", None, None, f"{p!r}: invalid pattern: {exc}") from None
    return Config(excludes=patterns)


def skipped_result(path: str, reason: str) -> FileResult:
    """A notice for a path the walk passed over (a symlink out of the tree), so nothing is silent."""
    rule = RULES_BY_ID["skipped-not-regular"]
    return FileResult(path=path, findings=[Finding(rule.id, rule.severity, path, reason, rule.remedy)])


def cmd_hub(args: argparse.Namespace) -> int:
    from .sources.hub import scan_hub_command  # imports huggingface_hub only when asked

    return scan_hub_command(args)


def cmd_cache(args: argparse.Namespace) -> int:
    from .sources.hfcache import scan_cache_command

    return scan_cache_command(args)


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"safemodel: invalid config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("safemodel: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console entry point (``safemodel``): :func:`main`, then exit with its code."""
    exit_process(main())
