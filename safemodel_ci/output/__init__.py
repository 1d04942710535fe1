"""Output formats by name."""

from __future__ import annotations

import importlib
from typing import Dict, Tuple

from .interface import ReportWriter

_WRITERS: Dict[str, Tuple[str, str]] = {
    "text": ("text", "TextWriter"),
    "json": ("json", "JsonWriter"),
}

FORMATS = tuple(_WRITERS)


def writer(name: str) -> ReportWriter:
    module, cls = _WRITERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
