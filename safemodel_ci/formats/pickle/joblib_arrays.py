"""joblib knowledge: what ``joblib.dump`` writes for a numpy array (a ``NumpyArrayWrapper`` whose
BUILD is followed by the array's raw bytes, or by an inline pickle for an object array), and how
``joblib.load`` steps over those bytes.

The functions take the walking VM (:class:`~.vm._PickleVM`) as ``vm``: they read from its reader and
replace its top of stack, and use its ``_scan_inline_pickle`` and ``_check_array_bytes_as_opcodes``.
"""

from __future__ import annotations


from ...npdtype import DtypeUnsure
from .base import _Broken
from .numpy_dtype import _dtype_info
from .values import Obj, PDict, PList, _Lost, describe

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, NoReturn, Optional, Sequence

#: The default numpy alignment joblib's NumpyArrayWrapper.__init__ sets.
_JOBLIB_ALIGNMENT = 16
_JOBLIB_WRAPPERS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper",
                              "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper"})


def wrapper_attrs(argv: Sequence[Any], kind: str) -> Dict[str, Any]:
    """The attributes of a wrapper made by calling its class with ``argv``."""
    attrs: Dict[str, Any] = {}
    if argv and kind not in ("NEWOBJ", "NEWOBJ_EX"):  # __init__ runs: positional fields
        names = ("subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes")
        attrs["numpy_array_alignment_bytes"] = _JOBLIB_ALIGNMENT
        attrs.update(zip(names, argv))
    return attrs


def set_state(inst: Obj, state: Any) -> None:
    """BUILD on a wrapper: its dict state (or the dict of a (state, slot state) pair) sets attributes."""
    attrs = inst.attrs if inst.attrs is not None else {}
    for part in (state if isinstance(state, tuple) and len(state) == 2 else (state,)):
        if isinstance(part, PDict):
            for k, v in part.pairs:
                if isinstance(k, str):
                    attrs[k] = v
                elif isinstance(k, _Lost):  # a key whose text was not kept: any field may be it
                    attrs["lost_key"] = True
    inst.attrs = attrs


def skip_array(vm: Any, wrapper: Obj, pos: int) -> None:
    """joblib.load reads an array's raw bytes right after its wrapper's BUILD: skip them.

    The number of bytes is numpy's ``dtype.itemsize * prod(shape)``, computed by
    :mod:`safemodel_ci.npdtype` exactly or not at all: where it is not certain, the stream
    is not resynchronised by a guess but fails closed (``unscanned-parse-error``).
    """
    attrs = wrapper.attrs or {}
    here = vm.reader.tell()
    if attrs.get("lost_key"):
        _unsure_array(vm, pos, "its state, a key of which was not kept in memory (memo budget)")
    try:
        dtype = _dtype_info(attrs.get("dtype"))
    except DtypeUnsure as exc:
        _unsure_array(vm, pos, f"its dtype: {exc}")
    if dtype.hasobject:
        # An object array is a complete pickle written inline; joblib loads it with a plain
        # Unpickler and then continues after its STOP.
        res = vm._scan_inline_pickle(here)
        if not res.complete or res.end is None:
            raise _Broken(here, "the object array pickle after a joblib NumpyArrayWrapper is broken",
                          reported=not vm.silent)
        vm.reader.seek(res.end)
    else:
        count = _shape_count(attrs.get("shape"))
        if count is None:
            _unsure_array(vm, pos, f"its shape {describe(attrs.get('shape'))} (joblib multiplies "
                          "int64 dimensions; only non-negative ints whose product fits are read)")
        if dtype.itemsize == 0:
            raise _Broken(pos, "joblib NumpyArrayWrapper with a zero-size dtype: joblib.load fails "
                          "there (division by zero)")
        if attrs.get("numpy_array_alignment_bytes") is not None:
            pad = vm._read(1, here)[0]
            if vm.reader.skip(pad) != pad:
                raise _Broken(here, "stream ends inside joblib array padding")
        nbytes = count * dtype.itemsize
        if vm.reader.skip(nbytes) != nbytes:
            raise _Broken(here, f"stream ends inside a {nbytes}-byte joblib array")
        vm._check_array_bytes_as_opcodes(here, vm.reader.tell())
    vm.stack[-1] = Obj(None)


def _unsure_array(vm: Any, pos: int, what: str) -> NoReturn:
    """A joblib array whose byte count is not certain: fail closed, never guess and go on."""
    reason = (f"joblib NumpyArrayWrapper at offset {pos}: the number of raw array bytes joblib reads "
              f"after it cannot be computed exactly from {what}; the rest of the stream was not scanned")
    if not vm.silent and vm.ctx is not None:
        vm.ctx.report("unscanned-parse-error", reason, offset=pos,
                      details={"reason": "joblib-array-size"})
    raise _Broken(pos, reason, reported=not vm.silent and vm.ctx is not None)


def _shape_count(shape: Any) -> Optional[int]:
    """Elements of a joblib array of ``shape``, as joblib counts them, or None when not certain.

    joblib takes ``len(shape)`` (a tuple; an empty one is one element) and multiplies the
    dimensions as int64: negative or non-int dimensions, or a product past int64, are not read.
    """
    if not isinstance(shape, (tuple, PList)):
        return None
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            return None
        count *= dim
        if count >= 1 << 63:
            return None
    return count
