"""The symbolic pickle VM: walks a pickle opcode by opcode, as ``pickle.load`` would, without
importing or calling anything.

It keeps the unpickler's stack, mark stack and memo, so an import is resolved however its module
and name were produced (literal, memoized, duplicated); an import whose operands are not literal
strings cannot be known without running the pickle and is itself a finding. Every import is judged
by the policy (allowlist first), every call site (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD, and
the method calls APPEND/SETITEM/ADDITEMS make on non-builtin objects) is recorded against the
callable it calls, and bytes built in the stream that reach a loader (``pickle.loads``,
``torch.load`` ...) are scanned as a nested pickle or file.

Memory is bounded whatever the size of the stream: bytes are read through a buffered
:class:`SourceReader`, payloads above :data:`MAX_INLINE_BYTES` are never read (a placeholder keeps
their length and offset, so a nested pickle can still be scanned from the source), and container
contents beyond a budget are dropped (they cannot be reached by later opcodes except through calls,
which are judged when they happen).

The package, by concern, each module importing only those listed before it: :mod:`.base` (limits,
signals, finding records), :mod:`.values` (the VM's value representations), :mod:`.reading`
(buffered and frame-buffer readers), :mod:`.textargs` (protocol-0 number arguments as both
unpicklers read them), :mod:`.numpy_dtype` and :mod:`.joblib_arrays` (what numpy and joblib write),
:mod:`.opcodes` (the opcode table), :mod:`.hooks` (the calls into the policy: what an import, a call,
an operation on a value means) and :mod:`.vm` (the machine and the stream scanners). Helpers that
scan another stream (a nested pickle, a joblib object array) reach the scanners through the VM
they are given, never by importing :mod:`.vm`.
"""

from __future__ import annotations

from ...context import ScanContext
from ...source import ByteSource
from ..interface import FormatReader
# Re-exported: other readers, tests and benchmarks import these from the package.
from .base import (  # noqa: F401
    MAX_CALLS_LISTED,
    MAX_INLINE_BYTES,
    MAX_RECORDS,
    MAX_RETAINED_BYTES,
    MAX_RETAINED_ITEMS,
    TRIAL_OPS,
)
from .opcodes import _DISPATCH, _OPCODES, _TABLE  # noqa: F401
from .values import (  # noqa: F401
    BigData,
    Global,
    Obj,
    Opaque,
    PDict,
    PList,
    PSet,
    Sym,
    _maybe_literal,
    describe,
    to_literal,
)
from .vm import (  # noqa: F401
    PickleStreamResult,
    _LossyPickleVM,
    _PickleVM,
    looks_like_pickle,
    scan_pickle_at,
    scan_pickle_stream,
)


class PickleReader(FormatReader):
    """Plain pickle files (``pickle.dump``, uncompressed ``joblib.dump``; any name, by content)."""

    name = "pickle"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return looks_like_pickle(source, 0)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        scan_pickle_stream(source, ctx)


__all__ = ["PickleReader", "PickleStreamResult", "looks_like_pickle", "scan_pickle_at", "scan_pickle_stream",
           "MAX_INLINE_BYTES"]
