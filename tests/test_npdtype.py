"""Differential tests: safemodel_ci.npdtype against numpy.dtype itself (numpy is a test dependency).

The rule under test: whenever npdtype gives a size, numpy gives the same size and the same
``hasobject``; where npdtype is not certain it raises DtypeUnsure (the readers then fail closed).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safemodel_ci import npdtype
from safemodel_ci.npdtype import DtypeUnsure, PickledDtype

CODES = list("?bBhHiIlLqQpPnNeEfdgFDGOSUVaMmcTtxzw") + ["float64", "int32", "bool", "object", "int",
                                                        "float", "longdouble", "str", "bytes", "void",
                                                        "complex128", "uint8", "half", "intc", "int_"]
ORDERS = ["", "<", ">", "=", "|", "!"]
DIGITS = ["", "0", "1", "2", "3", "4", "5", "8", "12", "16", "32", "01", "100"]
UNITS = ["", "[ns]", "[us]", "[25s]", "[D]", "[Y]", "[generic]", "[0s]", "[xs]", "[]", "[ms]"]

simple = st.builds(lambda o, c, d, u: o + c + d + u, st.sampled_from(ORDERS), st.sampled_from(CODES),
                   st.sampled_from(DIGITS), st.sampled_from(UNITS))
prefix = st.sampled_from(["", "", "", "2", "(2,)", "(2,3)", "(2)", "()", "(0,)", "(3, 1)", " "])
field = st.builds(lambda p, s: p + s, prefix, simple)
comma = st.builds(lambda fs, trail: ",".join(fs) + ("," if trail else ""),
                  st.lists(field, min_size=1, max_size=4), st.booleans())
dtype_strings = st.one_of(simple, field, comma)


def numpy_dtype(*args: Any) -> Optional[np.dtype]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return np.dtype(*args)
        except Exception:  # noqa: BLE001 - numpy rejects it: the load would fail there
            return None


COUNTS = {"checked": 0, "sure": 0}


def _agree(mine_call: Any, theirs: Optional[np.dtype]) -> None:
    COUNTS["checked"] += 1
    try:
        mine = mine_call()
    except DtypeUnsure:
        return
    COUNTS["sure"] += 1
    assert theirs is not None, "npdtype gave a size for a dtype numpy rejects"
    assert mine.itemsize == theirs.itemsize
    assert mine.hasobject == bool(theirs.hasobject)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(dtype_strings, st.booleans())
def test_dtype_strings_match_numpy(text: str, align: bool) -> None:
    _agree(lambda: npdtype.from_string(text, align), numpy_dtype(text, align))


def _np_descr(descr: Any) -> Optional[np.dtype]:
    from numpy.lib.format import descr_to_dtype

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return descr_to_dtype(descr)
        except Exception:  # noqa: BLE001
            return None


names = st.sampled_from(["a", "b", "", ("t", "c"), ("a", "d"), 3, "f0"])
shapes = st.sampled_from([2, (2,), (2, 3), (), 1, (1,), -1, (0,), True])
descr_leaf = st.sampled_from(["<f8", "|u1", "<i4", ">i2", "|O", "|V4", "|V0", "<U3", "|S5", "<M8[ns]", "<f16",
                              "f8,i4", "(2,)i4", "bogus", "|b1", "<c16"])
descr = st.recursive(
    descr_leaf,
    lambda inner: st.one_of(
        st.lists(st.one_of(st.tuples(names, inner), st.tuples(names, inner, shapes)), min_size=0, max_size=4),
        st.tuples(inner, shapes)),
    max_leaves=6)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(descr)
def test_npy_descr_matches_numpy(d: Any) -> None:
    _agree(lambda: npdtype.from_descr(d), _np_descr(d))


def _np_pickled(ctor: str, align: Any, state: Any) -> Optional[Any]:
    """numpy's (itemsize, hasobject) after dtype(ctor, align, True).__setstate__(state), computed in
    a forked child: numpy's __setstate__ crashes the process (SIGSEGV) on some hostile states."""
    import os
    import pickle as _pickle  # only to pass two ints back from our own child

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        import faulthandler

        faulthandler.disable()  # an expected crash here is not the test run's: no traceback dump
        os.close(read_fd)
        dt = _np_pickled_here(ctor, align, state)
        os.write(write_fd, _pickle.dumps(None if dt is None else (dt.itemsize, bool(dt.hasobject))))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    if not data:
        return None  # numpy crashed: the load fails there
    got = _pickle.loads(data)
    if got is None:
        return None
    return _Shape(*got)


class _Shape:
    def __init__(self, itemsize: int, hasobject: bool) -> None:
        self.itemsize = itemsize
        self.hasobject = hasobject


def _np_pickled_here(ctor: str, align: Any, state: Any) -> Optional[np.dtype]:
    dt = numpy_dtype(ctor, align, True)
    if dt is None:
        return None
    if state is None:
        return dt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dt.__setstate__(state)
        except Exception:  # noqa: BLE001
            return None
    return dt


def _resolve(value: Any) -> npdtype.DType:
    if isinstance(value, np.dtype):
        # In the VM a nested dtype is itself a pickled one: its own (ctor, state) pair.
        ctor, state = value.__reduce__()[1], value.__reduce__()[2]
        return npdtype.from_pickled(PickledDtype(ctor[0], ctor[1], state, True), _resolve)
    raise DtypeUnsure("not a dtype")


pickled_ctors = st.sampled_from(["f8", "<f4", "V8", "V0", "V12", "S0", "S5", "U0", "U3", "O8", "i4,i4", "M8",
                                 "b1", "V", "u2", "f16"])
orders = st.sampled_from(["<", ">", "|", "=", "x"])
sizes = st.sampled_from([-1, 0, 4, 7, 8, 12, 13, 16, 24])
flags = st.sampled_from([0, 1, 16, 27, 63])
sub_states = st.sampled_from([None, (np.dtype("i4"), (2,)), (np.dtype("O"), (1,)), (np.dtype("f8"), (3,)),
                              (np.dtype("i4"), 2)])
field_states = st.sampled_from([
    (None, None), (("a",), {"a": (np.dtype("i4"), 0)}), (("a", "b"), {"a": (np.dtype("i4"), 0),
                                                                       "b": (np.dtype("O"), 8)}),
    (("a",), {"a": (np.dtype("f8"), 4)}), (("a",), {"b": (np.dtype("f8"), 0)})])


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(pickled_ctors, st.sampled_from([False, True, 0]), st.one_of(st.none(), st.tuples(
    st.sampled_from([3, 4]), orders, sub_states, field_states, sizes, sizes, flags)))
def test_pickled_dtype_matches_numpy(ctor: str, align: Any, raw: Any) -> None:
    state = None
    if raw is not None:
        version, order, sub, (nm, fl), elsize, alignment, fg = raw
        meta = ((None, (b"ns", 1, 1, 1)) if elsize % 2 else (None, (b"generic", 1, 1, 1))) if ctor == "M8" \
            else None
        state = (version, order, sub, nm, fl, elsize, alignment, fg) + ((meta,) if version == 4 else ())
    _agree(lambda: npdtype.from_pickled(PickledDtype(ctor, align, state, raw is not None), _resolve),
           _np_pickled(ctor, align, state))


@pytest.mark.parametrize("value", [np.dtype("f8"), np.dtype("U3"), np.dtype("S7"), np.dtype("i4,i4"),
                                   np.dtype([("a", "O"), ("b", "f4")]), np.dtype(("f4", (2,))),
                                   np.dtype("i4,f8", align=True), np.dtype("O"), np.dtype("V6"),
                                   np.dtype("M8[ns]"), np.dtype("m8[25s]")])
def test_real_pickled_dtypes_are_sure(value: np.dtype) -> None:
    """What numpy itself pickles is always read exactly (no fail-closed on ordinary files)."""
    got = _resolve(value)
    assert got.itemsize == value.itemsize and got.hasobject == bool(value.hasobject)


def test_most_generated_forms_are_decided() -> None:
    """Coverage: npdtype must be sure of the common forms, not fail closed on everything."""
    for text in ["f8", "<f8", ">i4", "|u1", "b1", "U3", "<U10", "S5", "|S0", "V16", "M8[ns]", "<m8[25s]",
                 "i4,i4", "i4,(2,3)f8", "float64", "bool", "object", "c16", "O"]:
        theirs = numpy_dtype(text)
        assert theirs is not None
        mine = npdtype.from_string(text)
        assert (mine.itemsize, mine.hasobject) == (theirs.itemsize, bool(theirs.hasobject)), text


# -- .npy headers: parse_header against numpy.lib.format's own reader -------------------------

header_descr = st.one_of(st.sampled_from(["'<f8'", "'|O'", "'<U3'", "'|S0'", "'V4'", "'<i4,<f2'", "'M8[ns]'",
                                          "[('a', '<i4'), ('', '|V4')]", "[('a', '<i4', (2,))]",
                                          "[(('t', 'n'), '>f4')]", "('<i2', (3,))", "'float64'", "'<g'",
                                          "'x'", "[('a', '<i4'), ('a', '<i8')]", "[]", "[('', '<i4')]"]))
header_shape = st.sampled_from(["()", "(3,)", "(2, 3)", "(0,)", "(3L,)", "(True, 2)", "(-1,)", "[3]",
                                "(2**3,)", "(3,2,)", "(1_0,)", "(0x3,)", "( 3 , )"])
header_fortran = st.sampled_from(["False", "True", "0", "None"])
header_text = st.builds(
    lambda d, s, f, order, extra: "{" + ", ".join(
        [f"'descr': {d}", f"'fortran_order': {f}", f"'shape': {s}"][i] for i in order) + extra + "}",
    header_descr, header_shape, header_fortran, st.permutations([0, 1, 2]),
    st.sampled_from(["", ", ", ", 'x': 1", " # c", "\n"]))


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(header_text, st.sampled_from([(1, 0), (2, 0), (3, 0)]))
def test_npy_header_matches_numpy(text: str, version: "tuple[int, int]") -> None:
    """Whenever our header parse and item size succeed, numpy reads the same shape and the same
    number of data bytes; whenever numpy refuses the header, so do we (or we fail closed)."""
    import io
    import struct

    try:
        from numpy.lib import _format_impl as npformat  # numpy 2.x
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.lib import format as npformat  # type: ignore[no-redef]

    from safemodel_ci.formats.numpy import NpyHeaderError, itemsize, parse_header
    from safemodel_ci.source import BytesSource

    body = text.encode("latin1" if version != (3, 0) else "utf8")
    raw = b"\x93NUMPY" + bytes(version) + struct.pack("<H" if version == (1, 0) else "<I", len(body)) + body
    fp = io.BytesIO(raw)
    npformat.read_magic(fp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            shape, fortran, dtype = npformat._read_array_header(fp, version, max_header_size=1 << 20)
        except Exception:  # noqa: BLE001 - numpy refuses the header
            shape = None
    try:
        header, _, start = parse_header(BytesSource(raw))
        size = itemsize(header["descr"])
    except NpyHeaderError:
        return
    assert shape is not None, text
    assert start == len(raw)
    assert header["shape"] == shape and header["fortran_order"] == fortran
    count = 1
    for dim in shape:
        count *= dim
    assert size * count == dtype.itemsize * count


@pytest.mark.slow
def test_every_generated_dtype_string_matches_numpy() -> None:
    """Exhaustive: every byte order x code x size x unit x subarray prefix x comma suffix x align
    (2,450,448 strings): wherever npdtype is sure, numpy agrees."""
    import itertools

    sure = 0
    for o, c, d, u in itertools.product(ORDERS, CODES, DIGITS, UNITS):
        for p in ["", "2", "(2,)", "(2)", "()", "(0,)", "(3, 1)"]:
            for suffix in ["", ",i4", ",", ",(2,)U1"]:
                text = p + o + c + d + u + suffix
                for align in (False, True):
                    try:
                        mine = npdtype.from_string(text, align)
                    except DtypeUnsure:
                        continue
                    sure += 1
                    theirs = numpy_dtype(text, align)
                    assert theirs is not None and (theirs.itemsize, bool(theirs.hasobject)) == \
                        (mine.itemsize, mine.hasobject), (text, align)
    assert sure > 10_000
