"""The opcode table: one handler per pickle opcode, as ``pickle.load`` runs it, on the symbolic VM.

A handler takes the VM (:class:`~.vm._PickleVM`) and the opcode's offset; it reads its argument
through the VM, changes the VM's stack and memo, and hands imports and calls to the VM's policy
hooks (:mod:`.hooks`). ``_TABLE`` is what the VM's loop indexes by opcode byte.
"""

from __future__ import annotations

import codecs
import struct
import sys
import warnings

from .base import _C, _PY, MAX_INLINE_BYTES, _Broken, _Stop
from .textargs import _c_float_ok, _parse_float_line, _parse_int_line, _parse_long_line, _py2_str
from .values import (
    _SYMBOLIC,
    LOST_BYTES,
    BigData,
    Global,
    Opaque,
    PDict,
    PList,
    PSet,
    _check_hashable,
    _HugeInt,
    _Lost,
    _maybe_literal,
    describe,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, List, Optional

#: Opcode byte -> handler.
_DISPATCH: Dict[int, Callable[[Any, int], None]] = {}


def op(code: bytes) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated function as the handler of opcode ``code``."""
    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        _DISPATCH[code[0]] = fn
        return fn
    return deco


@op(b"(")
def mark(vm: Any, pos: int) -> None:
    if len(vm.metastack) >= vm.max_stack:
        raise _Broken(pos, "too many MARKs (limit)")
    vm.metastack.append(vm.stack)
    vm.stack = []


@op(b".")
def stop(vm: Any, pos: int) -> None:
    vm._top(pos)
    raise _Stop


@op(b"0")
def pop(vm: Any, pos: int) -> None:
    if vm.stack:
        vm.stack.pop()
    else:
        vm._pop_mark(pos)  # POP on an empty frame discards the mark (pickle.py and _pickle)


@op(b"1")
def pop_mark(vm: Any, pos: int) -> None:
    vm._pop_mark(pos)


@op(b"2")
def dup(vm: Any, pos: int) -> None:
    vm._push(vm._top(pos))


@op(b"F")
def float_(vm: Any, pos: int) -> None:
    line = vm._line(pos)
    try:  # the common case inline (a function call per opcode shows in protocol 0 streams)
        value = float(line)
    except ValueError:
        value, py_ok = _parse_float_line(line, bool(vm.reader.alive & _C))
        if not py_ok:
            vm._kill(_PY, pos, "a FLOAT form only _pickle reads")
        vm._push(value)
        return
    # _pickle reads what float() reads, but for whitespace, underscores and an overflow.
    if (value - value != 0.0 or b"_" in line or line[:1].isspace() or line[-1:].isspace()) \
            and vm.reader.alive & _C and not _c_float_ok(line, value):
        vm._kill(_C, pos, "a FLOAT form only pickle.py reads")
    vm._push(value)


@op(b"I")
def int_(vm: Any, pos: int) -> None:
    line = vm._line(pos)
    if len(line) < 20 and line != b"00" and line != b"01":
        try:  # the common case inline
            vm._push(int(line, 0))
            return
        except ValueError:
            pass
    value, py_ok = _parse_int_line(line, bool(vm.reader.alive & _C))
    if not py_ok:
        vm._kill(_PY, pos, "an INT form only _pickle reads")
    vm._push(value)


@op(b"L")
def long_(vm: Any, pos: int) -> None:
    value, py_ok = _parse_long_line(vm._line(pos), bool(vm.reader.alive & _C))
    if not py_ok:
        vm._kill(_PY, pos, "a LONG form only _pickle reads")
    vm._push(value)


@op(b"J")
def binint(vm: Any, pos: int) -> None:
    vm._push(struct.unpack("<i", vm._read(4, pos))[0])


@op(b"K")
def binint1(vm: Any, pos: int) -> None:
    vm._push(vm._read(1, pos)[0])


@op(b"M")
def binint2(vm: Any, pos: int) -> None:
    vm._push(struct.unpack("<H", vm._read(2, pos))[0])


@op(b"\x8a")
def long1(vm: Any, pos: int) -> None:
    n = vm._read(1, pos)[0]
    vm._push(int.from_bytes(vm._read(n, pos), "little", signed=True))


@op(b"\x8b")
def long4(vm: Any, pos: int) -> None:
    n = struct.unpack("<i", vm._read(4, pos))[0]
    if n < 0:
        raise _Broken(pos, "LONG4 with a negative byte count")
    data = vm._payload(n, pos, "bytes")
    vm._push(int.from_bytes(data, "little", signed=True) if isinstance(data, bytes) and n <= 4096
               else _HugeInt())


@op(b"N")
def none(vm: Any, pos: int) -> None:
    vm._push(None)


@op(b"\x88")
def newtrue(vm: Any, pos: int) -> None:
    vm._push(True)


@op(b"\x89")
def newfalse(vm: Any, pos: int) -> None:
    vm._push(False)


@op(b"P")
def persid(vm: Any, pos: int) -> None:
    pid = vm._ascii_line(pos)
    vm.persistent_ids.append(pid)
    vm._push(Opaque("a persistent object"))


@op(b"Q")
def binpersid(vm: Any, pos: int) -> None:
    pid = vm._pop(pos)
    vm.persistent_ids.append(_maybe_literal(pid, keep_globals=True))
    vm._push(Opaque("a persistent object"))


@op(b"R")
def reduce(vm: Any, pos: int) -> None:
    args = vm._pop(pos)
    func = vm._top(pos)
    vm.stack[-1] = vm._call(func, args, "REDUCE", pos)


@op(b"S")
def string(vm: Any, pos: int) -> None:
    content = vm._line(pos)
    if len(content) < 2 or content[0] != content[-1] or content[:1] not in (b"'", b'"'):
        raise _Broken(pos, "the STRING opcode argument must be quoted")
    if b"\\" in content:  # both unpicklers: ValueError on a bad escape (an unknown one warns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            value = codecs.escape_decode(content[1:-1])[0]
    else:
        value = content[1:-1]
    vm._push(_py2_str(value) if len(value) <= MAX_INLINE_BYTES
               else BigData("str", len(value), None))


@op(b"T")
def binstring(vm: Any, pos: int) -> None:
    # Unsigned: _pickle reads the length with calc_binsize (pickle.py refuses a negative one).
    n = struct.unpack("<I", vm._read(4, pos))[0]
    data = vm._payload(n, pos, "str8")  # raw bytes are the latin-1 encoding of the value
    vm._push(_py2_str(data) if isinstance(data, bytes) else data)


@op(b"U")
def short_binstring(vm: Any, pos: int) -> None:
    vm._push(_py2_str(vm._read(vm._read(1, pos)[0], pos)))


@op(b"V")
def unicode_(vm: Any, pos: int) -> None:
    content = vm._line(pos)
    if len(content) <= MAX_INLINE_BYTES:
        vm._push(str(content, "raw-unicode-escape"))
        return
    # Checked piecewise (a bad escape is an error in both unpicklers), not kept.
    decoder = codecs.getincrementaldecoder("raw-unicode-escape")()
    for i in range(0, len(content), MAX_INLINE_BYTES):
        decoder.decode(content[i:i + MAX_INLINE_BYTES])
    decoder.decode(b"", final=True)
    vm._push(BigData("str", len(content), None))


def _text(vm: Any, n: int, pos: int) -> Any:
    data = vm._payload(n, pos, "str")
    if isinstance(data, bytes):
        return str(data, "utf-8", "surrogatepass")
    if isinstance(data, BigData) and data.offset is not None:
        vm._check_utf8(data.offset, n, pos)  # not kept, but invalid UTF-8 fails the load
    return data


@op(b"X")
def binunicode(vm: Any, pos: int) -> None:
    vm._push(_text(vm, struct.unpack("<I", vm._read(4, pos))[0], pos))


@op(b"\x8d")
def binunicode8(vm: Any, pos: int) -> None:
    vm._push(_text(vm, struct.unpack("<Q", vm._read(8, pos))[0], pos))


@op(b"\x8c")
def short_binunicode(vm: Any, pos: int) -> None:
    vm._push(_text(vm, vm._read(1, pos)[0], pos))


@op(b"B")
def binbytes(vm: Any, pos: int) -> None:
    vm._push(vm._payload(struct.unpack("<I", vm._read(4, pos))[0], pos, "bytes"))


@op(b"C")
def short_binbytes(vm: Any, pos: int) -> None:
    vm._push(vm._read(vm._read(1, pos)[0], pos))


@op(b"\x8e")
def binbytes8(vm: Any, pos: int) -> None:
    vm._push(vm._payload(struct.unpack("<Q", vm._read(8, pos))[0], pos, "bytes"))


@op(b"\x96")
def bytearray8(vm: Any, pos: int) -> None:
    data = vm._payload(struct.unpack("<Q", vm._read(8, pos))[0], pos, "bytearray")
    vm._push(bytearray(data) if isinstance(data, bytes) else data)


@op(b"\x97")
def next_buffer(vm: Any, pos: int) -> None:
    # pickle.load / torch.load / joblib.load / np.load pass no out-of-band buffers: both
    # unpicklers raise here.
    raise _Broken(pos, "NEXT_BUFFER: the stream refers to out-of-band data, which loaders do not "
                  "give (the loader raises)")


@op(b"\x98")
def readonly_buffer(vm: Any, pos: int) -> None:
    top = vm._top(pos)
    # An imported class or function is no buffer (allowlisted imports are such; any other
    # import is a finding already).
    if isinstance(top, Global) or not isinstance(top, (bytes, bytearray, _SYMBOLIC)) and not (
            isinstance(top, BigData) and top.kind.startswith("bytes")) and not (
            isinstance(top, _Lost) and top.kind == LOST_BYTES):
        raise _Broken(pos, f"READONLY_BUFFER on {describe(top)}, which is not a buffer (the loader "
                      "raises)")


@op(b"a")
def append(vm: Any, pos: int) -> None:
    value = vm._pop(pos)
    vm._append(vm._top(pos), [value], pos, "APPEND")


@op(b"e")
def appends(vm: Any, pos: int) -> None:
    items = vm._pop_mark(pos)
    vm._append(vm._top(pos), items, pos, "APPENDS")


@op(b"b")
def build(vm: Any, pos: int) -> None:
    state = vm._pop(pos)
    vm._build(vm._top(pos), state, pos)


@op(b"c")
def global_(vm: Any, pos: int) -> None:
    module, name = vm._name_lines(pos, "utf-8", "GLOBAL")
    vm._push(vm._global(module, name, pos, "GLOBAL"))


@op(b"\x93")
def stack_global(vm: Any, pos: int) -> None:
    name = vm._pop(pos)
    module = vm._pop(pos)
    if vm.torch_archive:
        vm._anomaly("torch-stack-global", "STACK_GLOBAL in a torch archive",
                      "torch.save writes protocol 2 (GLOBAL only) by default and torch's "
                      "weights-only loader rejects STACK_GLOBAL: this data.pkl was written "
                      "with a higher pickle_protocol or by another tool",
                      pos, "STACK_GLOBAL", key="torch")
    if isinstance(module, str) and isinstance(name, str):
        vm._push(vm._global(module, name, pos, "STACK_GLOBAL"))
    elif isinstance(module, _Lost) or isinstance(name, _Lost):
        vm._push(vm._lost_global(module, name, pos))
    else:
        vm._push(vm._unresolved(module, name, pos, "STACK_GLOBAL"))


@op(b"i")
def inst(vm: Any, pos: int) -> None:
    vm._ascii_precheck(pos)
    module, name = vm._name_lines(pos, "ascii", "INST")
    klass = vm._global(module, name, pos, "INST")
    args = vm._pop_mark(pos)
    vm._push(vm._call(klass, tuple(args), "INST", pos))


@op(b"o")
def obj(vm: Any, pos: int) -> None:
    args = vm._pop_mark(pos)
    if not args:
        raise _Broken(pos, "OBJ without a class")
    cls = args.pop(0)
    vm._push(vm._call(cls, tuple(args), "OBJ", pos))


@op(b"\x81")
def newobj(vm: Any, pos: int) -> None:
    args = vm._pop(pos)
    cls = vm._pop(pos)
    vm._push(vm._call(cls, args, "NEWOBJ", pos))


@op(b"\x92")
def newobj_ex(vm: Any, pos: int) -> None:
    kwargs = vm._pop(pos)
    args = vm._pop(pos)
    cls = vm._pop(pos)
    vm._push(vm._call(cls, args, "NEWOBJ_EX", pos, kwargs))


def _ext(vm: Any, code: int, pos: int) -> None:
    rec = vm._anomaly("pickle-ext-code", f"extension code {code}",
                        "EXT opcodes import whatever the loading process registered in copyreg's "
                        "extension registry under this code", pos, "EXT", key=str(code))
    vm._push(Opaque(f"the object registered under extension code {code}", rec))


@op(b"\x82")
def ext1(vm: Any, pos: int) -> None:
    _ext(vm, vm._read(1, pos)[0], pos)


@op(b"\x83")
def ext2(vm: Any, pos: int) -> None:
    _ext(vm, struct.unpack("<H", vm._read(2, pos))[0], pos)


@op(b"\x84")
def ext4(vm: Any, pos: int) -> None:
    _ext(vm, struct.unpack("<i", vm._read(4, pos))[0], pos)


@op(b"d")
def dict_(vm: Any, pos: int) -> None:
    items = vm._pop_mark(pos)
    if len(items) % 2:
        raise _Broken(pos, "DICT with an odd number of items")
    dct = PDict()
    vm._setitems(dct, items, pos, "DICT")
    vm._push(dct)


@op(b"}")
def empty_dict(vm: Any, pos: int) -> None:
    vm._push(PDict())


@op(b"s")
def setitem(vm: Any, pos: int) -> None:
    value = vm._pop(pos)
    key = vm._pop(pos)
    vm._setitems(vm._top(pos), [key, value], pos, "SETITEM")


@op(b"u")
def setitems(vm: Any, pos: int) -> None:
    items = vm._pop_mark(pos)
    vm._setitems(vm._top(pos), items, pos, "SETITEMS")


@op(b"l")
def list_(vm: Any, pos: int) -> None:
    items = vm._pop_mark(pos)
    lst = PList()
    vm._append(lst, items, pos, "LIST")
    vm._push(lst)


@op(b"]")
def empty_list(vm: Any, pos: int) -> None:
    vm._push(PList())


@op(b"t")
def tuple_(vm: Any, pos: int) -> None:
    vm._push(tuple(vm._pop_mark(pos)))


@op(b")")
def empty_tuple(vm: Any, pos: int) -> None:
    vm._push(())


@op(b"\x85")
def tuple1(vm: Any, pos: int) -> None:
    stack = vm.stack  # in place, as pickle.py does: the depth does not change
    if not stack:
        raise _Broken(pos, "stack underflow")
    stack[-1] = (stack[-1],)


@op(b"\x86")
def tuple2(vm: Any, pos: int) -> None:
    stack = vm.stack
    if len(stack) < 2:
        raise _Broken(pos, "stack underflow")
    stack[-2:] = [(stack[-2], stack[-1])]


@op(b"\x87")
def tuple3(vm: Any, pos: int) -> None:
    stack = vm.stack
    if len(stack) < 3:
        raise _Broken(pos, "stack underflow")
    stack[-3:] = [(stack[-3], stack[-2], stack[-1])]


@op(b"\x8f")
def empty_set(vm: Any, pos: int) -> None:
    vm._push(PSet())


@op(b"\x90")
def additems(vm: Any, pos: int) -> None:
    items = vm._pop_mark(pos)
    target = vm._top(pos)
    if isinstance(target, PSet) and not target.frozen:
        _check_hashable(items, pos, "ADDITEMS")
        if vm._keep(len(items)):
            target.items.extend(items)
        else:
            target.dropped += len(items)
    elif not isinstance(target, _SYMBOLIC):
        if items:  # _pickle does nothing for no items, pickle.py looks up add()
            raise _Broken(pos, f"ADDITEMS to {describe(target)} (the loader raises)")
        vm._kill(_PY, pos, f"empty ADDITEMS to {describe(target)}")
    else:
        vm._mutating_call(target, items, pos, "ADDITEMS")


@op(b"\x91")
def frozenset_(vm: Any, pos: int) -> None:
    items = vm._pop_mark(pos)
    _check_hashable(items, pos, "FROZENSET")
    kept = vm._keep(len(items))
    fs = PSet(items if kept else (), frozen=True)
    fs.dropped = 0 if kept else len(items)
    vm._push(fs)


@op(b"g")
def get(vm: Any, pos: int) -> None:
    index = vm._memo_line_index(pos)
    vm._memo_get(index, pos)


@op(b"h")
def binget(vm: Any, pos: int) -> None:
    vm._memo_get(vm._read(1, pos)[0], pos)


@op(b"j")
def long_binget(vm: Any, pos: int) -> None:
    vm._memo_get(struct.unpack("<I", vm._read(4, pos))[0], pos)


@op(b"p")
def put(vm: Any, pos: int) -> None:
    index = vm._memo_line_index(pos)
    if index.__class__ is tuple:  # a huge index (kept as its digits)
        if index[1][:1] == b"-":
            raise _Broken(pos, "negative memo index")
        if not vm.stack:
            raise _Broken(pos, "stack underflow")
        if len(vm.memo) >= vm.max_memo and index not in vm.memo:
            raise _Broken(pos, f"memo larger than {vm.max_memo} entries (limit)")
        vm.memo[index] = vm.stack[-1]  # type: ignore[index]
    else:
        vm._memo_put(index, pos)


@op(b"q")
def binput(vm: Any, pos: int) -> None:
    vm._memo_put(vm._read(1, pos)[0], pos)


@op(b"r")
def long_binput(vm: Any, pos: int) -> None:
    vm._memo_put(struct.unpack("<I", vm._read(4, pos))[0], pos)


@op(b"\x94")
def memoize(vm: Any, pos: int) -> None:
    # len(memo) may already be taken (PUT to any index): pickle then overwrites it.
    vm._memo_put(len(vm.memo) + vm.lost_count, pos)  # entries kept exactly + compact ones


@op(b"G")
def binfloat(vm: Any, pos: int) -> None:
    vm._push(struct.unpack(">d", vm._read(8, pos))[0])


@op(b"\x80")
def proto(vm: Any, pos: int) -> None:
    p = vm._read(1, pos)[0]
    if p > 5:
        raise _Broken(pos, f"unsupported pickle protocol {p}")
    vm.proto = p


@op(b"\x95")
def frame(vm: Any, pos: int) -> None:
    size = struct.unpack("<Q", vm._read(8, pos))[0]
    if size > sys.maxsize:
        raise _Broken(pos, f"FRAME of {size} bytes (over sys.maxsize)")
    if vm.lossy:
        if not vm.reader.frame(size):  # type: ignore[attr-defined]
            raise _Broken(pos, f"FRAME of {size} bytes runs past the end of the data")
        return
    if vm.reader.frame_end > 0 and pos != vm.reader.frame_end:
        # Not where the previous frame ends: some opcode may straddle a frame's end, and a C
        # unpickler reading from a BytesIO (torch.load) would read other opcodes.
        vm.frames_irregular = True
    here = vm.reader.tell()
    # pickle.py refuses a FRAME that starts before the current frame ends (its opcode or its
    # 9 bytes must end it exactly); _pickle only needs the whole frame to be there.
    fe = vm.reader.frame_end
    py_ok = fe >= 0 and (pos + 1 >= fe or here == fe)
    if not py_ok:
        vm._kill(_PY, pos, "a FRAME before the current frame ends")
    if size <= vm.reader.remaining():
        vm.reader.frame_end = here + size
    else:
        # _pickle fails here; pickle._Unpickler reads what there is as the frame and goes on.
        vm._kill(_C, pos, f"a FRAME of {size} bytes runs past the end of the data")
        vm.reader.frame_end = -1


#: The same table as a 256-entry list (None: not an opcode): indexing beats dict.get in the loop.
_TABLE: List[Optional[Callable[[Any, int], None]]] = [_DISPATCH.get(i) for i in range(256)]
#: Every pickle opcode: the VM has a handler for each (a test checks this against pickletools).
_OPCODES = frozenset(_DISPATCH)
