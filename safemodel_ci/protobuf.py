"""A small, bounded decoder of the protobuf wire format, for SavedModel, keras_metadata.pb and ONNX.

No schema and no generated code: a reader walks the fields it knows by number (checked against the
public ``.proto`` files) and skips the rest. Length-delimited fields are not read until asked for,
so a 2 GB ONNX file with inline weights costs a few reads of its small messages, not 2 GB.

Wire format: each field is ``tag = (number << 3) | wire_type`` as a varint, then the value:
0 varint, 1 eight bytes, 2 length-delimited (varint length + bytes), 5 four bytes. Groups (3 start,
4 end) were removed from proto3 and no TensorFlow or ONNX message uses them, but protobuf parsers
still skip a well-formed group as an unknown field: so are they here (never yielded). A group
that does not close, or an end tag without its start, is an error as it is for protobuf.
Repeated fields, and repeated occurrences of one embedded message (which protobuf merges), are
simply yielded one by one, so a caller visits every occurrence.
"""

from __future__ import annotations


from .record import Record
from .source import ByteSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterator, Optional

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
#: Messages up to this size are read into memory in one go and decoded there; larger ones are
#: walked field by field so that big payloads (ONNX raw_data, TF constants) are skipped unread.
INLINE_BYTES = 256 << 10
_MAX_VARINT_BYTES = 10


class ProtobufError(ValueError):
    """The bytes are not a valid protobuf encoding. ``offset`` is where the problem starts."""

    def __init__(self, message: str, offset: int, field: Optional[int] = None) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset
        #: Number of the length-delimited field that runs past its message, when that is the problem.
        self.field = field


class ProtoField(Record, frozen=True):
    """One field occurrence. For LEN fields the value lies at ``[start, end)`` of the view's source.
    (A plain record, not a dataclass: see safemodel_ci/record.py.)"""

    __slots__ = ("number", "wire_type", "offset", "value", "start", "end")
    number: int
    wire_type: int
    #: Offset of the tag in the source.
    offset: int
    #: Varint / fixed value (None for LEN fields).
    value: Optional[int]
    start: int
    end: int

    def __init__(self, number: int, wire_type: int, offset: int, value: Optional[int], start: int,
                 end: int) -> None:
        set_ = object.__setattr__  # frozen: fields are set once, here
        set_(self, "number", number)
        set_(self, "wire_type", wire_type)
        set_(self, "offset", offset)
        set_(self, "value", value)
        set_(self, "start", start)
        set_(self, "end", end)

    @property
    def length(self) -> int:
        return self.end - self.start


class ProtoView:
    """An encoded message: ``[start, end)`` of a source. Small messages are decoded from memory."""

    def __init__(self, source: ByteSource, start: int = 0, end: Optional[int] = None,
                 _data: Optional[memoryview] = None, _base: int = 0) -> None:
        self.source = source
        self.start = start
        self.end = source.size if end is None else end
        if self.end > source.size or self.start > self.end:
            raise ProtobufError("message runs past the end of the data", self.start)
        self._data = _data
        self._base = _base

    @property
    def size(self) -> int:
        return self.end - self.start

    def _ensure(self) -> None:
        if self._data is None and self.size <= INLINE_BYTES:
            self._data = memoryview(self.source.read_exact(self.start, self.size))
            self._base = self.start

    def sub(self, field: ProtoField) -> "ProtoView":
        """The embedded message held by a LEN field (sharing memory when this view is in memory)."""
        if field.wire_type != LEN:
            raise ProtobufError(f"field {field.number} is not length-delimited", field.offset)
        return ProtoView(self.source, field.start, field.end, self._data, self._base)

    def bytes_of(self, field: ProtoField, limit: int = 1 << 20) -> bytes:
        """The raw bytes of a LEN field, at most ``limit`` of them."""
        n = min(field.length, limit)
        if self._data is not None:
            rel = field.start - self._base
            return bytes(self._data[rel:rel + n])
        return self.source.read_exact(field.start, n)

    def text_of(self, field: ProtoField, limit: int = 1 << 20) -> str:
        """A string field decoded as UTF-8 (invalid bytes replaced: this is for reporting/matching)."""
        return self.bytes_of(field, limit).decode("utf-8", "replace")

    def fields(self) -> Iterator[ProtoField]:
        """Every field occurrence in order. Raises :class:`ProtobufError` on malformed input."""
        self._ensure()
        if self._data is not None:
            yield from _fields_in_memory(self._data, self._base, self.start, self.end)
        else:
            yield from _fields_streamed(self.source, self.start, self.end)


def _fields_in_memory(data: memoryview, base: int, start: int, end: int) -> Iterator[ProtoField]:
    pos = start - base
    stop = end - base
    while pos < stop:
        tag_at = pos
        tag, pos = _varint(data, pos, stop, base)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ProtobufError("field number 0", base + tag_at)
        if wire == VARINT:
            value, pos = _varint(data, pos, stop, base)
            yield ProtoField(number, wire, base + tag_at, value, base + pos, base + pos)
        elif wire == I64 or wire == I32:
            width = 8 if wire == I64 else 4
            if pos + width > stop:
                raise ProtobufError("fixed-width field truncated", base + tag_at)
            value = int.from_bytes(data[pos:pos + width], "little")
            pos += width
            yield ProtoField(number, wire, base + tag_at, value, base + pos, base + pos)
        elif wire == LEN:
            length, pos = _varint(data, pos, stop, base)
            if pos + length > stop:
                raise ProtobufError(f"field {number} claims {length} bytes, beyond its message",
                                    base + tag_at, number)
            yield ProtoField(number, wire, base + tag_at, None, base + pos, base + pos + length)
            pos += length
        elif wire == SGROUP:
            pos = _skip_group(data, pos, stop, base, number)
        else:
            raise ProtobufError(f"field {number} has wire type {wire} (groups and unknown types are "
                                "not valid here)", base + tag_at)


#: Groups nest at most this deep (protobuf's default recursion limit is 100).
MAX_GROUP_DEPTH = 100
#: A group met while streaming a big message is read into memory up to this size to be skipped.
MAX_STREAMED_GROUP = 64 << 20


class OutOfData(ProtobufError):
    """The data ended before what was being read did: inside a group, a field or a varint (more data
    may complete it; a streamed reader may read more and retry)."""


def _skip_group(data: memoryview, pos: int, stop: int, base: int, number: int) -> int:
    """Position after the end tag that closes the group ``number`` whose start tag ends at ``pos``."""
    open_groups = [number]
    start = pos
    while open_groups:
        if pos >= stop:
            raise OutOfData(f"group {open_groups[-1]} is not closed", base + start)
        tag_at = pos
        tag, pos = _varint(data, pos, stop, base)
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise ProtobufError("field number 0", base + tag_at)
        if wire == VARINT:
            _, pos = _varint(data, pos, stop, base)
        elif wire == I64 or wire == I32:
            pos += 8 if wire == I64 else 4
            if pos > stop:
                raise OutOfData("fixed-width field truncated", base + tag_at)
        elif wire == LEN:
            length, pos = _varint(data, pos, stop, base)
            pos += length
            if pos > stop:
                raise OutOfData(f"field {num} claims {length} bytes, beyond its group", base + tag_at, num)
        elif wire == SGROUP:
            if len(open_groups) >= MAX_GROUP_DEPTH:
                raise ProtobufError("groups nested too deeply", base + tag_at)
            open_groups.append(num)
        elif wire == EGROUP:
            if num != open_groups[-1]:
                raise ProtobufError(f"end of group {num} inside group {open_groups[-1]}", base + tag_at)
            open_groups.pop()
        else:
            raise ProtobufError(f"field {num} has wire type {wire}", base + tag_at)
    return pos


def _varint(data: memoryview, pos: int, stop: int, base: int) -> "tuple[int, int]":
    result = 0
    shift = 0
    begin = pos
    while True:
        if pos >= stop:
            raise OutOfData("varint truncated", base + begin)
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & ((1 << 64) - 1), pos
        shift += 7
        if pos - begin >= _MAX_VARINT_BYTES:
            raise ProtobufError("varint longer than 10 bytes", base + begin)


def read_varint(data: "bytes | memoryview", pos: int, stop: int) -> "tuple[int, int]":
    """The varint at ``pos`` and the position after it (as protobuf reads one: at most 10 bytes,
    kept to 64 bits). Raises :class:`OutOfData` when ``stop`` comes first, :class:`ProtobufError`
    when it runs over 10 bytes."""
    return _varint(data, pos, stop, 0)  # type: ignore[arg-type]


def _fields_streamed(source: ByteSource, start: int, end: int) -> Iterator[ProtoField]:
    """Field headers read with small windowed reads; values of LEN fields are skipped, not read."""
    window = 4096  # enough for the headers of a run of small fields; big values are skipped
    pos = start
    buf = b""
    buf_at = start
    while pos < end:
        if pos - buf_at + 32 > len(buf):
            buf = source.read_at(pos, min(window, end - pos))
            buf_at = pos
        mv = memoryview(buf)
        rel = pos - buf_at
        stop = min(len(buf), end - buf_at)
        tag, rel2 = _varint(mv, rel, stop, buf_at)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ProtobufError("field number 0", pos)
        if wire == VARINT:
            value, rel3 = _varint(mv, rel2, stop, buf_at)
            yield ProtoField(number, wire, pos, value, buf_at + rel3, buf_at + rel3)
            pos = buf_at + rel3
        elif wire == I64 or wire == I32:
            width = 8 if wire == I64 else 4
            if rel2 + width > stop:
                raise ProtobufError("fixed-width field truncated", pos)
            value = int.from_bytes(mv[rel2:rel2 + width], "little")
            yield ProtoField(number, wire, pos, value, buf_at + rel2 + width, buf_at + rel2 + width)
            pos = buf_at + rel2 + width
        elif wire == LEN:
            length, rel3 = _varint(mv, rel2, stop, buf_at)
            value_start = buf_at + rel3
            if value_start + length > end:
                raise ProtobufError(f"field {number} claims {length} bytes, beyond its message", pos,
                                    number)
            yield ProtoField(number, wire, pos, None, value_start, value_start + length)
            pos = value_start + length
        elif wire == SGROUP:
            # Read a growing window until the group closes (or is refused): random bytes that look
            # like a group start are refused within the first window, not read to the end.
            size = window
            while True:
                size = min(size, end - pos)
                data = memoryview(source.read_at(pos, size))
                try:
                    after = _skip_group(data, rel2 - rel, len(data), pos, number)
                    break
                except OutOfData:
                    if size >= end - pos:
                        raise
                    if size >= MAX_STREAMED_GROUP:
                        raise ProtobufError(f"group {number} larger than {MAX_STREAMED_GROUP} bytes",
                                            pos) from None
                    size *= 4
            pos += after
            buf = b""
            buf_at = pos
        else:
            raise ProtobufError(f"field {number} has wire type {wire} (groups and unknown types are "
                                "not valid here)", pos)


#: First bytes that can start a protobuf field: a tag with field number >= 1 and wire type 0-3 or
#: 5 (a tag byte with the continuation bit carries the number on: also possible).
TAG_START = frozenset(b for b in range(256) if (b & 7) in (0, 1, 2, 3, 5) and (b >> 3 or b & 0x80))


def head_may_be_message(head: bytes) -> bool:
    """Cheap first pass over the head alone (detection runs on every file and member): False when
    it already fails to decode as protobuf (most files: pickles, text, archives), True when it
    decodes, runs past its end or holds a group (decided on the whole)."""
    pos = 0
    n = len(head)
    try:
        while pos < n:
            tag, pos = read_varint(head, pos, n)
            wire = tag & 7
            if tag >> 3 == 0:
                return False
            if wire == 0:
                _, pos = read_varint(head, pos, n)
            elif wire == 2:
                length, pos = read_varint(head, pos, n)
                pos += length
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 3:
                return True
            else:
                return False
    except OutOfData:
        return True
    except ProtobufError:
        return False
    return True


def valid_first_tag(head: bytes) -> bool:
    """The first byte can start a protobuf field (number >= 1, wire type 0, 1, 2 or 5).

    Parsers take fields in any order and skip unknown ones, so a message may start with any field:
    detectors must not demand that a file start with the field its writer puts first.
    """
    return bool(head) and head[0] >> 3 != 0 and head[0] & 7 in (0, 1, 2, 5)


def looks_like_message(view: ProtoView, allowed: "dict[int, int]", required: "set[int]",
                       max_fields: int = 1 << 20) -> bool:
    """Trial decode of the top level: every field decodes, known numbers have the expected wire
    types, and every ``required`` number occurs. Unknown numbers are allowed (parsers skip them)."""
    seen = set()
    try:
        for i, f in enumerate(view.fields()):
            if i >= max_fields:
                return False
            expected = allowed.get(f.number)
            if expected is not None and expected != f.wire_type:
                return False
            seen.add(f.number)
    except ProtobufError:
        return False
    return required <= seen


def looks_like_truncated_message(view: ProtoView, allowed: "dict[int, int]", required: "set[int]",
                                 cut_fields: "set[int]") -> bool:
    """A message cut short: the fields before the cut are valid and known, the ``required`` ones
    among them, and decoding fails only because one of ``cut_fields`` runs past the end of the data.

    Readers claim such files so that a truncated model is reported as unreadable instead of
    passing as an unknown file.
    """
    seen = set()
    try:
        for f in view.fields():
            if allowed.get(f.number) != f.wire_type:
                return False
            seen.add(f.number)
    except ProtobufError as exc:
        return required <= seen and exc.field in cut_fields
    return False
