"""The Keras model-config walk shared by HDF5 (``model_config``), ``.keras`` (``config.json``) and
TensorFlow's ``keras_metadata.pb``, and the scan of JSON members and files (:func:`scan_json_config`,
for :mod:`.json_config`).

A Keras config is a tree of ``{"class_name", "config", "module", "registered_name", ...}`` objects:
layers nest in ``config.layers``, wrappers (TimeDistributed, Bidirectional) hold ``config.layer``,
a Sequential can sit inside a Functional, optimizers and losses sit in ``compile_config``. Instead
of following a fixed schema the walk visits every object of the tree, so nothing nested is missed.

What runs code or reaches outside the model on load:
- Lambda layers / ``__lambda__`` objects: marshalled bytecode, unmarshalled and called by
  ``func_load``. The bytecode is decoded here by a marshal *reader* that lists the names the code
  uses; ``marshal.loads`` is never called, nothing is turned into a function.
- ``module`` outside the Keras packages: imported and looked up by name (CVE-2025-1550).
- Non-modelling Keras functions (``keras.utils.get_file``, ``keras.config.enable_unsafe_deserialization``).
- ``TFSMLayer(filepath=...)``, ``TorchModuleWrapper`` (a pickled torch module, scanned here),
  lookup layers whose ``vocabulary`` is a file path.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import re

from ..context import ScanContext
from ..findings import Severity
from ..jsonutil import decode_json_bytes, json_bytes_encoding, json_head_text
from ..marshal_reader import summarize_marshalled_code
from ..record import Record
from ..source import ByteSource, BytesSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

#: Top-level packages Keras itself accepts for ``module`` since the CVE-2025-1550 fix, plus tf_keras.
KERAS_PACKAGES = frozenset({"keras", "keras_hub", "keras_cv", "keras_nlp", "tf_keras"})
#: Keras functions that do something other than build a model (the NON_MODELING idea of Keras 3.11).
NON_MODELING_NAMES = frozenset({
    "get_file", "enable_unsafe_deserialization", "load_model", "load_weights", "save_model",
    "set_global_policy", "enable_interactive_logging", "disable_interactive_logging",
})
NON_MODELING_MODULES = ("keras.config", "keras.src.backend.config", "keras.utils.file_utils",
                        "keras.src.utils.file_utils", "keras.src.utils.io_utils", "keras.saving",
                        "keras.src.saving.saving_api", "keras.models.load_model")
#: tf.keras 2.11/2.12 registered its own optimizers under the package "Custom" ("Custom>Adam").
KERAS_CUSTOM_PACKAGE_BUILTINS = frozenset({
    "Adam", "AdamW", "SGD", "RMSprop", "Adadelta", "Adagrad", "Adamax", "Nadam", "Ftrl", "Lion",
    "Adafactor", "LossScaleOptimizer", "LossScaleOptimizerV3",
})
#: Preprocessing layers that read a vocabulary file when ``vocabulary`` is a string.
FILE_VOCABULARY_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization", "Lookup"})
#: Upper bound on a decoded Lambda / TorchModuleWrapper payload kept in memory.
MAX_PAYLOAD = 64 << 20
#: Names listed in one finding.
MAX_NAMES = 40


_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]{2,63}")


def printable_identifiers(data: bytes, limit: int = MAX_NAMES) -> List[str]:
    """Identifier-like byte runs: the fallback description of code that no layout could read."""
    seen: List[str] = []
    for m in _IDENT.finditer(data):
        s = m.group().decode("ascii")
        if s not in seen:
            seen.append(s)
        if len(seen) >= limit:
            break
    return seen


def decode_lambda_payload(code: str) -> bytes:
    """Bytes of a Keras ``func_dump`` string: base64, or raw_unicode_escape as func_load falls back to."""
    compact = "".join(code.split())
    try:
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return code.encode("raw_unicode_escape", "replace")


# ---- the walk --------------------------------------------------------------------------------

def _package(module: str) -> str:
    return module.split(".", 1)[0]


def _is_keras_module(module: str) -> bool:
    return _package(module) in KERAS_PACKAGES


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class KerasWalk(Record):
    """Walks one Keras config tree and reports into ``ctx``. ``root`` names where the JSON came from.
    (A plain record, not a dataclass: see safemodel_ci/record.py; the JSON reader's gate passes on
    many files, a safetensors header among them, and imports this module.)"""

    __slots__ = ("ctx", "root", "offset", "objects", "_reported_modules")
    ctx: ScanContext
    root: str
    offset: Optional[int]
    objects: int
    _reported_modules: Dict[Tuple[str, str], int]

    def __init__(self, ctx: ScanContext, root: str = "", offset: Optional[int] = None, objects: int = 0,
                 _reported_modules: Optional[Dict[Tuple[str, str], int]] = None) -> None:
        self.ctx = ctx
        self.root = root
        self.offset = offset
        self.objects = objects
        self._reported_modules = {} if _reported_modules is None else _reported_modules

    def walk(self, doc: Any) -> None:
        stack: List[Tuple[Any, str, Tuple[str, ...]]] = [(doc, self.root, ())]
        while stack:
            node, path, layers = stack.pop()
            if isinstance(node, dict):
                self.objects += 1
                if self.objects % 4096 == 0:
                    self.ctx.check_deadline()
                name = None
                cfg = node.get("config")
                if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
                    name = cfg["name"]
                is_object = isinstance(node.get("class_name"), str)
                inner_layers = layers + (name,) if name and is_object else layers
                if isinstance(node.get("class_name"), str):
                    self._check_object(node, path, inner_layers)
                children = list(node.items())
                for key, value in reversed(children):
                    if isinstance(value, (dict, list)):
                        stack.append((value, _join(path, key), inner_layers))
            elif isinstance(node, list):
                for i in range(len(node) - 1, -1, -1):
                    if isinstance(node[i], (dict, list)):
                        stack.append((node[i], _join(path, i), layers))

    # -- one object -----------------------------------------------------------------------
    def _where(self, path: str, layers: Tuple[str, ...]) -> str:
        shown = path or "<root>"
        if layers:
            shown += " (layer " + " > ".join(repr(n) for n in layers) + ")"
        return shown

    def _report(self, rule_id: str, message: str, path: str, layers: Tuple[str, ...],
                severity: Optional[Severity] = None, **details: Any) -> None:
        self.ctx.report(rule_id, f"{message} at {self._where(path, layers)}", offset=self.offset,
                        severity=severity,
                        details={"path": path or "<root>", "layers": list(layers), **details})

    def _check_object(self, node: Dict[str, Any], path: str, layers: Tuple[str, ...]) -> None:
        class_name = node["class_name"]
        cfg = node.get("config")
        module = node.get("module")
        if class_name == "__lambda__":
            payload = cfg.get("value", cfg.get("code")) if isinstance(cfg, dict) else cfg
            self._lambda_code(payload, _join(path, "config"), layers)
        elif class_name == "Lambda" and isinstance(cfg, dict):
            self._lambda_layer(cfg, path, layers, module)
        if isinstance(module, str) and module:
            self._check_module(node, module, path, layers)
        registered = node.get("registered_name")
        for label in (registered, class_name):
            if isinstance(label, str) and ">" in label:
                package, _, short = label.partition(">")
                if package == "Custom" and short in KERAS_CUSTOM_PACKAGE_BUILTINS:
                    break
                if package not in KERAS_PACKAGES:
                    self._report("keras-custom-object",
                                 f"custom object {label!r} (registered outside Keras) is needed",
                                 path, layers, registered_name=label)
                    break
        if class_name == "TFSMLayer" and isinstance(cfg, dict) and cfg.get("filepath"):
            self._report("keras-external-savedmodel",
                         f"TFSMLayer loads the SavedModel at {cfg.get('filepath')!r}", path, layers,
                         filepath=str(cfg.get("filepath"))[:500])
        if class_name == "TorchModuleWrapper" and isinstance(cfg, dict):
            self._torch_module(cfg.get("module"), path, layers)
        vocabulary = cfg.get("vocabulary") if isinstance(cfg, dict) else None
        if class_name in FILE_VOCABULARY_LAYERS and isinstance(vocabulary, str):
            self._report("keras-file-reference",
                         f"{class_name} reads its vocabulary from the file {vocabulary!r}", path, layers,
                         file=vocabulary[:500])

    def _object_name(self, node: Dict[str, Any]) -> str:
        class_name = node.get("class_name")
        if class_name == "function":
            cfg = node.get("config")
            if isinstance(cfg, str):
                return cfg
            reg = node.get("registered_name")
            return reg if isinstance(reg, str) else "function"
        if class_name == "__typespec__" and isinstance(node.get("spec_name"), str):
            return node["spec_name"]
        return str(class_name)

    def _check_module(self, node: Dict[str, Any], module: str, path: str, layers: Tuple[str, ...]) -> None:
        name = self._object_name(node)
        if node.get("class_name") == "__typespec__" and \
                _package(module) == "tensorflow" and name.endswith("Spec"):
            return  # TensorFlow TypeSpecs (TensorSpec ...) that Keras 3 writes with the TF backend
        if _is_keras_module(module):
            # Keras resolves ``module + "." + name`` as an API path, so a dotted name counts too.
            full = f"{module}.{name}"
            if full.rsplit(".", 1)[-1] in NON_MODELING_NAMES or any(
                    full.startswith(m + ".") for m in NON_MODELING_MODULES):
                self._report("keras-non-modeling-api",
                             f"the config calls {module}.{name}, a Keras function that is not a model part",
                             path, layers, module=module, name=name)
            return
        if module == "builtins" and not hasattr(builtins, name):
            return  # Keras resolves such names among its own built-in activations, losses ...
        verdict = self.ctx.policy.classify_global(module, name)
        dangerous = verdict.rule_id == "pickle-dangerous-global"
        self._report("keras-unsafe-module",
                     f"the config makes Keras import {module}.{name}" +
                     (f" ({verdict.reason})" if dangerous and verdict.reason else ""),
                     path, layers, severity=Severity.CRITICAL if dangerous else None,
                     module=module, name=name)

    def _lambda_layer(self, cfg: Dict[str, Any], path: str, layers: Tuple[str, ...],
                      module: Any) -> None:
        for key in ("function", "output_shape", "mask"):
            value = cfg.get(key)
            kind = cfg.get(f"{key}_type") or (cfg.get("function_type") if key == "function" else None)
            where = _join(_join(path, "config"), key)
            if isinstance(value, (list, tuple)) and value and isinstance(value[0], str) and kind != "raw":
                self._lambda_code(value[0], where, layers)
            elif isinstance(value, str) and kind == "lambda":
                self._lambda_code(value, where, layers)
            elif isinstance(value, str) and kind == "function" and key == "function":
                fmodule = cfg.get("module") or cfg.get("function_module")
                if isinstance(fmodule, str) and fmodule and not _is_keras_module(fmodule):
                    self._check_module({"class_name": "function", "config": value}, fmodule, where, layers)
                else:
                    self._report("keras-custom-object",
                                 f"Lambda layer calls the function {value!r} by name", where, layers,
                                 function=value)

    def _lambda_code(self, payload: Any, path: str, layers: Tuple[str, ...]) -> None:
        if isinstance(payload, (list, tuple)) and payload:
            payload = payload[0]
        if not isinstance(payload, str):
            self._report("keras-lambda-code", "Lambda object with an unreadable code payload", path, layers)
            return
        if len(payload) > MAX_PAYLOAD:
            self._report("keras-lambda-code", f"Lambda with a {len(payload)}-character code payload",
                         path, layers)
            return
        raw = decode_lambda_payload(payload)
        summary = summarize_marshalled_code(raw)
        if summary is not None:
            names = list(dict.fromkeys(summary.names))[:MAX_NAMES]
            strings = [s[:80] for s in dict.fromkeys(summary.strings)][:MAX_NAMES]
            desc = f"names {names}" + (f", strings {strings[:8]}" if strings else "")
            self._report("keras-lambda-code",
                         f"Lambda layer carries marshalled Python bytecode (layout {summary.layout}) using "
                         f"{desc}", path, layers, names=names, strings=strings,
                         functions=summary.functions[:MAX_NAMES], code_bytes=len(raw))
        else:
            idents = printable_identifiers(raw)
            self._report("keras-lambda-code",
                         f"Lambda layer carries {len(raw)} bytes of code that no known marshal layout "
                         f"reads; identifiers in it: {idents}", path, layers, identifiers=idents,
                         code_bytes=len(raw))

    def _torch_module(self, payload: Any, path: str, layers: Tuple[str, ...]) -> None:
        where = _join(_join(path, "config"), "module")
        if not isinstance(payload, str):
            self._report("keras-torch-module", "TorchModuleWrapper without a readable module payload",
                         where, layers)
            return
        self._report("keras-torch-module",
                     "TorchModuleWrapper holds a torch.save blob that Keras loads with weights_only=False",
                     where, layers, payload_chars=len(payload))
        if len(payload) > MAX_PAYLOAD * 4 // 3:
            self.ctx.report("unscanned-limit", f"TorchModuleWrapper payload of {len(payload)} characters at "
                            f"{where} exceeds the {MAX_PAYLOAD}-byte payload limit", offset=self.offset)
            return
        try:
            blob = base64.b64decode("".join(payload.split()).encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
            self.ctx.report("unscanned-parse-error", f"TorchModuleWrapper payload at {where} is not base64: "
                            f"{exc}", offset=self.offset)
            return
        self.ctx.scan(BytesSource(blob, name=f"{self.ctx.display_name}:{where}"), member=where)


def walk_keras_config(doc: Any, ctx: ScanContext, root: str = "", offset: Optional[int] = None) -> int:
    """Walk a parsed Keras config and report into ``ctx``; returns the number of objects seen."""
    walker = KerasWalk(ctx, root=root, offset=offset)
    walker.walk(doc)
    return walker.objects


def looks_like_keras_config(doc: Any) -> bool:
    """A Keras serialized object at the top: ``class_name`` and ``config``."""
    return isinstance(doc, dict) and isinstance(doc.get("class_name"), str) and "config" in doc


def parse_json_text(raw: bytes) -> Any:
    """JSON from bytes exactly as Keras reads ``config.json`` / ``metadata.json`` of a ``.keras``
    archive: ``json.loads(bytes)``, which detects UTF-8 (BOM or not), UTF-16 and UTF-32 (either
    byte order, BOM or not). Raises ValueError (UnicodeDecodeError included)."""
    return json.loads(decode_json_bytes(raw))


# ---- JSON files and members ------------------------------------------------------------------

#: Bytes whose presence makes a JSON document worth parsing: the keys the checks look at, or a
#: ``\\u00XX`` escape of an ASCII letter, digit or underscore (how those keys could be spelled
#: indirectly; ordinary JSON escapes non-ASCII text and control characters, not letters).
_JSON_MARKERS = re.compile(rb'"class_name"|"chat_template"|\\u00[3-7][0-9a-fA-F]')


#: First bytes of a document json.loads(bytes) may read as an object: JSON white space or '{' in
#: UTF-8, a BOM (UTF-8, UTF-16/32), or NUL (UTF-16/32 big endian without BOM).
_MAY_START_JSON = frozenset(b"{ \t\r\n\xef\xfe\xff\x00")


def json_start(head: bytes) -> bool:
    """The text json.loads(bytes) would decode starts a JSON object (any encoding it detects)."""
    if not head:
        return False
    first = head[0]
    if first not in _MAY_START_JSON and (len(head) < 2 or head[1]):
        # json.detect_encoding says UTF-8 (no BOM, no NUL in the first two bytes), and a UTF-8
        # document cannot start so: most files end here without the codec lookup.
        return False
    encoding = json_bytes_encoding(head[:4])  # json.detect_encoding looks at 4 bytes only
    if encoding in ("utf-8", "utf-8-sig"):
        # The common case, on bytes (every file and member is asked): no decoding needed.
        body = (head[3:] if encoding == "utf-8-sig" else head).lstrip(b" \t\r\n")
        if not body.startswith(b"{"):
            return False
        rest = body[1:].lstrip(b" \t\r\n")
        return rest[:1] in (b'"', b"}") or (not rest and len(head) < 4096)
    text = json_head_text(head).lstrip(" \t\r\n")
    if not text.startswith("{"):
        return False
    rest = text[1:].lstrip(" \t\r\n")
    return rest[:1] in ('"', "}") or (not rest and len(head) < 4096)


def _utf8(source: ByteSource) -> bool:
    return json_bytes_encoding(source.head(4)) in ("utf-8", "utf-8-sig")


def _has_marker(source: ByteSource) -> bool:
    chunk = 1 << 20
    pos = 0
    tail = b""
    while pos < source.size:
        data = source.read_at(pos, chunk)
        if _JSON_MARKERS.search(tail + data):
            return True
        tail = data[-32:]
        pos += len(data)
    return False


def _contains_keras_objects(doc: Dict[str, Any], budget: int = 100_000) -> bool:
    """True when some nested object has the shape of a serialized Keras object."""
    stack: List[Any] = [doc]
    seen = 0
    while stack and seen < budget:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            if isinstance(node.get("class_name"), str) and ("config" in node or "module" in node):
                return True
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return False


def scan_json_config(source: ByteSource, ctx: ScanContext) -> None:
    """A JSON object file or member: the Keras walk when it is a Keras config, the chat-template
    check when it carries one where a loader renders it."""
    # The marker search reads bytes; a UTF-16/32 document (which json.loads reads just the
    # same) spells its keys with NULs in between, so it is always parsed.
    utf8 = _utf8(source)
    if utf8 and not _has_marker(source):
        return
    if source.size > ctx.limits.max_in_memory_bytes:
        ctx.report("unscanned-limit", f"JSON document of {source.size} bytes exceeds the in-memory limit "
                   f"of {ctx.limits.max_in_memory_bytes} bytes", details={"limit": "max_in_memory_bytes"})
        return
    if ctx.json_too_large(source.size, "JSON config"):
        return
    try:
        doc = parse_json_text(source.read_exact(0, source.size))
    except (ValueError, UnicodeDecodeError) as exc:
        # Not JSON after all (a text file starting with '{'): nothing a model loader would parse.
        head = json_head_text(source.head(1 << 16))
        if '"class_name"' in head or '"chat_template"' in head or not utf8:
            ctx.report("unscanned-parse-error", f"JSON config could not be parsed: {exc}")
        return
    if looks_like_keras_config(doc):
        ctx.add_format("keras-config")
        walk_keras_config(doc, ctx)
    elif isinstance(doc, dict) and _contains_keras_objects(doc):
        # metadata wrappers or configs with the model under a key: walk them all the same.
        ctx.add_format("keras-config")
        walk_keras_config(doc, ctx)
    if isinstance(doc, dict) and "chat_template" in doc:
        from .chat_template import check_chat_template_value, json_template_file

        # judged where a loader renders it (tokenizer_config.json, chat_template.json ...)
        if json_template_file(ctx):
            ctx.add_format("tokenizer-config")
            check_chat_template_value(doc["chat_template"], ctx, key="chat_template")
