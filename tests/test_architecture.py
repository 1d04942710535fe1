"""The shape of the code (issue 21): the import graph has no circles, nothing below the CLI imports
it, and every format reader keeps to its contract (docs/development.md, "Adding a format reader").

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of a
``safemodel_ci`` module, at module level or inside functions (an import inside a function is still
a dependency, only a later one), ``TYPE_CHECKING`` blocks included. A circle is a strongly connected
component of more than one module.
"""

from __future__ import annotations

import ast
import io
import pickle
import random
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, FrozenSet, List, Set, Tuple

import pytest

from fixture_factory import make_zoo
from safemodel_ci import formats, scanner
from safemodel_ci.context import Limits, ScanContext
from safemodel_ci.policy import Policy
from safemodel_ci.source import BytesSource

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "safemodel_ci"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(module: str, is_package: bool, node: ast.AST, known: Set[str]) -> List[str]:
    """The safemodel_ci modules an import statement names (``from pkg import mod`` names ``pkg.mod``)."""
    names: List[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix
                 for alias in node.names]
    found = []
    for name in names:
        while name and name not in known:  # safemodel_ci.x.attr -> safemodel_ci.x
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def import_graph() -> Dict[str, Set[str]]:
    """module -> the safemodel_ci modules it imports (anywhere in its source)."""
    modules = _modules()
    known = set(modules)
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: Set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_targets(name, path.name == "__init__.py", node, known))
        graph[name] = edges
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[FrozenSet[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[FrozenSet[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: List[Tuple[str, List[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


GRAPH = import_graph()
CIRCLES = circles(GRAPH)

def test_the_circle_finder_finds_a_circle() -> None:
    """Not vacuous: a made-up graph with a circle of three and a self-free chain."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}
    assert circles(graph) == [frozenset({"a", "b", "c"})]
    assert "safemodel_ci.formats.pickle" in GRAPH["safemodel_ci.scanner"] or any(
        m.startswith("safemodel_ci.formats.pickle") for m in GRAPH["safemodel_ci.scanner"])


def test_import_graph_has_no_circles() -> None:
    assert sorted(sorted(c) for c in CIRCLES) == [], "import circles"


#: Modules that may import the CLI: the ``python -m safemodel_ci`` entry point.
CLI_USERS = frozenset({"safemodel_ci.__main__"})
def test_nothing_below_the_cli_imports_it() -> None:
    users = {m for m, edges in GRAPH.items() if "safemodel_ci.cli" in edges} - CLI_USERS
    assert sorted(users) == []


# -- the reader contract -----------------------------------------------------------------------------

#: What any module of formats/ may import besides its own unit and the helpers below: the context
#: (and through it the engine), the source, the rules table, findings (Severity), the policy tables,
#: and utility modules that import no reader.
LOW_MODULES = frozenset({
    "safemodel_ci.context", "safemodel_ci.source", "safemodel_ci.rules", "safemodel_ci.findings",
    "safemodel_ci.policy", "safemodel_ci.pickle_policy", "safemodel_ci.decompress", "safemodel_ci.jsonutil",
    "safemodel_ci.protobuf", "safemodel_ci.npdtype", "safemodel_ci.marshal_reader", "safemodel_ci.record",
})
#: Modules of formats/ that are shared helpers, not readers (no row in the detector table): a reader
#: may import them; they import no reader.
HELPER_UNITS = frozenset({
    "interface", "carve", "torch_storages", "torchscript", "torch_export", "zip", "chat_template",
    "keras_config", "savedmodel", "safetensors",
})
#: The formats package itself: the detector table (the scanner imports it; no reader does).
TABLE = "safemodel_ci.formats"


def _unit(module: str) -> str:
    """``safemodel_ci.formats.zip.reader`` -> ``zip``: a reader's own package is its own helpers."""
    return module.split(".")[2]


READER_UNITS = frozenset(_unit(f"safemodel_ci.formats.{row.module}") for row in formats.ROWS)
FORMAT_MODULES = sorted(m for m in GRAPH if m.startswith("safemodel_ci.formats."))


def test_every_module_of_formats_is_a_reader_or_a_helper() -> None:
    units = {_unit(m) for m in FORMAT_MODULES}
    assert sorted(units - READER_UNITS - HELPER_UNITS) == [], "classify the new module here"
    # zip is both: its package holds the container helpers and the reader (formats.zip.reader).
    assert READER_UNITS & HELPER_UNITS <= {"zip"}


def test_low_modules_import_no_format_scanner_or_cli() -> None:
    for module in LOW_MODULES:
        bad = sorted(t for t in GRAPH[module] if t.startswith(("safemodel_ci.formats", "safemodel_ci.scanner",
                                                               "safemodel_ci.cli", "safemodel_ci.sources")))
        assert bad == [], (module, bad)


@pytest.mark.parametrize("module", FORMAT_MODULES)
def test_format_module_keeps_to_the_contract(module: str) -> None:
    """A reader imports the low modules, its own unit and the helpers; never the scanner, the CLI,
    the detector table or another reader. A helper imports no reader either."""
    own = _unit(module)
    bad = []
    for target in sorted(GRAPH[module]):
        if target in LOW_MODULES:
            continue
        if target.startswith("safemodel_ci.formats.") and (
                _unit(target) == own or (_unit(target) in HELPER_UNITS and not target.endswith(".reader"))):
            continue
        bad.append(target)
    assert bad == [], f"{module} imports {bad}"


# -- the detector table --------------------------------------------------------------------------------

def test_table_rows_are_the_readers_own_attributes() -> None:
    for index, row in enumerate(formats.ROWS):
        reader = formats.load(index)
        assert (reader.name, reader.by_name, reader.supersedes, reader.compatible) == \
            (row.name, row.by_name, row.supersedes, row.compatible), row
        assert type(reader).__module__ == f"safemodel_ci.formats.{row.module}"
    assert [r.name for r in formats.readers()] == [row.name for row in formats.ROWS]


def _extra_samples() -> Dict[str, bytes]:
    """Formats the zoo lacks, made with the real libraries or by their published layouts."""
    out: Dict[str, bytes] = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    out["plain.tar"] = buf.getvalue()
    out["torchscript.ptl"] = struct.pack("<I", 8) + b"PTMF" + bytes(32)
    out["saved_model.pbtxt"] = b"# comment\nsaved_model_schema_version: 1\nmeta_graphs {\n}\n"
    out["saved_model.cpb"] = bytes.fromhex(
        "83af70d10d884a3f0000000000000000400000000000000091bac23c9287e1a9"
        "0000000000000000e19f13c0e9b1c37273000000000000000000000000000000") + bytes(64)
    out["empty.7z"] = b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(24)
    out["hdf5_at_512.h5"] = bytes(512) + b"\x89HDF\r\n\x1a\n" + bytes(100)
    out["legacy_p0.pt"] = b"L119547037146038801333356L\n." + pickle.dumps(1001, protocol=0)
    out["torch_legacy_framed.pt"] = b"\x80\x04\x95" + bytes(8) + b"\x8a\x0a" + \
        (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("a.txt", b"x")
    out["prefixed.zip"] = b"junk" * 10 + zbuf.getvalue()
    out["index.json"] = b'  {"weight_map": {"a": "m.safetensors"}}'
    out["utf16.json"] = '{"class_name": "Dense"}'.encode("utf-16")
    try:
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        out["model.onnx"] = helper.make_model(graph).SerializeToString()
        assert onnx  # the real library made it
    except ImportError:
        pass
    return out


def _variants(data: bytes, rng: random.Random) -> List[bytes]:
    """The sample, cut short at many places, with a tail appended, and with bytes flipped near the
    start (where detectors look)."""
    out = [data, data + b"\x00" * 37, data[:4096], data + rng.randbytes(5000)]
    for n in sorted({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 22, 30, 64, 100, 511, 512, 600, len(data) // 2}):
        out.append(data[:n])
    for _ in range(8):
        b = bytearray(data[:5000])
        if b:
            b[rng.randrange(min(len(b), 64))] = rng.randrange(256)
        out.append(bytes(b))
    return out


def test_a_gate_never_hides_what_its_reader_detects(tmp_path: Path) -> None:
    """Each row's gate is true wherever its reader's own detect is (the gate may only say yes too
    often): checked on the zoo of real model files, extra formats, and variants of each."""
    zoo = tmp_path / "zoo"
    make_zoo(zoo, tmp_path / "canary")
    samples = {p.name: p.read_bytes() for p in sorted(zoo.iterdir()) if p.is_file()}
    samples.update(_extra_samples())
    rng = random.Random(21)
    for _ in range(200):
        samples[f"random{_}"] = rng.randbytes(rng.choice((3, 40, 600, 5000)))
    detected = {row.name: 0 for row in formats.ROWS}
    checked = 0
    for name, data in samples.items():
        for variant in _variants(data, rng):
            for suffix in ("", ".jinja"):  # the second name only matters to readers that detect by name
                source = BytesSource(variant, name=name + suffix)
                head = source.head(4096)
                for index, row in enumerate(formats.ROWS):
                    if suffix and not row.by_name:
                        continue
                    before = source.bytes_read
                    gate = row.gate(source, head)
                    assert source.bytes_read == before, f"the gate of {row.name} read the source"
                    if formats.load(index).detect(source, head):
                        detected[row.name] += 1
                        assert gate, f"gate of {row.name} says no to {name} ({len(variant)} bytes)"
                    checked += 1
    # Every reader's detector said yes somewhere: the check covered each gate.
    assert sorted(n for n, count in detected.items() if not count) == []
    assert checked > 10_000


# -- the engine behind the context ---------------------------------------------------------------------

class _RecordingEngine(scanner.Engine):
    """The scanner's engine, noting which operations readers asked of it (every call does the work)."""

    def __init__(self) -> None:
        self.calls: List[str] = []

    def scan(self, source, ctx):  # type: ignore[no-untyped-def]
        self.calls.append(f"scan {ctx.member}")
        super().scan(source, ctx)

    def scan_as(self, fmt, source, ctx):  # type: ignore[no-untyped-def]
        self.calls.append(f"scan_as {fmt} {ctx.member}")
        super().scan_as(fmt, source, ctx)

    def scan_pickle_at(self, source, ctx, offset, end=None, **options):  # type: ignore[no-untyped-def]
        self.calls.append(f"scan_pickle_at {ctx.member} {offset}")
        return super().scan_pickle_at(source, ctx, offset, end, **options)


def test_readers_descend_through_the_injected_engine() -> None:
    """The engine a context is given is the one its readers' descents use, in children too: a torch
    archive's data.pkl and its other members reach it, and the findings are the plain scan's."""
    import os as _os

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (_os.system, ("true",))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
        zf.writestr("archive/version", b"3\n")
        zf.writestr("archive/extra.pkl", pickle.dumps([1, 2], protocol=2))
    data = buf.getvalue()
    engine = _RecordingEngine()
    ctx = ScanContext("model.pt", Policy(), engine=engine)
    engine.scan(BytesSource(data, name="model.pt"), ctx)
    assert "scan_pickle_at archive/data.pkl 0" in engine.calls
    assert "scan_as pickle archive/extra.pkl" in engine.calls
    assert "scan archive/version" in engine.calls
    plain = scanner.scan_byte_source(BytesSource(data, name="model.pt"), "model.pt", scanner.ScanOptions())
    def found(findings):  # type: ignore[no-untyped-def]
        return sorted((f.rule_id, f.member) for f in findings)

    assert found(ctx.findings) == found(plain.findings)
    assert ("pickle-dangerous-global", "archive/data.pkl") in found(ctx.findings)


def test_depth_is_checked_by_the_context() -> None:
    ctx = ScanContext("x.zip", Policy(), Limits(max_depth=1))
    inner = ctx.enter("a")
    assert inner is not None and inner.depth == 1
    assert inner.enter("b") is None
    assert [(f.rule_id, f.member, f.details.get("limit")) for f in ctx.findings] == \
        [("unscanned-limit", "a:b", "max_depth")]


# ---- issue 21, last item: no dead code, no helpers only tests use, no names kept for old callers ------
#
# The package is what the CLI, the hook and the Action run. A name in it that only tests reach is a
# test helper in the wrong place (or dead code a test still pins); a re-export or an alias kept so an
# old import path or an old name keeps working hides both, since a caller never has to move. These
# checks read the source with ``ast`` (nothing is imported).

#: What the CLI, the hook and the Action run (hooks/ ships as safemodel_ci.hooks).
SHIPPED = [*sorted(PACKAGE.rglob("*.py")), *sorted((ROOT / "hooks").rglob("*.py")),
           ROOT / "action" / "run.py"]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _package_imports(tree: ast.Module) -> List[Tuple[str, int]]:
    """(name, line) of every name imported at run time from a safemodel_ci module (module level,
    ``TYPE_CHECKING`` blocks left out: those are for annotations only)."""
    found: List[Tuple[str, int]] = []

    def visit(body: List[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ImportFrom) and (node.level or
                                                     (node.module or "").startswith("safemodel_ci")):
                found.extend((a.asname or a.name, node.lineno) for a in node.names if a.name != "*")
            elif isinstance(node, ast.If) and not _is_type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(part)

    visit(tree.body)
    return found


def _names_used(tree: ast.Module) -> Set[str]:
    """Every name the module reads, string annotations (``"Optional[Config]"``) included."""
    used: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        annotations: List[ast.expr] = []
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotations.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            for part in ast.walk(annotation):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    try:
                        parsed = ast.parse(part.value, mode="eval")
                    except SyntaxError:
                        continue
                    used.update(n.id for n in ast.walk(parsed) if isinstance(n, ast.Name))
    return used


def test_no_module_re_exports_what_it_does_not_use() -> None:
    """A module imports a package name to use it, not to offer it under a second path. (A package's
    ``__init__`` may gather its modules' public names: that is its one public path.)"""
    bad = []
    for path in SHIPPED:
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        used = _names_used(tree)
        bad += [f"{path.relative_to(ROOT)}:{line}: {name}" for name, line in _package_imports(tree)
                if name not in used]
    assert not bad, "imported and never used (a re-export for an old import path?): " + ", ".join(bad)


#: Aliases allowed to stay, by (file, name): none (build_parser names the settings module's argparse
#: helpers directly). An entry here must say why a second name is needed.
KNOWN_ALIASES: frozenset = frozenset()


def _aliases(path: Path) -> List[Tuple[str, int, str]]:
    """``new = old`` where ``old`` is a function or class defined or imported in the same scope (the
    module, or a class body: ``adjust = judge``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
        known = {n.name for n in scope.body
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        if scope is tree:
            known |= {a.asname or a.name.split(".")[0] for n in tree.body
                      if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        for node in scope.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in known:
                found += [(t.id, node.lineno, node.value.id) for t in node.targets if isinstance(t, ast.Name)]
    return found


def test_no_second_names_for_functions_and_classes() -> None:
    """One name per function or class: an alias (``Policy.adjust = judge``, ``UsageError =
    InputError``) keeps a former name alive for callers that should have moved."""
    seen = {(str(path.relative_to(ROOT)), name): f"{path.relative_to(ROOT)}:{line}: {name} = {old}"
            for path in SHIPPED for name, line, old in _aliases(path)}
    assert sorted(v for k, v in seen.items() if k not in KNOWN_ALIASES) == []
    assert KNOWN_ALIASES <= set(seen), f"gone, drop from KNOWN_ALIASES: {sorted(KNOWN_ALIASES - set(seen))}"


def _words(paths: List[Path]) -> Dict[str, int]:
    import re

    counts: Dict[str, int] = {}
    for path in paths:
        for word in re.findall(r"\w+", path.read_text(encoding="utf-8")):
            counts[word] = counts.get(word, 0) + 1
    return counts


def test_every_top_level_name_is_used_by_what_ships_or_documented() -> None:
    """Every function, class and constant at the top level of a shipped module is named somewhere
    other than its own definition (and ``__all__``) in the shipped code, its data files, the packaging
    or the docs. A helper only tests use belongs in tests/. The count is of words, so a mention in a
    comment counts as a use: lenient on purpose (no false failure), it still catches the name that
    nothing but its definition carries. Decorated functions are registered by their decorator."""
    shipped = _words(SHIPPED + sorted(PACKAGE.rglob("*.json")))
    documented = _words([ROOT / "README.md", ROOT / "pyproject.toml", *sorted((ROOT / "docs").rglob("*.md")),
                         *sorted(ROOT.glob("*.yml")), *sorted(ROOT.glob("*.yaml"))])
    unused = []
    for path in SHIPPED:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        exported: Set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                    for t in node.targets):
                exported = set(ast.literal_eval(node.value))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.decorator_list:
                    continue
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            for name in names:
                if name.startswith("__") or documented.get(name):
                    continue
                if shipped.get(name, 0) - 1 - (name in exported) <= 0:
                    unused.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not unused, "named only by its definition (dead, or reached by tests only): " + ", ".join(unused)


#: Shims removed in issue 21 (names kept only so tests or old import paths kept working), by file and
#: scope (None: the module). The generic checks above do not see all of them: ``config`` or
#: ``fail_on`` are words every module uses.
REMOVED = (
    ("safemodel_ci/cli.py", None, {"config", "scan_options", "fail_on", "cache_dir", "result_cache",
                                   "show_progress", "command_line_excludes", "settings_of"}),
    ("safemodel_ci/policy.py", "Policy", {"adjust"}),
    ("action/run.py", None, {"UsageError"}),
    ("safemodel_ci/findings.py", "Location", {"is_repo"}),
    ("safemodel_ci/parallel.py", None, {"file_sha256"}),
    ("safemodel_ci/sources/hfcache.py", None, {"blob_digest_mismatch", "file_digest"}),
    ("safemodel_ci/formats/__init__.py", None, {"_REGISTRY"}),
    ("safemodel_ci/formats/zip/__init__.py", None,
     {"ZipReader", "torch_key", "find_directory", "__getattr__"}),
)


def _defined(body: List[ast.stmt]) -> Set[str]:
    names: Set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
    return names


@pytest.mark.parametrize("where,scope,names", REMOVED, ids=[f"{w}:{s or ''}" for w, s, _ in REMOVED])
def test_removed_shims_stay_removed(where: str, scope: "str | None", names: Set[str]) -> None:
    tree = ast.parse((ROOT / where).read_text(encoding="utf-8"))
    body = tree.body
    if scope is not None:
        body = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == scope)
    assert sorted(names & _defined(body)) == []
