"""``torch.export.save`` archives (``.pt2``): the serialized program's targets and guard code.

``torch.export.load`` reads ``<root>/models/<name>.json`` (and ``serialized_exported_program.json``
of older archives) and resolves every node ``target`` string by attribute lookup
(``torch/_export/serde/serialize.py`` ``deserialize_operator``): ``torch.ops.<ns>.<op>.<overload>``
is an operator, but any other ``torch.*``, ``_operator.*`` or ``math.*`` path is whatever Python object
it names (``torch.hub.load`` ...), called when the program runs. ``guards_code`` strings are pasted into
Python source and ``exec``-ed by ``ExportedProgram.module()`` (``torch/export/_unlift.py``
``_convert_guards_code_to_fn``, on by default). So: operator targets are judged against the
TorchScript op tables (the same registry), other targets against a short allowlist, and each guard
must be a shape comparison (names ``L``, sizes, arithmetic); anything else is reported. The weights
and constants members (pickles when ``use_pickle``) are scanned by content like every zip member.
"""

from __future__ import annotations

import ast
import json
import re

from ..context import ScanContext
from ..findings import Severity
from .torchscript import classify_op
from .zip.container import CentralEntry, read_member
from .zip.torch_archive import torch_key

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Iterator, List, Optional, Tuple
    from ..source import ByteSource

#: ``_operator`` functions export graphs use for symbolic-size arithmetic.
OPERATOR_TARGETS = frozenset({"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg",
                              "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_",
                              "invert", "lshift", "rshift", "matmul"})
#: ``torch.*`` targets that are not ``torch.ops`` but are pure symbolic-shape helpers.
TORCH_TARGETS = frozenset({"sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt",
                           "sym_sum", "_sym_sqrt", "_check", "_check_is_size", "_assert", "_assert_async",
                           "_assert_scalar"})
#: Higher-order operators (``torch.ops.higher_order.*``): control flow over the program's own subgraphs.
HIGHER_ORDER = frozenset({"cond", "while_loop", "map_impl", "scan", "associative_scan", "invoke_subgraph",
                          "wrap_with_set_grad_enabled", "wrap_with_autocast", "run_const_graph",
                          "auto_functionalized", "auto_functionalized_v2", "with_effects"})
#: What a guard may use: the inputs ``L[...]``, their sizes, and sympy's integer helpers.
GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
GUARD_NAMES = frozenset({"L", "Eq", "Ne", "Ge", "Gt", "Le", "Lt", "Mod", "FloorDiv", "CleanDiv", "Max", "Min",
                         "Abs", "PythonMod", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "TruncToInt",
                         "RoundToInt", "OpaqueUnaryFn_sqrt", "IsNonOverlappingAndDenseIndicator", "math",
                         "len", "inf", "Not", "And", "Or"})
_GUARD_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Subscript,
                ast.Name, ast.Attribute, ast.Call, ast.Tuple, ast.List, ast.Load, ast.cmpop, ast.boolop,
                ast.operator, ast.unaryop, ast.Slice)


def program_members(entries: List["CentralEntry"]) -> List["CentralEntry"]:
    """The serialized programs torch.export.load reads (names matched as torch's reader does)."""
    out = []
    for e in entries:
        key = torch_key(e.name)
        parts = key.split("/")
        # load_pt2 takes every record under models/ ending in .json (subfolders too).
        if (len(parts) >= 3 and parts[1] == "models" and key.endswith(".json")) or \
                key.endswith("serialized_exported_program.json"):
            out.append(e)
    return out


def judge_target(target: str) -> Optional[Tuple[Severity, str]]:
    """None when ``target`` is an allowed operator or helper, else (severity, why)."""
    parts = target.split(".")
    if parts[0] == "torch" and parts[1:2] == ["ops"]:
        if len(parts) < 4:
            return Severity.HIGH, "an incomplete operator path"
        ns, op = parts[2], parts[3]
        if ns == "higher_order":
            if op in HIGHER_ORDER:
                return None
            return Severity.HIGH, "a higher-order operator this scanner does not know"
        v = classify_op(ns, op)
        return None if v.severity is None else (v.severity, v.reason)
    if parts[0] == "_operator":
        return None if len(parts) == 2 and parts[1] in OPERATOR_TARGETS else \
            (Severity.CRITICAL, "an operator-module function outside the arithmetic ones (attrgetter, "
                                "methodcaller ... reach any attribute)")
    if parts[0] == "math":
        if len(parts) == 2 and not parts[1].startswith("_"):
            return None
        return Severity.HIGH, "not a math function"
    if parts[0] == "torch":
        return None if len(parts) == 2 and parts[1] in TORCH_TARGETS else \
            (Severity.CRITICAL, "a torch attribute path that is not an operator: the loader resolves it to "
                                "whatever Python function it names (torch.hub.load, torch.load ...) and "
                                "running the program calls it")
    if parts[0].startswith("#"):
        return Severity.HIGH, "an extension operator: it needs a handler registered in the loading process"
    return Severity.HIGH, "a target the loader leaves unresolved"


def judge_guard(code: str) -> Optional[str]:
    """None when ``code`` is a shape guard, else why it is not (it is exec-ed as Python)."""
    try:
        tree = ast.parse(code, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"does not parse as an expression ({type(exc).__name__})"
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return f"uses {type(node).__name__}"
        if isinstance(node, ast.Name) and node.id not in GUARD_NAMES:
            return f"uses the name {node.id!r}"
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                return f"uses the attribute {node.attr!r}"
            on_math = isinstance(node.value, ast.Name) and node.value.id == "math"
            if not (node.attr in GUARD_METHODS or on_math):
                return f"uses the attribute {node.attr!r}"
        if isinstance(node, ast.Call) and (node.keywords
                                           or not isinstance(node.func, (ast.Name, ast.Attribute))):
            return "calls something other than a size method or a sympy helper"
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) > 256:
            return "holds a long string"
    return None


#: Names a symbolic expression (``expr_str``, read with ``sympy.sympify``, which eval()s its text) may
#: use: sympy's core classes in their ``srepr`` form and torch's own sympy functions
#: (``torch/_export/serde/serialize.py`` ``sympy_functions``). Nothing here parses a string again.
SYMPY_NAMES = frozenset({
    "Symbol", "Dummy", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Eq", "Ne",
    "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality",
    "Unequality", "And", "Or", "Not", "Piecewise", "ExprCondPair", "BooleanTrue", "BooleanFalse", "true",
    "false", "True", "False", "oo", "zoo", "nan", "Infinity", "NegativeInfinity", "NegativeOne", "One",
    "Zero", "Half", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
    "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural", "IntTrueDiv",
    "FloatTrueDiv", "Identity", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor"})
_SYMBOL = re.compile(r"[a-z]{1,8}[0-9]+\Z|OpaqueUnaryFn_[a-z0-9_]+\Z")
_PLAIN_STRING = re.compile(r"[A-Za-z0-9_.+-]{0,64}\Z")


def judge_sym_expr(text: str) -> Optional[str]:
    """None when ``text`` is a symbolic-size expression, else why not (sympify eval()s it)."""
    if len(text) > 100_000:
        return "is over 100,000 characters"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"does not parse as an expression ({type(exc).__name__})"
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Expression, ast.Call, ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp,
                                 ast.Compare, ast.BoolOp, ast.keyword, ast.Load, ast.cmpop, ast.boolop,
                                 ast.operator, ast.unaryop)):
            return f"uses {type(node).__name__}"
        if isinstance(node, ast.Name) and node.id not in SYMPY_NAMES and not _SYMBOL.match(node.id):
            return f"uses the name {node.id!r}"
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            return "calls something other than a sympy class"
        if isinstance(node, ast.keyword) and (node.arg is None or not isinstance(node.value, ast.Constant)):
            return "passes a keyword that is not a constant"
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and \
                not (isinstance(node.value, str) and _PLAIN_STRING.match(node.value)):
            return "holds a string that is not a plain symbol name"
    return None


def _walk(obj: Any, path: str, depth: int = 0) -> Iterator[Tuple[str, str, Any]]:
    """(key, path, value) of every dict item, depth first."""
    if depth > 200:
        raise ValueError("JSON nested more than 200 levels")
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, path, v
            yield from _walk(v, f"{path}.{k}", depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]", depth + 1)


def report_native_code(ctx: ScanContext, entries: List["CentralEntry"]) -> None:
    """AOTInductor packages: ``torch.export.load`` / ``aoti_load_package`` hand every model under
    ``data/aotinductor/`` to ``AOTIModelPackageLoader``, which extracts and dlopen()s its shared
    library. Native code cannot be judged: one finding per archive, listing the members."""
    # load_pt2 lists records under data/aotinductor/ of the archive's folder.
    native = [e.name for e in entries if torch_key(e.name).split("/", 1)[-1].startswith("data/aotinductor/")
              and not e.name.endswith("/")]
    if native:
        ctx.report("torch-export-native-code",
                   f"AOTInductor package with {len(native)} members under data/aotinductor/ (e.g. "
                   f"{native[0]}): loading it dlopen()s the compiled shared library it ships, native code "
                   "this scanner cannot judge", details={"members": native[:20], "count": len(native)})


def scan_export_programs(source: "ByteSource", ctx: ScanContext,
                         entries: List["CentralEntry"]) -> None:
    """Judge every serialized program of a torch.export archive (and flag AOTInductor code)."""
    report_native_code(ctx, entries)
    for entry in program_members(entries):
        mctx = ctx.child(entry.name)
        ctx.check_deadline()
        if ctx.json_too_large(entry.usize, "serialized ExportedProgram"):
            continue
        data = read_member(source, entry, ctx)
        if data is None:
            mctx.report("unscanned-parse-error", "serialized ExportedProgram could not be read (compression "
                        "or damage); its targets and guard code were not judged")
            continue
        try:
            program = json.loads(data)
            items = list(_walk(program, "$"))
        except (ValueError, RecursionError) as exc:
            mctx.report("unscanned-parse-error", f"serialized ExportedProgram is not JSON torch.export.load "
                        f"reads ({type(exc).__name__}: {str(exc)[:200]}); not judged")
            continue
        ctx.add_format("torch-export")
        seen = set()
        for key, where, value in items:
            if key == "target" and isinstance(value, str) and value not in seen:
                seen.add(value)
                verdict = judge_target(value)
                if verdict is not None:
                    sev, why = verdict
                    rule = "torch-export-dangerous-target" if sev >= Severity.CRITICAL else \
                        "torch-export-unknown-target"
                    mctx.report(rule, f"program node target {value!r} ({where}): {why}", severity=sev,
                                details={"target": value, "path": where})
            elif key == "expr_str" or (key == "range_constraints" and isinstance(value, dict)):
                texts = [value] if key == "expr_str" else list(value)
                for text in texts:
                    why = judge_sym_expr(text) if isinstance(text, str) else "is not a string"
                    if why is not None:
                        mctx.report("torch-export-guard-code",
                                    f"symbolic expression {str(text)[:120]!r} ({where}.{key}) {why}: "
                                    "torch.export.load reads it with sympy.sympify, which eval()s it",
                                    details={"expression": str(text)[:500], "path": f"{where}.{key}"})
            elif key == "guards_code" and isinstance(value, list):
                for i, guard in enumerate(value):
                    why = judge_guard(guard) if isinstance(guard, str) else "is not a string"
                    if why is not None:
                        mctx.report("torch-export-guard-code",
                                    f"guards_code[{i}] {str(guard)[:120]!r} {why}: ExportedProgram.module() "
                                    "pastes each guard into Python source and exec()s it",
                                    details={"guard": str(guard)[:500], "index": i})


__all__ = ["judge_guard", "judge_sym_expr", "judge_target", "program_members", "scan_export_programs"]
