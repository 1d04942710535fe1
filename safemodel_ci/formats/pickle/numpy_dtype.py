"""numpy knowledge: the dtype a ``numpy.dtype(...)`` call (and its BUILD state) in the stream rebuilds,
as joblib needs it to know how many raw array bytes follow a wrapper."""

from __future__ import annotations


from ...npdtype import DType, DtypeUnsure, PickledDtype, from_pickled
from .values import Obj, PDict, _NotLiteral, describe, to_literal

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List

def _dtype_info(dtype: Any, depth: int = 0) -> DType:
    """The numpy dtype a symbolic ``numpy.dtype(...)`` (+ BUILD state) in the stream rebuilds.

    Raises :class:`DtypeUnsure` for anything that is not a dtype built from literal arguments
    whose size :mod:`safemodel_ci.npdtype` knows exactly.
    """
    if depth > 16:
        raise DtypeUnsure("dtypes nested too deeply")
    if not isinstance(dtype, Obj) or dtype.cls is None or dtype.cls.path != "numpy.dtype" or not dtype.attrs \
            or "argv" not in dtype.attrs:
        raise DtypeUnsure(f"{describe(dtype)} is not a numpy.dtype made from literal arguments")
    argv = dtype.attrs["argv"]
    if len(argv) > 3:
        raise DtypeUnsure("numpy.dtype called with more than three arguments")
    has_state = "state" in dtype.attrs
    state = _dtype_state(dtype.attrs["state"]) if has_state else None
    pickled = PickledDtype(_plain(argv[0]), _plain(argv[1]) if len(argv) > 1 else False, state, has_state)
    return from_pickled(pickled, lambda inner: _dtype_info(inner, depth + 1))


def _plain(value: Any) -> Any:
    """The literal a symbolic value stands for; DtypeUnsure when it is not one."""
    try:
        return to_literal(value)
    except (_NotLiteral, RecursionError):
        raise DtypeUnsure(f"{describe(value)} is not a literal") from None


def _dtype_state(state: Any) -> Any:
    """A dtype ``__setstate__`` tuple made plain, the dtypes nested in its subarray and fields kept
    as symbols (they are resolved one by one); DtypeUnsure for anything else not literal."""
    if not isinstance(state, tuple):
        return _plain(state)
    out: List[Any] = []
    for index, item in enumerate(state):
        if index == 2 and isinstance(item, tuple) and len(item) == 2:  # subarray: (dtype, shape)
            out.append((item[0], _plain(item[1])))
        elif index == 4 and isinstance(item, PDict):  # fields: name -> (dtype, offset[, title])
            if item.dropped:
                raise DtypeUnsure("structured dtype fields were not all kept")
            fields: Dict[Any, Any] = {}
            for k, v in item.pairs:
                if not isinstance(v, tuple) or not v:
                    raise DtypeUnsure("structured dtype field is not a tuple")
                fields[_plain(k)] = (v[0],) + tuple(_plain(x) for x in v[1:])
            out.append(fields)
        else:
            out.append(_plain(item))
    return tuple(out)
