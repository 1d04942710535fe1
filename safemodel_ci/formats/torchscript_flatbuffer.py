"""TorchScript modules saved as flatbuffers (``torch.jit.save_jit_module_to_flatbuffer``,
``_save_for_lite_interpreter(..., _use_flatbuffer=True)``).

``torch.jit.load`` and ``torch.jit._load_for_lite_interpreter`` check bytes 4..8 for ``PTMF``
*before* the zip magic (``torch/csrc/jit/mobile/file_format.h``) and then parse the flatbuffer
(``mobile_bytecode.fbs``): ``jit_sources`` hold the TorchScript code ``torch.jit.load`` compiles
(``jitModuleFromSourceAndConstants``), each ``Function`` ivalue holds the operator table the lite
interpreter runs, ``object_types`` name the classes the module's objects are (custom C++ classes
among them). All three are judged as the same things are in a zip archive
(:mod:`safemodel_ci.formats.torchscript`). The flatbuffer is walked by hand, every offset bounds
checked, nothing is built; a structure that does not hold is unscanned, never clean.
"""

from __future__ import annotations

import struct

from ..context import ScanContext
from ..source import ByteSource
from .interface import FormatReader
from .torchscript import CodeFile, Use, _report, classify_class, classify_op, judge_code, parse_code

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List, Optional, Tuple

MAGIC = b"PTMF"
#: Field slots (vtable offsets) from torch's generated ``mobile_bytecode_generated.h``.
MODULE_IVALUES, MODULE_OBJECT_TYPES, MODULE_JIT_SOURCES = 12, 18, 20
IVALUE_TYPE, IVALUE_VAL = 4, 6
UNION_FUNCTION = 16
FUNCTION_QN, FUNCTION_OPERATORS = 4, 8
OPERATOR_NAME, OPERATOR_OVERLOAD = 4, 6
OBJECT_TYPE_NAME = 4
EXTRA_FILE_NAME, EXTRA_FILE_CONTENT = 4, 6
_CLASS_PREFIX = "__torch__.torch.classes."


class FlatbufferError(ValueError):
    """The flatbuffer's structure does not hold (an offset outside the file, a bad vtable ...)."""


class _Buffer:
    """Bounds-checked flatbuffer primitives over a byte source."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.size = source.size

    def _read(self, pos: int, n: int) -> bytes:
        if pos < 0 or pos + n > self.size:
            raise FlatbufferError(f"offset {pos} (+{n}) is outside the file ({self.size} bytes)")
        return self.source.read_at(pos, n)

    def u8(self, pos: int) -> int:
        return self._read(pos, 1)[0]

    def u16(self, pos: int) -> int:
        return int(struct.unpack("<H", self._read(pos, 2))[0])

    def u32(self, pos: int) -> int:
        return int(struct.unpack("<I", self._read(pos, 4))[0])

    def i32(self, pos: int) -> int:
        return int(struct.unpack("<i", self._read(pos, 4))[0])

    def field(self, table: int, slot: int) -> Optional[int]:
        """Position of field ``slot`` of the table at ``table``, None when absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        if vsize < 4 or vsize % 2:
            raise FlatbufferError(f"vtable at {vtable} has size {vsize}")
        if slot >= vsize:
            return None
        rel = self.u16(vtable + slot)
        return table + rel if rel else None

    def ref(self, table: int, slot: int) -> Optional[int]:
        """Target of an offset field (table, vector, string), None when absent."""
        pos = self.field(table, slot)
        return None if pos is None else pos + self.u32(pos)

    def string(self, pos: int) -> bytes:
        n = self.u32(pos)
        return self._read(pos + 4, n)

    def vector_refs(self, pos: int) -> List[int]:
        """Targets of a vector of offsets (tables or strings)."""
        n = self.u32(pos)
        if pos + 4 + 4 * n > self.size:
            raise FlatbufferError(f"vector at {pos} claims {n} elements, past the end of the file")
        return [pos + 4 + 4 * i + self.u32(pos + 4 + 4 * i) for i in range(n)]


def _text(buf: _Buffer, table: int, slot: int) -> Optional[str]:
    pos = buf.ref(table, slot)
    return None if pos is None else buf.string(pos).decode("utf-8", "replace")


class FlatbufferModuleReader(FormatReader):
    """A flatbuffer TorchScript module: its code, operators and classes judged allowlist first."""

    name = "torchscript-flatbuffer"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        # torch tests these four bytes first, whatever bytes 0..4 are (they are the root offset).
        return head[4:8] == MAGIC

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        ctx.add_format("torchscript")
        buf = _Buffer(source)
        files: List[CodeFile] = []
        marked: List[str] = []
        try:
            module = buf.u32(0)
            sources, ops, classes = self._walk(buf, module, ctx)
        except FlatbufferError as exc:
            ctx.report("unscanned-parse-error",
                       f"flatbuffer TorchScript module (PTMF) whose structure does not hold ({exc}): "
                       "torch.jit.load may still read parts of it; its code and operators could not be "
                       "judged")
            return
        for name, code in sources:
            member = f"jit_sources/{name}.py"
            marked.append(member)
            files.append(parse_code(code, member))
        judge_code(files)
        table = CodeFile("operators")
        for qual, pos in ops:
            ns, _, op = qual.partition("::")
            table.ops[qual] = table.ops.get(qual, 0) + 1
            v = classify_op(ns, op) if op else classify_op(qual, "")
            if v.severity is not None:
                table.problems.append(Use(qual, v, pos))
        for qual, pos in classes:
            v = classify_class(qual)
            table.ops[f"torch.classes.{qual}"] = 1
            if v.severity is not None:
                table.problems.append(Use(f"torch.classes.{qual}", v, pos))
        if ops or classes:
            files.append(table)
            marked.append("operators")
        if not marked:
            marked.append("PTMF header")
        _report(ctx, "flatbuffer", files, [], marked)

    @staticmethod
    def _walk(buf: _Buffer, module: int, ctx: ScanContext
              ) -> Tuple[List[Tuple[str, bytes]], List[Tuple[str, int]], List[Tuple[str, int]]]:
        sources: List[Tuple[str, bytes]] = []
        pos = buf.ref(module, MODULE_JIT_SOURCES)
        for extra in buf.vector_refs(pos) if pos is not None else []:
            name = _text(buf, extra, EXTRA_FILE_NAME) or "<unnamed>"
            content = buf.ref(extra, EXTRA_FILE_CONTENT)
            sources.append((name, buf.string(content) if content is not None else b""))
        ops: List[Tuple[str, int]] = []
        pos = buf.ref(module, MODULE_IVALUES)
        for ivalue in buf.vector_refs(pos) if pos is not None else []:
            ctx.check_deadline()
            kind = buf.field(ivalue, IVALUE_TYPE)
            if kind is None or buf.u8(kind) != UNION_FUNCTION:
                continue
            function = buf.ref(ivalue, IVALUE_VAL)
            if function is None:
                continue
            table = buf.ref(function, FUNCTION_OPERATORS)
            for op in buf.vector_refs(table) if table is not None else []:
                ops.append((_text(buf, op, OPERATOR_NAME) or "", op))
        classes: List[Tuple[str, int]] = []
        pos = buf.ref(module, MODULE_OBJECT_TYPES)
        for obj in buf.vector_refs(pos) if pos is not None else []:
            name = _text(buf, obj, OBJECT_TYPE_NAME) or ""
            if name.startswith(_CLASS_PREFIX):
                classes.append((".".join(name[len(_CLASS_PREFIX):].split(".")[:2]), obj))
        return sources, ops, classes


__all__ = ["FlatbufferModuleReader", "MAGIC"]
