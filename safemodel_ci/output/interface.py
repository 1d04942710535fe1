"""How results are written: one module per output format, each a :class:`ReportWriter`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Optional

from ..findings import ScanReport


class ReportWriter(ABC):
    """Turns a finished :class:`ScanReport` into text for one audience."""

    name: ClassVar[str]

    def __init__(self, repo_root: Optional[str] = None) -> None:
        #: Root that file locations are made relative to (SARIF, annotations); None: see repo_paths.
        self.repo_root = repo_root

    @abstractmethod
    def render(self, report: ScanReport) -> str:
        """The whole output as one string (written to stdout or ``--output``)."""
