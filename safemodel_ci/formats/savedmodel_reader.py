"""The TensorFlow readers: ``saved_model.pb``, its chunked (Riegeli) form, ``keras_metadata.pb``.

Detection is here, on :mod:`..protobuf` alone; the graph walk lives in :mod:`.savedmodel` (shared
with the text-format reader, :mod:`.savedmodel_text`), imported when a file is one: protobuf is lax,
so the gate lets many other files through to ``detect`` (a pickle's first bytes can decode as
fields), and the walk's module (with the Keras config walker and its tables) costs ~10 ms to import.
"""

from __future__ import annotations

from ..context import ScanContext
from ..protobuf import (
    LEN,
    VARINT,
    ProtobufError,
    ProtoView,
    looks_like_message,
    looks_like_truncated_message,
    valid_first_tag,
)
from ..source import ByteSource
from .interface import FormatReader

#: Riegeli/records files start with these 64 bytes: a chunked SavedModel (``saved_model.cpb``).
RIEGELI_SIGNATURE = bytes.fromhex(
    "83af70d10d884a3f0000000000000000400000000000000091bac23c9287e1a9"
    "0000000000000000e19f13c0e9b1c37273000000000000000000000000000000")


def is_savedmodel(source: ByteSource, head: bytes) -> bool:
    if not valid_first_tag(head):  # any field may come first (see valid_first_tag)
        return False
    view = ProtoView(source)
    if not looks_like_message(view, {1: VARINT, 2: LEN}, {2}):
        # A cut-off file still claims the format, so that it is reported unreadable, not unknown.
        return head[0] == 0x08 and looks_like_truncated_message(view, {1: VARINT, 2: LEN}, {1}, {2})
    try:
        for f in view.fields():
            if f.number == 2:
                meta = view.sub(f)
                return looks_like_message(meta, {n: LEN for n in range(1, 8)}, set()) and any(
                    g.number in (1, 2) and g.wire_type == LEN for g in meta.fields())
    except ProtobufError:
        return False
    return False


def is_keras_metadata(source: ByteSource, head: bytes) -> bool:
    if not valid_first_tag(head):  # any field may come first (see valid_first_tag)
        return False
    view = ProtoView(source)
    if not looks_like_message(view, {1: LEN}, {1}):
        return False
    try:
        # Any node marks the file (tf-keras reads every node, whichever comes first).
        for i, f in enumerate(view.fields()):
            if f.number == 1 and f.wire_type == LEN:
                node = view.sub(f)
                for g in node.fields():
                    if g.number == 4 and g.wire_type == LEN and node.text_of(g, 64).startswith("_tf_keras"):
                        return True
            if i >= 4096:
                return False
    except ProtobufError:
        return False
    return False


class SavedModelReader(FormatReader):
    """``saved_model.pb``: every op of every graph and library function."""

    name = "savedmodel"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return is_savedmodel(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        from .savedmodel import scan_saved_model  # here: see the module's docstring

        scan_saved_model(source, ctx)


class ChunkedSavedModelReader(FormatReader):
    """Riegeli records files: how TensorFlow stores a chunked SavedModel (``saved_model.cpb``)."""

    name = "riegeli"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return head[:64] == RIEGELI_SIGNATURE

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        ctx.report("unscanned-unsupported",
                   "Riegeli records file (the format of a chunked SavedModel, saved_model.cpb): its graph "
                   "cannot be inspected by this scanner", offset=0)


class KerasMetadataReader(FormatReader):
    """``keras_metadata.pb`` (tf-keras SavedMetadata: nodes=1 -> identifier=4, metadata=5 JSON)."""

    name = "keras-metadata"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return is_keras_metadata(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        from .savedmodel import scan_keras_metadata  # here: see the module's docstring

        scan_keras_metadata(source, ctx)


__all__ = ["RIEGELI_SIGNATURE", "ChunkedSavedModelReader", "KerasMetadataReader", "SavedModelReader",
           "is_keras_metadata", "is_savedmodel"]
