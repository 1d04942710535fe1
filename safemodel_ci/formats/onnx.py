"""ONNX models: external-data paths and custom operator domains, decoded without the onnx package.

Field numbers from onnx 1.23 ``onnx.proto``:

- ModelProto: ir_version=1, producer_name=2, opset_import=8 (OperatorSetIdProto domain=1), graph=7,
  training_info=20 (TrainingInfoProto initialization=1, algorithm=2: graphs), functions=25
- GraphProto: node=1, initializer=5 (TensorProto), sparse_initializer=15 (SparseTensorProto
  values=1, indices=2)
- NodeProto: name=3, op_type=4, attribute=5, domain=7
- AttributeProto: t=5, g=6, tensors=10, graphs=11, sparse_tensor=22, sparse_tensors=23
- FunctionProto: name=1, node=7, domain=10
- TensorProto: name=8, external_data=13 (StringStringEntryProto key=1 value=2), data_location=14

Initializer payloads (``raw_data``) are skipped by length, never read: a 2 GB model costs the reads
of its small messages.

External data: ``onnx.load`` joins ``location`` to the model's folder and reads ``offset``/``length``
bytes from it. An absolute path, ``..`` (also nested, ``a/../../x``: CVE-2024-27318), a NUL byte, a
drive letter, or a link leading out of the folder reads an arbitrary file (CVE-2022-25882).

Domains: the standard ONNX ones and Microsoft's ``com.microsoft*`` (ONNX Runtime's built-in contrib
ops, shipped inside onnxruntime itself) need nothing beyond the runtime; any other domain needs a
custom-op library loaded by the user (native code, or Python ops via onnxruntime-extensions'
``ai.onnx.contrib``), reported as MEDIUM.
"""

from __future__ import annotations

import os
import posixpath
import re

from ..context import ScanContext
from ..protobuf import LEN, TAG_START, VARINT, ProtobufError, ProtoView, head_may_be_message
from ..source import ByteSource, BytesSource
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, List, Optional, Tuple

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"})
#: Keys onnx's ExternalDataInfo knows.
EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
_MODEL_FIELDS = {1: VARINT, 2: LEN, 3: LEN, 4: LEN, 5: VARINT, 6: LEN, 7: LEN, 8: LEN, 14: LEN, 20: LEN,
                 25: LEN, 26: LEN}
_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_DEPTH = 64


def domain_is_standard(domain: str) -> bool:
    return domain in STANDARD_DOMAINS or domain == "com.microsoft" or domain.startswith("com.microsoft.")


def location_problem(location: str, model_dir: Optional[str]) -> Optional[str]:
    """Why an external-data location may read outside the model folder, or None."""
    if "\x00" in location:
        return "contains a NUL byte"
    if location.startswith(("/", "\\")) or _DRIVE.match(location):
        return "is an absolute path"
    parts = re.split(r"[\\/]", location)
    if ".." in parts:
        return "contains '..'"
    if posixpath.normpath(location.replace("\\", "/")).startswith("../"):
        return "escapes the model folder"
    if model_dir is not None:
        base = os.path.realpath(model_dir)
        target = os.path.realpath(os.path.join(base, location))
        if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
            return f"resolves through a link to {target}, outside the model folder"
    return None


class _Walk:
    def __init__(self, ctx: ScanContext, model_dir: Optional[str]) -> None:
        self.ctx = ctx
        self.model_dir = model_dir
        self.domains: Dict[str, Tuple[str, str, int]] = {}
        self.count = 0

    def _tick(self) -> None:
        self.count += 1
        if self.count % 4096 == 0:
            self.ctx.check_deadline()

    def model(self, m: ProtoView) -> None:
        for f in m.fields():
            if f.number == 7 and f.wire_type == LEN:
                self.graph(m.sub(f), "graph", 0)
            elif f.number == 8 and f.wire_type == LEN:
                opset = m.sub(f)
                for g in opset.fields():
                    if g.number == 1 and g.wire_type == LEN:
                        self._domain(opset.text_of(g, 4096), "opset_import", "", opset.start)
            elif f.number == 20 and f.wire_type == LEN:
                info = m.sub(f)
                for g in info.fields():
                    if g.number in (1, 2) and g.wire_type == LEN:
                        self.graph(info.sub(g), "training_info", 0)
            elif f.number == 25 and f.wire_type == LEN:
                self.function(m.sub(f))

    def function(self, fn: ProtoView) -> None:
        name = ""
        nodes = []
        for f in fn.fields():
            if f.number == 1 and f.wire_type == LEN:
                name = fn.text_of(f, 4096)
            elif f.number == 7 and f.wire_type == LEN:
                nodes.append(fn.sub(f))
        for node in nodes:
            self.node(node, f"function {name!r}", 1)

    def graph(self, g: ProtoView, where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ProtobufError("subgraphs nested too deeply", g.start)
        for f in g.fields():
            if f.number == 1 and f.wire_type == LEN:
                self.node(g.sub(f), where, depth)
            elif f.number == 5 and f.wire_type == LEN:
                self.tensor(g.sub(f), where)
            elif f.number == 15 and f.wire_type == LEN:
                self.sparse(g.sub(f), where)

    def sparse(self, s: ProtoView, where: str) -> None:
        for f in s.fields():
            if f.number in (1, 2) and f.wire_type == LEN:
                self.tensor(s.sub(f), where)

    def node(self, n: ProtoView, where: str, depth: int) -> None:
        self._tick()
        name, op, domain = "", "", ""
        attrs = []
        for f in n.fields():
            if f.number == 3 and f.wire_type == LEN:
                name = n.text_of(f, 4096)
            elif f.number == 4 and f.wire_type == LEN:
                op = n.text_of(f, 4096)
            elif f.number == 7 and f.wire_type == LEN:
                domain = n.text_of(f, 4096)
            elif f.number == 5 and f.wire_type == LEN:
                attrs.append(n.sub(f))
        self._domain(domain, f"node {name!r} of {where}", op, n.start)
        for a in attrs:
            for f in a.fields():
                if f.number in (6, 11) and f.wire_type == LEN:
                    self.graph(a.sub(f), f"subgraph of node {name!r}", depth + 1)
                elif f.number in (5, 10) and f.wire_type == LEN:
                    self.tensor(a.sub(f), f"attribute of node {name!r}")
                elif f.number in (22, 23) and f.wire_type == LEN:
                    self.sparse(a.sub(f), f"attribute of node {name!r}")

    def _domain(self, domain: str, where: str, op: str, offset: int) -> None:
        if not domain_is_standard(domain) and domain not in self.domains:
            self.domains[domain] = (where, op, offset)

    def tensor(self, t: ProtoView, where: str) -> None:
        self._tick()
        name = ""
        entries: List[Tuple[str, str, int]] = []
        for f in t.fields():
            if f.number == 8 and f.wire_type == LEN:
                name = t.text_of(f, 4096)
            elif f.number == 13 and f.wire_type == LEN:
                entry = t.sub(f)
                key, value = "", ""
                for g in entry.fields():
                    if g.number == 1 and g.wire_type == LEN:
                        key = entry.text_of(g, 4096)
                    elif g.number == 2 and g.wire_type == LEN:
                        value = entry.bytes_of(g, 4096).decode("utf-8", "replace")
                entries.append((key, value, entry.start))
        for key, value, offset in entries:
            if key == "location":
                problem = location_problem(value, self.model_dir)
                if problem:
                    self.ctx.report("onnx-external-data-path",
                                    f"tensor {name!r} ({where}) reads external data from {value!r}, which "
                                    f"{problem}", offset=offset,
                                    details={"tensor": name, "location": value, "problem": problem})
            elif key not in EXTERNAL_KEYS:
                self.ctx.report("onnx-external-data-key",
                                f"tensor {name!r} ({where}) has an external_data key {key!r}", offset=offset,
                                details={"tensor": name, "key": key})

    def report_domains(self) -> None:
        for domain, (where, op, offset) in sorted(self.domains.items()):
            extra = " (Python ops through onnxruntime-extensions)" if domain == "ai.onnx.contrib" else ""
            self.ctx.report("onnx-custom-domain",
                            f"custom operator domain {domain!r}{extra}, first used by "
                            + (f"op {op} in " if op else "") + where,
                            offset=offset, details={"domain": domain, "op": op})


#: ModelProto fields that hold what the reader checks (graph, training_info, functions): a message
#: with none of them has no tensor and no node to inspect.
_CONTENT_FIELDS = frozenset({7, 20, 25})
def _is_onnx(source: ByteSource, head: bytes) -> bool:
    """A ModelProto as ``onnx.load`` parses one: the top level decodes as protobuf in whatever order
    its fields come (the first byte is no signature: protobuf allows any order, unknown fields and
    groups), with a graph, training info or function in it. A model cut short inside one of those
    is claimed too (and reported as not decoding)."""
    if not head or head[0] not in TAG_START:
        return False
    if not head_may_be_message(head):
        return False
    # A file the head holds whole is decoded from the head (detection runs on every file and
    # member: no second read of it).
    view = ProtoView(BytesSource(head)) if len(head) >= source.size else ProtoView(source)
    seen = set()
    try:
        for f in view.fields():
            expected = _MODEL_FIELDS.get(f.number)
            if expected is not None and expected == f.wire_type:
                seen.add(f.number)
    except ProtobufError as exc:
        # A cut-off model: valid fields up to a content field that runs past the end of the data.
        return exc.field in _CONTENT_FIELDS and bool(seen & ({1, 2, 8} | _CONTENT_FIELDS))
    return bool(seen & _CONTENT_FIELDS)


class OnnxReader(FormatReader):
    """ONNX ModelProto: external data locations and operator domains."""

    name = "onnx"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return _is_onnx(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        real = ctx.real_path
        walk = _Walk(ctx, os.path.dirname(os.path.abspath(real)) if real else None)
        try:
            walk.model(ProtoView(source))
        except ProtobufError as exc:
            walk.report_domains()
            ctx.report("protobuf-malformed", f"ONNX model does not decode: {exc}", offset=exc.offset)
            return
        walk.report_domains()
