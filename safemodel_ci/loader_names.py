"""Names that bind a loader: a file called ``model.safetensors`` is read by safetensors whatever our
sniffers think of its bytes.

Content decides which readers scan a file. A name can still decide which *loader* parses it: code
calls ``safe_open("model.safetensors")``, ``onnx.load("model.onnx")``, ``torch.load("model.pt")``
because of the name. When the content is not a format that loader reads, the file is not what its
name says (corrupt, or something else disguised as a model): a HIGH finding, never the INFO notice
"matches no model format". Content the loader does read is scanned as that format by the readers
that detected it.

Ambiguous names (``.bin``, ``.model``, ``.pb``, ``.zip``, ``.tar``, ``.msgpack``) are read by many
loaders; for them content alone decides (the scanner's ``unrecognized-format`` notice).
"""

from __future__ import annotations

import os

from .context import ScanContext, ScanLimitExceeded
from .findings import Severity
from .record import Record
from .source import ByteSource, SourceError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

#: The member under which the LFS reader scans the object a pointer stands for: the pointer's own
#: name binds the object's loader (a checkout with LFS content has the object at that path).
LFS_OBJECT_MEMBER = "<lfs object>"
#: Content any name may have: it stands for the real content elsewhere, which is scanned with this
#: binding (an LFS pointer's object).
ALWAYS_ACCEPTED = frozenset({"lfs-pointer"})

#: What the loaders bound to pickle-loader names read between them. ``.pkl`` is written by
#: ``pickle.dump``, ``joblib.dump`` (compressed or not) and ``torch.save`` alike, and read back by the
#: matching loader: a pickle stream, a joblib-compressed pickle, a torch zip archive, a legacy torch
#: file (pickles in a row) or the oldest torch tar layout. Content none of them reads is refused.
PICKLE_LOADER_FORMATS = frozenset({"pickle", "joblib-compressed", "zip", "torch-legacy", "tar"})


class LoaderBinding(Record, frozen=True):
    """One loader-binding file-name suffix (a plain record, not a dataclass: see
    safemodel_ci/record.py)."""

    __slots__ = ("suffix", "loader", "expected", "accepts")
    #: Lower-case suffix, with the dot (``.safetensors``).
    suffix: str
    #: The loader(s) the name selects, for messages.
    loader: str
    #: What that loader reads, for messages ("a safetensors file").
    expected: str
    #: Reader names (:attr:`FormatReader.name`) whose content the loader parses.
    accepts: FrozenSet[str]

    def __init__(self, suffix: str, loader: str, expected: str, accepts: FrozenSet[str]) -> None:
        object.__setattr__(self, "suffix", suffix)
        object.__setattr__(self, "loader", loader)
        object.__setattr__(self, "expected", expected)
        object.__setattr__(self, "accepts", accepts)


def _bindings() -> Dict[str, LoaderBinding]:
    table: List[LoaderBinding] = [
        LoaderBinding(".safetensors", "safetensors (safe_open, load_file)", "a safetensors file",
                      frozenset({"safetensors"})),
        LoaderBinding(".gguf", "GGUF readers (llama.cpp, gguf-py)", "a GGUF file", frozenset({"gguf"})),
        LoaderBinding(".onnx", "onnx.load / onnxruntime", "an ONNX ModelProto", frozenset({"onnx"})),
        # Keras 3 reads a .keras file only as a zip; tf.keras 2.x also reads HDF5 under that name.
        LoaderBinding(".keras", "keras.models.load_model", "a Keras zip archive (or HDF5 for tf.keras 2)",
                      frozenset({"zip", "hdf5"})),
        # h5py/Keras find the HDF5 superblock at 0, 512, 1024, ... (the hdf5 reader's detector).
        LoaderBinding(".h5", "h5py / Keras (legacy HDF5)", "an HDF5 file", frozenset({"hdf5"})),
        LoaderBinding(".hdf5", "h5py / Keras (legacy HDF5)", "an HDF5 file", frozenset({"hdf5"})),
    ]
    # np.load decides by content among exactly these: zip (npz), the .npy magic, else a pickle
    # (with allow_pickle=True); anything else raises.
    numpy_formats = frozenset({"npy", "zip", "pickle", "torch-legacy"})
    for suffix in (".npy", ".npz"):
        table.append(LoaderBinding(suffix, "numpy.load", "a .npy array, an .npz zip or a pickle",
                                   numpy_formats))
    for suffix in (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".dill", ".sav"):
        # torch.jit.load reads .pt/.pth too, and takes a flatbuffer module (PTMF) as well as a zip.
        jit = {"torchscript-flatbuffer"} if suffix in (".pt", ".pth") else set()
        table.append(LoaderBinding(suffix, "pickle-based loaders (pickle, joblib, torch.load, dill)",
                                   "a pickle (plain, joblib-compressed, or in a torch archive)",
                                   PICKLE_LOADER_FORMATS | frozenset(jit)))
    return {b.suffix: b for b in table}


#: Suffix -> binding, for every loader-binding name.
BINDINGS: Dict[str, LoaderBinding] = _bindings()

#: Other kinds of file that carry a loader-binding suffix, by their first bytes: IDL save files
#: (``scipy.io.readsav``; plain and compressed) and SPSS data files are ``.sav`` too.
OTHER_SIGNATURES: Dict[str, Tuple[Tuple[bytes, str], ...]] = {
    ".sav": ((b"SR\x00\x04", "an IDL save file"), (b"SR\x00\x06", "an IDL save file"),
             (b"$FL2", "an SPSS data file"), (b"$FL3", "an SPSS data file")),
}


def _opcodes_failing_at_start() -> frozenset:
    import pickletools

    ok = {op.code.encode("latin-1")[0] for op in pickletools.opcodes if not op.stack_before}
    return frozenset(set(range(256)) - ok)


#: First bytes on which CPython's unpicklers raise before running anything: not an opcode, or an
#: opcode that needs stack items or a MARK (the stack is empty at the start).
_FAILS_AT_START: frozenset = frozenset()


def pickle_fails_at_once(head: bytes) -> bool:
    """True when every unpickler raises on the first byte of ``head`` with nothing done."""
    global _FAILS_AT_START
    if not _FAILS_AT_START:
        _FAILS_AT_START = _opcodes_failing_at_start()
    return not head or head[0] in _FAILS_AT_START


def other_use(suffix: str, source: ByteSource) -> Optional[str]:
    """What else a file with this suffix is, when its content says so; None otherwise.

    Such a file is not a disguised model: content decides for it, as for an ambiguous name. A
    ``.pth`` that is UTF-8 text (and no pickle, which was ruled out before) is a Python path
    configuration file, which ``site`` reads from site-packages.
    """
    head = source.read_at(0, min(4096, source.size))
    for signature, what in OTHER_SIGNATURES.get(suffix, ()):
        if head.startswith(signature):
            return what
    # torch.load unpickles a text .pth too (protocol 0): only text on whose first byte every
    # unpickler fails at once (a path, "import ...") is a site file; anything else is read as a pickle.
    if suffix == ".pth" and head and not head.translate(None, _TEXT_BYTES) and pickle_fails_at_once(head):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:  # not just a character cut at the end of the head
                return None
        return "a Python path configuration file (site)"
    return None


#: Printable text, tab, CR and LF.
_TEXT_BYTES = bytes(sorted({9, 10, 13} | set(range(0x20, 0x7F)) | set(range(0x80, 0x100))))


def binding_for_name(name: str) -> Optional[LoaderBinding]:
    """The loader a file name binds, or None when the name is ambiguous or not a model name."""
    base = os.path.basename(name.replace("\\", "/"))
    return BINDINGS.get(os.path.splitext(base)[1].lower())


def binding_for(ctx: ScanContext) -> Optional[LoaderBinding]:
    """The binding of the file ``ctx`` scans: the top-level file (or the LFS object its pointer
    stands for). Members of containers are left to the container readers, which know their place."""
    if ctx.member is not None and ctx.member != LFS_OBJECT_MEMBER:
        return None
    return binding_for_name(ctx.path)


def check_binding(source: ByteSource, ctx: ScanContext, detected: Sequence[str]) -> bool:
    """Report a refused content (see :func:`_check`); a failure of the check is a finding, never a pass."""
    if binding_for(ctx) is None:
        return False
    try:
        return _check(source, ctx, detected)
    except ScanLimitExceeded as exc:
        ctx.report("unscanned-limit", f"file-name check: {exc}")
    except SourceError as exc:
        ctx.report("unscanned-unreadable", f"file-name check: could not read: {exc}")
    except Exception as exc:  # noqa: BLE001 - fail closed, with a message
        ctx.report("scanner-error", f"file-name check failed: {type(exc).__name__}: {exc}")
    return True


def _check(source: ByteSource, ctx: ScanContext, detected: Sequence[str]) -> bool:
    """Report a file whose content the loader its name binds would refuse.

    ``detected`` are the names of the readers that accepted the content (they scan it afterwards).
    Returns True when the name binds a loader (the scanner's "named like a model" notice then does
    not apply: a refusal is reported here, an accepted content is scanned by its readers).
    """
    binding = binding_for(ctx)
    if binding is None:
        return False
    if binding.accepts.intersection(detected) or ALWAYS_ACCEPTED.intersection(detected):
        return True
    if not detected and other_use(binding.suffix, source) is not None:
        return False  # an IDL .sav, a site .pth: content decides, as for an ambiguous name
    reason = ""
    if binding.accepts == frozenset({"safetensors"}):
        # The reference's own rule for why it refuses (header length 0, not JSON, a JSON array ...).
        from .formats.safetensors import read_safetensors_header

        before = len(ctx.findings)
        read_safetensors_header(source, ctx)
        if any(f.severity >= Severity.HIGH and not f.unscanned for f in ctx.findings[before:]):
            return True  # the reference's rule says why, and it blocks
    elif "pickle" in binding.accepts:
        reason = _pickle_attempt(source, ctx)
    what = "content read as " + " and ".join(detected) if detected else "content matching no known format"
    ctx.report("name-format-mismatch",
               f"named {binding.suffix}, so {binding.loader} will read it, but it is not "
               f"{binding.expected}: {what}, first bytes {_first_bytes(source)}{reason}; the loader "
               "would refuse it, or the name disguises what the file is",
               offset=0, details={"suffix": binding.suffix, "detected": list(detected),
                                  "expected": sorted(binding.accepts)})
    return True


def _pickle_attempt(source: ByteSource, ctx: ScanContext) -> str:
    """Run the pickle VM over content no pickle detector accepted, as ``pickle.load`` would.

    Opcodes before the point where it breaks run on loading (an import is an import), so what the
    VM reports is kept. Returns a clause for the mismatch message saying where it breaks.
    """
    from .formats import pickle as pickle_reader

    head = source.read_at(0, 1)
    if not head or head[0] not in pickle_reader._OPCODES:
        return f"; pickle.load fails at once: byte {head[:1]!r} is not a pickle opcode" if head else \
            "; pickle.load fails at once on an empty file"
    trial = ctx.isolated()
    result = pickle_reader.scan_pickle_at(source, trial, 0, source.size)
    broken = [f for f in trial.findings if f.rule_id == "pickle-broken-stream"]
    # pickle.load stops at the break: nothing after it runs, so "the rest was not inspected" does
    # not apply; what ran before it (imports, calls) is kept.
    trial._state.findings[:] = [f for f in trial.findings if f.rule_id != "pickle-broken-stream"]
    ctx.adopt(trial, keep_findings=True)
    if result.complete or not broken:
        return ""
    reason = broken[0].details.get("reason")
    return f"; pickle.load fails at offset {broken[0].offset}" + (f" ({reason})" if reason else "")


def _first_bytes(source: ByteSource, n: int = 16) -> str:
    data = source.read_at(0, min(n, source.size))
    return data.hex(" ") if data else "(empty file)"


__all__ = ["ALWAYS_ACCEPTED", "BINDINGS", "LFS_OBJECT_MEMBER", "LoaderBinding", "OTHER_SIGNATURES",
           "PICKLE_LOADER_FORMATS", "binding_for", "binding_for_name", "check_binding", "other_use"]
