"""One module per format; this registry lists them in the order they run."""

from __future__ import annotations

import importlib
import threading
from typing import List, Tuple

from .interface import FormatReader

#: (module, class) of every reader. Imported on first use so that a scan of a plain pickle does not
#: import the modules (and their optional dependencies) of other formats until they are needed.
_REGISTRY: Tuple[Tuple[str, str], ...] = (
    ("pickle", "PickleReader"),
    ("zip.reader", "ZipReader"),
    ("numpy", "NpyReader"),
    ("joblib", "JoblibCompressedReader"),
    ("torch_legacy", "TorchLegacyReader"),
    ("tar", "TarReader"),
    ("sevenzip", "SevenZipReader"),
    ("lfs", "LfsPointerReader"),
    ("safetensors", "SafetensorsReader"),
    ("safetensors_index", "SafetensorsIndexReader"),
    ("hdf5", "Hdf5Reader"),
    ("keras_config", "JsonConfigReader"),
    ("savedmodel", "SavedModelReader"),
    ("savedmodel", "ChunkedSavedModelReader"),
    ("savedmodel", "KerasMetadataReader"),
    ("savedmodel_text", "SavedModelTextReader"),
    ("gguf", "GgufReader"),
    ("chat_template", "JinjaTemplateReader"),
    ("onnx", "OnnxReader"),
    ("torchscript_flatbuffer", "FlatbufferModuleReader"),
)

_readers: List[FormatReader] = []
#: Threads scanning at once (``hub --jobs``) must build the list once: two threads that both found it
#: empty each appended every reader, and every file then read as "safetensors and as safetensors" (a
#: false polyglot finding).
_readers_lock = threading.Lock()


def readers() -> List[FormatReader]:
    """All format readers, instantiated once per process (thread-safe)."""
    if not _readers:
        with _readers_lock:
            if not _readers:
                built = [getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
                         for module, cls in _REGISTRY]
                _readers.extend(built)  # one step: another thread sees no reader or every reader
    return _readers
