"""TorchScript archives: real torch.jit.save files pass, code that touches files or native libraries
does not. Hostile archives are made by torch where it allows (torch.save / torch.from_file compile
in TorchScript) and otherwise by editing the code/*.py member of a real archive. Nothing is loaded.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
from container_support import Evil, find, rules, scan

from safemodel_ci.findings import Severity
from safemodel_ci.formats.torchscript import (
    classify_class,
    classify_op,
    jit_global_verdict,
    judge_code,
    parse_code,
    tables,
)

torch = pytest.importorskip("torch")


# ---- real archives ------------------------------------------------------------------------------

class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return torch.log_softmax(self.fc(x.flatten(1)), -1)


class Recurrent(torch.nn.Module):
    """LSTM plus loops, branches, lists, dicts, strings and asserts."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
        self.gru = torch.nn.GRU(16, 8)
        self.names: List[str] = ["a", "b"]
        self.table: Dict[str, int] = {"a": 1}
        self.th: float = 0.5

    def forward(self, x: torch.Tensor, n: int = 3, tag: str = "A,b") -> torch.Tensor:
        out, (h, c) = self.lstm(x)
        y, _ = self.gru(out)
        s = out.sum()
        for i in range(n):
            if s > self.th:
                s = s / 2
            else:
                s = s + float(i)
        values = torch.max(y, dim=-1).values
        parts = tag.lower().split(",")
        k = 0
        for key, val in self.table.items():
            if key in parts:
                k += val
        cols = [out[:, i] for i in range(out.size(1))]
        assert x.dim() == 3, "need 3d"
        return torch.stack(cols).mean() + values.sum() + k + len(self.names)


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


class Quantizable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.lstm = torch.nn.LSTM(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.fc(x))[0]


class VadStyle(torch.nn.Module):
    """Shaped like silero-vad's scripted model: STFT front end, conv encoder, LSTM cell with state
    kept on the module, a sample-rate check that raises, and an exported reset method."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Conv1d(65, 32, 3, padding=1), torch.nn.ReLU(),
                                           torch.nn.Conv1d(32, 16, 3, padding=1), torch.nn.ReLU())
        self.cell = torch.nn.LSTMCell(16, 16)
        self.head = torch.nn.Conv1d(16, 1, 1)
        self.register_buffer("window", torch.hann_window(128))
        self._h = torch.zeros(1, 16)
        self._c = torch.zeros(1, 16)
        self._last_sr = 0

    @torch.jit.export
    def reset_states(self, batch_size: int = 1) -> None:
        self._h = torch.zeros(batch_size, 16)
        self._c = torch.zeros(batch_size, 16)
        self._last_sr = 0

    def forward(self, x: torch.Tensor, sr: int) -> torch.Tensor:
        if sr not in [8000, 16000]:
            raise ValueError(f"Supported sampling rates: [8000, 16000] (or multiply of 16000), got {sr}")
        if sr != self._last_sr:
            self.reset_states(x.shape[0])
        spec = torch.stft(x, 128, hop_length=64, window=self.window, return_complex=True).abs()
        feats = self.encoder(spec).mean(-1)
        self._h, self._c = self.cell(feats, (self._h, self._c))
        self._last_sr = sr
        return torch.sigmoid(self.head(self._h.unsqueeze(-1))).squeeze(-1)


class SavesToDisk(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, "/tmp/safemodel-torchscript-canary.pt")
        return x * 2


class ReadsFiles(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaked = torch.from_file("/etc/hostname", False, 4, dtype=torch.uint8)
        return x + leaked.sum()


def _quantized() -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(Quantizable(), {torch.nn.Linear, torch.nn.LSTM},
                                                      dtype=torch.qint8)


BENIGN: Dict[str, Callable[[], torch.nn.Module]] = {
    "conv_script": lambda: torch.jit.script(ConvNet()),
    "conv_trace": lambda: torch.jit.trace(ConvNet().eval(), torch.randn(1, 1, 8, 8)),
    "recurrent_script": lambda: torch.jit.script(Recurrent()),
    "encoder_script": lambda: torch.jit.script(Encoder().eval()),
    "vad_style_script": lambda: torch.jit.script(VadStyle()),
    "quantized_script": lambda: torch.jit.script(_quantized()),
    "quantized_trace": lambda: torch.jit.trace(_quantized(), torch.randn(3, 2, 8)),
}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("torchscript")
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in {**BENIGN, "saves": lambda: torch.jit.script(SavesToDisk()),
                           "reads": lambda: torch.jit.script(ReadsFiles())}.items():
            paths[name] = out / f"{name}.pt"
            torch.jit.save(make(), str(paths[name]))
    return paths


def members(path: Path) -> List[Tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def rewrite(path: Path, out: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """The archive with each member replaced by ``edit(name, data)`` (names and order kept)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members(path):
            zf.writestr(name, edit(name, data))
    out.write_bytes(buf.getvalue())
    return out


def edit_code(path: Path, out: Path, old: str, new: str) -> Path:
    """Replace ``old`` by ``new`` in the first code file that holds it (it must be there)."""
    hits = []

    def edit(name: str, data: bytes) -> bytes:
        if re.search(r"/code/__torch__(/[\w/]+)?\.py$", name) and old.encode() in data and not hits:
            hits.append(name)
            return data.replace(old.encode(), new.encode(), 1)
        return data

    rewrite(path, out, edit)
    assert hits, f"{old!r} not found in the code of {path}"
    return out


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_real_exports_pass_with_a_notice(archives: Dict[str, Path], name: str) -> None:
    code, result = scan(archives[name])
    assert code == 0, [f.to_dict() for f in result.findings]
    assert "torchscript" in result.formats
    notice = find(result, "torch-script-code")
    assert len(notice) == 1 and notice[0].severity == Severity.LOW
    assert notice[0].details["op_count"] > 0 and "every op is a compute op" in notice[0].message
    # Its pickles were read as torch.jit reads them: the __torch__ classes and the list builders of
    # data.pkl / *.debug_pkl gave no finding.
    assert [r for r in rules(result) if r.startswith("pickle-")] == []
    assert any(fmt.endswith("data.pkl=pickle") for fmt in result.formats)


def test_quantized_archives_use_quantized_ops_and_classes(archives: Dict[str, Path]) -> None:
    _, result = scan(archives["quantized_script"])
    ops = find(result, "torch-script-code")[0].details["ops"]
    assert any(op.startswith("quantized::") for op in ops), ops
    assert any(op.startswith("torch.classes.quantized.") for op in ops), ops


def test_torch_save_in_script_is_critical(archives: Dict[str, Path]) -> None:
    code, result = scan(archives["saves"])
    assert code == 1
    hits = find(result, "torchscript-dangerous-op")
    assert [h.details["op"] for h in hits] == ["aten::save"]
    assert hits[0].severity == Severity.CRITICAL and "saves/code/__torch__" in hits[0].member
    assert "writes" in hits[0].message


def test_torch_from_file_in_script_is_critical(archives: Dict[str, Path]) -> None:
    code, result = scan(archives["reads"])
    assert code == 1
    assert [h.details["op"] for h in find(result, "torchscript-dangerous-op")] == ["aten::from_file"]


@pytest.mark.parametrize("new, rule_id, op", [
    ("ops.evilns.run(", "torchscript-unknown-op", "evilns::run"),
    ("torch.ops.evilns.run(", "torchscript-unknown-op", "evilns::run"),
    ("ops.aten.save(x0, \"/tmp/p\") + torch.relu(", "torchscript-dangerous-op", "aten::save"),
    ("ops.c10d.broadcast(", "torchscript-dangerous-op", "c10d::broadcast"),
    ("torch.autograd.from_file(\"/etc/passwd\") + torch.relu(", "torchscript-dangerous-op",
     "aten::from_file"),
    ("torch.not_an_op_of_torch(", "torchscript-unknown-op", "aten::not_an_op_of_torch"),
])
def test_hand_edited_ops(archives: Dict[str, Path], tmp_path: Path, new: str, rule_id: str, op: str) -> None:
    path = edit_code(archives["conv_script"], tmp_path / "edited.pt", "torch.relu(", new)
    code, result = scan(path)
    assert code == 1
    assert op in [f.details["op"] for f in find(result, rule_id)], [f.to_dict() for f in result.findings]


def test_op_taken_as_a_value_is_judged(archives: Dict[str, Path], tmp_path: Path) -> None:
    """TorchScript lets a builtin be bound to a name and called later: references count, not calls."""
    path = edit_code(archives["conv_script"], tmp_path / "alias.pt", "    x0 = torch.relu(",
                     "    writer = torch.save\n    x0 = torch.relu(")
    _, result = scan(path)
    assert "aten::save" in [f.details["op"] for f in find(result, "torchscript-dangerous-op")]


@pytest.mark.parametrize("lines, op", [
    ("t = torch\n    t.save(x0, \"/tmp/p\")", "aten::save"),
    ("o = ops\n    o.aten.from_file(\"/etc/passwd\")", "aten::from_file"),
    ("getattr(torch, \"save\")(x0, \"/tmp/p\")", "aten::save"),
    ("c = __torch__.torch.classes\n    h = c.evil.Shell()", "torch.classes.evil.Shell"),
])
def test_aliased_modules_and_getattr(archives: Dict[str, Path], tmp_path: Path, lines: str, op: str) -> None:
    """A local may hold torch, ops or a class namespace, and getattr with a constant is an attribute."""
    path = edit_code(archives["conv_script"], tmp_path / "alias.pt", "    x0 = torch.relu(",
                     f"    {lines}\n    x0 = torch.relu(")
    code, result = scan(path)
    assert code == 1
    assert op in [f.details["op"] for f in find(result, "torchscript-dangerous-op")]


def test_unknown_custom_class_and_library_loading(archives: Dict[str, Path], tmp_path: Path) -> None:
    path = edit_code(archives["conv_script"], tmp_path / "cls.pt", "    x0 = torch.relu(",
                     "    h = __torch__.torch.classes.evil.Shell()\n    ops.load_library(\"/tmp/x.so\")\n"
                     "    x0 = torch.relu(")
    code, result = scan(path)
    assert code == 1
    found = {f.details["op"]: f.severity for f in find(result, "torchscript-dangerous-op")}
    assert found == {"torch.classes.evil.Shell": Severity.CRITICAL, "ops::load_library": Severity.CRITICAL}


def test_unparsable_code_is_not_clean(archives: Dict[str, Path], tmp_path: Path) -> None:
    path = edit_code(archives["conv_script"], tmp_path / "broken.pt", "torch.relu(", "torch.relu((")
    code, result = scan(path)
    assert code == 2 and not result.complete
    assert any(f.rule_id == "unscanned-parse-error" and "/code/__torch__" in f.member
               for f in result.findings)


def test_coding_cookie_does_not_change_what_is_judged(archives: Dict[str, Path], tmp_path: Path) -> None:
    """torch reads code as UTF-8 whatever a comment says; a utf-7 cookie must not hide the op."""
    path = edit_code(archives["conv_script"], tmp_path / "cookie.pt", "class ConvNet",
                     "# -*- coding: utf-7 -*-\nclass ConvNet")
    path = edit_code(path, tmp_path / "cookie2.pt", "torch.relu(", "ops.aten.save(x0, \"p\") + torch.relu(")
    _, result = scan(path)
    assert "aten::save" in [f.details["op"] for f in find(result, "torchscript-dangerous-op")]


def test_python_pickle_globals_are_still_judged_in_a_torchscript_root(archives: Dict[str, Path],
                                                                      tmp_path: Path) -> None:
    evil = pickle.dumps({"run": Evil()}, protocol=2)
    path = rewrite(archives["conv_script"], tmp_path / "evil.pt",
                   lambda name, data: evil if name.endswith("/constants.pkl") else data)
    code, result = scan(path)
    assert code == 1
    assert any(f.rule_id == "pickle-dangerous-global" and f.member.endswith("constants.pkl")
               for f in result.findings)


def test_torch_classes_global_of_unknown_namespace_in_data_pkl(archives: Dict[str, Path],
                                                               tmp_path: Path) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/data.pkl"):
            edited = re.sub(rb"c__torch__[\w.]*\nConvNet\n", b"c__torch__.torch.classes.evil\nConvNet\n",
                            data, count=1)
            assert edited != data
            return edited
        return data

    path = rewrite(archives["conv_script"], tmp_path / "cls.pt", edit)
    code, result = scan(path)
    assert code == 1
    hits = [f for f in result.findings if f.rule_id == "pickle-dangerous-global"]
    assert hits and "torch.classes.evil.ConvNet" in hits[0].message


def test_jit_resolution_only_inside_torchscript_roots(archives: Dict[str, Path], tmp_path: Path) -> None:
    """Without constants.pkl torch.load reads data.pkl with Python's pickle: __torch__ is unknown there."""
    kept = [(n, d) for n, d in members(archives["conv_script"]) if not n.endswith("/constants.pkl")
            and "/code/" not in n]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in kept:
            zf.writestr(name, data)
    path = tmp_path / "plain.pt"
    path.write_bytes(buf.getvalue())
    code, result = scan(path)
    assert code == 1
    unknown = {f.details.get("global") for f in find(result, "pickle-unknown-global")}
    assert "__torch__.torch.nn.modules.conv.Conv2d" in unknown
    assert any(f.details.get("global") == "torch.jit._pickle.build_intlist"
               for f in find(result, "pickle-dangerous-global"))


# ---- the tables and the resolution, directly ----------------------------------------------------

def test_tables_are_generated_from_the_registry() -> None:
    t = tables()
    assert len(t.ops["aten"]) > 1000 and "conv2d" in t.ops["aten"] and "save" not in t.ops["aten"]
    assert "RaiseException" in t.ops["prim"] and "linear_dynamic" in t.ops["quantized"]
    # The committed table is the registry of the torch that generated it: every allowlisted aten op
    # of that version is registered here too when the versions match.
    if t.torch_version == torch.__version__:
        registered = {s.name for s in torch._C._jit_get_all_schemas()}
        assert all(f"aten::{op}" in registered for op in t.ops["aten"])
        assert all(op in registered for op in t.dangerous_ops)


def test_verdicts() -> None:
    assert classify_op("aten", "matmul").severity is None
    assert classify_op("aten", "save").severity == Severity.CRITICAL
    assert classify_op("prim", "rpc_async").severity == Severity.CRITICAL
    assert classify_op("torchvision", "nms").severity == Severity.HIGH
    assert classify_class("quantized.LinearPackedParamsBase").severity is None
    assert classify_class("c10d.ProcessGroup").severity == Severity.CRITICAL
    assert classify_class("profiling.SourceRef").severity == Severity.HIGH
    assert classify_class("nowhere.Thing").severity == Severity.CRITICAL
    assert jit_global_verdict("torch.jit._pickle", "build_intlist").rule_id is None
    assert jit_global_verdict("torch.jit._pickle", "something_else") is None
    assert jit_global_verdict("__torch__.foo", "Bar").rule_id is None
    assert jit_global_verdict("os", "system") is None


def test_method_calls_and_unknown_builtins() -> None:
    code = (b"def f(x: Tensor, p: str) -> Tensor:\n"
            b"  y = (x).relu()\n"
            b"  z = (x).frobnicate()\n"
            b"  w = eval(p)\n"
            b"  return torch.add(y, z)\n")
    parsed = parse_code(code, "a/code/__torch__.py")
    judge_code([parsed])
    problems = {u.what: u.verdict.severity for u in parsed.problems}
    assert problems == {".frobnicate": Severity.HIGH, "eval()": Severity.HIGH}
    assert parsed.ops == {"aten::add": 1}


def test_silero_vad_passes() -> None:
    """silero-vad ships a TorchScript model on PyPI; it passes where the package is installed."""
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("silero-vad is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.jit"
    code, result = scan(path)
    assert code == 0, [f.to_dict() for f in result.findings]
    assert find(result, "torch-script-code")[0].details["op_count"] > 20


class Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + 1


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lite") / "tiny.ptl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the lite interpreter is deprecated, its files still load
        torch.jit.script(Tiny())._save_for_lite_interpreter(str(path))
    return path


def test_mobile_bytecode_passes(lite: Path) -> None:
    code, result = scan(lite)
    assert code == 0, [f.to_dict() for f in result.findings]
    assert "aten::relu" in find(result, "torch-script-code")[0].details["ops"]


@pytest.mark.parametrize("new, rule_id", [(b"aten::save", "torchscript-dangerous-op"),
                                          (b"evil::relu", "torchscript-unknown-op")])
def test_mobile_bytecode_operators_are_judged(lite: Path, tmp_path: Path, new: bytes, rule_id: str) -> None:
    """The lite interpreter runs the operator table of bytecode.pkl whatever code/ says."""
    def edit(name: str, data: bytes) -> bytes:
        # Same length, so the pickle's length prefix still holds: only the operator table changes.
        return data.replace(b"aten::relu", new) if name.endswith("/bytecode.pkl") else data

    code, result = scan(rewrite(lite, tmp_path / "edited.ptl", edit))
    assert code == 1
    hits = find(result, rule_id)
    assert [h.details["op"] for h in hits] == [new.decode()] and hits[0].member.endswith("bytecode.pkl")


# ---- torch's record lookup ignores ASCII case -----------------------------------------------------


def _rename(path: Path, out: Path, rename: Callable[[str], str]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members(path):
            zf.writestr(rename(name), data)
    out.write_bytes(buf.getvalue())
    return out


def _upper_tail(name: str) -> str:
    root, _, rest = name.partition("/")
    return f"{root}/{rest.upper()}"


def test_torch_finds_records_whatever_their_case(archives: Dict[str, Path], tmp_path: Path) -> None:
    """miniz's sorted lookup compares names with MZ_TOLOWER: torch's reader (only its directory is
    read here, nothing is unpickled or compiled) finds code/ and constants.pkl spelled in capitals."""
    path = _rename(archives["conv_script"], tmp_path / "upper.pt", _upper_tail)
    reader = torch._C.PyTorchFileReader(str(path))
    records = reader.get_all_records()
    assert "CODE/__TORCH__/TORCH/NN/MODULES/CONV.PY" in records and "constants.pkl" not in records
    assert reader.has_record("code/__torch__/torch/nn/modules/conv.py") and reader.has_record("constants.pkl")
    # The benign export stays benign: still TorchScript, its data.pkl resolved as torch.jit does.
    code, result = scan(path)
    assert code == 0, [f.to_dict() for f in result.findings]
    assert find(result, "torch-script-code")[0].details["op_count"] > 0


@pytest.mark.parametrize("rename", [lambda n: n.replace("/code/", "/CODE/"), _upper_tail],
                         ids=["code-folder", "every-member"])
def test_code_in_capitals_is_judged(archives: Dict[str, Path], tmp_path: Path,
                                    rename: Callable[[str], str]) -> None:
    """saves/CODE/__torch__.py is the code torch.jit.load compiles: before the fix it was not judged
    (exit 0 with 'no code/*.py files')."""
    code, result = scan(_rename(archives["saves"], tmp_path / "upper.pt", rename))
    assert code == 1
    assert [h.details["op"] for h in find(result, "torchscript-dangerous-op")] == ["aten::save"]


def test_names_equal_but_for_case_are_duplicates(archives: Dict[str, Path], tmp_path: Path) -> None:
    saves = dict(members(archives["saves"]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members(archives["conv_script"]):
            zf.writestr(name, data)
        hostile = next(d for n, d in saves.items() if n.endswith(".py"))
        zf.writestr("conv_script/CODE/__torch__/torch/nn/modules/conv.py", hostile)
    path = tmp_path / "twins.pt"
    path.write_bytes(buf.getvalue())
    code, result = scan(path)
    assert code == 1
    dup = [f for f in find(result, "zip-duplicate-member") if "case-insensitive" in f.message]
    assert dup and dup[0].details["count"] == 2
    assert "aten::save" in [h.details["op"] for h in find(result, "torchscript-dangerous-op")]


# ---- ops that build tensors torch does not check; names only the text shows ---------------------


class SparseBuilder(torch.nn.Module):
    def forward(self, i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Invariants are unchecked by default: out-of-range indices make to_dense write out of bounds.
        return torch.sparse_coo_tensor(i, v, [4]).to_dense()


def test_unchecked_sparse_constructor_is_not_compute(tmp_path: Path) -> None:
    path = tmp_path / "sparse.pt"
    torch.jit.save(torch.jit.script(SparseBuilder()), str(path))
    code, result = scan(path)
    assert code == 1
    hits = find(result, "torchscript-unknown-op")
    assert [h.details["op"] for h in hits] == ["aten::sparse_coo_tensor"]
    assert "does not check" in hits[0].message
    assert classify_op("aten", "_sparse_coo_tensor_unsafe").severity == Severity.HIGH
    assert classify_op("aten", "_nested_view_from_buffer").severity == Severity.HIGH


def test_a_declared_method_does_not_hide_a_non_compute_tensor_method() -> None:
    """x.set_(...) on a tensor is aten::set_ even when some class of the archive declares set_."""
    code = (b"class C(Module):\n"
            b"  def set_(self: __torch__.C, s: Tensor) -> Tensor:\n"
            b"    return s\n"
            b"def f(x: Tensor, s: Tensor) -> Tensor:\n"
            b"  return (x).set_(s)\n")
    parsed = parse_code(code, "a/code/__torch__.py")
    judge_code([parsed])
    assert {u.what: u.verdict.severity for u in parsed.problems} == {"aten::set_": Severity.HIGH}


@pytest.mark.parametrize("line", [
    "  y = annotate(\"torch.classes.evilns.Runner\", uninitialized(\"torch.classes.evilns.Runner\"))\n",
    "  # type: (torch.classes.evilns.Runner) -> Tensor\n",
])
def test_custom_classes_named_in_strings_and_type_comments(line: str) -> None:
    """ScriptTypeParser resolves "torch.classes.ns.Cls" strings and # type: comments; ast shows neither."""
    code = ("def f(x: Tensor) -> Tensor:\n" + line + "  return x\n").encode()
    parsed = parse_code(code, "a/code/__torch__.py")
    judge_code([parsed])
    assert {u.what: u.verdict.severity for u in parsed.problems} == {
        "torch.classes.evilns.Runner": Severity.CRITICAL}


class ExportsSave(torch.nn.Module):
    @torch.jit.export
    def save(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.save(x)


def test_a_method_named_like_a_file_op_is_the_archives_own(tmp_path: Path) -> None:
    """aten::save takes no self, so self.save(x) can only be the module's method: no finding."""
    path = tmp_path / "exports_save.pt"
    torch.jit.script(ExportsSave())._c.save(str(path))  # torch.jit.save would call the module's save()
    code, result = scan(path)
    assert code == 0, [f.to_dict() for f in result.findings]
