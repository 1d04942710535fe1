"""ZIP archives: the container (:mod:`.container`), torch's rules for it (:mod:`.torch_archive`) and
the reader that scans every entry (:mod:`.reader`).

``from safemodel_ci.formats.zip import ...`` keeps working for every name the single module had.
The reader is imported on first use only (PEP 562 ``__getattr__``): the torch helpers
(:mod:`..torchscript`) import the container from here, and the reader imports them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .container import (CENTRAL_SIG, CRC_CHECK_STORED_MAX, DESCRIPTOR_SIG, EOCD_SIG, FLAG_DESCRIPTOR,
                        FLAG_ENCRYPTED, FLAG_NAMES, FLAG_STRONG_ENCRYPTION, FLAG_UTF8, LOCAL_SIG,
                        METHOD_BZIP2, METHOD_DEFLATE64, METHOD_DEFLATED, METHOD_LZMA, METHOD_NAMES,
                        METHOD_STORED, ZIP64_EOCD_SIG, ZIP64_LOCATOR_SIG, CentralEntry, LocalHeader,
                        ZipDirectory, damaged_end, find_directory, read_central_directory,
                        read_local_header, read_member)
from .torch_archive import STORAGE_SNIFF, TORCH_ROOT_MARKERS, torch_key, torch_pickle_kind

_LAZY = {"ZipReader": "reader"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["CENTRAL_SIG", "CRC_CHECK_STORED_MAX", "DESCRIPTOR_SIG", "EOCD_SIG", "FLAG_DESCRIPTOR",
           "FLAG_ENCRYPTED", "FLAG_NAMES", "FLAG_STRONG_ENCRYPTION", "FLAG_UTF8", "LOCAL_SIG", "METHOD_BZIP2",
           "METHOD_DEFLATE64", "METHOD_DEFLATED", "METHOD_LZMA", "METHOD_NAMES", "METHOD_STORED",
           "STORAGE_SNIFF", "TORCH_ROOT_MARKERS", "ZIP64_EOCD_SIG", "ZIP64_LOCATOR_SIG", "CentralEntry",
           "LocalHeader", "ZipDirectory", "ZipReader", "damaged_end", "find_directory",
           "read_central_directory", "read_local_header", "read_member", "torch_key", "torch_pickle_kind"]
