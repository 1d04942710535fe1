"""TensorFlow SavedModel (``saved_model.pb``), its chunked form, and ``keras_metadata.pb``.

The protobuf is decoded directly (no TensorFlow). Field numbers, from TensorFlow's public protos
(``core/protobuf/saved_model.proto``, ``meta_graph.proto``, ``core/framework/graph.proto``,
``function.proto``, ``node_def.proto``, ``attr_value.proto``):

- SavedModel: saved_model_schema_version=1, meta_graphs=2 (MetaGraphDef)
- MetaGraphDef: meta_info_def=1, graph_def=2, saver_def=3, collection_def=4, signature_def=5,
  asset_file_def=6, object_graph_def=7
- GraphDef: node=1 (NodeDef), library=2 (FunctionDefLibrary)
- FunctionDefLibrary: function=1 (FunctionDef); FunctionDef: signature=1 (OpDef, name=1), node_def=3
- NodeDef: name=1, op=2, attr=5 (map entry key=1, value=2 AttrValue)
- AttrValue: list=1 (ListValue, func=9), s=2, func=10 (NameAttrList: name=1, attr=2)

Every op of the graph and of every library function is collected, and ``NameAttrList.name`` values
too (attr_value.proto: a func attr may name a primitive op, not only a library function). They are
judged allowlist first against ``safemodel_ci/data/tf_ops.json`` (generated from TensorFlow's op
registry by ``tools/gen_tf_ops.py``): pure compute ops pass, file, Python-callback and network ops
are CRITICAL, anything else is HIGH. Checkpoint ops (SaveV2, RestoreV2, MergeV2Checkpoints ...) pass
only inside the saver's own subgraph (``MetaGraphDef.saver_def``: the functions its save and
restore nodes call, or its name scope in a TF1 graph) and only on a filename that comes from the
saver's filename placeholder; anywhere else, or with a constant absolute, ``..`` or URL prefix,
they are HIGH.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..context import ScanContext
from ..findings import Severity
from ..protobuf import (
    LEN,
    VARINT,
    ProtobufError,
    ProtoView,
)
from ..source import ByteSource
from .keras_config import walk_keras_config

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "tf_ops.json"


@dataclass(frozen=True)
class TFOpTables:
    """The generated allowlist of compute ops, the CRITICAL ops and the checkpoint ops."""

    tensorflow_version: str
    allowed: FrozenSet[str]
    critical: Dict[str, str]
    checkpoint: FrozenSet[str]


@lru_cache(maxsize=1)
def tf_tables() -> TFOpTables:
    """The op tables, read once from the committed JSON."""
    raw = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    return TFOpTables(raw["tensorflow_version"], frozenset(raw["allowed"]), dict(raw["critical"]),
                      frozenset(raw["checkpoint"]))


#: Ops a checkpoint filename may flow through inside the saver (string joins, shard names, selects).
FILENAME_PASS_THROUGH = frozenset({"StringJoin", "ShardedFilename", "ShardedFilespec", "Identity", "Select",
                                   "SelectV2", "Pack"})
#: Checkpoint ops that write files.
CHECKPOINT_WRITERS = frozenset({"SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints"})
#: Collections (CollectionDef.node_list) and signatures whose nodes the loader runs after restoring.
INIT_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "main_op", "init_op", "table_initializer")
INIT_SIGNATURE = "__saved_model_init_op"
#: Which inputs of a checkpoint op name files.
FILENAME_INPUTS = {"MergeV2Checkpoints": (0, 1)}
#: Node inputs and string constants are kept for these ops only (what filename tracing needs).
_KEEP_INPUTS = FILENAME_PASS_THROUGH | {"Const", "Placeholder", "PlaceholderWithDefault",
                                        "StatefulPartitionedCall", "PartitionedCall", "SaveV2", "RestoreV2",
                                        "MergeV2Checkpoints", "Save", "SaveSlices", "Restore", "RestoreSlice"}
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
MAX_REPORTED_OPS = 200


@dataclass(frozen=True)
class OpUse:
    op: str
    node: str
    function: Optional[str]
    offset: int
    output_stream: Optional[str] = None


@dataclass
class NodeInfo:
    """What filename tracing needs of a node: its op, data inputs and string constants."""

    op: str
    inputs: List[str] = field(default_factory=list)
    strings: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class SaverInfo:
    """``MetaGraphDef.saver_def``: the filename placeholder and the save / restore nodes."""

    filename: str
    save: str
    restore: str
    #: Nodes the loader runs after restoring: main/init ops (collections, the init-op signature).
    init_ops: Tuple[str, ...] = ()


def _map_entries(view: ProtoView, number: int) -> Iterator[Tuple[str, ProtoView]]:
    """(key, value view) of a ``map<string, Message>`` field."""
    for f in view.fields():
        if f.number == number and f.wire_type == LEN:
            entry = view.sub(f)
            key, value = "", None
            for g in entry.fields():
                if g.number == 1 and g.wire_type == LEN:
                    key = entry.text_of(g, 4096)
                elif g.number == 2 and g.wire_type == LEN:
                    value = entry.sub(g)
            if value is not None:
                yield key, value


class GraphWalk:
    """Collects op uses from GraphDefs and their function libraries."""

    def __init__(self, ctx: ScanContext) -> None:
        self.ctx = ctx
        self.uses: List[OpUse] = []
        self.func_refs: List[OpUse] = []
        self.library: Set[str] = set()
        self.nodes = 0
        #: Nodes by name, per scope (None: the graph, else a function name); see _KEEP_INPUTS.
        self.scopes: Dict[Optional[str], Dict[str, NodeInfo]] = {None: {}}
        #: Input argument names of each function, in order.
        self.args: Dict[str, List[str]] = {}
        #: Every top-level node's inputs (node names, control inputs included).
        self.graph_inputs: Dict[str, List[str]] = {}

    def graph(self, g: ProtoView) -> None:
        for f in g.fields():
            if f.number == 1 and f.wire_type == LEN:
                self.node(g.sub(f), None)
            elif f.number == 2 and f.wire_type == LEN:
                self.function_library(g.sub(f))

    def function_library(self, lib: ProtoView) -> None:
        for f in lib.fields():
            if f.number == 1 and f.wire_type == LEN:
                self.function(lib.sub(f))

    def function(self, fn: ProtoView) -> None:
        name = None
        nodes = []
        args: List[str] = []
        for f in fn.fields():
            if f.number == 1 and f.wire_type == LEN:
                sig = fn.sub(f)
                for g in sig.fields():
                    if g.number == 1 and g.wire_type == LEN:
                        name = sig.text_of(g, 4096)
                    elif g.number == 2 and g.wire_type == LEN:  # OpDef.input_arg (ArgDef name=1)
                        arg = sig.sub(g)
                        args.extend(arg.text_of(h, 4096) for h in arg.fields()
                                    if h.number == 1 and h.wire_type == LEN)
            elif f.number == 3 and f.wire_type == LEN:
                nodes.append(fn.sub(f))
        if name:
            self.library.add(name)
            self.args[name] = args
            self.scopes.setdefault(name, {})
        for node in nodes:
            self.node(node, name or "<unnamed function>")
        for key, value in _map_entries(fn, 5):  # the function's own attrs may name functions too
            self.attr(value, f"<attr {key}>", name or "<unnamed function>", 0)

    def node(self, node: ProtoView, function: Optional[str]) -> None:
        self.nodes += 1
        if self.nodes % 4096 == 0:
            self.ctx.check_deadline()
        name, op, stream = "", "", None
        inputs: List[str] = []
        for f in node.fields():
            if f.number == 1 and f.wire_type == LEN:
                name = node.text_of(f, 4096)
            elif f.number == 2 and f.wire_type == LEN:
                op = node.text_of(f, 4096)
            elif f.number == 3 and f.wire_type == LEN and len(inputs) < 4096:
                inputs.append(node.text_of(f, 4096))
        info = NodeInfo(op) if op in _KEEP_INPUTS else None
        for key, value in _map_entries(node, 5):
            if key == "output_stream":
                stream = self._attr_string(value)
            elif key == "value" and op == "Const" and info is not None:
                info.strings = self._string_constants(value)
            self.attr(value, name, function, 0)
        if info is not None:
            info.inputs = [i for i in inputs if not i.startswith("^")]  # control inputs carry no data
            self.scopes.setdefault(function, {})[name] = info
        if function is None:  # what a top-level node runs first, control dependencies included
            self.graph_inputs[name] = [_node_name(i) for i in inputs]
        self.uses.append(OpUse(op, name, function, node.start, stream))

    @staticmethod
    def _string_constants(value: ProtoView) -> List[str]:
        """``AttrValue.tensor`` (8) -> ``TensorProto.string_val`` (8), when the tensor is DT_STRING (7)."""
        out: List[str] = []
        for f in value.fields():
            if f.number == 8 and f.wire_type == LEN:
                tensor = value.sub(f)
                strings, dtype = [], 0
                for g in tensor.fields():
                    if g.number == 1 and g.wire_type == VARINT:
                        dtype = g.value or 0
                    elif g.number == 8 and g.wire_type == LEN and len(strings) < 64:
                        strings.append(tensor.bytes_of(g, 4096).decode("latin-1"))
                if dtype == 7:
                    out.extend(strings)
        return out

    @staticmethod
    def _attr_string(value: ProtoView) -> Optional[str]:
        for f in value.fields():
            if f.number == 2 and f.wire_type == LEN:
                return value.text_of(f, 4096)
        return None

    def attr(self, value: ProtoView, node: str, function: Optional[str], depth: int) -> None:
        if depth > 32:
            raise ProtobufError("attribute values nested too deeply", value.start)
        for f in value.fields():
            if f.number == 10 and f.wire_type == LEN:
                self.name_attr_list(value.sub(f), node, function, depth)
            elif f.number == 1 and f.wire_type == LEN:
                lst = value.sub(f)
                for g in lst.fields():
                    if g.number == 9 and g.wire_type == LEN:
                        self.name_attr_list(lst.sub(g), node, function, depth)

    def name_attr_list(self, nal: ProtoView, node: str, function: Optional[str], depth: int) -> None:
        for f in nal.fields():
            if f.number == 1 and f.wire_type == LEN:
                self.func_refs.append(OpUse(nal.text_of(f, 4096), node, function, nal.start))
        for _, value in _map_entries(nal, 2):
            self.attr(value, node, function, depth + 1)

    def all_ops(self) -> List[OpUse]:
        # A func attr naming a library function is a call, not an op; anything else is a primitive op.
        return self.uses + [u for u in self.func_refs if u.op not in self.library]


def _node_name(tensor: str) -> str:
    """``node:0`` / ``node:output:0`` / ``^node`` -> ``node``."""
    return tensor.lstrip("^").split(":", 1)[0]


def _bad_prefix(value: str) -> bool:
    """A constant that makes a checkpoint path absolute, climb out of its folder, or a URL."""
    parts = re.split(r"[\\/]", value)
    return (value.startswith(("/", "\\", "~")) or bool(_DRIVE.match(value)) or ".." in parts
            or "://" in value)


class SaverCheck:
    """Decides whether a checkpoint op is the saver's own, on the saver's filename."""

    def __init__(self, walk: "GraphWalk", saver: Optional[SaverInfo]) -> None:
        self.walk = walk
        self.saver = saver
        self.functions: Dict[str, List[str]] = {}  # saver function -> names of its (top-level) callers
        self.scope = ""
        if saver is None:
            return
        callers = {_node_name(saver.save), _node_name(saver.restore)}
        called: Dict[str, Set[Tuple[Optional[str], str]]] = {}
        for ref in walk.func_refs:
            called.setdefault(ref.op, set()).add((ref.function, ref.node))
        for use in walk.uses:  # a node whose op is a library function calls it too
            if use.op in walk.library:
                called.setdefault(use.op, set()).add((use.function, use.node))
        for fn, sites in called.items():
            if sites and all(f is None and node in callers for f, node in sites):
                self.functions[fn] = sorted(node for _, node in sites)
        filename = _node_name(saver.filename)
        self.scope = filename.rsplit("/", 1)[0] + "/" if "/" in filename else ""
        self.run_by_init = self._reachable(saver.init_ops)
        self.run_by_restore = self._reachable((saver.restore,))

    def _reachable(self, starts: Tuple[str, ...]) -> Set[str]:
        """Top-level nodes that running ``starts`` runs (their inputs, transitively)."""
        seen: Set[str] = set()
        todo = [_node_name(n) for n in starts if n]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(self.walk.graph_inputs.get(name, ()))
        return seen

    def judge(self, use: OpUse) -> Optional[str]:
        """None when ``use`` is the saver's own checkpoint op; otherwise why it is not."""
        if self.saver is None:
            return "the meta graph declares no saver (saver_def), so no checkpoint op is the saver's"
        if use.function is not None and use.function not in self.functions:
            return (f"function {use.function!r} is not one only the saver's save/restore nodes call "
                    "(init, main or signature code runs it)")
        if use.function is None and not (self.scope and use.node.startswith(self.scope)):
            return "the node is outside the saver's name scope (init, main or signature code runs it)"
        runners = self.functions.get(use.function, []) if use.function is not None else [use.node]
        if any(r in self.run_by_init for r in runners):
            return "the loader's init/main op runs it after the restore"
        if use.op in CHECKPOINT_WRITERS and any(r in self.run_by_restore for r in runners):
            return "it writes a checkpoint while the model is being restored"
        node = self.walk.scopes.get(use.function, {}).get(use.node)
        if node is None:
            return "the node could not be traced"
        for index in FILENAME_INPUTS.get(use.op, (0,)):
            if index >= len(node.inputs):
                return f"input {index} (the file name) is missing"
            ok, bad = self._trace(use.function, node.inputs[index], 0, set())
            if bad:
                return f"its file name is built from the constant {bad[0]!r} (absolute, '..' or a URL)"
            if not ok:
                return (f"its file name ({node.inputs[index]!r}) does not come from the saver's filename "
                        f"placeholder {_node_name(self.saver.filename)!r}")
        return None

    def _trace(self, function: Optional[str], tensor: str, depth: int,
               seen: Set[str]) -> Tuple[bool, List[str]]:
        """(reaches the saver's filename placeholder, bad constants on the way)."""
        assert self.saver is not None
        name = _node_name(tensor)
        if depth > 32 or name in seen:
            return False, []
        seen.add(name)
        if function is not None and name in self.walk.args.get(function, ()):
            return self._arg_is_filename(function, name), []
        if function is None and name == _node_name(self.saver.filename):
            node = self.walk.scopes.get(None, {}).get(name)
            bad: List[str] = []
            if node is not None and node.op == "PlaceholderWithDefault" and node.inputs:
                # The default is the file name whenever the op runs unfed (TF1 savers).
                bad = self._trace(None, node.inputs[0], depth + 1, seen)[1]
            return True, bad
        node = self.walk.scopes.get(function, {}).get(name)
        if node is None:
            return False, []
        if node.op == "Const":
            return False, [s for s in node.strings if _bad_prefix(s)]
        if node.op not in FILENAME_PASS_THROUGH:
            return False, []
        reached, bad = False, []
        for inp in node.inputs:
            ok, b = self._trace(function, inp, depth + 1, seen)
            reached = reached or ok
            bad.extend(b)
        return reached, bad

    def _arg_is_filename(self, function: str, arg: str) -> bool:
        """The argument is fed the saver's filename by every node that calls the function."""
        assert self.saver is not None
        index = self.walk.args[function].index(arg)
        callers = self.functions.get(function, [])
        graph = self.walk.scopes.get(None, {})
        return bool(callers) and all(
            c in graph and index < len(graph[c].inputs)
            and _node_name(graph[c].inputs[index]) == _node_name(self.saver.filename) for c in callers)


def report_ops(walk: "GraphWalk", ctx: ScanContext, saver: Optional[SaverInfo] = None) -> None:
    """Judge every op of one meta graph: allowlist, CRITICAL ops, checkpoint ops of the saver."""
    tables = tf_tables()
    check = SaverCheck(walk, saver)
    reported = 0
    checkpoint: dict = {}
    unknown: Dict[str, List[OpUse]] = {}

    def emit(rule_id: str, message: str, use: OpUse, severity: Optional[Severity] = None) -> None:
        nonlocal reported
        reported += 1
        if reported <= MAX_REPORTED_OPS:
            ctx.report(rule_id, message, offset=use.offset, severity=severity,
                       details={"op": use.op, "node": use.node, "function": use.function})

    for use in walk.all_ops():
        where = f"node {use.node!r}" + (f" of function {use.function!r}" if use.function else " of the graph")
        if use.op in walk.library:
            continue  # a node whose op is a library function: a call, the function is judged
        if use.op == "PrintV2" and use.output_stream and use.output_stream.startswith("file://"):
            emit("tf-dangerous-op", f"op PrintV2 (prints to the file {use.output_stream[7:]!r}) in {where}",
                 use)
        elif use.op in tables.critical:
            emit("tf-dangerous-op", f"op {use.op} ({tables.critical[use.op]}) in {where}", use)
        elif use.op in tables.checkpoint:
            why = check.judge(use)
            if why is None:
                checkpoint.setdefault(use.op, []).append(where)
            else:
                emit("tf-checkpoint-op-misplaced", f"op {use.op} in {where} is not the saver's: {why}", use)
        elif use.op not in tables.allowed:
            unknown.setdefault(use.op, []).append(use)
    for op, uses in sorted(unknown.items()):
        places = ", ".join(f"{u.node!r}" + (f" of {u.function!r}" if u.function else "") for u in uses[:3])
        emit("tf-unknown-op", f"op {op} ({len(uses)} uses: {places}) is not one of TensorFlow "
             f"{tables.tensorflow_version}'s compute ops: a custom op needs a native library, another op "
             "may touch files or the network", uses[0])
    if reported > MAX_REPORTED_OPS:
        ctx.report("tf-unknown-op", f"{reported - MAX_REPORTED_OPS} more op findings not listed",
                   details={"more": reported - MAX_REPORTED_OPS})
    for op, places in sorted(checkpoint.items()):
        ctx.report("tf-checkpoint-op", f"op {op} ({len(places)} uses, e.g. {places[0]}) in the saver's own "
                   "subgraph, on the saver's filename", details={"op": op, "count": len(places)})


def _init_ops(meta: ProtoView) -> Tuple[str, ...]:
    """Nodes the loader runs after the restore: ``collection_def`` (4) node lists (CollectionDef
    node_list=1, NodeList value=1) and the ``__saved_model_init_op`` signature's outputs
    (``signature_def`` 5: SignatureDef outputs=2, TensorInfo name=1)."""
    out: List[str] = []
    for key, coll in _map_entries(meta, 4):
        if key in INIT_COLLECTIONS:
            for f in coll.fields():
                if f.number == 1 and f.wire_type == LEN:
                    nodes = coll.sub(f)
                    out.extend(nodes.text_of(g, 4096) for g in nodes.fields()
                               if g.number == 1 and g.wire_type == LEN)
    for key, sig in _map_entries(meta, 5):
        if key == INIT_SIGNATURE:
            for _, info in _map_entries(sig, 2):
                out.extend(info.text_of(g, 4096) for g in info.fields()
                           if g.number == 1 and g.wire_type == LEN)
    return tuple(out)


def _saver(meta: ProtoView) -> Optional[SaverInfo]:
    """``MetaGraphDef.saver_def`` (3): filename_tensor_name=1, save_tensor_name=2, restore_op_name=3."""
    # Protobuf merges a message field that occurs twice, a later scalar replacing an earlier one:
    # the saver TensorFlow sees is every saver_def occurrence merged, not the first.
    values: Dict[int, str] = {}
    for f in meta.fields():
        if f.number == 3 and f.wire_type == LEN:
            sd = meta.sub(f)
            values.update({g.number: sd.text_of(g, 4096) for g in sd.fields() if g.number in (1, 2, 3)
                           and g.wire_type == LEN})
    if values.get(1):
        return SaverInfo(values[1], values.get(2, ""), values.get(3, ""), _init_ops(meta))
    return None


# ---- keras_metadata.pb ------------------------------------------------------------------------

def scan_saved_model(source: ByteSource, ctx: ScanContext) -> None:
    """Judge every op of every graph and library function of a ``saved_model.pb``."""
    view = ProtoView(source)
    walk = GraphWalk(ctx)
    saver: Optional[SaverInfo] = None
    try:
        for f in view.fields():
            if f.number != 2 or f.wire_type != LEN:
                continue
            meta = view.sub(f)
            walk, saver = GraphWalk(ctx), _saver(meta)  # each meta graph has its own saver
            for g in meta.fields():
                if g.number == 2 and g.wire_type == LEN:
                    walk.graph(meta.sub(g))
            report_ops(walk, ctx, saver)
    except ProtobufError as exc:
        report_ops(walk, ctx, saver)
        ctx.report("protobuf-malformed", f"SavedModel does not decode: {exc}", offset=exc.offset)


def scan_keras_metadata(source: ByteSource, ctx: ScanContext) -> None:
    """Walk the Keras config of every node of a ``keras_metadata.pb``."""
    view = ProtoView(source)
    try:
        for f in view.fields():
            if f.number != 1 or f.wire_type != LEN:
                continue
            node = view.sub(f)
            path, metadata, at = "", None, node.start
            for g in node.fields():
                if g.number == 3 and g.wire_type == LEN:
                    path = node.text_of(g, 4096)
                elif g.number == 5 and g.wire_type == LEN:
                    if g.length > ctx.limits.max_in_memory_bytes:
                        ctx.report("unscanned-limit", f"metadata of node {path!r} exceeds the in-memory "
                                   "limit", offset=g.start)
                        continue
                    if ctx.json_too_large(g.length, f"metadata of node {path!r}", offset=g.start):
                        continue
                    metadata, at = node.bytes_of(g, g.length), g.start
            if metadata is None:
                continue
            try:
                doc = json.loads(metadata.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                ctx.report("unscanned-parse-error", f"metadata of node {path!r} is not JSON: {exc}",
                           offset=at)
                continue
            walk_keras_config(doc, ctx, root=path or "<node>", offset=at)
    except ProtobufError as exc:
        ctx.report("protobuf-malformed", f"keras_metadata.pb does not decode: {exc}", offset=exc.offset)
