"""torch.export archives (.pt2): torch.export.load resolves every node target by attribute lookup on
torch/_operator/math, and ExportedProgram.module() exec()s the guards_code strings. Benign archives
are made by torch.export.save; hostile ones by editing the serialized program JSON of a real one.
Nothing is loaded.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Callable, Dict

import pytest
from container_support import find, scan

from safemodel_ci.findings import Severity
from safemodel_ci.formats.torch_export import judge_guard, judge_target

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = torch.nn.Linear(4, 4)
        self.register_buffer("b", torch.ones(4))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.l(x)) + self.b
        return torch.cat([z, y], 0)[: x.shape[0] + 1]


class Branchy(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda x: x + 1, lambda x: x - 1, (x,))


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    from torch.export import Dim

    out = tmp_path_factory.mktemp("pt2")
    paths = {"net": out / "net.pt2", "branchy": out / "branchy.pt2"}
    ep = torch.export.export(Net(), (torch.randn(4, 4), torch.randn(3, 4)),
                             dynamic_shapes={"x": {0: Dim("b", min=4, max=1024)}, "y": {0: Dim("c", min=2)}})
    torch.export.save(ep, str(paths["net"]))
    torch.export.save(torch.export.export(Branchy(), (torch.randn(3),)), str(paths["branchy"]))
    return paths


def _edit_program(src: Path, out: Path, edit: Callable[[dict], None]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/models/model.json"):
                program = json.loads(data)
                edit(program)
                data = json.dumps(program).encode()
            zout.writestr(info.filename, data)
    out.write_bytes(buf.getvalue())
    return out


@pytest.mark.parametrize("name", ["net", "branchy"])
def test_real_exports_pass(archives: Dict[str, Path], name: str) -> None:
    code, result = scan(archives[name])
    assert code == 0, [f.to_dict() for f in result.findings]
    assert "torch-export" in result.formats


def test_guard_code_is_exec_ed_and_judged(archives: Dict[str, Path], tmp_path: Path) -> None:
    """Before: exit 0, though ep.module() exec()s the guard."""
    def edit(program: dict) -> None:
        program["guards_code"] = ["L['x'].size()[0] <= 1024", "__import__('os').system('id') or True"]

    code, result = scan(_edit_program(archives["net"], tmp_path / "guard.pt2", edit))
    assert code == 1
    hits = find(result, "torch-export-guard-code")
    assert [h.details["index"] for h in hits] == [1] and hits[0].severity == Severity.CRITICAL


@pytest.mark.parametrize("target, rule_id", [
    ("torch.hub.load", "torch-export-dangerous-target"),
    ("torch.ops.aten.save.default", "torch-export-dangerous-target"),
    ("_operator.attrgetter", "torch-export-dangerous-target"),
    ("torch.ops.evilns.run.default", "torch-export-unknown-target"),
])
def test_node_targets_are_judged(archives: Dict[str, Path], tmp_path: Path, target: str,
                                 rule_id: str) -> None:
    def edit(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = target

    code, result = scan(_edit_program(archives["net"], tmp_path / "target.pt2", edit))
    assert code == 1
    assert [h.details["target"] for h in find(result, rule_id)] == [target]


def test_verdicts() -> None:
    assert judge_target("torch.ops.aten.linear.default") is None
    assert judge_target("torch.ops.higher_order.cond") is None
    assert judge_target("_operator.getitem") is None and judge_target("torch.sym_max") is None
    assert judge_target("torch.load")[0] == Severity.CRITICAL  # type: ignore[index]
    assert judge_guard("2 <= L['x'].size()[0]") is None
    assert judge_guard("Eq(Mod(L['x'].size()[0], 2), 0)") is None
    assert judge_guard("L['x'].__class__") is not None
    assert judge_guard("(lambda: 0)()") is not None
    assert judge_guard("open('/etc/passwd')") is not None


def test_symbolic_expressions_are_sympified_at_load(archives: Dict[str, Path], tmp_path: Path) -> None:
    """expr_str values are read with sympy.sympify (an eval) by torch.export.load itself."""
    def edit(program: dict) -> None:
        values = program["graph_module"]["graph"]["sym_int_values"]
        first = next(iter(values.values()))
        assert "Symbol(" in first["as_expr"]["expr_str"]  # the real archive has symbolic sizes
        first["as_expr"]["expr_str"] = "Add(Symbol('s77'), __import__('os').system('id'))"

    code, result = scan(_edit_program(archives["net"], tmp_path / "sym.pt2", edit))
    assert code == 1
    hits = find(result, "torch-export-guard-code")
    assert len(hits) == 1 and "sympify" in hits[0].message


def test_sym_expr_verdicts() -> None:
    from safemodel_ci.formats.torch_export import judge_sym_expr

    assert judge_sym_expr("Add(Symbol('s77', positive=True, integer=True), Integer(1))") is None
    assert judge_sym_expr("FloorDiv(Symbol('s0', integer=True), Integer(2))") is None
    assert judge_sym_expr("s77") is None
    assert judge_sym_expr("Poly('x')") is not None  # Poly would sympify its string again
    assert judge_sym_expr("Symbol('a(b)')") is not None
    assert judge_sym_expr("Symbol.__class__") is not None


def test_aotinductor_shared_library_is_reported(archives: Dict[str, Path], tmp_path: Path) -> None:
    """A .pt2 carrying data/aotinductor/<model>/*.so (built by hand: no compiler here): the loader
    dlopen()s it. Before: the ELF member matched no format, exit 0."""
    path = tmp_path / "aoti.pt2"
    buf = io.BytesIO()
    with zipfile.ZipFile(archives["net"]) as zin, zipfile.ZipFile(buf, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        zout.writestr("net/data/aotinductor/model/model.so", b"\\x7fELF\\x02\\x01\\x01" + b"\\x00" * 57)
        zout.writestr("net/data/aotinductor/model/model.wrapper.cpp", b"// generated\\n")
    path.write_bytes(buf.getvalue())
    code, result = scan(path)
    assert code == 1
    hit = find(result, "torch-export-native-code")
    assert len(hit) == 1 and hit[0].details["count"] == 2
