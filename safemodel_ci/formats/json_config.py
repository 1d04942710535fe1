"""The JSON-object reader: Keras configs and tokenizer configs (the checks live in
:mod:`.keras_config` and :mod:`.chat_template`)."""

from __future__ import annotations

from ..context import ScanContext
from ..source import ByteSource
from .interface import FormatReader
from .keras_config import json_start, scan_json_config


class JsonConfigReader(FormatReader):
    """JSON objects: Keras configs (``config.json`` of a ``.keras``) and ``tokenizer_config.json``.

    Detection only asks for a JSON object; the scan then reads the document when it mentions a key
    that matters (or contains ``\\u`` escapes that could spell one) and runs the Keras walk and/or
    the chat-template check.
    """

    name = "json-config"
    compatible = frozenset({"safetensors-index"})

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return json_start(head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        scan_json_config(source, ctx)


__all__ = ["JsonConfigReader"]
