"""The one table of rule ids. The docs (``safemodel rules``), the SARIF rules and the tests read it.

A rule id is stable once released: findings, config ``severity-overrides`` and code-scanning alerts
refer to it. ``unscanned`` rules mean "this file could not be fully inspected": they never block on
severity, they make the verdict "incomplete" (exit code 2) so a file is never reported clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from .findings import Severity


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    description: str
    remedy: str
    unscanned: bool = False
    #: True for findings that mean "loading this runs code": config may not lower them.
    code_execution: bool = False


_CONVERT = "Convert the model to safetensors, or load it only if you trust its author."
_REPORT = "Re-export the file with the original library, or remove it; do not load it until it scans."

RULES: Tuple[Rule, ...] = (
    # ---- generic: coverage and errors -------------------------------------------------------
    Rule("unscanned-parse-error", Severity.HIGH, "Could not be parsed",
         "The file or member is malformed or truncated where a loader would read it, so it could not "
         "be inspected fully. Findings seen before the error are reported too.",
         _REPORT, unscanned=True),
    Rule("unscanned-limit", Severity.HIGH, "Scan limit exceeded",
         "A limit (size, nesting depth, member count, decompressed bytes or time budget) was reached "
         "before the whole file was inspected.",
         "Check the file by hand; raise the limit in the config only if the file is trusted.",
         unscanned=True),
    Rule("unscanned-encrypted", Severity.HIGH, "Encrypted content",
         "An encrypted archive member cannot be inspected.",
         "Ship models unencrypted, or verify the file out of band.", unscanned=True),
    Rule("unscanned-unsupported", Severity.HIGH, "Reader not available",
         "The content needs an optional reader that is not installed (for example py7zr for 7z "
         "archives, lz4 for lz4-compressed joblib files).",
         "Install safemodel-ci[formats] and scan again.", unscanned=True),
    Rule("unscanned-unreadable", Severity.HIGH, "File could not be read",
         "The file could not be opened or read (permissions, a special file, a broken link).",
         "Make the file readable to the scanner, or exclude it explicitly in the config.",
         unscanned=True),
    Rule("scanner-error", Severity.HIGH, "Internal scanner error",
         "The scanner failed on this content; it is not reported clean.",
         "Report the file to the safemodel-ci maintainers; do not load it meanwhile.", unscanned=True),
    Rule("unrecognized-format", Severity.INFO, "Not a recognised model format",
         "The file is named like a model file but its content matches no known model format.",
         "Nothing to do if the file is not a model."),
    Rule("skipped-not-regular", Severity.INFO, "Not a regular file",
         "A fifo, device, socket or a symlink that is not followed was passed over; nothing was read.",
         "Scan the link target itself if it is a model, or pass --follow-symlinks."),
    Rule("lfs-pointer-missing", Severity.HIGH, "Git LFS pointer without content",
         "The file is a Git LFS pointer and the object it names is not available locally, so the "
         "real model was not scanned.",
         "Fetch the LFS content (git lfs pull, or actions/checkout with lfs: true) and scan again.",
         unscanned=True),
    Rule("lfs-object-mismatch", Severity.HIGH, "Git LFS object does not match its pointer",
         "The local LFS object's size or sha256 differs from what the pointer states.",
         "Re-fetch the object (git lfs fetch) and investigate how it was altered."),
    Rule("polyglot", Severity.HIGH, "Valid in two formats at once",
         "The bytes form more than one format (for example a pickle with an appended zip, or a "
         "safetensors file whose tail is a zip): different loaders see different content.",
         _REPORT),
    # ---- pickle VM ---------------------------------------------------------------------------
    Rule("pickle-dangerous-global", Severity.CRITICAL, "Pickle imports a dangerous callable",
         "The pickle imports a global that can execute code, run processes, touch files or the "
         "network, or import further code. Loading the file runs it.",
         _CONVERT, code_execution=True),
    Rule("pickle-unknown-global", Severity.HIGH, "Pickle imports a global that is not allowlisted",
         "The pickle imports a global that is not on the allowlist of known-safe model globals. It "
         "may be harmless, but an allowlist is the only defence against new gadgets.",
         "If you trust it, allow exactly this global in .safemodel.yaml (allow-globals, with a "
         "reason); otherwise convert the model to safetensors."),
    Rule("pickle-unresolved-global", Severity.CRITICAL, "Pickle import name is computed",
         "GLOBAL/INST/STACK_GLOBAL operands are not literal strings, so what is imported cannot be "
         "known without running the pickle.",
         _CONVERT, code_execution=True),
    Rule("pickle-ext-code", Severity.HIGH, "Pickle uses the copyreg extension registry",
         "EXT1/EXT2/EXT4 opcodes import whatever the loading process registered under a code.",
         _CONVERT),
    Rule("pickle-nested", Severity.MEDIUM, "Pickle builds and loads another pickle",
         "Bytes built inside the stream are passed to a loader; they were scanned as a nested pickle.",
         _CONVERT),
    Rule("pickle-broken-stream", Severity.HIGH, "Pickle stream is broken",
         "The stream is truncated or has an invalid opcode. Loaders run every opcode before the "
         "break, so findings before it are real; the rest could not be inspected.",
         _REPORT, unscanned=True),
    # ---- containers (zip, torch, numpy, joblib, 7z) ------------------------------------------
    Rule("zip-name-mismatch", Severity.HIGH, "Zip entry named differently in its two headers",
         "The local header and the central directory give an entry different names: zipfile refuses "
         "it, torch's reader does not check, and scanners that look names up are misled.",
         _REPORT),
    Rule("zip-duplicate-member", Severity.HIGH, "Zip holds several entries with one name",
         "torch loads the first entry of a name, zipfile the last: the file means different things to "
         "different loaders. Every copy was scanned.",
         _REPORT),
    Rule("zip-flag-bits", Severity.MEDIUM, "Zip entry with encryption or patch flag bits",
         "An entry is flagged encrypted or patched while its content is plain: zipfile refuses it, torch "
         "reads it anyway. A known way to make scanners skip a member; the content was scanned.",
         _REPORT),
    Rule("zip-crc-mismatch", Severity.MEDIUM, "Zip entry fails its CRC check",
         "The CRC-32 of an entry differs from its headers: zipfile refuses it, torch loads it. The content "
         "was scanned as torch would read it.",
         _REPORT),
    Rule("zip-malformed", Severity.MEDIUM, "Zip structure is inconsistent",
         "Entry counts, compression methods or sizes disagree between the zip's records; readers may "
         "disagree about the content.",
         _REPORT),
    Rule("zip-prepended-data", Severity.MEDIUM, "Bytes before the first zip entry",
         "Data precedes the archive: pickle.load and np.load read it from offset 0 while zip readers "
         "find the archive at the end. The leading bytes were scanned as well.",
         _REPORT),
    Rule("zip-unaccounted-bytes", Severity.MEDIUM, "Bytes in a zip that belong to no entry",
         "A region between entries is not listed in the central directory (a hidden member for readers "
         "that walk local headers). It was scanned as a member.",
         _REPORT),
    Rule("zip-multiple-roots", Severity.MEDIUM, "Torch archive with several top-level folders",
         "torch.save writes one top-level folder; torch reads the folder of the first entry. Every "
         "folder was scanned.",
         _REPORT),
    Rule("torch-script-code", Severity.HIGH, "TorchScript archive carries code",
         "The archive holds TorchScript code (code/, constants.pkl or bytecode.pkl) that torch.jit.load "
         "compiles and runs; torch.load before 2.6 handed such archives to it even with weights_only.",
         "Ship plain weights (safetensors, or torch.save of a state_dict); load TorchScript only from "
         "authors you trust."),
    Rule("torch-unaccounted-bytes", Severity.MEDIUM, "Legacy torch file has bytes outside its layout",
         "Bytes of a legacy torch.save file belong to none of its five pickles and raw storages. They "
         "were searched for pickle streams, which were scanned.",
         _REPORT),
    Rule("npy-object-array", Severity.LOW, "NumPy array of Python objects",
         "The .npy array has an object dtype: its data is a pickle, loaded only with allow_pickle=True. "
         "The pickle was scanned.",
         "Store numeric arrays instead of object arrays; keep allow_pickle=False when loading."),
    Rule("npy-trailing-data", Severity.MEDIUM, "Bytes after the NumPy array data",
         "The .npy file is longer than its header's shape and dtype imply. np.load ignores the rest; "
         "other readers may not. The trailing bytes were scanned.",
         _REPORT),
    Rule("compressed-trailing-data", Severity.MEDIUM, "Bytes after a compressed stream",
         "A compressed file (joblib) continues after the end of its compressed stream. The trailing "
         "bytes were scanned.",
         _REPORT),
    # ---- safetensors -------------------------------------------------------------------------
    # ---- keras, tensorflow, gguf, onnx -------------------------------------------------------
    # ---- repositories, Hub and cache ---------------------------------------------------------
)

RULES_BY_ID: Dict[str, Rule] = {r.id: r for r in RULES}


def rule(rule_id: str) -> Rule:
    """The rule for an id; an unknown id is a programming error."""
    return RULES_BY_ID[rule_id]
