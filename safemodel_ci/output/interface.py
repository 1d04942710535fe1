"""How results are written: one module per output format, each a :class:`ReportWriter`."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from ..findings import ScanReport

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import ClassVar, Optional

#: Compiled on first use by non-ASCII text (compiling it cost ~0.3 ms of every start-up).
_SURROGATE = "[\ud800-\udfff]"


def escape_surrogates(text: str, in_json: bool = False) -> str:
    """A file name that is not UTF-8 (Python keeps its bytes as lone surrogates) shown as ``\\xNN``.

    Such text cannot be written as UTF-8 (the SARIF file, the job summary, the log would fail); the
    escape keeps the name readable and the output valid. ``in_json``: ``text`` is serialized JSON,
    so the backslash is doubled to stay a backslash inside its string.
    """
    if text.isascii():
        return text
    slash = "\\\\" if in_json else "\\"

    def one(m: "re.Match[str]") -> str:
        code = ord(m.group())
        return f"{slash}x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"{slash}u{code:04x}"

    surrogate = re.compile(_SURROGATE)  # re caches it
    return surrogate.sub(one, text) if surrogate.search(text) else text


class ReportWriter(ABC):
    """Turns a finished :class:`ScanReport` into text for one audience."""

    name: ClassVar[str]

    def __init__(self, repo_root: Optional[str] = None) -> None:
        #: Root that file locations are made relative to (SARIF, annotations); None: see repo_paths.
        self.repo_root = repo_root

    @abstractmethod
    def render(self, report: ScanReport) -> str:
        """The whole output as one string (written to stdout or ``--output``)."""
