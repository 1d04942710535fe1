"""One module per format; this registry lists them in the order they run."""

from __future__ import annotations

import importlib
from typing import List, Tuple

from .interface import FormatReader

#: (module, class) of every reader. Imported on first use so that a scan of a plain pickle does not
#: import the modules (and their optional dependencies) of other formats until they are needed.
_REGISTRY: Tuple[Tuple[str, str], ...] = (
    ("pickle", "PickleReader"),
    ("zip", "ZipReader"),
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


def readers() -> List[FormatReader]:
    """All format readers, instantiated once per process."""
    if not _readers:
        for module, cls in _REGISTRY:
            mod = importlib.import_module(f"{__name__}.{module}")
            _readers.append(getattr(mod, cls)())
    return _readers
