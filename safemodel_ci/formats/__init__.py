"""The detector table: every format reader, in the order detection asks them, and what the scanner
must know about each one *before* importing its module.

A scan of one small pickle must not import twenty reader modules (and what they import) to learn
that nineteen of them do not apply. So each row carries the reader's name, its ``by_name`` /
``supersedes`` / ``compatible`` attributes, and a **gate**: a cheap test on the head (and the size
and name) of the source that is true whenever the reader's own ``detect`` could be. The scanner asks
the gate first; only when it passes is the reader's module imported (:func:`load`) and its real
``detect`` asked, which alone decides. A gate may say yes too often (that costs an import), never
no too often: tests/test_architecture.py checks each gate against its reader's ``detect`` on every
sample and that the rows' attributes are the classes' own.
"""

from __future__ import annotations

import importlib
import threading

from ..protobuf import TAG_START, head_may_be_message, valid_first_tag
from ..record import Record
from ..source import ByteSource
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Dict, FrozenSet, List, Tuple

    #: (source, first 4 KiB) -> False only when the reader's detector would say no.
    Gate = Callable[[ByteSource, bytes], bool]


class ReaderRow(Record, frozen=True):
    """One reader as the detector table knows it without importing it (a plain record, not a
    dataclass: see safemodel_ci/record.py)."""

    __slots__ = ("name", "module", "cls", "gate", "by_name", "supersedes", "compatible")
    name: str
    module: str
    cls: str
    gate: Gate
    by_name: bool
    supersedes: FrozenSet[str]
    compatible: FrozenSet[str]

    def __init__(self, name: str, module: str, cls: str, gate: Gate, by_name: bool = False,
                 supersedes: FrozenSet[str] = frozenset(), compatible: FrozenSet[str] = frozenset()) -> None:
        set_ = object.__setattr__  # frozen: fields are set once, here
        set_(self, "name", name)
        set_(self, "module", module)
        set_(self, "cls", cls)
        set_(self, "gate", gate)
        set_(self, "by_name", by_name)
        set_(self, "supersedes", supersedes)
        set_(self, "compatible", compatible)


def _whole(source: ByteSource, head: bytes) -> bool:
    """The head holds the whole content (a detector cannot find more by reading the source)."""
    return len(head) >= source.size


def _always(source: ByteSource, head: bytes) -> bool:
    return True


def _zip(source: ByteSource, head: bytes) -> bool:
    # A local header or end record at 0 (torch), else an end record near the end (zipfile): when the
    # head is the whole file, the end record must be in it.
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or not _whole(source, head) or b"PK\x05\x06" in head


def _joblib(source: ByteSource, head: bytes) -> bool:
    # joblib's compressor prefixes (zlib, gzip, bz2, xz, lzma, lz4) or the legacy "ZF" header.
    return head.startswith((b"ZF", b"\x78", b"\x1f\x8b", b"BZ", b"\xfd\x37\x7a\x58\x5a", b"\x5d\x00",
                            b"\x04\x22\x4d\x18"))


#: torch.save's legacy magic number, as the first pickle holds it (protocol 2+ LONG1, or protocol 0 text).
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_MAGIC_LONG1 = b"\x8a\x0a" + _TORCH_MAGIC.to_bytes(10, "little") + b"."


def _torch_legacy(source: ByteSource, head: bytes) -> bool:
    # PROTO, an optional FRAME (9 bytes), then the magic as LONG1; or protocol 0's "L<number>".
    return head[2:2 + len(_TORCH_MAGIC_LONG1)] == _TORCH_MAGIC_LONG1 \
        or head[11:11 + len(_TORCH_MAGIC_LONG1)] == _TORCH_MAGIC_LONG1 \
        or head.startswith(b"L" + str(_TORCH_MAGIC).encode())


def _safetensors(source: ByteSource, head: bytes) -> bool:
    return head[8:].lstrip(b" \t\n\r")[:1] == b"{"  # the JSON header object after the 8-byte length


def _json_object(source: ByteSource, head: bytes) -> bool:
    return head.lstrip(b" \t\n\r")[:1] == b"{"


#: First bytes of a JSON document in any encoding json.loads detects (keras_config._MAY_START_JSON).
_MAY_START_JSON = frozenset(b"{ \t\r\n\xef\xfe\xff\x00")


def _json_config(source: ByteSource, head: bytes) -> bool:
    return bool(head) and (head[0] in _MAY_START_JSON or (len(head) >= 2 and not head[1]))


def _hdf5(source: ByteSource, head: bytes) -> bool:
    return not _whole(source, head) or b"\x89HDF\r\n\x1a\n" in head


def _protobuf(source: ByteSource, head: bytes) -> bool:
    return valid_first_tag(head) and head_may_be_message(head)


def _onnx(source: ByteSource, head: bytes) -> bool:
    return bool(head) and head[0] in TAG_START and head_may_be_message(head)


def _savedmodel_text(source: ByteSource, head: bytes) -> bool:
    return head.lstrip(b" \t\n\r\x0b\x0c")[:1] in (b"s", b"m", b"#")


def _jinja(source: ByteSource, head: bytes) -> bool:
    return source.name.lower().endswith(".jinja")


def _prefix(magic: bytes, at: int = 0) -> Gate:
    def gate(source: ByteSource, head: bytes) -> bool:
        return head[at:at + len(magic)] == magic
    return gate


#: Every reader, in the order detection runs them (the order results and polyglot messages list).
ROWS: Tuple[ReaderRow, ...] = (
    ReaderRow("pickle", "pickle", "PickleReader", _always),
    ReaderRow("zip", "zip.reader", "ZipReader", _zip),
    ReaderRow("npy", "numpy", "NpyReader", _prefix(b"\x93NUMPY")),
    ReaderRow("joblib-compressed", "joblib", "JoblibCompressedReader", _joblib),
    ReaderRow("torch-legacy", "torch_legacy", "TorchLegacyReader", _torch_legacy,
              supersedes=frozenset({"pickle"})),
    ReaderRow("tar", "tar", "TarReader", lambda source, head: len(head) >= 512),
    ReaderRow("7z", "sevenzip", "SevenZipReader", _prefix(b"7z\xbc\xaf\x27\x1c")),
    ReaderRow("lfs-pointer", "lfs", "LfsPointerReader",
              lambda source, head: source.size < 1024 and head.startswith(b"version ")),
    ReaderRow("safetensors", "safetensors_reader", "SafetensorsReader", _safetensors),
    ReaderRow("safetensors-index", "safetensors_index", "SafetensorsIndexReader", _json_object),
    ReaderRow("hdf5", "hdf5", "Hdf5Reader", _hdf5),
    ReaderRow("json-config", "json_config", "JsonConfigReader", _json_config,
              compatible=frozenset({"safetensors-index"})),
    ReaderRow("savedmodel", "savedmodel_reader", "SavedModelReader", _protobuf),
    ReaderRow("riegeli", "savedmodel_reader", "ChunkedSavedModelReader",
              _prefix(bytes.fromhex("83af70d10d884a3f"))),
    ReaderRow("keras-metadata", "savedmodel_reader", "KerasMetadataReader", _protobuf),
    ReaderRow("savedmodel-text", "savedmodel_text", "SavedModelTextReader", _savedmodel_text),
    ReaderRow("gguf", "gguf", "GgufReader", _prefix(b"GGUF")),
    ReaderRow("jinja-template", "jinja_template", "JinjaTemplateReader", _jinja, by_name=True),
    ReaderRow("onnx", "onnx", "OnnxReader", _onnx),
    ReaderRow("torchscript-flatbuffer", "torchscript_flatbuffer", "FlatbufferModuleReader",
              _prefix(b"PTMF", 4)),
)

#: Readers imported so far, by row index.
_loaded: Dict[int, FormatReader] = {}
_readers: List[FormatReader] = []
#: Threads scanning at once (``hub --jobs``) must create each reader once and build the full list
#: once: two threads that both found it empty each appended every reader, and every file then read
#: as "safetensors and as safetensors" (a false polyglot finding). Re-entrant: :func:`readers` holds
#: it while it loads each row.
_readers_lock = threading.RLock()


_split: Tuple[object, Tuple[int, ...], Tuple[int, ...]] = (None, (), ())


def split_rows() -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(indexes of the rows that detect by content, of those that detect by name), in order."""
    global _split
    rows = ROWS
    if _split[0] is not rows:  # computed once (again only if the table is replaced, as tests do)
        _split = (rows, tuple(i for i, r in enumerate(rows) if not r.by_name),
                  tuple(i for i, r in enumerate(rows) if r.by_name))
    return _split[1], _split[2]


def load(index: int) -> FormatReader:
    """The reader of row ``index``, its module imported on first use (thread-safe)."""
    reader = _loaded.get(index)
    if reader is None:
        with _readers_lock:
            reader = _loaded.get(index)
            if reader is None:
                row = ROWS[index]
                reader = getattr(importlib.import_module(f"{__name__}.{row.module}"), row.cls)()
                _loaded[index] = reader
    return reader


def load_named(name: str) -> FormatReader:
    """The reader called ``name`` (KeyError when there is none); only its module is imported."""
    for index, row in enumerate(ROWS):
        if row.name == name:
            return load(index)
    raise KeyError(name)


def readers() -> List[FormatReader]:
    """All format readers, every module imported, instantiated once per process (thread-safe)."""
    if not _readers:
        with _readers_lock:
            if not _readers:
                built = [load(i) for i in range(len(ROWS))]
                _readers.extend(built)  # one step: another thread sees no reader or every reader
    return _readers


__all__ = ["ROWS", "ReaderRow", "load", "load_named", "readers", "split_rows"]
