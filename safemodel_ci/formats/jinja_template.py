"""The ``.jinja`` file reader (detection by name); the template check is :mod:`.chat_template`'s."""

from __future__ import annotations

from ..context import ScanContext
from ..source import ByteSource
from .chat_template import scan_jinja_file
from .interface import FormatReader


class JinjaTemplateReader(FormatReader):
    """``chat_template.jinja`` and other ``.jinja`` files a chat-template loader reads.

    Detection is by name (``*.jinja``): a file's content cannot tell a chat template from any other
    Jinja file, and only the place a loader reads makes it one. The scan then judges it when it is
    where a loader renders chat templates; other Jinja files get no finding.
    """

    name = "jinja-template"
    by_name = True

    def detect(self, source: ByteSource, head: bytes) -> bool:
        # by name alone: a NUL byte (valid UTF-8, kept by Jinja) must not hide a template
        name = source.name.replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        return name.lower().endswith(".jinja")

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        scan_jinja_file(source, ctx)


__all__ = ["JinjaTemplateReader"]
