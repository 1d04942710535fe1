"""The interface every format reader implements.

The contract (docs/development.md, "Adding a format reader"; tests/test_architecture.py checks it):
a reader reads its bytes through the source and does everything else through the
:class:`~safemodel_ci.context.ScanContext` (report, scan nested bytes, scan them as a claimed
format, read a pickle at an offset, limits); it imports no other reader, never the scanner, and is
registered by a row of the detector table in :mod:`safemodel_ci.formats`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..context import ScanContext
from ..source import ByteSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import ClassVar, FrozenSet


class FormatReader(ABC):
    """Reads one format. ``detect`` decides from content only; ``scan`` reports into the context.

    Every reader whose ``detect`` is true runs on a file (a file can be a zip *and* a pickle).
    A reader that already covers what another would do (legacy torch covers its pickles) names
    it in ``supersedes`` so the same bytes are not reported twice.
    """

    #: Short stable name, shown in results (``pickle``, ``zip``, ``safetensors`` ...).
    name: ClassVar[str]
    #: Names of readers this one makes redundant when both detect the same source.
    supersedes: ClassVar[FrozenSet[str]] = frozenset()
    #: Readers that may legitimately match together with this one without being a polyglot.
    compatible: ClassVar[FrozenSet[str]] = frozenset()
    #: True when ``detect`` also looks at the source's name (``chat_template.jinja``): its answer is
    #: then never reused for another file with the same bytes.
    by_name: ClassVar[bool] = False

    @abstractmethod
    def detect(self, source: ByteSource, head: bytes) -> bool:
        """True when the content is (or claims to be) this format.

        ``head`` is the first 4 KiB; a detector that needs more reads it from the source.
        """

    @abstractmethod
    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        """Inspect the content; report findings with ``ctx.report``; descend with ``ctx.scan`` or
        ``ctx.scan_as``; read pickles inside the format with ``ctx.scan_pickle_at``."""
