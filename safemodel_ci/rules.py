"""The one table of rule ids. The docs (``safemodel rules``), the SARIF rules and the tests read it.

A rule id is stable once released: findings, config ``severity-overrides`` and code-scanning alerts
refer to it. ``unscanned`` rules mean "this file could not be fully inspected": they never block on
severity, they make the verdict "incomplete" (exit code 2) so a file is never reported clean.
"""

from __future__ import annotations


from .findings import Finding, Location, Severity
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Mapping, Optional, Tuple


class Rule(Record, frozen=True):
    """One row of the rules table (a plain record, not a dataclass: see safemodel_ci/record.py)."""

    __slots__ = ("id", "severity", "title", "description", "remedy", "unscanned", "code_execution")
    id: str
    severity: Severity
    title: str
    description: str
    remedy: str
    unscanned: bool
    #: True for findings that mean "loading this runs code": config may not lower them.
    code_execution: bool

    def __init__(self, id: str, severity: Severity, title: str, description: str, remedy: str,
                 unscanned: bool = False, code_execution: bool = False) -> None:
        set_ = object.__setattr__
        set_(self, "id", id)
        set_(self, "severity", severity)
        set_(self, "title", title)
        set_(self, "description", description)
        set_(self, "remedy", remedy)
        set_(self, "unscanned", unscanned)
        set_(self, "code_execution", code_execution)

    def finding(self, at: Location, message: str, *, offset: Optional[int] = None,
                details: Optional[Mapping[str, Any]] = None, severity: Optional[Severity] = None,
                remedy: Optional[str] = None) -> Finding:
        """A finding of this rule at ``at``: severity, remedy and ``unscanned`` from the table
        (``severity`` and ``remedy`` only where a reader must say more than the table does).

        Not judged by a policy: scanning code makes findings through
        :meth:`safemodel_ci.policy.Policy.finding` (or ``ScanContext.report``), which calls this.
        """
        return Finding(self.id, self.severity if severity is None else severity, at.display, message,
                       remedy or self.remedy, offset=offset, unscanned=self.unscanned,
                       details=dict(details or {}), location=at)


_CONVERT = "Convert the model to safetensors, or load it only if you trust its author."
_REPORT = "Re-export the file with the original library, or remove it; do not load it until it scans."
_ST_REMEDY = ("Re-save the tensors with the safetensors library (safetensors.torch.save_file); do not "
              "load a file that fails validation.")
_INDEX_REMEDY = "Regenerate the index with the library that wrote the shards (save_pretrained)."

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
    Rule("unscanned-link", Severity.HIGH, "Symlink to a directory outside the scanned paths",
         "A walked directory holds a link to a directory outside the scanned paths; it was not "
         "followed, so what a loader would read through it was not scanned.",
         "Scan the link's target too, or pass --follow-symlinks.", unscanned=True),
    Rule("scanner-error", Severity.HIGH, "Internal scanner error",
         "The scanner failed on this content; it is not reported clean.",
         "Report the file to the safemodel-ci maintainers; do not load it meanwhile.", unscanned=True),
    Rule("unrecognized-format", Severity.INFO, "Not a recognised model format",
         "The file is named like a model file with an ambiguous name (.bin, .model, "
         ".pb, .zip, .tar, .msgpack ...) but its content matches no known model format.",
         "Nothing to do if the file is not a model."),
    Rule("name-format-mismatch", Severity.HIGH, "Content is not what the file name says",
         "The name binds a loader (.safetensors, .gguf, .onnx, .keras, .h5/.hdf5, .npy/.npz, or a "
         "pickle loader's .pkl/.pickle/.pt/.pth/.ckpt/.joblib/.dill/.sav) and that loader would refuse "
         "the content, or read something other than what the name says: the file is corrupt or "
         "disguised. Content the loader does read is scanned as that format instead.",
         "Find out where the file came from; replace it with a genuine file of the format its name "
         "says, or rename it to what it really is. Do not load it meanwhile."),
    Rule("skipped-not-regular", Severity.INFO, "Not a regular file",
         "A fifo, device or socket, or a symlink to a directory inside the scanned paths (its files "
         "are scanned there), was passed over; nothing was read.",
         "Nothing to do: a model file is never a fifo, device or socket."),
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
    # ---- configuration -----------------------------------------------------------------------
    Rule("ignored-by-config", Severity.INFO, "Accepted by an ignore entry in the config",
         "The file's sha256 matches an ignore entry of the config, so its findings (listed in the "
         "details) do not count. A changed file no longer matches and is scanned again.",
         "Review the ignore entry's reason from time to time; remove it once the file is replaced."),
    Rule("allowed-by-config", Severity.INFO, "Allowed by an allow-globals entry in the config",
         "An import that the built-in tables would report (not on the allowlist, or dangerous) is "
         "allowed by an allow-globals entry of the config. The finding names the entry, its reason "
         "and what it turned off, so the exception stays visible in every report.",
         "Review the entry's reason from time to time; remove the entry when the model no longer needs "
         "it."),
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
    Rule("pickle-nested-opaque", Severity.CRITICAL, "Pickle loads bytes it computes at load time",
         "A loader (pickle.loads, torch.load, torch.storage._load_from_bytes ...) is called on, or handed "
         "over with, data that is only known when the pickle runs, so what it loads cannot be scanned.",
         _CONVERT, code_execution=True),
    Rule("pickle-global-mutation", Severity.CRITICAL, "Pickle rewrites an imported module or class",
         "BUILD, SETITEM or APPEND is applied to an imported object itself (a module, class or function), "
         "not to an instance: the pickle changes code or tables that later imports and calls use.",
         _CONVERT, code_execution=True),
    Rule("pickle-calls-built-object", Severity.CRITICAL, "Pickle calls an object it built",
         "REDUCE, OBJ or INST (or an admitted function that calls its argument, such as "
         "torch._tensor._rebuild_from_type_v2, or a BUILD after a state that stored __setstate__ on the "
         "instance) calls an object the pickle built or loaded, not an imported global. "
         "The call runs that object's __call__, which the allowlist never judged: an admitted "
         "class whose instances dispatch by a name they hold (numpy.ma.extras._fromnxfunction_single"
         "('load')) or call what they wrap (numpy.vectorize) reaches any function. Library pickles never "
         "do this.",
         _CONVERT, code_execution=True),
    Rule("pickle-trailing-data", Severity.INFO, "Bytes after the last pickle",
         "The file continues after its last pickle with bytes that are not a pickle; they import and "
         "call nothing, and pickle.load ignores them.",
         "Nothing to do if the file comes from a trusted tool; otherwise re-export it."),
    Rule("torch-tar-link", Severity.CRITICAL, "Legacy torch tar member is a link",
         "The storages, tensors or pickle member of a legacy torch tar checkpoint is a symlink, hard link "
         "or other non-regular member. torch.load extracts storages and tensors with tarfile's default "
         "filter and unpickles them from disk, so a link makes it unpickle an arbitrary local file "
         "(or another member) that this scan never saw.",
         _CONVERT, code_execution=True),
    Rule("torch-stack-global", Severity.MEDIUM, "STACK_GLOBAL in a torch archive pickle",
         "torch.save writes protocol 2 pickles by default, which import with GLOBAL only, and torch's "
         "weights-only loader rejects STACK_GLOBAL: the archive's data.pkl was written with a higher "
         "pickle_protocol or by another tool.",
         _REPORT),
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
    Rule("torch-script-code", Severity.LOW, "TorchScript archive carries code",
         "The archive holds TorchScript code (code/, constants.pkl or bytecode.pkl) that torch.jit.load "
         "compiles and runs (torch.load hands such archives to it). Every op the code calls was judged "
         "against the compute ops of torch's registry; problems are reported as torchscript-* findings.",
         "Nothing to do when no other finding is reported; plain weights (safetensors) carry no code."),
    Rule("torchscript-dangerous-op", Severity.CRITICAL, "TorchScript code touches files or loads code",
         "The archive's TorchScript code calls an op that touches files (aten::save, aten::from_file), "
         "reaches other processes (RPC, process groups), loads a native library, or uses a torch.classes "
         "class no torch library defines. torch.jit.load compiles the code and running the model runs it.",
         _REPORT, code_execution=True),
    Rule("torchscript-unknown-op", Severity.HIGH, "TorchScript code uses an op outside the compute allowlist",
         "The archive's TorchScript code calls an op of a namespace other than aten/prim/quantized/"
         "prepacked (it needs a native op library), an op the torch registry does not hold, or a name "
         "this scanner cannot resolve as TorchScript does.",
         "Check which library provides the op and that you trust it; re-export the model with stock ops."),
    Rule("torch-export-guard-code", Severity.CRITICAL, "torch.export program carries Python guard code",
         "A guards_code entry of a torch.export archive is not a shape comparison (ExportedProgram.module() "
         "pastes every guard into Python source and exec()s it), or a symbolic size expression is not "
         "plain sympy (torch.export.load reads each with sympy.sympify, which eval()s it).",
         _REPORT, code_execution=True),
    Rule("torch-export-dangerous-target", Severity.CRITICAL, "torch.export program calls a non-operator",
         "A node target of a torch.export archive names a torch/_operator attribute path that is not an "
         "operator (torch.export.load resolves it to that Python function and running the program calls "
         "it), or an operator that touches files or other processes.",
         _REPORT, code_execution=True),
    Rule("torch-export-native-code", Severity.HIGH, "torch.export archive ships compiled native code",
         "An AOTInductor package (data/aotinductor/ in a .pt2 archive): torch.export.load and "
         "torch._inductor.aoti_load_package extract its shared library and dlopen() it. Native code "
         "cannot be inspected; loading the file runs it.",
         "Load it only if you trust its author, or re-export the program without AOTInductor and scan "
         "that."),
    Rule("torch-export-unknown-target", Severity.HIGH, "torch.export program uses an unknown target",
         "A node target of a torch.export archive is an operator outside the compute allowlist (a custom "
         "namespace needs a native library), an extension operator, or a name the loader leaves "
         "unresolved.",
         "Check which library provides the op and that you trust it; re-export with stock ops."),
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
    # Invalid headers are HIGH: an invalid safetensors file is either corrupt or crafted, and the
    # reference refuses it. Spec violations that safetensors 0.8 tolerates but other parsers may read
    # differently are MEDIUM; duplicate keys, on which parsers disagree, are HIGH.
    Rule("safetensors-too-small", Severity.HIGH, "safetensors file shorter than 8 bytes",
         "The file cannot even hold the 8-byte header length (reference: HeaderTooSmall).", _ST_REMEDY),
    Rule("safetensors-header-too-large", Severity.HIGH, "safetensors header length over 100,000,000",
         "The little-endian u64 header length N exceeds the reference's MAX_HEADER_SIZE of 100,000,000 "
         "bytes (HeaderTooLarge).", _ST_REMEDY),
    Rule("safetensors-header-length", Severity.HIGH, "safetensors header runs past the end of the file",
         "8 + N is beyond the end of the file (InvalidHeaderLength).", _ST_REMEDY),
    Rule("safetensors-header-not-utf8", Severity.HIGH, "safetensors header is not UTF-8",
         "The N header bytes are not valid UTF-8 (InvalidHeader).", _ST_REMEDY),
    Rule("safetensors-header-start", Severity.MEDIUM, "safetensors header does not start with '{'",
         "The spec says the header MUST begin with '{'; safetensors 0.8 skips leading JSON whitespace, "
         "other parsers may not. A spec violation the reference tolerates, so MEDIUM.", _ST_REMEDY),
    Rule("safetensors-header-not-json", Severity.HIGH, "safetensors header is not valid JSON",
         "The header is not JSON as serde_json (the reference's parser) accepts it: syntax errors, "
         "padding with NUL or other non-whitespace bytes, NaN/Infinity, numbers out of range, lone "
         "surrogate escapes, nesting deeper than 127 levels (InvalidHeaderDeserialization).", _ST_REMEDY),
    Rule("safetensors-header-not-object", Severity.HIGH, "safetensors header is not a JSON object",
         "The top-level JSON value must be an object mapping tensor names to entries.", _ST_REMEDY),
    Rule("safetensors-header-padding", Severity.MEDIUM, "safetensors header padded with other than spaces",
         "The spec allows trailing padding with spaces (0x20) only; tabs, newlines or carriage returns "
         "are tolerated by safetensors 0.8 as JSON whitespace but violate the spec, so MEDIUM. Padding "
         "with any other byte (NUL ...) is invalid JSON and reported as safetensors-header-not-json.",
         _ST_REMEDY),
    Rule("safetensors-duplicate-key", Severity.HIGH, "Duplicate key in a safetensors header",
         "A key occurs twice in one JSON object of the header. The spec forbids it and parsers disagree: "
         "safetensors 0.8 keeps the last of two tensors of one name, rejects a repeated field, and "
         "other JSON readers may keep the first, so a reviewer and a loader can see different tensors.",
         _ST_REMEDY),
    Rule("safetensors-metadata-type", Severity.HIGH, "safetensors __metadata__ is not a string map",
         "__metadata__ must be an object whose values are all strings (null for the whole entry is "
         "accepted, as by the reference).", _ST_REMEDY),
    Rule("safetensors-tensor-not-object", Severity.HIGH, "safetensors tensor entry is not an object",
         "Every key other than __metadata__ must hold an object with dtype, shape and data_offsets. "
         "Stricter than the reference: serde also accepts a 3-element array [dtype, shape, offsets], "
         "which no writer produces and other parsers read differently.", _ST_REMEDY),
    Rule("safetensors-tensor-missing-field", Severity.HIGH, "safetensors tensor entry lacks a field",
         "A tensor entry has no dtype, shape or data_offsets.", _ST_REMEDY),
    Rule("safetensors-tensor-unknown-field", Severity.MEDIUM, "safetensors tensor entry has unknown fields",
         "A tensor entry has fields besides dtype, shape and data_offsets. safetensors 0.8 ignores them; "
         "they carry data no loader checks, so MEDIUM.", _ST_REMEDY),
    Rule("safetensors-dtype", Severity.HIGH, "Unknown safetensors dtype",
         "dtype is not one of the spec's 22 dtypes (BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, "
         "F64, I64, U64, C64, F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, F4, F6_E2M3, "
         "F6_E3M2) given as a string. Stricter than the reference, which also takes serde's "
         "{\"F32\": null} enum form.", _ST_REMEDY),
    Rule("safetensors-shape", Severity.HIGH, "safetensors shape is not a list of non-negative integers",
         "Every shape entry must be an unsigned 64-bit integer (not negative, not 1.0, not -0).",
         _ST_REMEDY),
    Rule("safetensors-data-offsets", Severity.HIGH, "safetensors data_offsets is not a pair of integers",
         "data_offsets must be exactly two unsigned 64-bit integers.", _ST_REMEDY),
    Rule("safetensors-offsets-not-contiguous", Severity.HIGH, "safetensors tensors not contiguous from 0",
         "Sorted by offsets, each tensor must start where the previous one ends (the first at 0) and "
         "must not end before it starts: holes, overlaps and reversed offsets are refused "
         "(InvalidOffset). Hidden bytes in holes are a place to smuggle data.", _ST_REMEDY),
    Rule("safetensors-size-overflow", Severity.HIGH, "safetensors size arithmetic overflows",
         "Elements x dtype bits overflows 64-bit arithmetic (ValidationOverflow).", _ST_REMEDY),
    Rule("safetensors-subbyte-misaligned", Severity.HIGH, "Sub-byte safetensors tensor not byte-aligned",
         "A tensor of a sub-byte dtype (F4, F6_*) has a bit size that is not a multiple of 8 "
         "(MisalignedSlice).", _ST_REMEDY),
    Rule("safetensors-tensor-size", Severity.HIGH, "safetensors tensor size does not match its offsets",
         "end - begin differs from elements x dtype size (TensorInvalidInfo).", _ST_REMEDY),
    Rule("safetensors-data-coverage", Severity.HIGH, "safetensors data does not cover the file exactly",
         "The last tensor must end exactly at the end of the file: trailing bytes (a classic place for an "
         "appended zip or pickle) or missing bytes (truncation) are refused (MetadataIncompleteBuffer).",
         _ST_REMEDY),
    Rule("safetensors-index-invalid", Severity.HIGH, "Sharded-checkpoint index is malformed",
         "A *.index.json with a weight_map is not strict JSON, or weight_map is not an object of tensor "
         "name to shard file name, or metadata.total_size is not a non-negative integer.", _INDEX_REMEDY),
    Rule("safetensors-index-duplicate-key", Severity.HIGH, "Duplicate key in a sharded-checkpoint index",
         "A key occurs twice in one object of the index: a tensor mapped to two shards, readers disagree "
         "on which one wins.", _INDEX_REMEDY),
    Rule("safetensors-index-shard-path", Severity.HIGH, "Shard name in an index is not a plain file name",
         "transformers joins shard names to the model directory unchecked: a '/', '\\', '..', absolute "
         "path or drive letter makes it load a file from elsewhere, which was never scanned as part of "
         "the model.", _INDEX_REMEDY),
    Rule("safetensors-index-shard-missing", Severity.MEDIUM, "Shard named in an index does not exist",
         "The index names a shard that is not beside it (checked when scanning a directory or a Hub "
         "repository): loading fails, or loads a file added later.", _INDEX_REMEDY),
    Rule("safetensors-index-shard-invalid", Severity.HIGH, "Shard fails safetensors validation",
         "A shard named by the index is not a valid safetensors file; its own findings are reported "
         "when it is scanned as a file.", _INDEX_REMEDY),
    Rule("safetensors-index-tensor-missing", Severity.HIGH, "Mapped tensor is not in its shard",
         "weight_map sends a tensor to a shard whose header does not contain it.", _INDEX_REMEDY),
    Rule("safetensors-index-tensor-unmapped", Severity.HIGH, "Shard holds a tensor the index does not map",
         "A shard's header has a tensor that weight_map does not list: loaders that load whole shards "
         "get it, tools that read the index do not see it.", _INDEX_REMEDY),
    Rule("safetensors-index-tensor-in-two-shards", Severity.HIGH, "Tensor present in two shards",
         "The same tensor name is in the headers of two shards: which one is loaded depends on the "
         "loader and the order it reads shards.", _INDEX_REMEDY),
    Rule("safetensors-index-total-size", Severity.LOW, "Index total_size differs from the tensors' bytes",
         "metadata.total_size differs from the sum of the byte sizes of the mapped tensors in the shard "
         "headers. Writers that count whole storages of views can legitimately differ, so LOW.",
         _INDEX_REMEDY),
    # ---- keras, tensorflow, gguf, onnx -------------------------------------------------------
    Rule("keras-lambda-code", Severity.CRITICAL, "Keras Lambda layer with marshalled bytecode",
         "A Lambda layer (or a Keras 3 __lambda__ object) carries Python bytecode that Keras unmarshals "
         "and runs when the model is loaded with safe_mode off, and always in older Keras and .h5 "
         "loaders (CVE-2024-3660, CVE-2025-9905). The names the code uses are listed; it was not run.",
         "Replace the Lambda with a registered custom layer whose code you ship and review; do not load "
         "the file with safe_mode=False.", code_execution=True),
    Rule("keras-unsafe-module", Severity.HIGH, "Keras config imports a module outside Keras",
         "An object in the Keras config names a `module` (or class) outside keras, keras_hub, keras_cv, "
         "keras_nlp and tf_keras. Keras imports it and calls what it finds (CVE-2025-1550): any "
         "installed function can be reached this way. Known-dangerous callables are CRITICAL.",
         "Re-save the model with Keras >= 3.9 from trusted code; load it only if you trust its author.",
         code_execution=True),
    Rule("keras-custom-object", Severity.HIGH, "Keras config needs custom objects",
         "The config refers to a custom object (a registered `package>Name`, or a Lambda calling a "
         "function by name) that only code outside the file can provide. Its behaviour cannot be checked "
         "from the file.",
         "Make sure the custom code comes from a source you trust, or use built-in layers only."),
    Rule("keras-non-modeling-api", Severity.CRITICAL, "Keras config calls a non-modelling API",
         "The config deserializes a Keras function that is not part of a model, such as "
         "keras.utils.get_file (downloads and writes files, CVE-2025-8747) or "
         "keras.config.enable_unsafe_deserialization (turns safe_mode off, CVE-2025-9906).",
         _REPORT, code_execution=True),
    Rule("keras-external-savedmodel", Severity.HIGH, "Keras TFSMLayer loads an external SavedModel",
         "A TFSMLayer names a filepath: loading the model loads and runs that TensorFlow SavedModel "
         "(CVE-2026-1462), which this scan of the file does not cover.",
         "Ship the SavedModel itself and scan it, or rebuild the layer from built-in layers."),
    Rule("keras-torch-module", Severity.HIGH, "Keras TorchModuleWrapper holds a pickled torch module",
         "A TorchModuleWrapper's config carries a torch.save blob that Keras loads with "
         "torch.load(weights_only=False), that is with unrestricted pickle. The blob was decoded and "
         "scanned; its findings are listed with it.",
         "Store the torch module's weights (safetensors) and build the module in code instead."),
    Rule("keras-file-reference", Severity.HIGH, "Keras layer reads a file named in the config",
         "A preprocessing layer (StringLookup, IntegerLookup, TextVectorization) takes its vocabulary "
         "from a file path in the config: loading the model reads that local file (CVE-2025-12058).",
         "Store the vocabulary inline or as an asset of the model, not as a path."),
    Rule("tf-dangerous-op", Severity.CRITICAL, "TensorFlow graph uses a file, process or Python op",
         "The SavedModel graph (or one of its library functions) contains ops that read or write files, "
         "list directories, write debug dumps to file:// or grpc:// URLs, call back into Python or reach "
         "the network. Running the model runs them.",
         "Rebuild the model without these ops, or run it only in a sandbox without file or network "
         "access."),
    Rule("tf-unknown-op", Severity.HIGH, "TensorFlow graph uses an op outside the compute allowlist",
         "An op of the SavedModel is not one of the pure compute ops of TensorFlow's registry (the "
         "allowlist generated by tools/gen_tf_ops.py): a custom op needs a native library, other "
         "registered ops touch devices, other processes or files.",
         "Check which library provides the op and that you trust it; re-export with stock ops."),
    Rule("tf-checkpoint-op", Severity.INFO, "TensorFlow checkpoint ops",
         "SaveV2/RestoreV2/MergeV2Checkpoints and similar ops inside the saver's own subgraph, on the "
         "saver's filename placeholder: every SavedModel's checkpoint machinery. They do not block.",
         "Nothing to do."),
    Rule("tf-checkpoint-op-misplaced", Severity.HIGH, "TensorFlow checkpoint op outside the saver",
         "A SaveV2/RestoreV2/MergeV2Checkpoints-style op runs outside the saver's own subgraph (in "
         "init, main, restore-time or signature code), or writes to a file name that does not come from "
         "the saver's filename placeholder (a constant absolute path, '..' or a URL): it reads or "
         "writes files the loader did not ask for.",
         "Re-export the model with tf.saved_model.save; do not load it until it scans."),
    Rule("gguf-invalid-header", Severity.HIGH, "GGUF header is invalid",
         "A GGUF length, count or type in the header is impossible or runs past the end of the file. "
         "Native GGUF parsers have had memory-safety bugs on exactly such headers; what follows the "
         "error was not inspected.",
         _REPORT),
    Rule("chat-template-code", Severity.CRITICAL, "Chat template reaches Python internals",
         "A Jinja chat template (GGUF metadata, tokenizer_config.json, chat_template.json, "
         "processor_config.json or a chat_template .jinja file), parsed by Jinja and never rendered, "
         "uses dunder or private names, introspection attributes (mro, gi_frame, f_globals ...), "
         "the attr filter, the globals cycler/joiner/lipsum/self, a format string that reads "
         "attributes, or calls popen/system/eval-like methods, written out or built from constants. "
         "Rendered by a non-sandboxed Jinja environment it runs code (CVE-2024-34359).",
         "Replace the template with the model family's published one; render templates only in "
         "jinja2.sandbox.ImmutableSandboxedEnvironment.", code_execution=True),
    Rule("chat-template-unknown-name", Severity.HIGH, "Chat template uses a name outside the allowlist",
         "A chat template uses an attribute of Python or Jinja objects, a method call, a filter, a test "
         "or a called global that the published chat templates and the transformers renderer do not "
         "use. Chat data fields (message.reasoning_content, tool.parameters) are not affected.",
         "Compare the template with the model family's published one and remove what differs."),
    Rule("chat-template-suspicious", Severity.HIGH, "Chat template builds names at render time",
         "A chat template looks up a key or attribute, or picks a filter, test or method, by a name "
         "computed at render time from parts that are not all constants (concatenation with data, "
         "characters taken from object reprs, set blocks with logic), or includes, imports or "
         "extends another template: the usual ways of hiding access to Python internals.",
         "Compare the template with the model family's published one and remove what differs."),
    Rule("onnx-external-data-path", Severity.HIGH, "ONNX external data path leaves the model folder",
         "A tensor's external_data location is absolute, contains '..', a NUL byte or a drive letter, or "
         "resolves through a link outside the model's folder: loading reads an arbitrary file "
         "(CVE-2022-25882, CVE-2024-27318).",
         "Keep external tensor files beside the model and name them by plain relative paths."),
    Rule("onnx-external-data-key", Severity.LOW, "ONNX external data entry with an unknown key",
         "An external_data entry has a key other than location, offset, length, checksum and basepath; "
         "onnx sets it as an attribute when loading.",
         "Re-export the model with the onnx package."),
    Rule("onnx-custom-domain", Severity.MEDIUM, "ONNX model uses custom operator domains",
         "Nodes use operator domains outside the standard ONNX and ONNX Runtime ones. Running the model "
         "needs a custom-op library (native code, or Python ops with onnxruntime-extensions) that is "
         "not in the file.",
         "Make sure the custom-op library comes from a source you trust."),
    Rule("protobuf-malformed", Severity.HIGH, "Protobuf model is malformed",
         "A SavedModel, keras_metadata.pb or ONNX file does not decode as the protobuf wire format "
         "where a loader would read it (bad lengths, groups, truncated fields).",
         _REPORT, unscanned=True),
    # ---- repositories, Hub and cache ---------------------------------------------------------
    Rule("repo-pickle-beside-safetensors", Severity.LOW, "Pickle weights beside safetensors weights",
         "The folder holds both a safetensors and a pickle-based weight file for the same loader. "
         "transformers and diffusers pick safetensors, but snapshot_download still fetches the pickle, "
         "and torch.load or use_safetensors=False load it. Its own findings are reported separately.",
         "Delete the pickle weight file from the repo, or pass allow_patterns to snapshot_download so "
         "it is never fetched."),
    Rule("repo-loader-picks-pickle", Severity.LOW, "Loader picks pickle weights",
         "The folder has no safetensors weights, so from_pretrained loads the pickle-based file "
         "(torch.load). It was scanned; a pickle can still carry gadgets no allowlist knows yet.",
         "Convert the weights to safetensors (the Hub's convert Space, or save_pretrained with "
         "safe_serialization=True)."),
    Rule("cache-blob-mismatch", Severity.HIGH, "Cached file does not match its hash",
         "A blob in the Hugging Face cache is named by the sha256 (LFS) or git sha1 of its content, "
         "and its content no longer hashes to that name: it was altered after download.",
         "Delete the repo from the cache (hf cache delete), download it again, and find out what "
         "wrote to the cache."),
    Rule("cache-link-outside", Severity.HIGH, "Cached file links outside the cache",
         "A snapshot file of the Hugging Face cache is a link that resolves outside the cache "
         "directory: loading it reads a file the download never wrote. Its target was scanned too.",
         "Delete the repo from the cache (hf cache delete), download it again, and find out what "
         "wrote to the cache."),
    Rule("cache-blob-unverified", Severity.MEDIUM, "Cached blob is not named by its hash",
         "A snapshot file of the Hugging Face cache resolves to a file whose name is not a sha256 or "
         "git sha1, so its content cannot be checked against what was downloaded (a cache made "
         "without symlinks, or an altered one). Its content was scanned.",
         "Download the repo again into a cache on a filesystem with symlinks, or verify the file."),
)

RULES_BY_ID: Dict[str, Rule] = {r.id: r for r in RULES}


def rule(rule_id: str) -> Rule:
    """The rule for an id; an unknown id is a programming error."""
    return RULES_BY_ID[rule_id]
