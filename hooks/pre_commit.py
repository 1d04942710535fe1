"""pre-commit adapter: the files pre-commit passes in -> one core scan -> one line per finding.

pre-commit runs ``safemodel-pre-commit [args] FILE...`` from the repository root with the staged
content checked out. This module only turns that file list into scan targets and the results into
``path: SEVERITY rule-id message`` lines with what to do; every decision is the core's.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from safemodel_ci import exit_process
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, FileResult, ScanReport, Severity
from safemodel_ci.settings import UsageParser, add_hook_options, from_hook_args

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List, Optional, Sequence

# The scanner, config and cache modules are imported only once a staged file is selected: a commit
# of source files then costs a start-up and one small read per file (see the README's numbers).

PROG = "safemodel-pre-commit"

#: A TensorFlow SavedModel is a directory; this file names it (pre-commit only passes files).
SAVED_MODEL_PB = "saved_model.pb"

#: Names scanned whatever their content: model files (plain or compressed), shard indexes,
#: tokenizer configs and chat templates. (The hooks receive every staged file; this is the filter the
#: manifest's ``files`` pattern used to be.)
MODEL_NAME_RE = re.compile(r"""(?ix)(
    \.(pickle|pkl|pt|pth|bin|ckpt|joblib|npy|npz|h5|hdf5|keras|safetensors|gguf|onnx|pb|msgpack
       |dill|sav|model|pt2|ptl|mar|pdparams|nemo|llamafile|tflite|tar|7z|zip)
      (\.(gz|bz2|xz|lzma|lz4|z))?
    |(^|/)(tokenizer_config|processor_config|chat_template)\.json
    |\.jinja
    |\.index\.json
)$""")

#: Bytes read from a file with another name to decide whether it is scanned (as identify does).
SNIFF_BYTES = 1024
#: Bytes of text as identify (pre-commit's ``types: [text]``) counts them; any other byte is binary.
_TEXT_BYTES = bytes(sorted({7, 8, 9, 10, 11, 12, 13, 27} | set(range(0x20, 0x100)) - {0x7F}))
LFS_POINTER_START = b"version https://git-lfs.github.com/spec/"


def content_reason(path: str) -> Optional[str]:
    """Why a file whose name is not a model name is scanned anyway, or None when it is not.

    Binary content (a model renamed ``weights.dat``: every binary model format has such bytes in its
    first kilobyte), a Git LFS pointer (its object may be a model), or text that is a pickle (protocol
    0 is printable: identify calls it text). An unreadable file is scanned, so the scan reports it.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return "unreadable"
    if not head:
        return None
    if head.translate(None, _TEXT_BYTES):
        return "binary"
    if head.startswith(LFS_POINTER_START):
        return "lfs-pointer"
    try:
        from safemodel_ci.formats.pickle import _OPCODES, looks_like_pickle
        from safemodel_ci.source import FileSource

        if head[0] not in _OPCODES:
            return None
        with FileSource(path) as source:
            return "pickle" if looks_like_pickle(source, 0) else None
    except Exception:  # noqa: BLE001 - a sniffer failure must not pass the file over: scan it
        return "sniff-error"


def select_files(filenames: Sequence[str], every_file: bool = False) -> List[str]:
    """The staged files to scan: model names, then anything whose content may be a model."""
    if every_file:
        return list(filenames)
    return [name for name in filenames
            if MODEL_NAME_RE.search(name.replace("\\", "/")) or content_reason(name) is not None]


def build_parser() -> argparse.ArgumentParser:
    """The hook's command line: what pre-commit passes, plus the knobs a config may set in args (the
    settings module's hook options: --fail-on, --config, --no-cache)."""
    parser = UsageParser(prog=PROG, description="Scan the model files pre-commit passes in; fail the "
                                                "commit when one could run code when loaded.")
    parser.add_argument("filenames", nargs="*", metavar="FILE", help="files to scan (from pre-commit)")
    add_hook_options(parser)
    parser.add_argument("--every-file", action="store_true",
                        help="scan every file passed by content, whatever its name or first bytes "
                             "(the safemodel-scan-all hook); default: files named like models, and "
                             "others whose first bytes are binary, a pickle or a Git LFS pointer")
    return parser


def scan_targets(filenames: Sequence[str]) -> List[str]:
    """The paths to scan for the files pre-commit passed, in order, without duplicates.

    A ``saved_model.pb`` stands for its whole SavedModel directory (variables, assets, Keras
    metadata); files inside such a directory are then covered by the directory walk.
    """
    from safemodel_ci.sources.paths import iter_paths

    saved_model_dirs: List[str] = []
    for name in filenames:
        if os.path.basename(name) == SAVED_MODEL_PB:
            directory = os.path.dirname(name) or os.curdir
            if directory not in saved_model_dirs:
                saved_model_dirs.append(directory)
    roots = [os.path.abspath(d) + os.sep for d in saved_model_dirs]
    targets: List[str] = []
    seen = set()
    for name in filenames:
        if os.path.basename(name) == SAVED_MODEL_PB:
            directory = os.path.dirname(name) or os.curdir
            expanded = [os.path.normpath(p) for p in iter_paths([directory])]
        elif any(os.path.abspath(name).startswith(root) for root in roots):
            continue  # inside a SavedModel directory that is walked anyway
        else:
            expanded = [name]
        for path in expanded:
            if path not in seen:
                seen.add(path)
                targets.append(path)
    return targets


def _shown(result: FileResult) -> bool:
    """Files worth a line: anything but name-matched non-models (no format, notices only)."""
    return any(f.unscanned or f.severity > Severity.INFO for f in result.findings)


def render(report: ScanReport) -> str:
    """``path: SEVERITY rule-id message`` per finding, what to do, and the verdict line."""
    from safemodel_ci.output.text import finding_line, summary_line

    lines: List[str] = []
    remedies: List[str] = []
    for result in report.files:
        if not _shown(result):
            continue
        for f in result.findings:
            if f.severity is Severity.INFO and not f.unscanned:
                continue
            lines.append(finding_line(f))
            if (f.unscanned or f.severity >= report.fail_on) and f.remedy not in remedies:
                remedies.append(f.remedy)
    if report.exit_code != EXIT_OK:
        lines.append("")
        lines.append("What to do:")
        lines.extend(f"  - {r}" for r in remedies)
        # Only a failing commit needs the converter's advice (its module costs ~10 dataclasses).
        from safemodel_ci.convert import convert_command

        for result in report.files:
            command = convert_command(result, report.fail_on)
            if command:
                lines.append(f"  - {result.path} holds tensors that can be taken out without loading it: "
                             f"{command}")
        if report.exit_code == EXIT_FINDINGS:
            lines.append("  - To accept one exact file you trust, add {sha256: <sha256sum of it>, "
                         "reason: why} under ignore in .safemodel.yaml (a changed file is scanned again).")
    if lines:
        lines.append(summary_line(report))
    return "\n".join(lines) + ("\n" if lines else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``safemodel-scan`` hook; returns the scan's exit code (0, 1, 2; 3 usage)."""
    args = build_parser().parse_args(argv)
    selected = select_files(args.filenames, args.every_file)
    if not selected:
        return EXIT_OK  # nothing staged is, or may be, a model
    from safemodel_ci.config import ConfigError
    from safemodel_ci.parallel import scan_paths

    settings = from_hook_args(args)
    try:
        plan = settings.scan_plan()
    except ConfigError as exc:
        print(f"{PROG}: invalid config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    targets = [p for p in scan_targets(selected) if not plan.config.is_excluded(p)]
    report = ScanReport(list(scan_paths(targets, plan, jobs=settings.jobs)), fail_on=settings.fail_on)
    sys.stdout.write(render(report))
    return report.exit_code


def run() -> None:
    """Console entry point (``safemodel-pre-commit``): :func:`main`, then exit with its code."""
    exit_process(main())


if __name__ == "__main__":
    run()
