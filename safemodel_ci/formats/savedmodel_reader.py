"""The TensorFlow readers: ``saved_model.pb``, its chunked (Riegeli) form, ``keras_metadata.pb``.

Thin entry points: detection and the graph walk live in :mod:`.savedmodel` (shared with the
text-format reader, :mod:`.savedmodel_text`).
"""

from __future__ import annotations

from ..context import ScanContext
from ..source import ByteSource
from .interface import FormatReader
from .savedmodel import (RIEGELI_SIGNATURE, is_keras_metadata, is_savedmodel, scan_keras_metadata,
                         scan_saved_model)


class SavedModelReader(FormatReader):
    """``saved_model.pb``: every op of every graph and library function."""

    name = "savedmodel"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return is_savedmodel(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
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
        scan_keras_metadata(source, ctx)


__all__ = ["ChunkedSavedModelReader", "KerasMetadataReader", "SavedModelReader"]
