"""``safemodel convert``: turn a PyTorch pickle checkpoint that scans clean into safetensors.

Nothing is loaded the way ``torch.load`` loads. A checkpoint is converted only after it scanned with
no finding at or above ``--fail-on``; then its pickle is read by :class:`TensorPickleReader`, a strict
opcode interpreter that builds plain containers (dict, list, tuple, numbers, strings) and *records*
calls instead of making them. The only calls it understands are torch's tensor rebuild functions,
which become :class:`TensorRef` records pointing into the checkpoint's storages; every other call
becomes an :class:`Opaque` value that is reported and not converted. No Python object named by the
file is ever imported or called, and torch is not needed: tensor bytes are copied from the
checkpoint's storage records (numpy gathers non-contiguous views).

The output is written as ``safetensors.torch.save_model`` writes it (aliases of one tensor are kept
once, the dropped names recorded in the metadata, ``format: pt``), sharded and indexed as
transformers names its files, then read back by our own safetensors reader and compared tensor by
tensor with the checkpoint's bytes.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple
    from .findings import FileResult, Severity

#: torch storage class name -> (safetensors dtype, bytes per element)
STORAGE_DTYPES: Dict[str, Tuple[str, int]] = {
    "DoubleStorage": ("F64", 8), "FloatStorage": ("F32", 4), "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2), "LongStorage": ("I64", 8), "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2), "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}
#: The tensor rebuild functions whose arguments we read (never call): torch/_utils.py.
REBUILD_TENSOR = {"_rebuild_tensor", "_rebuild_tensor_v2"}
REBUILD_PARAMETER = {"_rebuild_parameter", "_rebuild_parameter_with_state"}
#: ``torch.save``'s legacy (non-zip) format starts with this number, pickled (torch/serialization.py).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: transformers' default ``max_shard_size`` ("5GB").
DEFAULT_MAX_SHARD = 5 * 10**9


class ConvertError(Exception):
    """The file cannot be converted; the message says why and what to do."""


@dataclass(frozen=True)
class Global:
    """A name the pickle imports: recorded, never resolved."""

    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class StorageRef:
    """A persistent storage record: ``('storage', torch.XStorage, key, location, numel[, view])``."""

    key: str
    dtype: str
    itemsize: int
    numel: int


@dataclass
class TensorRef:
    """A tensor as its rebuild call describes it: a view of a storage."""

    storage: StorageRef
    offset: int
    shape: Tuple[int, ...]
    stride: Tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.storage.itemsize

    def view_key(self) -> Tuple[Any, ...]:
        return (self.storage.key, self.storage.dtype, self.offset, self.shape, self.stride)

    def contiguous(self) -> bool:
        expected = 1
        for size, step in zip(reversed(self.shape), reversed(self.stride)):
            if size != 1 and step != expected:
                return False
            expected *= size
        return True


@dataclass(frozen=True)
class Opaque:
    """The result of a call we do not make (``callee(args)``), kept only to be reported."""

    callee: str


@dataclass
class _Object:
    """An object built by NEWOBJ/BUILD on a class we do not instantiate."""

    callee: str
    state: Any = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class TensorPickleReader:
    """A strict pickle interpreter for tensor checkpoints: builds data, records calls, calls nothing.

    It accepts the opcodes ``torch.save`` and ``pickle`` write for containers and numbers, and
    refuses the rest (INST, OBJ, EXT codes, out-of-band buffers) with :class:`ConvertError`. It runs
    only on content our scanner already walked and passed, so its job is to be exact for what it
    accepts, not to judge.
    """

    def __init__(self, stream: IO[bytes], persistent_load: Callable[[Any], Any], max_ops: int = 50_000_000):
        self.stream = stream
        self.persistent_load = persistent_load
        self.max_ops = max_ops

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise ConvertError("pickle ends early (truncated file)")
        return data

    def _line(self) -> bytes:
        line = self.stream.readline()
        if not line.endswith(b"\n"):
            raise ConvertError("pickle ends early (truncated text argument)")
        return line[:-1]

    def load(self) -> Any:  # noqa: C901 - one branch per opcode, as pickle.py has
        stack: List[Any] = []
        meta: List[List[Any]] = []
        memo: Dict[int, Any] = {}
        read, line = self._read, self._line

        def pop_mark() -> List[Any]:
            nonlocal stack
            items = stack
            stack = meta.pop()
            return items

        for _ in range(self.max_ops):
            op = read(1)
            if op == b".":  # STOP
                return stack.pop()
            if op == b"\x80":  # PROTO
                read(1)
            elif op == b"\x95":  # FRAME: framing only groups reads
                read(8)
            elif op == b"(":
                meta.append(stack)
                stack = []
            elif op == b"0":
                stack.pop()
            elif op == b"1":
                pop_mark()
            elif op == b"2":
                stack.append(stack[-1])
            elif op == b"N":
                stack.append(None)
            elif op == b"\x88":
                stack.append(True)
            elif op == b"\x89":
                stack.append(False)
            elif op == b"J":
                stack.append(struct.unpack("<i", read(4))[0])
            elif op == b"K":
                stack.append(read(1)[0])
            elif op == b"M":
                stack.append(struct.unpack("<H", read(2))[0])
            elif op == b"I":
                data = line()
                stack.append({b"00": False, b"01": True}.get(data) if data in (b"00", b"01") else int(data))
            elif op == b"L":
                data = line()
                stack.append(int(data[:-1] if data.endswith(b"L") else data))
            elif op == b"\x8a":
                stack.append(int.from_bytes(read(read(1)[0]), "little", signed=True))
            elif op == b"\x8b":
                n = struct.unpack("<i", read(4))[0]
                if n < 0:
                    raise ConvertError("LONG4 with a negative length")
                stack.append(int.from_bytes(read(n), "little", signed=True))
            elif op == b"F":
                stack.append(float(line()))
            elif op == b"G":
                stack.append(struct.unpack(">d", read(8))[0])
            elif op == b"X":
                stack.append(read(struct.unpack("<I", read(4))[0]).decode("utf-8", "surrogatepass"))
            elif op == b"\x8c":
                stack.append(read(read(1)[0]).decode("utf-8", "surrogatepass"))
            elif op == b"\x8d":
                stack.append(read(struct.unpack("<Q", read(8))[0]).decode("utf-8", "surrogatepass"))
            elif op == b"V":
                stack.append(codecs.decode(line(), "raw-unicode-escape"))
            elif op in (b"T", b"U"):  # BINSTRING / SHORT_BINSTRING: torch.load decodes as utf-8
                n = struct.unpack("<i", read(4))[0] if op == b"T" else read(1)[0]
                stack.append(read(n).decode("utf-8", "surrogateescape"))
            elif op == b"B":
                stack.append(read(struct.unpack("<I", read(4))[0]))
            elif op == b"C":
                stack.append(read(read(1)[0]))
            elif op == b"\x8e":
                stack.append(read(struct.unpack("<Q", read(8))[0]))
            elif op == b")":
                stack.append(())
            elif op == b"t":
                items = pop_mark()  # before naming ``stack``: pop_mark rebinds it
                stack.append(tuple(items))
            elif op == b"\x85":
                stack[-1] = (stack[-1],)
            elif op == b"\x86":
                stack[-2:] = [tuple(stack[-2:])]
            elif op == b"\x87":
                stack[-3:] = [tuple(stack[-3:])]
            elif op == b"]":
                stack.append([])
            elif op == b"l":
                items = pop_mark()
                stack.append(items)
            elif op == b"a":
                value = stack.pop()
                self._list(stack[-1]).append(value)
            elif op == b"e":
                items = pop_mark()
                self._list(stack[-1]).extend(items)
            elif op == b"}":
                stack.append({})
            elif op == b"d":
                items = pop_mark()
                stack.append({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})
            elif op == b"s":
                value = stack.pop()
                key = stack.pop()
                self._dict(stack[-1])[key] = value
            elif op == b"u":
                items = pop_mark()
                target = self._dict(stack[-1])
                for i in range(0, len(items) - 1, 2):
                    target[items[i]] = items[i + 1]
            elif op == b"\x8f":
                stack.append(set())
            elif op == b"\x90":
                items = pop_mark()
                target = stack[-1]
                if not isinstance(target, set):
                    raise ConvertError("ADDITEMS on something that is not a set")
                target.update(items)
            elif op == b"\x91":
                items = pop_mark()
                stack.append(frozenset(items))
            elif op == b"c":
                module = line().decode("utf-8")
                stack.append(Global(module, line().decode("utf-8")))
            elif op == b"\x93":
                name = stack.pop()
                module = stack.pop()
                if not isinstance(module, str) or not isinstance(name, str):
                    raise ConvertError("STACK_GLOBAL on values that are not strings")
                stack.append(Global(module, name))
            elif op == b"R":
                args = stack.pop()
                stack[-1] = self._call(stack[-1], args)
            elif op == b"\x81":  # NEWOBJ: cls.__new__(cls, *args) is not made, only recorded
                stack.pop()
                cls = stack.pop()
                stack.append(_Object(cls.qualname if isinstance(cls, Global) else repr(cls)))
            elif op == b"b":
                state = stack.pop()
                target = stack[-1]
                if isinstance(target, _Object):
                    target.state = state
                # dict state on a dict (an OrderedDict's ``_metadata``) carries no tensors
            elif op == b"p":
                memo[int(line())] = stack[-1]
            elif op == b"q":
                memo[read(1)[0]] = stack[-1]
            elif op == b"r":
                memo[struct.unpack("<I", read(4))[0]] = stack[-1]
            elif op == b"\x94":
                memo[len(memo)] = stack[-1]
            elif op == b"g":
                stack.append(self._memo(memo, int(line())))
            elif op == b"h":
                stack.append(self._memo(memo, read(1)[0]))
            elif op == b"j":
                stack.append(self._memo(memo, struct.unpack("<I", read(4))[0]))
            elif op == b"P":
                stack.append(self.persistent_load(line().decode("ascii")))
            elif op == b"Q":
                stack[-1] = self.persistent_load(stack[-1])
            else:
                raise ConvertError(f"pickle opcode {op!r} is not used by tensor checkpoints; not converted")
        raise ConvertError(f"pickle runs past {self.max_ops} opcodes")

    @staticmethod
    def _memo(memo: Dict[int, Any], key: int) -> Any:
        if key not in memo:
            raise ConvertError(f"memo key {key} read before it is written")
        return memo[key]

    @staticmethod
    def _list(target: Any) -> list:
        if not isinstance(target, list):
            raise ConvertError("APPEND on something that is not a list")
        return target

    @staticmethod
    def _dict(target: Any) -> dict:
        if not isinstance(target, dict):
            raise ConvertError("SETITEM on something that is not a dict")
        return target

    @staticmethod
    def _call(callee: Any, args: Any) -> Any:
        if not isinstance(callee, Global) or not isinstance(args, tuple):
            raise ConvertError("REDUCE on something that is not an imported name")
        if callee.module == "collections" and callee.name == "OrderedDict" and args == ():
            return OrderedDict()
        if callee.module == "torch._utils" and callee.name in REBUILD_TENSOR:
            if len(args) < 4 or not isinstance(args[0], StorageRef) or not _is_int(args[1]):
                raise ConvertError(f"{callee.qualname} with unexpected arguments")
            shape, stride = args[2], args[3]
            if not (isinstance(shape, tuple) and isinstance(stride, tuple) and len(shape) == len(stride)
                    and all(_is_int(x) and x >= 0 for x in shape + stride)):
                raise ConvertError(f"{callee.qualname} with an invalid size or stride")
            tensor = TensorRef(args[0], args[1], shape, stride)
            last = args[1] + sum((s - 1) * st for s, st in zip(shape, stride)) if tensor.numel else args[1]
            if args[1] < 0 or (tensor.numel and last >= args[0].numel):
                raise ConvertError(f"tensor view reaches past its storage of {args[0].numel} elements")
            return tensor
        if callee.module == "torch._utils" and callee.name in REBUILD_PARAMETER:
            if not args or not isinstance(args[0], TensorRef):
                raise ConvertError(f"{callee.qualname} without a tensor")
            return args[0]
        return Opaque(callee.qualname)


class _StorageTable:
    """Storage records by key. torch.load builds a key's storage once, from its first record, and
    hands that storage to every later record of the key whatever type and size they state
    (``loaded_storages`` / ``deserialized_objects``); torch.save never writes one key with two types
    (it refuses to). A key stated twice differently would make our tensors differ from torch's,
    so it is refused."""

    def __init__(self) -> None:
        self.first: Dict[str, StorageRef] = {}

    def resolve(self, ref: StorageRef) -> StorageRef:
        known = self.first.setdefault(ref.key, ref)
        if known != ref:
            raise ConvertError(f"storage {ref.key} is recorded as {known.dtype} x {known.numel} and as "
                               f"{ref.dtype} x {ref.numel}; torch would read the first for both, "
                               "not converted")
        return known


def _storage_record(pid: Any) -> Tuple[StorageRef, Any]:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], Global)):
        raise ConvertError(f"persistent record {pid!r:.80} is not a torch storage")
    cls, key, numel = pid[1], pid[2], pid[4]
    if cls.module != "torch" or cls.name not in STORAGE_DTYPES:
        raise ConvertError(f"storage type {cls.qualname} has no safetensors dtype; not converted")
    if not isinstance(key, str) or not _is_int(numel) or numel < 0:
        raise ConvertError("storage record with an invalid key or size")
    dtype, itemsize = STORAGE_DTYPES[cls.name]
    return StorageRef(key, dtype, itemsize, numel), pid[5] if len(pid) > 5 else None


# --- reading checkpoints -----------------------------------------------------------------------

@dataclass
class Checkpoint:
    """What a checkpoint holds: its top-level object and a way to read each storage's bytes."""

    obj: Any
    read_storage: Callable[[StorageRef], bytes]


def _zip_checkpoint(path: str) -> Checkpoint:
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ConvertError(f"not a readable zip: {exc}") from exc
    from .formats.zip.torch_archive import torch_key

    # Records are found as torch's reader finds them: the folder is the first entry's, and every
    # lookup ignores ASCII case (torch_key). Names that are one record to torch are ambiguous (which
    # one miniz picks depends on its sort; zipfile reads the last), so they are refused.
    names = archive.namelist()
    records: Dict[str, List[str]] = {}
    for n in names:
        records.setdefault(torch_key(n), []).append(n)
    twins = [v for v in records.values() if len(v) > 1]
    if twins:
        raise ConvertError(f"entries {', '.join(repr(n) for n in twins[0][:3])} are one record to torch's "
                           "case-insensitive lookup; which one torch reads is ambiguous, not converted")
    root = names[0].split("/", 1)[0] if names and "/" in names[0] else ""
    if not root or any(not n.startswith(root + "/") for n in names):
        raise ConvertError("not a torch.save archive (torch reads only archives whose entries share the "
                           "first entry's folder)")

    def record(name: str) -> Optional[str]:
        found = records.get(torch_key(f"{root}/{name}"))
        return found[0] if found else None

    data_pkl = record("data.pkl")
    if data_pkl is None:
        raise ConvertError("not a torch.save archive (no <root>/data.pkl); TorchScript and "
                           "torch.package archives are not converted")
    if record("constants.pkl") or any(k.startswith(torch_key(root) + "/code/") for k in records):
        raise ConvertError("a TorchScript archive; export its weights with torch.save(model.state_dict())")
    byteorder_name = record("byteorder")
    byteorder = archive.read(byteorder_name) if byteorder_name else b"little"
    if byteorder != b"little":  # torch accepts exactly b"little" / b"big" (and swaps the latter)
        raise ConvertError(f"storages are {byteorder.decode('ascii', 'replace')!r}-endian; not converted")
    storages = _StorageTable()

    def load(pid: Any) -> StorageRef:
        if isinstance(pid, tuple) and len(pid) != 5:
            raise ConvertError(f"persistent record {pid!r:.80} is not a torch.save storage record")
        return storages.resolve(_storage_record(pid)[0])

    with archive.open(data_pkl) as fh:
        obj = TensorPickleReader(io.BufferedReader(fh), load).load()  # type: ignore[arg-type]

    def read_storage(ref: StorageRef) -> bytes:
        name = record(f"data/{ref.key}")
        if name is None:
            raise ConvertError(f"storage {ref.key} is missing from the archive ({root}/data/{ref.key})")
        data = archive.read(name)
        if len(data) < ref.numel * ref.itemsize:
            raise ConvertError(f"storage {ref.key} holds {len(data)} bytes, its record says "
                               f"{ref.numel * ref.itemsize}")
        return data[: ref.numel * ref.itemsize]

    return Checkpoint(obj, read_storage)


def _legacy_checkpoint(path: str) -> Checkpoint:
    """The pre-1.6 format: five pickles (magic, protocol, sys info, object, storage keys), then each
    storage as an 8-byte element count and its bytes, in the order of the keys (torch/serialization.py
    ``_legacy_save``)."""
    views: Dict[str, Tuple[StorageRef, Any]] = {}

    storages = _StorageTable()

    def load(pid: Any) -> StorageRef:
        ref, view = _storage_record(pid)
        if view is not None:
            raise ConvertError("storage views of the legacy format are not converted")
        ref = storages.resolve(ref)
        views.setdefault(ref.key, (ref, view))
        return ref

    def nothing(pid: Any) -> Any:
        raise ConvertError("persistent record outside the checkpoint's object")

    with open(path, "rb") as fh:
        if TensorPickleReader(fh, nothing).load() != LEGACY_MAGIC:
            raise ConvertError("not a torch.save checkpoint (no zip archive, no legacy magic number)")
        TensorPickleReader(fh, nothing).load()  # protocol version
        sys_info = TensorPickleReader(fh, nothing).load()
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise ConvertError("storages are big-endian; not converted")
        obj = TensorPickleReader(fh, load).load()
        keys = TensorPickleReader(fh, nothing).load()
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ConvertError("the legacy storage key list is not a list of names")
        offsets: Dict[str, Tuple[int, int]] = {}
        pos = fh.tell()
        size = os.fstat(fh.fileno()).st_size
        for key in keys:
            fh.seek(pos)
            head = fh.read(8)
            if len(head) != 8:
                raise ConvertError(f"storage {key} is truncated")
            count = struct.unpack("<q", head)[0]
            ref = views.get(key, (None, None))[0]
            itemsize = ref.itemsize if ref else 1
            if ref is not None and count != ref.numel:
                raise ConvertError(f"storage {key} holds {count} elements, its record says {ref.numel}")
            if count < 0 or pos + 8 + count * itemsize > size:
                raise ConvertError(f"storage {key} runs past the end of the file")
            offsets[key] = (pos + 8, count * itemsize)
            pos += 8 + count * itemsize

    def read_storage(ref: StorageRef) -> bytes:
        if ref.key not in offsets:
            raise ConvertError(f"storage {ref.key} is not in the file's storage list")
        start, length = offsets[ref.key]
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read(length)

    return Checkpoint(obj, read_storage)


def read_checkpoint(path: str) -> Checkpoint:
    """Read a ``torch.save`` file (zip or legacy) without loading it."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PK\x03\x04":
        return _zip_checkpoint(path)
    if magic[:1] == b"\x80":
        return _legacy_checkpoint(path)
    raise ConvertError("not a torch.save checkpoint (neither a zip archive nor the legacy format)")


# --- choosing tensors ----------------------------------------------------------------------------

def _describe(value: Any) -> str:
    if isinstance(value, Opaque):
        return f"object made by {value.callee}"
    if isinstance(value, _Object):
        return f"{value.callee} object"
    return type(value).__name__


def select_tensors(obj: Any, key: Optional[str]) -> Tuple[Dict[str, TensorRef], List[str]]:
    """The name -> tensor mapping to write, and a line for every entry that is not a tensor."""
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                raise ConvertError(f"the checkpoint has no entry {key!r}")
            obj = obj[part]
    if not isinstance(obj, dict):
        raise ConvertError(f"the checkpoint holds a {_describe(obj)}, not a dict of tensors")
    tensors: Dict[str, TensorRef] = {}
    skipped: List[str] = []
    for name, value in obj.items():
        if not isinstance(name, str):
            skipped.append(f"{name!r}: key is not a string")
        elif isinstance(value, TensorRef):
            tensors[name] = value
        else:
            skipped.append(f"{name}: {_describe(value)}, not a tensor")
    if not tensors:
        hint = [k for k, v in obj.items() if isinstance(v, dict)
                and any(isinstance(t, TensorRef) for t in v.values())]
        extra = f" (try --key {hint[0]})" if hint else ""
        raise ConvertError(f"no tensors at the top level of the checkpoint{extra}")
    return tensors, skipped


def deduplicate(tensors: Dict[str, TensorRef]) -> Tuple[Dict[str, TensorRef], Dict[str, str]]:
    """Keep one name per identical view, as ``safetensors.torch.save_model`` does: the dropped
    names go to the metadata as ``dropped -> kept``."""
    groups: Dict[Tuple[Any, ...], List[str]] = {}
    for name, t in tensors.items():
        groups.setdefault(t.view_key(), []).append(name)
    kept: Dict[str, TensorRef] = {}
    removed: Dict[str, str] = {}
    for names in groups.values():
        first = sorted(names)[0]
        kept[first] = tensors[first]
        for other in names:
            if other != first:
                removed[other] = first
    return {n: kept[n] for n in tensors if n in kept}, removed


def tensor_bytes(t: TensorRef, storage: bytes) -> bytes:
    """The tensor's elements in row-major order, copied out of its storage."""
    if t.numel == 0:
        return b""
    if t.contiguous():
        start = t.offset * t.storage.itemsize
        return storage[start:start + t.nbytes]
    try:
        import numpy as np
    except ImportError as exc:
        raise ConvertError("a non-contiguous tensor needs numpy to be gathered (pip install numpy)") from exc
    word = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[t.storage.itemsize]
    base = np.frombuffer(storage, dtype=word)
    size = t.storage.itemsize
    view = np.lib.stride_tricks.as_strided(base[t.offset:], shape=t.shape,
                                           strides=tuple(s * size for s in t.stride), writeable=False)
    return np.ascontiguousarray(view).tobytes()


# --- writing safetensors -------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """``5GB``, ``500MB``, ``2GiB`` or a plain number of bytes, as transformers reads them."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", text.upper())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = m.group(2).rstrip("B")
    factor = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}[unit]
    return int(float(m.group(1)) * factor)


def _header(entries: List[Tuple[str, str, Tuple[int, ...], int, int]], metadata: Dict[str, str]) -> bytes:
    header: Dict[str, Any] = {"__metadata__": metadata}
    for name, dtype, shape, start, end in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [start, end]}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the reference pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class Written:
    path: str
    digests: Dict[str, str] = field(default_factory=dict)


def write_safetensors(path: str, names: Sequence[str], tensors: Dict[str, TensorRef],
                      data: Callable[[TensorRef], bytes], metadata: Dict[str, str]) -> Written:
    """Write one safetensors file; returns the sha256 of every tensor's bytes for the check after."""
    # Larger alignment first, then by name, as the reference orders its data.
    order = sorted(names, key=lambda n: (-tensors[n].storage.itemsize, n))
    entries = []
    pos = 0
    for name in order:
        t = tensors[name]
        entries.append((name, t.storage.dtype, t.shape, pos, pos + t.nbytes))
        pos += t.nbytes
    out = Written(path)
    tmp = path + ".partial"
    with open(tmp, "wb") as fh:
        fh.write(_header(entries, metadata))
        for name in order:
            blob = data(tensors[name])
            if len(blob) != tensors[name].nbytes:
                raise ConvertError(f"tensor {name}: got {len(blob)} bytes, expected {tensors[name].nbytes}")
            out.digests[name] = hashlib.sha256(blob).hexdigest()
            fh.write(blob)
    os.replace(tmp, path)
    return out


def verify_written(written: Written) -> None:
    """Validate the file with our own safetensors reader, then compare every tensor's bytes."""
    from .findings import Severity
    from .scanner import ScanOptions, scan_file

    result = scan_file(written.path, ScanOptions())
    bad = [f for f in result.findings if f.unscanned or f.severity >= Severity.LOW]
    if bad or "safetensors" not in result.formats:
        raise ConvertError(f"{written.path} does not validate: " +
                           "; ".join(f"{f.rule_id}: {f.message}" for f in bad))
    with open(written.path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        base = 8 + n
        for name, digest in written.digests.items():
            start, end = header[name]["data_offsets"]
            fh.seek(base + start)
            if hashlib.sha256(fh.read(end - start)).hexdigest() != digest:
                raise ConvertError(f"{written.path}: tensor {name} reads back different bytes")


# --- the command -------------------------------------------------------------------------------

@dataclass
class Conversion:
    """One input's outcome."""

    source: str
    outputs: List[str] = field(default_factory=list)
    tensors: int = 0
    aliases: Dict[str, str] = field(default_factory=dict)
    skipped: List[str] = field(default_factory=list)


def output_stem(path: str) -> str:
    """``pytorch_model*.bin`` -> ``model*`` (transformers' names), anything else keeps its stem."""
    base = os.path.basename(path)
    m = re.fullmatch(r"pytorch_model(-\d+-of-\d+)?\.bin", base)
    if m:
        return "model" + (m.group(1) or "")
    return os.path.splitext(base)[0]


def convert_checkpoint(path: str, out_dir: str, key: Optional[str] = None,
                       max_shard_size: int = DEFAULT_MAX_SHARD, stem: Optional[str] = None,
                       shard: bool = True) -> Conversion:
    """Convert one already-scanned checkpoint; raises :class:`ConvertError` when it cannot."""
    ckpt = read_checkpoint(path)
    tensors, skipped = select_tensors(ckpt.obj, key)
    kept, aliases = deduplicate(tensors)
    metadata = {"format": "pt", **aliases}
    cache: Dict[str, bytes] = {}

    def data(t: TensorRef) -> bytes:
        if t.storage.key not in cache:
            cache.clear()  # one storage in memory at a time (tensors of a storage are written together)
            cache[t.storage.key] = ckpt.read_storage(t.storage)
        return tensor_bytes(t, cache[t.storage.key])

    stem = stem or output_stem(path)
    names = sorted(kept, key=lambda n: (kept[n].storage.key, n))
    shards: List[List[str]] = [[]]
    size = 0
    for name in names:
        nbytes = kept[name].nbytes
        if shard and shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    os.makedirs(out_dir, exist_ok=True)
    result = Conversion(path, tensors=len(kept), aliases=aliases, skipped=skipped)
    weight_map: Dict[str, str] = {}
    for i, group in enumerate(shards, 1):
        filename = f"{stem}.safetensors" if len(shards) == 1 else \
            f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        target = os.path.join(out_dir, filename)
        written = write_safetensors(target, group, kept, data, metadata)
        verify_written(written)
        result.outputs.append(target)
        weight_map.update({n: filename for n in group})
    if len(shards) > 1:
        index = os.path.join(out_dir, f"{stem}.safetensors.index.json")
        total = sum(kept[n].nbytes for n in names)
        with open(index, "w", encoding="utf-8") as fh:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                      fh, indent=2)
            fh.write("\n")
        result.outputs.append(index)
    return result


def _read_index(index_path: str) -> Dict[str, str]:
    with open(index_path, "rb") as fh:
        try:
            index = json.loads(fh.read())
        except ValueError as exc:
            raise ConvertError(f"the shard index is not JSON: {exc}") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ConvertError("the shard index has no weight_map of names to files")
    for f in weight_map.values():
        if os.path.basename(f) != f or f in ("", ".", ".."):
            raise ConvertError(f"the shard index names {f!r}, which is not a file beside it")
    return weight_map


def shard_files(index_path: str) -> List[str]:
    """The shard files a ``*.bin.index.json`` names, as paths beside it (each is scanned first)."""
    folder = os.path.dirname(os.path.abspath(index_path))
    return [os.path.join(folder, f) for f in sorted(set(_read_index(index_path).values()))]


def convert_sharded(index_path: str, out_dir: str, key: Optional[str] = None) -> List[Conversion]:
    """``pytorch_model.bin.index.json``: convert each shard it names, then write the matching
    ``model.safetensors.index.json`` (same split, one safetensors shard per pickle shard)."""
    weight_map = _read_index(index_path)
    results = []
    new_map: Dict[str, str] = {}
    total = 0
    for shard_path in shard_files(index_path):
        conv = convert_checkpoint(shard_path, out_dir, key=key, shard=False)
        results.append(conv)
        produced = os.path.basename(conv.outputs[0])
        with open(conv.outputs[0], "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, entry in header.items():
            if name != "__metadata__":
                new_map[name] = produced
                total += entry["data_offsets"][1] - entry["data_offsets"][0]
    # Dropped aliases live in each shard's metadata, not in the index (as save_pretrained writes it).
    aliases = {a for conv in results for a in conv.aliases}
    missing = sorted(set(weight_map) - set(new_map) - aliases)
    if missing:
        raise ConvertError(f"the shard index lists tensors no shard holds: {', '.join(missing[:5])}")
    base = os.path.basename(index_path)
    stem = "model" if base.startswith("pytorch_model") else base.split(".")[0]
    target = os.path.join(out_dir, f"{stem}.safetensors.index.json")
    with open(target, "w", encoding="utf-8") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(new_map.items()))},
                  fh, indent=2)
        fh.write("\n")
    results[-1].outputs.append(target)
    return results


#: Formats ``safemodel convert`` reads.
CONVERTIBLE_FORMATS = frozenset({"torch-zip", "torch-legacy-records"})


def convert_command(result: "FileResult", fail_on: "Severity") -> Optional[str]:
    """The ``safemodel convert`` line to show for a blocked torch checkpoint whose tensors can be
    taken out safely: every blocking finding is about objects the converter records and never
    makes (an unknown class, say), none means loading runs code, and the file was scanned fully."""
    import shlex

    from .rules import RULES_BY_ID

    if not CONVERTIBLE_FORMATS & set(result.formats) or "torchscript" in result.formats:
        return None
    blocking = [f for f in result.findings if f.severity >= fail_on and not f.unscanned]
    if not blocking or not result.complete:
        return None
    rules = [RULES_BY_ID.get(f.rule_id) for f in blocking]
    if any(r is None or r.code_execution or not r.id.startswith(("pickle-", "torch-")) for r in rules):
        return None
    worst = max(f.severity for f in result.findings if not f.unscanned)
    above = min((s for s in type(worst) if s > worst), default=None)
    option = f"--fail-on {above.name.lower()} " if above is not None else ""
    return f"safemodel convert {option}{shlex.quote(result.path)}"
