"""Flatbuffer TorchScript modules (PTMF): torch.jit.load and the lite interpreter read them whatever
the file is called, so they are judged like zip archives: the jit_sources code, the operator table of
every function, the classes of the module's objects. Files are made by torch's own flatbuffer
serializer; hostile ones by scripting torch.save / torch.from_file or by editing an operator name.
Nothing is loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Dict

import pytest
from container_support import find, scan
from test_torchscript import BENIGN, ReadsFiles, SavesToDisk, Tiny

from safemodel_ci.findings import Severity

torch = pytest.importorskip("torch")

#: The benign exports torch's flatbuffer serializer takes (it has no packed-params support).
FLATBUFFER_BENIGN = ("conv_script", "conv_trace", "recurrent_script", "encoder_script", "vad_style_script")


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("flatbuffer")
    makers: Dict[str, Callable[[], torch.nn.Module]] = {n: BENIGN[n] for n in FLATBUFFER_BENIGN}
    makers["saves"] = lambda: torch.jit.script(SavesToDisk())
    makers["reads"] = lambda: torch.jit.script(ReadsFiles())
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in makers.items():
            paths[name] = out / f"{name}.ff"
            torch.jit.save_jit_module_to_flatbuffer(make(), str(paths[name]))
        paths["lite"] = out / "lite.ptl"
        torch.jit.script(Tiny())._save_for_lite_interpreter(str(paths["lite"]), _use_flatbuffer=True)
    for path in paths.values():
        assert path.read_bytes()[4:8] == b"PTMF"
    return paths


@pytest.mark.parametrize("name", [*FLATBUFFER_BENIGN, "lite"])
def test_benign_flatbuffer_modules_pass(modules: Dict[str, Path], name: str) -> None:
    code, result = scan(modules[name])
    assert code == 0, [f.to_dict() for f in result.findings]
    notice = find(result, "torch-script-code")
    assert len(notice) == 1 and notice[0].severity == Severity.LOW
    assert notice[0].details["op_count"] > 0 and "every op is a compute op" in notice[0].message


def test_flatbuffer_named_pt_is_what_torch_jit_load_reads(modules: Dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(modules["conv_script"].read_bytes())
    code, result = scan(path)
    assert code == 0, [f.to_dict() for f in result.findings]


@pytest.mark.parametrize("name, op", [("saves", "aten::save"), ("reads", "aten::from_file")])
def test_file_ops_in_code_and_operator_table_are_critical(modules: Dict[str, Path], name: str,
                                                         op: str) -> None:
    """Before: 'matches no model format', exit 0, though torch.jit.load compiles and runs it."""
    code, result = scan(modules[name])
    assert code == 1
    hits = find(result, "torchscript-dangerous-op")
    assert {h.member.split(":")[-1].split("/")[0] for h in hits} == {"jit_sources", "operators"}
    assert {h.details["op"] for h in hits} == {op}


def test_operator_table_alone_is_judged(modules: Dict[str, Path], tmp_path: Path) -> None:
    """The lite interpreter runs the operator table, whatever the code says."""
    data = modules["lite"].read_bytes()
    assert data.count(b"aten::relu") == 1
    path = tmp_path / "edited.ptl"
    path.write_bytes(data.replace(b"aten::relu", b"evil::relu"))
    code, result = scan(path)
    assert code == 1
    assert [h.details["op"] for h in find(result, "torchscript-unknown-op")] == ["evil::relu"]


@pytest.mark.parametrize("cut", [12, 200, -40])
def test_broken_flatbuffer_is_unscanned_not_clean(modules: Dict[str, Path], tmp_path: Path, cut: int) -> None:
    data = modules["saves"].read_bytes()
    path = tmp_path / "cut.ff"
    path.write_bytes(data[:cut])
    code, result = scan(path)
    assert code != 0
    assert any(f.unscanned or f.severity >= Severity.HIGH for f in result.findings)
