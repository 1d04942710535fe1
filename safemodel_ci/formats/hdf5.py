"""HDF5 files, and the Keras model configs legacy ``.h5`` models keep in their root attributes.

An HDF5 file starts with its superblock signature at offset 0, or, after a user block, at 512,
1024, 2048 ... (powers of two: the HDF5 library searches there, so a scanner must too). h5py reads
the attributes (HDF5 is too involved to parse by hand: superblock versions, dense attribute
storage, global-heap strings); it is imported only when an HDF5 file is met, and it reads through
:class:`SourceIO`, so a Hub file is read with range requests like every other source.

Keras' legacy loader (``load_model`` on ``.h5``) reads the JSON in the ``model_config`` and
``training_config`` root attributes and deserializes them, running Lambda bytecode: both are
walked with the shared Keras config walk. Weights datasets are plain numbers, never unpickled.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..context import ScanContext
from ..source import ByteSource, SourceIO
from .interface import FormatReader
from .keras_config import walk_keras_config

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Root attributes holding JSON that Keras deserializes.
KERAS_ATTRIBUTES = ("model_config", "training_config")


def superblock_offset(source: ByteSource, head: bytes) -> Optional[int]:
    """Where the HDF5 signature is (0, 512, 1024, 2048, ...), or None. At most log2(size) reads."""
    offset = 0
    while offset + len(SIGNATURE) <= source.size:
        if offset + len(SIGNATURE) <= len(head):
            found = head[offset:offset + len(SIGNATURE)] == SIGNATURE
        else:
            found = source.read_at(offset, len(SIGNATURE)) == SIGNATURE
        if found:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _attribute_text(value: Any) -> Optional[str]:
    """An attribute value as text: h5py gives str, bytes, or a 0-d/1-element numpy array of them."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "size", 0) == 1:
        return _attribute_text(value.reshape(-1)[0] if shape else value[()])
    return None


class Hdf5Reader(FormatReader):
    """HDF5 containers; Keras model configs inside them."""

    name = "hdf5"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return superblock_offset(source, head) is not None

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        # A user block before the superblock is legal HDF5; readers of offset 0 see it (and the
        # driver reports a polyglot when it is another format).
        offset = superblock_offset(source, source.head(4096))
        try:
            import h5py  # noqa: F401 - optional dependency, only needed for HDF5 files
        except ImportError:
            ctx.report("unscanned-unsupported", "HDF5 file, but h5py is not installed: its Keras config "
                       "attributes could not be read (pip install 'safemodel-ci[formats]')")
            return
        try:
            handle = h5py.File(SourceIO(source), "r")
        except (OSError, ValueError) as exc:
            ctx.report("unscanned-parse-error", f"HDF5 file could not be opened: {exc}", offset=offset)
            return
        with handle:
            try:
                attrs = handle.attrs
                found = [k for k in KERAS_ATTRIBUTES if k in attrs]
                is_keras = bool(found) or "keras_version" in attrs or "model_weights" in handle
            except (KeyError, OSError, ValueError, RuntimeError) as exc:
                # h5py raises KeyError (not OSError) when a damaged root group cannot be opened.
                ctx.report("unscanned-parse-error", f"HDF5 root group could not be read: {exc}",
                           offset=offset)
                return
            if is_keras:
                ctx.add_format("keras-h5")
            for key in found:
                self._scan_attribute(attrs, key, ctx)

    def _scan_attribute(self, attrs: Any, key: str, ctx: ScanContext) -> None:
        try:
            size = attrs.get_id(key).get_storage_size()
        except (KeyError, OSError, AttributeError):
            size = 0
        if size > ctx.limits.max_in_memory_bytes:
            ctx.report("unscanned-limit", f"attribute {key!r} of {size} bytes exceeds the in-memory limit",
                       details={"attribute": key, "limit": "max_in_memory_bytes"})
            return
        try:
            text = _attribute_text(attrs[key])
        except (OSError, TypeError, ValueError) as exc:
            ctx.report("unscanned-parse-error", f"attribute {key!r} could not be read: {exc}",
                       details={"attribute": key})
            return
        if text is None:
            ctx.report("unscanned-parse-error", f"attribute {key!r} is not a string; Keras would fail on it",
                       details={"attribute": key})
            return
        try:
            doc = json.loads(text)
        except ValueError as exc:
            ctx.report("unscanned-parse-error", f"attribute {key!r} is not JSON: {exc}",
                       details={"attribute": key})
            return
        walk_keras_config(doc, ctx, root=key)
