"""PLACEHOLDER until the pickle VM lands (issue 2): detects nothing."""
from __future__ import annotations
from .interface import FormatReader
class PickleReader(FormatReader):
    name = "pickle"
    def detect(self, source, head):  # type: ignore[no-untyped-def]
        return False
    def scan(self, source, ctx):  # type: ignore[no-untyped-def]
        raise NotImplementedError
