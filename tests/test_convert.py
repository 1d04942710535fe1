"""``safemodel convert``: real torch checkpoints become safetensors that load back equal; hostile ones
are refused without being loaded; nothing the checkpoint names is imported or called."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from fixture_factory import _SystemPayload, canary_command

from safemodel_ci import convert as conv
from safemodel_ci.cli import main

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402


def _state_dict() -> Dict[str, "torch.Tensor"]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3))
    sd = dict(model.state_dict())
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd.update({
        "f16": torch.randn(3, 2).half(), "bf16": torch.randn(2, 3).bfloat16(), "f64": torch.randn(4).double(),
        "i64": torch.arange(5), "i32": torch.arange(5, dtype=torch.int32),
        "i16": torch.arange(-3, 3, dtype=torch.int16), "i8": torch.arange(-4, 4, dtype=torch.int8),
        "u8": torch.arange(7, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
        "transposed": base.t(),                    # non-contiguous view
        "sliced": base[1:3, 2:5],                  # view with a storage offset, non-contiguous
        "row": base[2],                            # contiguous view with an offset
        "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.5),
    })
    sd["tied"] = sd["0.weight"]                    # the same tensor under two names
    return sd


def _assert_same(loaded: Dict[str, "torch.Tensor"], expected: Dict[str, "torch.Tensor"],
                 aliases: Dict[str, str]) -> None:
    for name, tensor in expected.items():
        got = loaded[aliases.get(name, name)]
        assert got.dtype == tensor.dtype, name
        assert tuple(got.shape) == tuple(tensor.shape), name
        assert torch.equal(got, tensor.contiguous()), name


def _metadata(path: Path) -> Dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_state_dict_converts_and_loads_back_equal(tmp_path: Path, legacy: bool) -> None:
    sd = _state_dict()
    src = tmp_path / "pytorch_model.bin"
    torch.save(sd, src, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    target = out / "model.safetensors"
    meta = _metadata(target)
    assert meta == {"format": "pt", "tied": "0.weight"}
    loaded = safetensors_torch.load_file(str(target))
    assert "tied" not in loaded and len(loaded) == len(sd) - 1
    _assert_same(loaded, sd, {"tied": "0.weight"})


def test_training_checkpoint_needs_key_and_reports_what_it_leaves_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    ckpt = {"epoch": 7, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict()}
    src = tmp_path / "last.ckpt"
    torch.save(ckpt, src)
    out = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out)]) == 2
    assert "try --key state_dict" in capsys.readouterr().out
    assert main(["convert", str(src), "-o", str(out), "--key", "state_dict"]) == 0
    loaded = safetensors_torch.load_file(str(out / "last.safetensors"))
    _assert_same(loaded, dict(model.state_dict()), {})
    # A dict holding tensors and other values: the tensors are written, the rest listed.
    mixed = dict(model.state_dict(), step=3, note="x")
    torch.save(mixed, tmp_path / "mixed.pt")
    assert main(["convert", str(tmp_path / "mixed.pt"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "left out: step: int, not a tensor" in text and "left out: note: str, not a tensor" in text
    assert set(safetensors_torch.load_file(str(out / "mixed.safetensors"))) == {"weight", "bias"}


def test_sharded_pytorch_model_bin_with_index(tmp_path: Path) -> None:
    sd = _state_dict()
    names = sorted(set(sd) - {"tied", "0.weight"})
    half = len(names) // 2
    # The alias stays in the shard of the tensor it aliases, as save_pretrained keeps them.
    shards = {"pytorch_model-00001-of-00002.bin": names[:half],
              "pytorch_model-00002-of-00002.bin": names[half:] + ["0.weight", "tied"]}
    weight_map = {}
    for filename, keys in shards.items():
        torch.save({k: sd[k] for k in keys}, tmp_path / filename)
        weight_map.update({k: filename for k in keys})
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    out = tmp_path / "out"
    assert main(["convert", str(index), "-o", str(out)]) == 0
    produced = sorted(p.name for p in out.iterdir())
    assert produced == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                        "model.safetensors.index.json"]
    new_index = json.loads((out / "model.safetensors.index.json").read_text())
    loaded: Dict[str, "torch.Tensor"] = {}
    for filename in set(new_index["weight_map"].values()):
        loaded.update(safetensors_torch.load_file(str(out / filename)))
    assert set(new_index["weight_map"]) == set(loaded)
    assert new_index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in loaded.values())
    _assert_same(loaded, sd, {"tied": "0.weight"})


def test_max_shard_size_splits_as_transformers_names_shards(tmp_path: Path) -> None:
    sd = {f"layer{i}.weight": torch.randn(64, 64) for i in range(5)}  # 16 KiB each
    torch.save(sd, tmp_path / "pytorch_model.bin")
    out = tmp_path / "out"
    src = str(tmp_path / "pytorch_model.bin")
    assert main(["convert", src, "-o", str(out), "--max-shard-size", "40KB"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert index["metadata"]["total_size"] == 5 * 64 * 64 * 4
    loaded: Dict[str, "torch.Tensor"] = {}
    for f in files:
        loaded.update(safetensors_torch.load_file(str(out / f)))
    _assert_same(loaded, sd, {})


def test_malicious_checkpoint_is_refused_without_being_loaded(tmp_path: Path) -> None:
    """The whole convert command runs under an audit hook: the payload is never run, nothing the
    file names is imported, and nothing is written."""
    canary = tmp_path / "CANARY"
    model = torch.nn.Linear(2, 2)
    src = tmp_path / "evil.pt"
    torch.save({"weight": model.weight.detach(), "hook": _SystemPayload(canary_command(canary))}, src)
    out = tmp_path / "out"
    proc = _run_watched(["convert", str(src), "-o", str(out)], tmp_path)
    assert proc["code"] == 1, proc
    assert "not converted" in proc["stdout"] and "pickle-dangerous-global" in proc["stdout"]
    assert proc["events"] == []
    assert not canary.exists() and not out.exists()
    # Lowering --fail-on does not make the reader call anything either: the callee stays a record.
    proc = _run_watched(["convert", str(src), "-o", str(out), "--fail-on", "critical"], tmp_path)
    assert proc["code"] == 1 and not canary.exists()


def test_unknown_classes_are_recorded_never_imported(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint naming a class we do not know (HIGH) converts with --fail-on critical, and the
    class is reported as left out: its module is never imported (it does not even exist)."""
    mods = tmp_path / "mods"  # the class exists only while the test writes the checkpoint
    mods.mkdir()
    (mods / "no_such_module_anywhere.py").write_text("class Config:\n    pass\n")
    sys.path.insert(0, str(mods))
    try:
        import no_such_module_anywhere  # type: ignore[import-not-found]

        sd = {"w": torch.ones(2)}
        src = tmp_path / "with_config.pt"
        torch.save({"state_dict": sd, "config": no_such_module_anywhere.Config()}, src)
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("no_such_module_anywhere", None)
    out = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out)]) == 1
    assert "pickle-unknown-global" in capsys.readouterr().out
    proc = _run_watched(["convert", str(src), "-o", str(out), "--fail-on", "critical", "--key", "state_dict"],
                        tmp_path)
    assert proc["code"] == 0, proc
    assert proc["events"] == []
    assert torch.equal(safetensors_torch.load_file(str(out / "with_config.safetensors"))["w"], sd["w"])


@pytest.mark.parametrize("text,expected", [("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 << 30),
                                           ("1000", 1000), ("1.5KB", 1500)])
def test_parse_size(text: str, expected: int) -> None:
    assert conv.parse_size(text) == expected


def test_strict_reader_refuses_opcodes_checkpoints_do_not_use() -> None:
    import io

    with pytest.raises(conv.ConvertError, match="not used by tensor checkpoints"):
        conv.TensorPickleReader(io.BytesIO(b"(cos\nsystem\nS'x'\no."), lambda p: p).load()  # INST/OBJ
    with pytest.raises(conv.ConvertError, match="truncated"):
        conv.TensorPickleReader(io.BytesIO(b"\x80\x02]q\x00"), lambda p: p).load()


WATCHED = r"""
import contextlib, io, json, sys
from safemodel_ci.cli import main

argv = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()):
    main(argv)                   # warm-up: whatever the command imports lazily is imported here
FORBIDDEN = ("exec", "compile", "import", "subprocess.Popen", "os.system", "os.exec", "os.spawn",
             "os.posix_spawn", "socket.", "ctypes.", "pty.spawn")
events = []


def hook(event, args):
    if event.startswith(FORBIDDEN):
        events.append([event, repr(args)[:200]])


sys.addaudithook(hook)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(argv)
seen = list(events)
sys.stderr.write("\n" + json.dumps({"code": code, "stdout": out.getvalue(), "events": seen}))
"""


def _run_watched(argv: List[str], tmp_path: Path) -> Dict[str, object]:
    """Run ``safemodel`` twice in a child, the second time under an audit hook (which cannot be
    removed, so it must not watch pytest); the canary shows whether either run executed anything."""
    proc = subprocess.run([sys.executable, "-c", WATCHED, json.dumps(argv)], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_blocked_checkpoint_gets_the_convert_command_where_users_look(tmp_path: Path) -> None:
    """The hook's "What to do" and the Action's job summary show the command for a checkpoint
    blocked by an object the converter never makes; not for one whose loading runs code."""
    from safemodel_ci.hooks.pre_commit import render
    from safemodel_ci.findings import ScanReport
    from safemodel_ci.output.job_summary import render_job_summary
    from safemodel_ci.scanner import ScanOptions, scan_file

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "trainer_config.py").write_text("class Config:\n    pass\n")
    sys.path.insert(0, str(mods))
    try:
        import trainer_config  # type: ignore[import-not-found]

        torch.save({"state_dict": {"w": torch.ones(2)}, "config": trainer_config.Config()}, tmp_path / "a.pt")
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("trainer_config", None)
    torch.save({"w": torch.ones(2), "hook": _SystemPayload("true")}, tmp_path / "evil.pt")
    results = [scan_file(str(tmp_path / n), ScanOptions()) for n in ("a.pt", "evil.pt")]
    report = ScanReport(results)
    expected = f"safemodel convert --fail-on critical {tmp_path / 'a.pt'}"
    for text in (render(report), render_job_summary(report)):
        assert expected in text
        assert "convert --fail-on critical " + str(tmp_path / "evil.pt") not in text
        assert "convert " + str(tmp_path / "evil.pt") not in text


# ---- the converted tensors are the ones torch.load would return ------------------------------------


def _rezip(src: Path, out: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            name, data = edit(info.filename, zin.read(info))
            zout.writestr(name, data)
    return out


def test_byteorder_record_is_found_as_torch_finds_it(tmp_path: Path) -> None:
    """torch's has_record("byteorder") ignores case: a BYTEORDER saying "big" makes torch.load swap
    every storage. The converter read only the exact name and wrote the unswapped bytes."""
    src = tmp_path / "sd.pt"
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, src)
    path = _rezip(src, tmp_path / "big.pt", lambda n, d: (n[:-len("byteorder")] + "BYTEORDER", b"big")
                  if n.endswith("/byteorder") else (n, d))
    reader = torch._C.PyTorchFileReader(str(path))  # the directory only: nothing is unpickled
    assert reader.has_record("byteorder") and bytes(reader.get_record("byteorder")) == b"big"
    with pytest.raises(conv.ConvertError, match="big"):
        conv.read_checkpoint(str(path))


def test_records_equal_but_for_case_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(4)}, src)
    extra = tmp_path / "twins.pt"
    _rezip(src, extra, lambda n, d: (n, d))
    import zipfile

    with zipfile.ZipFile(extra, "a") as zf:
        name = next(n for n in zf.namelist() if n.endswith("/data/0"))
        zf.writestr(name.replace("/data/", "/DATA/"), b"\x00" * 16)
    with pytest.raises(conv.ConvertError, match="case-insensitive"):
        conv.read_checkpoint(str(extra))


def test_one_storage_recorded_with_two_types_is_refused(tmp_path: Path) -> None:
    """torch.load builds storage "0" from its first record and gives it to the second too (as float32,
    4 elements); reading the second record as float16 x 8 would write tensors torch never returns."""
    import io as _io
    import pickle
    import zipfile
    from collections import OrderedDict

    class Storage:
        def __init__(self, cls: type, numel: int) -> None:
            self.cls, self.numel = cls, numel

    class Tensor:
        def __init__(self, storage: Storage, shape: int) -> None:
            self.storage, self.shape = storage, shape

        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (torch._utils._rebuild_tensor_v2,
                    (self.storage, 0, (self.shape,), (1,), False, OrderedDict()))

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):  # type: ignore[no-untyped-def]
            return ("storage", obj.cls, "0", "cpu", obj.numel) if isinstance(obj, Storage) else None

    buf = _io.BytesIO()
    Writer(buf, protocol=2).dump({"a": Tensor(Storage(torch.FloatStorage, 4), 4),
                                  "b": Tensor(Storage(torch.HalfStorage, 8), 8)})
    path = tmp_path / "retyped.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("retyped/data.pkl", buf.getvalue())
        zf.writestr("retyped/byteorder", b"little")
        zf.writestr("retyped/data/0", bytes(range(16)))
        zf.writestr("retyped/version", b"3\n")
    with pytest.raises(conv.ConvertError, match="torch would read the first"):
        conv.read_checkpoint(str(path))
