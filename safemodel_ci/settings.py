"""Settings of one run, built once per entry point: the config file in force plus the command line
(``safemodel``), the hook's arguments (``safemodel-pre-commit``) or the Action's inputs.

Every entry point maps its own input to one :class:`Settings` with the functions here, through the
same value parsers and the same error messages; everything below the entry points (sources, the
scanner, the writers) takes the settings or the narrow values it needs, never an
``argparse.Namespace``.

This module is imported by the hook before it knows whether a staged file is a model, so it imports
only :mod:`safemodel_ci.findings` at start-up: the config parser, the scanner and the result cache
are imported when a setting that needs them is first asked for (see ``tests/test_startup_imports.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from .findings import EXIT_USAGE, Severity
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Optional, Tuple
    from .cache import ResultCache
    from .config import Config
    from .parallel import ScanPlan
    from .scanner import ScanOptions

#: What ``--fail-on info`` (and the hook's) is told: INFO never fails a run.
FAIL_ON_INFO = "fail-on must be low, medium, high or critical"


def _help_width() -> int:
    """The width argparse's formatter wraps help to: ``shutil.get_terminal_size().columns - 2``
    (``COLUMNS``, else the terminal of ``sys.__stdout__``, else 80), without importing ``shutil``."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns if columns > 0 else 80) - 2


_SIZED_FORMATTERS: dict = {}


def _sized(formatter_class: Any) -> Any:
    """``formatter_class`` with its width given when argparse leaves it out.

    argparse makes a formatter for every ``add_argument`` (to check the argument's metavar) and its
    ``HelpFormatter`` then imports ``shutil`` for the terminal's width: ~2 ms of every run, help or
    not (``bench/startup.py``). The width is the same one, computed as ``shutil`` does.
    """
    sized = _SIZED_FORMATTERS.get(formatter_class)
    if sized is None:
        class Sized(formatter_class):  # type: ignore[misc, valid-type]
            def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
                if len(args) < 3 and kwargs.get("width") is None:  # (indent, max_help_position, width)
                    kwargs["width"] = _help_width()
                super().__init__(prog, *args, **kwargs)

        Sized.__name__ = Sized.__qualname__ = formatter_class.__name__
        sized = _SIZED_FORMATTERS[formatter_class] = Sized
    return sized


class UsageParser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; 2 means "incomplete scan" for every safemodel entry point,
    so usage errors exit 3. Help is wrapped to the terminal's width as argparse does (see
    :func:`_sized`)."""

    def __init__(self, **kwargs: Any) -> None:  # keywords only, as argparse's add_parser passes them
        kwargs["formatter_class"] = _sized(kwargs.get("formatter_class", argparse.HelpFormatter))
        super().__init__(**kwargs)

    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---- value parsers shared by every entry point --------------------------------------------------

def parse_fail_on(text: str, info_message: str = FAIL_ON_INFO) -> Severity:
    """A ``fail-on`` value: low, medium, high or critical. ``ValueError`` says what is wrong
    (``info_message`` for ``info``, which never fails a run)."""
    sev = Severity.parse(text)
    if sev is Severity.INFO:
        raise ValueError(info_message)
    return sev


def parse_jobs(text: str) -> int:
    """A ``--jobs`` value: a positive number."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--jobs wants a positive number, not {text!r}")
    return n


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse ``type=``: its ``ValueError`` becomes the usage error's message."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


#: argparse ``type=`` functions (a bad value exits 3 with the parser's usage line and the message).
fail_on_type = _argparse_type(parse_fail_on)
severity_type = _argparse_type(Severity.parse)
jobs_type = _argparse_type(parse_jobs)


def _warn(message: str) -> None:
    print(f"safemodel: warning: {message}", file=sys.stderr)


# ---- the settings -------------------------------------------------------------------------------

class Settings(Record):
    """What one run uses: scan options and limits, fail-on, what is shown and where, the cache.

    The config is loaded when first needed (:attr:`config`), once: a usage error found before that
    is reported as such even when the config is invalid too. Loading raises
    :class:`~safemodel_ci.config.ConfigError` (exit code 3 in every entry point).
    """

    # A plain record, not a dataclass: see safemodel_ci/record.py.
    __slots__ = ("config_path", "config_override", "fail_on_flag", "min_severity", "show_info", "format",
                 "output", "repo_root", "quiet", "no_cache", "check_cache", "jobs", "excludes",
                 "follow_symlinks", "warn", "_config", "_options", "_cache_dir", "_excludes")
    _repr_skip = frozenset({"warn", "_config", "_options", "_cache_dir", "_excludes"})
    _compare_skip = _repr_skip
    _init_skip = frozenset({"_config", "_options", "_cache_dir", "_excludes"})
    #: ``--config`` (None: the first config found from the working directory up).
    config_path: Optional[str]
    #: The config to use instead of ``config_path`` or the look-up (the Action passes the base
    #: branch's config of a pull request).
    config_override: "Optional[Config]"
    #: ``--fail-on`` as given (None: the config's, else high; see :attr:`fail_on`).
    fail_on_flag: Optional[Severity]
    #: ``--min-severity`` (None: text lists LOW and above unless ``show_info``; others list all).
    min_severity: Optional[Severity]
    show_info: bool
    format: str
    #: Where the report goes (None: standard output).
    output: Optional[str]
    #: What SARIF and GitHub file locations are relative to (None: found from the environment).
    repo_root: Optional[str]
    #: No progress messages on standard error.
    quiet: bool
    #: ``--no-cache`` (``SAFEMODEL_NO_CACHE=1`` is read each time :attr:`cache_dir` is asked).
    no_cache: bool
    #: Check that the cache directory is this user's alone before using it, and warn (through
    #: ``warn``) when it is not; False leaves the check to :class:`~safemodel_ci.cache.ResultCache`,
    #: which then silently scans uncached (the hook: a commit hook's output is its findings).
    check_cache: bool
    #: Worker processes (scan) or repos at once (hub); None: the command's default.
    jobs: Optional[int]
    #: ``--exclude`` patterns, added to the config's.
    excludes: Tuple[str, ...]
    follow_symlinks: bool
    #: How a warning reaches the user (the CLI: one ``safemodel: warning:`` line on stderr).
    warn: Callable[[str], None]

    # Loaded or computed once, when first asked for (not arguments, not compared, not shown).
    _config: "Optional[Config]"
    _options: "Optional[ScanOptions]"
    _cache_dir: Any  # False: not looked up yet
    _excludes: "Optional[Config]"

    def __init__(self, config_path: Optional[str] = None, config_override: "Optional[Config]" = None,
                 fail_on_flag: Optional[Severity] = None, min_severity: Optional[Severity] = None,
                 show_info: bool = False, format: str = "text", output: Optional[str] = None,
                 repo_root: Optional[str] = None, quiet: bool = False, no_cache: bool = False,
                 check_cache: bool = True, jobs: Optional[int] = None, excludes: Tuple[str, ...] = (),
                 follow_symlinks: bool = False, warn: Callable[[str], None] = _warn) -> None:
        self.config_path = config_path
        self.config_override = config_override
        self.fail_on_flag = fail_on_flag
        self.min_severity = min_severity
        self.show_info = show_info
        self.format = format
        self.output = output
        self.repo_root = repo_root
        self.quiet = quiet
        self.no_cache = no_cache
        self.check_cache = check_cache
        self.jobs = jobs
        self.excludes = excludes
        self.follow_symlinks = follow_symlinks
        self.warn = warn
        self._config = None
        self._options = None
        self._cache_dir = False
        self._excludes = None

    @property
    def config(self) -> "Config":
        """The config in force (the override, ``--config``, or the one found), loaded once."""
        if self._config is None:
            if self.config_override is not None:
                self._config = self.config_override
            else:
                from .config import load_config

                self._config = load_config(self.config_path)
        return self._config

    @property
    def fail_on(self) -> Severity:
        """``--fail-on``, else the config's ``fail-on``, else high."""
        if self.fail_on_flag is not None:
            return self.fail_on_flag
        cfg = self.config
        return cfg.fail_on if cfg.fail_on is not None else Severity.HIGH

    @property
    def options(self) -> "ScanOptions":
        """The scan options: the config's policy (allowed globals, severity overrides) and limits."""
        if self._options is None:
            from .scanner import ScanOptions

            cfg = self.config
            self._options = ScanOptions(policy=cfg.policy(), limits=cfg.limits)
        return self._options

    @property
    def cache_dir(self) -> Optional[str]:
        """The result cache directory, or None with ``--no-cache`` / ``SAFEMODEL_NO_CACHE=1``, or when
        the directory may be written by someone else (a warning says so; the scan runs uncached)."""
        from .cache import cache_disabled_by_env, check_cache_dir, default_cache_dir

        if self.no_cache or cache_disabled_by_env():
            return None
        if self._cache_dir is not False:
            return self._cache_dir
        directory: Optional[str] = default_cache_dir()
        if self.check_cache:
            problem = check_cache_dir(directory)
            if problem is not None:
                self.warn(f"result cache not used: {problem}")
                directory = None
        self._cache_dir = directory
        return directory

    def scan_plan(self) -> "ScanPlan":
        """How local files are scanned: the options, the config (ignores) and the cache directory."""
        from .parallel import ScanPlan

        return ScanPlan(options=self.options, config=self.config, cache_dir=self.cache_dir)

    def result_cache(self) -> "Optional[ResultCache]":
        """The result cache to use, or None (see :attr:`cache_dir`)."""
        directory = self.cache_dir
        if directory is None:
            return None
        from .cache import ResultCache

        return ResultCache(directory)

    def command_line_excludes(self) -> "Config":
        """``--exclude`` patterns as a config rooted at the working directory; a bad one is a
        :class:`~safemodel_ci.config.ConfigError`."""
        if self._excludes is None:
            from .config import Config, ConfigError, _compiled_glob

            patterns = tuple(p.strip() for p in self.excludes)
            for p in patterns:
                try:
                    if not p:
                        raise re.error("empty pattern")
                    _compiled_glob(p)
                except re.error as exc:
                    raise ConfigError("--exclude", None, None, f"{p!r}: invalid pattern: {exc}") from None
            self._excludes = Config(excludes=patterns)
        return self._excludes

    def show_progress(self) -> bool:
        """Progress goes to a terminal only: never in CI logs, never when quiet."""
        return not self.quiet and sys.stderr.isatty() and not os.environ.get("CI")


# ---- one function per entry point ---------------------------------------------------------------

def from_namespace(args: argparse.Namespace, config: "Optional[Config]" = None) -> Settings:
    """The settings of a ``safemodel`` command line (options a command does not have take their
    defaults). ``config``: the config to use instead of ``--config`` or the look-up."""
    return Settings(
        config_path=getattr(args, "config", None),
        config_override=config,
        fail_on_flag=getattr(args, "fail_on", None),
        min_severity=getattr(args, "min_severity", None),
        show_info=bool(getattr(args, "show_info", False)),
        format=getattr(args, "format", "text"),
        output=getattr(args, "output", None),
        repo_root=getattr(args, "repo_root", None),
        quiet=bool(getattr(args, "quiet", False)),
        no_cache=bool(getattr(args, "no_cache", False)),
        jobs=getattr(args, "jobs", None),
        excludes=tuple(getattr(args, "exclude", None) or ()),
        follow_symlinks=bool(getattr(args, "follow_symlinks", False)),
    )


def add_hook_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``safemodel-pre-commit`` that are settings (the knobs a config may set in
    ``args``); :func:`from_hook_args` reads them back."""
    parser.add_argument("--fail-on", type=fail_on_type, default=None, metavar="SEVERITY",
                        help="lowest severity that blocks the commit: low, medium, high (default), "
                             "critical")
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: .safemodel.yaml, or pyproject.toml with "
                             "[tool.safemodel], found from the repository root)")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not read or write the result cache (also: SAFEMODEL_NO_CACHE=1)")


def from_hook_args(args: argparse.Namespace) -> Settings:
    """The settings of ``safemodel-pre-commit`` (its arguments parsed with :func:`add_hook_options`).

    The hook scans each batch pre-commit hands it in this process (pre-commit already runs batches
    in parallel processes), and leaves an untrusted cache directory to the cache, which then scans
    uncached without a word: the hook's output is its findings.
    """
    return Settings(config_path=args.config, fail_on_flag=args.fail_on, no_cache=args.no_cache,
                    check_cache=False, jobs=1, quiet=True)


class InputError(ValueError):
    """An Action input that cannot be used; the message names the input (exit code 3)."""


def action_fail_on(text: str) -> Optional[Severity]:
    """The Action's ``fail-on`` input (empty: None, the config's or high). Raises :class:`InputError`."""
    text = text.strip()
    if not text:
        return None
    try:
        return parse_fail_on(text, info_message="info never fails a run")
    except ValueError as exc:
        raise InputError(f"input fail-on: {exc}") from None


def from_action_inputs(fail_on: Optional[Severity], config_path: Optional[str],
                       config_override: "Optional[Config]" = None, *, output: Optional[str] = None
                       ) -> Settings:
    """The settings of the GitHub Action's scans: its ``fail-on`` input (see :func:`action_fail_on`),
    its ``config`` input unless ``config_override`` (the base branch's config of a pull request) is
    used instead, a JSON report to ``output`` and no progress messages (the log is the Action's)."""
    return Settings(config_path=(config_path or None) if config_override is None else None,
                    config_override=config_override, fail_on_flag=fail_on, format="json",
                    output=output, quiet=True)


__all__ = ["Settings", "UsageParser", "InputError", "FAIL_ON_INFO", "parse_fail_on", "parse_jobs",
           "fail_on_type", "severity_type", "jobs_type", "from_namespace", "from_hook_args",
           "add_hook_options", "action_fail_on", "from_action_inputs"]
