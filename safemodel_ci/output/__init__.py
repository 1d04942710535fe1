"""Output formats by name."""

from __future__ import annotations

import importlib

from .interface import ReportWriter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, Optional, Tuple

_WRITERS: Dict[str, Tuple[str, str]] = {
    "text": ("text", "TextWriter"),
    "json": ("json", "JsonWriter"),
    "sarif": ("sarif", "SarifWriter"),
    "github": ("github", "GithubWriter"),
}

FORMATS = tuple(_WRITERS)


def writer(name: str, repo_root: Optional[str] = None) -> ReportWriter:
    """The writer for a format name; ``repo_root`` anchors file locations (SARIF, annotations)."""
    module, cls = _WRITERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(repo_root=repo_root)
