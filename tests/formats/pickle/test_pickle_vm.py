"""The symbolic pickle VM: every mechanism, on fixtures built from opcodes or from ``pickle.dumps``
of objects whose ``__reduce__`` returns a callable (dumping never runs it). Nothing is loaded."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from safemodel_ci.context import Limits, ScanContext
from safemodel_ci.findings import FileResult, Finding, Severity
from safemodel_ci.formats.pickle import (
    _DISPATCH,
    MAX_INLINE_BYTES,
    PickleStreamResult,
    looks_like_pickle,
    scan_pickle_at,
    scan_pickle_stream,
)
from safemodel_ci.policy import Policy
from safemodel_ci.scanner import ScanOptions, scan_byte_source
from safemodel_ci.source import BytesSource


class Reduce:
    """Pickles to ``func(*args)``; dumping does not call it."""

    def __init__(self, func, *args) -> None:  # type: ignore[no-untyped-def]
        self.func = func
        self.args = args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (self.func, self.args)


def scan(data: bytes, name: str = "x.pkl") -> FileResult:
    return scan_byte_source(BytesSource(data, name), name, ScanOptions())


def rules(result: FileResult, min_severity: Severity = Severity.INFO) -> List[str]:
    return [f.rule_id for f in result.findings if f.unscanned or f.severity >= min_severity]


def only(result: FileResult, rule_id: str) -> Finding:
    found = [f for f in result.findings if f.rule_id == rule_id]
    assert found, f"no {rule_id} in {[(f.rule_id, f.message) for f in result.findings]}"
    return found[0]


def globals_of(result: FileResult, rule_id: str = "pickle-dangerous-global") -> List[str]:
    return sorted(f.details.get("global", "") for f in result.findings if f.rule_id == rule_id)


def sbu(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


P4 = b"\x80\x04"


# ---------------------------------------------------------------------------------------------
# Imports and calls

@pytest.mark.parametrize("protocol", range(6))
def test_reduce_to_os_system_is_critical_in_every_protocol(protocol: int) -> None:
    result = scan(pickle.dumps({"w": [1.0], "x": Reduce(os.system, "echo pwned")}, protocol=protocol))
    f = only(result, "pickle-dangerous-global")
    assert f.severity is Severity.CRITICAL
    assert f.details["global"] in ("posix.system", "os.system", "nt.system")
    assert any(c.startswith("REDUCE@") for c in f.details["calls"])
    assert "REDUCE" in f.message and f.offset is not None


def test_memoized_names_feed_stack_global() -> None:
    data = (P4 + sbu("os") + b"\x94" + sbu("system") + b"\x94" + b"00"   # push, memoize, drop both
            + b"h\x00h\x01\x93" + sbu("echo") + b"\x85R.")
    result = scan(data)
    assert globals_of(result) == ["os.system"]


def test_memoize_twice_and_dup_do_not_desynchronise_the_memo() -> None:
    # 'builtins' -> memo 0 and 1, DUP + MEMOIZE -> memo 2; 'eval' -> memo 3; a scanner guessing from
    # neighbouring opcodes pairs the wrong strings.
    data = (P4 + sbu("builtins") + b"\x94\x94" + b"2\x94" + b"0" + sbu("eval") + b"\x94" + b"00"
            + b"h\x02h\x03\x93" + sbu("1+1") + b"\x85R.")
    assert globals_of(scan(data)) == ["builtins.eval"]


def test_text_put_get_and_long_binput_binget() -> None:
    data = b"Vos\np7\n0Vsystem\nr\x00\x01\x00\x000g7\nj\x00\x01\x00\x00\x93Vecho\n\x85R."
    assert globals_of(scan(data)) == ["os.system"]


def test_non_literal_stack_global_operands_are_critical() -> None:
    # module = builtins.str('os') (a call result), name = an int.
    data = P4 + b"cbuiltins\nstr\n" + sbu("os") + b"\x85R" + b"K\x05\x93" + sbu("x") + b"\x85R."
    result = scan(data)
    f = only(result, "pickle-unresolved-global")
    assert f.severity is Severity.CRITICAL
    assert "REDUCE" in ",".join(f.details["calls"])


@pytest.mark.parametrize("module,name,expected", [
    ("pathlib", "os.system", "pathlib.os.system"),
    ("builtins", "print.__self__.eval", "builtins.print.__self__.eval"),
    ("torch", "serialization.pickle.loads", "torch.serialization.pickle.loads"),
])
def test_dotted_names_are_judged_as_a_whole(module: str, name: str, expected: str) -> None:
    data = P4 + sbu(module) + sbu(name) + b"\x93" + sbu("x") + b"\x85R."
    assert globals_of(scan(data)) == [expected]


@pytest.mark.parametrize("line,expected", [
    (b"c__builtin__\neval\n", "builtins.eval"),
    (b"ccPickle\nloads\n", "pickle.loads"),
    (b"ccommands\ngetoutput\n", "subprocess.getoutput"),
    (b"curllib2\nurlopen\n", "urllib.request.urlopen"),
    (b"c__builtin__\nreduce\n", "functools.reduce"),
])
def test_python2_names_are_mapped_like_the_loader_does(line: bytes, expected: str) -> None:
    for proto in (b"", b"\x80\x02"):
        result = scan(proto + line + b"(Vx\ntR.")
        assert globals_of(result) == [expected], proto


def test_python2_names_in_protocol_3_take_the_worse_reading() -> None:
    assert globals_of(scan(b"\x80\x03c__builtin__\neval\nVx\n\x85R.")) == ["__builtin__.eval"]
    allowed = scan(b"\x80\x02ccopy_reg\n_reconstructor\n.")
    assert rules(allowed, Severity.LOW) == []


def test_inst_obj_newobj_newobj_ex_and_build_are_call_sites() -> None:
    cases = {
        "INST": b"(Vecho\nios\nsystem\n.",
        "OBJ": b"(cos\nsystem\nVecho\no.",
        "NEWOBJ": b"\x80\x02cos\nsystem\n)\x81.",
        "NEWOBJ_EX": b"\x80\x04cos\nsystem\n)}\x92.",
    }
    for kind, data in cases.items():
        f = only(scan(data), "pickle-dangerous-global")
        assert any(c.startswith(kind + "@") for c in f.details["calls"]), (kind, f.details)
    f = only(scan(b"\x80\x02cmymodule\nModel\n)\x81}b."), "pickle-unknown-global")
    assert [c.split("@")[0] for c in f.details["calls"]] == ["NEWOBJ", "BUILD"]


def test_obj_followed_by_pop_is_still_seen() -> None:
    # fickling GHSA-mxhj-88fx-4pcv: the call's result is discarded, the call still ran.
    result = scan(b"(cos\nsystem\nVecho\no0N.")
    assert globals_of(result) == ["os.system"]


def test_pop_on_an_empty_frame_discards_the_mark() -> None:
    result = scan(b"cos\nsystem\n(0Vecho\n\x85R.")
    f = only(result, "pickle-dangerous-global")
    assert f.details["calls"] and not rules(result, Severity.INFO).count("pickle-broken-stream")


def test_build_on_an_imported_module_is_a_mutation() -> None:
    data = P4 + sbu("torch") + sbu("_utils") + b"\x93}" + sbu("_rebuild_tensor") + sbu("builtins") + b"sb."
    result = scan(data)
    assert "pickle-global-mutation" in rules(result)
    assert only(result, "pickle-global-mutation").severity is Severity.CRITICAL


def test_unknown_but_harmless_looking_imports_block() -> None:
    # pathlib is not on the allowlist (issue 15: nothing from pathlib, io, os ... is admitted)
    result = scan(pickle.dumps(Reduce(Path, "x")))
    assert rules(result, Severity.HIGH) == ["pickle-unknown-global"]
    import statistics

    result = scan(pickle.dumps(Reduce(statistics.mean, [1, 2])))
    f = only(result, "pickle-unknown-global")
    assert f.severity is Severity.HIGH and "statistics.mean" in f.message and "allow-globals" in f.message


def test_config_allow_globals_reaches_the_vm() -> None:
    import statistics

    data = pickle.dumps(Reduce(statistics.mean, [1, 2]))
    options = ScanOptions(policy=Policy(allow_globals=frozenset({"statistics.mean"})))
    assert rules(scan_byte_source(BytesSource(data), "x.pkl", options), Severity.LOW) == []


@pytest.mark.parametrize("op", [b"\x82\x01", b"\x83\x01\x02", b"\x84\x01\x00\x00\x00"])
def test_ext_opcodes_are_reported(op: bytes) -> None:
    result = scan(b"\x80\x02" + op + b"Vx\n\x85R.")
    f = only(result, "pickle-ext-code")
    assert f.severity >= Severity.HIGH and f.details["calls"]


def test_append_on_an_imported_object_is_a_method_call_on_it() -> None:
    result = scan(b"\x80\x02cos\nenviron\nVx\na.")
    assert "pickle-global-mutation" in rules(result)


# ---------------------------------------------------------------------------------------------
# Streams: broken, concatenated, trailing data

def test_truncated_malicious_stream_reports_finding_and_unscanned() -> None:
    data = pickle.dumps(Reduce(os.system, "echo"), protocol=2)[:-1]  # STOP removed
    result = scan(data)
    assert "pickle-dangerous-global" in rules(result)
    assert only(result, "pickle-broken-stream").unscanned
    assert not result.complete


def test_invalid_opcode_after_payload_keeps_the_payload_finding() -> None:
    data = b"cbuiltins\nexec\n(Vprint(1)\ntR\xff\xff"
    result = scan(data)
    assert "pickle-dangerous-global" in rules(result) and "pickle-broken-stream" in rules(result)


def test_broken_stream_without_payload_is_never_clean() -> None:
    result = scan(pickle.dumps(list(range(100)), protocol=4)[:-20])
    assert rules(result) == ["pickle-broken-stream"] and not result.complete


def test_every_concatenated_pickle_is_scanned() -> None:
    benign = pickle.dumps({"a": 1}, protocol=4)
    evil = pickle.dumps(Reduce(os.system, "echo"), protocol=2)
    result = scan(benign * 3 + evil + benign)
    assert globals_of(result) and only(result, "pickle-dangerous-global").offset >= 3 * len(benign)
    assert rules(scan(benign + benign + pickle.dumps([1, 2], protocol=0))) == []


def test_non_pickle_trailing_bytes_are_a_notice_only() -> None:
    result = scan(pickle.dumps({"a": 1}, protocol=4) + b"\n\n\t\tgarbage")
    assert rules(result) == ["pickle-trailing-data"]
    assert only(result, "pickle-trailing-data").severity is Severity.INFO


def test_trailing_broken_pickle_with_a_payload_counts() -> None:
    data = pickle.dumps([1], protocol=2) + b"cos\nsystem\n(Vecho\ntR\xff"
    result = scan(data)
    assert "pickle-dangerous-global" in rules(result) and "pickle-broken-stream" in rules(result)


# ---------------------------------------------------------------------------------------------
# Nested pickles

def test_nested_pickle_via_codecs_encode_is_scanned() -> None:
    inner = pickle.dumps(Reduce(os.system, "echo inner"), protocol=0).decode("latin-1")
    data = pickle.dumps(Reduce(pickle.loads, Reduce(_codecs_encode(), inner, "latin1")), protocol=2)
    result = scan(data)
    nested = only(result, "pickle-nested")
    assert nested.details["loader"] == "pickle.loads"
    inner_findings = [f for f in result.findings if f.member and f.member.startswith("<nested pickle @")]
    assert {f.details.get("global") for f in inner_findings} & {"posix.system", "os.system"}


def _codecs_encode():  # type: ignore[no-untyped-def]
    import _codecs

    return _codecs.encode


def test_nested_pickle_via_binbytes_is_scanned() -> None:
    inner = pickle.dumps(Reduce(os.system, "echo"), protocol=4)
    import _pickle

    result = scan(pickle.dumps(Reduce(_pickle.loads, inner), protocol=4))
    assert any(f.member and "nested" in f.member and f.rule_id == "pickle-dangerous-global"
               for f in result.findings)


def test_nested_pickle_in_a_large_payload_is_scanned_from_the_source() -> None:
    # Above MAX_INLINE_BYTES the payload is not held in memory; its source range is scanned instead.
    inner = pickle.dumps([b"\0" * (MAX_INLINE_BYTES + 10), Reduce(os.system, "echo")], protocol=4)
    import _pickle

    data = pickle.dumps(Reduce(_pickle.loads, inner), protocol=4)
    result = scan(data)
    assert any(f.member and "nested" in f.member and f.rule_id == "pickle-dangerous-global"
               for f in result.findings)
    assert result.bytes_read < len(data)  # the big inner padding was skipped in the outer pass


def test_torch_load_from_bytes_of_a_benign_tensor_passes_with_a_notice() -> None:
    torch = pytest.importorskip("torch")
    result = scan(pickle.dumps(torch.arange(4)))
    assert rules(result, Severity.HIGH) == []
    assert "pickle-nested" in rules(result)


def test_loader_called_on_computed_bytes_is_critical() -> None:
    data = b"\x80\x02ctorch.storage\n_load_from_bytes\ncbuiltins\nstr\nK\x01\x85R\x85R."
    f = only(scan(data), "pickle-nested-opaque")
    assert f.severity is Severity.CRITICAL


def test_allowed_loader_handed_to_another_callable_is_critical() -> None:
    # _rebuild_from_type_v2(func, type, args, state) calls func(*args): the loader escapes.
    data = (b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctorch.storage\n_load_from_bytes\n"
            b"ctorch\nTensor\nC\x02ab\x85}tR.")
    assert "pickle-nested-opaque" in rules(scan(data))


def test_calling_an_instance_the_stream_built_is_critical() -> None:
    """REDUCE on an object the pickle built runs its type's __call__, which no allowlist entry judged:
    numpy.ma.extras._fromnxfunction_single('load')(path) is getattr(numpy, 'load')(path) and
    numpy.vectorize(f)(x) calls f. Both classes are real and the pickles are written by pickle.dumps."""
    import numpy as np
    import numpy.ma.extras as ma_extras

    for proto in (2, 4):
        data = pickle.dumps(Reduce(np.vectorize(np.exp), 1.0), protocol=proto)
        f = only(scan(data), "pickle-calls-built-object")
        assert f.severity is Severity.CRITICAL and "numpy.vectorize" in f.message
    # numpy < 2.2 (the table's old and mid environments): _fromnxfunction_single is a class whose
    # instance's __call__ is getattr(numpy, name)(...); numpy 2.4 made it a decorator, so by opcodes
    assert callable(ma_extras._fromnxfunction_single)
    data = (b"\x80\x02cnumpy.ma.extras\n_fromnxfunction_single\nX\x04\x00\x00\x00load\x85R"
            b"X\x0b\x00\x00\x00/etc/passwd\x85R.")
    assert "pickle-calls-built-object" in rules(scan(data))
    # OBJ and INST call the class operand the same way when it is an instance
    vec = pickle.dumps(np.vectorize(np.exp), protocol=2)[2:-1]
    data = b"\x80\x02(" + vec + b"G?\xf0\x00\x00\x00\x00\x00\x00o."
    assert "pickle-calls-built-object" in rules(scan(data))


def test_admitted_callable_that_calls_its_argument_is_not_handed_a_built_instance() -> None:
    """_rebuild_from_type_v2(func, ...) and constructors such as ScalarFunction(fun, x0, ...) and
    FakeQuantize(observer) call an argument while loading: an instance there is an unjudged call."""
    import numpy as np
    import torch

    import copyreg

    inst = np.vectorize(np.exp)
    cases = [
        Reduce(torch._tensor._rebuild_from_type_v2, inst, torch.Tensor, (1.0,), {}),
        Reduce(__import__("scipy.optimize._differentiable_functions", fromlist=["x"]).ScalarFunction,
               inst, 1.0, (), None, None),
        Reduce(torch.ao.quantization.fake_quantize.FakeQuantize, inst),
    ]
    fake_quantize = torch.ao.quantization.fake_quantize.FakeQuantize
    # copyreg._reconstructor(cls, base, state) runs base.__init__(obj, state): state is observer
    cases.append(Reduce(copyreg._reconstructor, fake_quantize, fake_quantize, inst))
    for case in cases:
        result = scan(pickle.dumps(case, protocol=2))
        assert "pickle-calls-built-object" in rules(result), case.func
        # every import is admitted: the call is the finding
        assert "pickle-unknown-global" not in rules(result)
    # the same callables handed an imported global are judged by that import alone
    ok = pickle.dumps(Reduce(torch._tensor._rebuild_from_type_v2, torch._utils._rebuild_tensor_v2,
                             torch.Tensor, (), {}), protocol=2)
    assert "pickle-calls-built-object" not in rules(scan(ok))


def test_state_that_gives_an_instance_its_own_setstate_is_critical() -> None:
    """pickle.py and _pickle find BUILD's hook with getattr(inst, '__setstate__'), which reads the
    instance's __dict__: BUILD {'__setstate__': f} then BUILD x calls f(x). A library's own pickle
    (numpy.vectorize keeps '__name__' in its state) does not trip it."""
    import numpy as np

    vec = pickle.dumps(np.vectorize(np.exp), protocol=2)
    assert "pickle-calls-built-object" not in rules(scan(vec))
    body = vec[2:-1]
    one = b"G?\xf0\x00\x00\x00\x00\x00\x00"
    dict_state = (b"\x80\x02cargparse\nNamespace\n)R}X\x0c\x00\x00\x00__setstate__" + body + b"sb"
                  + one + b"b.")
    slot_state = (b"\x80\x02cargparse\nNamespace\n)RN}X\x0c\x00\x00\x00__setstate__" + body + b"s\x86b"
                  + one + b"b.")
    for data in (dict_state, slot_state):
        f = only(scan(data), "pickle-calls-built-object")
        assert f.severity is Severity.CRITICAL and "__setstate__" in f.message


def test_name_dispatching_numpy_ma_helpers_are_not_admitted() -> None:
    """numpy.ma.extras._fromnxfunction* call getattr(numpy, name): withdrawn from the generated table."""
    from safemodel_ci.pickle_policy import load_table

    table = load_table()
    for suffix in ("", "_single", "_args", "_allargs", "_seq"):
        data = (b"\x80\x02cnumpy.ma.extras\n_fromnxfunction" + suffix.encode()
                + b"\nX\x04\x00\x00\x00load\x85R.")
        result = scan(data)
        assert "pickle-unknown-global" in rules(result) or "pickle-dangerous-global" in rules(result)
        assert f"numpy.ma.extras._fromnxfunction{suffix}" not in table.allow


def test_nesting_depth_is_limited() -> None:
    import _pickle

    payload: object = Reduce(os.system, "echo")
    for _ in range(10):
        payload = Reduce(_pickle.loads, pickle.dumps(payload, protocol=4))
    data = pickle.dumps(payload, protocol=4)
    result = scan_byte_source(BytesSource(data), "x.pkl", ScanOptions(limits=Limits(max_depth=3)))
    assert "unscanned-limit" in rules(result)
    assert "pickle-dangerous-global" in rules(result)  # every level imports _pickle.loads


# ---------------------------------------------------------------------------------------------
# joblib: raw array bytes after NumpyArrayWrapper

class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo after-array",))


def _joblib_bytes(obj: object) -> bytes:
    joblib = pytest.importorskip("joblib")
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def test_call_placed_after_a_joblib_array_is_found() -> None:
    np = pytest.importorskip("numpy")
    data = _joblib_bytes([np.arange(1000, dtype="f8"), np.ones((3, 7), dtype="i2"), _Evil()])
    with pytest.raises(ValueError):  # a naive opcode walk dies in the raw array bytes
        list(pickletools.genops(data))
    result = scan(data)
    assert globals_of(result) in (["posix.system"], ["os.system"], ["nt.system"])
    assert "pickle-broken-stream" not in rules(result)


def test_benign_joblib_with_numeric_object_and_string_arrays_passes() -> None:
    np = pytest.importorskip("numpy")
    data = _joblib_bytes({"a": np.arange(5), "o": np.array([1, "x", None], dtype=object),
                          "s": np.array(["ab", "c"]), "f": np.asfortranarray(np.ones((3, 4), "f4")),
                          "rec": np.zeros(3, dtype=[("x", "i4"), ("y", "f8")])})
    assert rules(scan(data), Severity.LOW) == []


def test_payload_inside_a_joblib_object_array_is_found() -> None:
    np = pytest.importorskip("numpy")
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = 1, _Evil()
    result = scan(_joblib_bytes({"a": np.arange(3), "o": arr}))
    assert "pickle-dangerous-global" in rules(result)


# ---------------------------------------------------------------------------------------------
# Real benign artifacts

def _torch_data_pkl(obj: object) -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))


def _torch_model():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    nn = torch.nn
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv2d(1, 2, 3), nn.BatchNorm1d(4), nn.LSTM(4, 4),
                         nn.Embedding(5, 4), nn.Dropout(), nn.LayerNorm(4), nn.MultiheadAttention(4, 2),
                         nn.TransformerEncoderLayer(4, 2, 8))


def test_torch_state_dict_data_pkl_passes_and_exposes_persistent_ids() -> None:
    data = _torch_data_pkl(_torch_model().state_dict())
    ctx = ScanContext("model.pt", Policy(), member="archive/data.pkl")
    res = scan_pickle_at(BytesSource(data), ctx, torch_archive=True)
    assert isinstance(res, PickleStreamResult) and res.complete and res.end == len(data)
    assert [f.rule_id for f in ctx.findings] == []
    assert res.persistent_ids and all(p[0] == "storage" for p in res.persistent_ids)
    assert {p[1].path for p in res.persistent_ids} == {"torch.FloatStorage", "torch.LongStorage"}
    assert ("torch._utils", "_rebuild_tensor_v2") in res.globals


def test_whole_torch_module_data_pkl_passes() -> None:
    data = _torch_data_pkl(_torch_model())
    ctx = ScanContext("model.pt", Policy(), member="archive/data.pkl")
    scan_pickle_at(BytesSource(data), ctx, torch_archive=True)
    assert [(f.rule_id, f.message) for f in ctx.findings] == []


def test_stack_global_in_a_torch_archive_is_anomalous() -> None:
    data = pickle.dumps({"a": 1.5, "b": __import__("datetime").date(2020, 1, 1)}, protocol=4)
    ctx = ScanContext("model.pt", Policy(), member="archive/data.pkl")
    scan_pickle_at(BytesSource(data), ctx, torch_archive=True)
    assert [f.rule_id for f in ctx.findings] == ["torch-stack-global"]
    assert ctx.findings[0].severity is Severity.MEDIUM


@pytest.mark.parametrize("protocol", range(6))
def test_sklearn_pipelines_numpy_and_containers_pass(protocol: int) -> None:
    np = pytest.importorskip("numpy")
    sklearn_pipeline = pytest.importorskip("sklearn.pipeline")
    from collections import OrderedDict

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X = np.random.RandomState(0).rand(30, 3)
    y = np.array([0, 1] * 15)
    objs = [
        sklearn_pipeline.Pipeline([("s", StandardScaler()), ("c", LogisticRegression())]).fit(X, y),
        RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y),
        [np.arange(10), np.float32(2.5), np.zeros((2, 2), dtype=[("a", "i4")]), np.random.default_rng(1)],
        {"a": [1, 2.5, None, True], "b": (1, "x"), "c": OrderedDict(z=1), "d": {1, 2}, "e": b"\x00" * 9},
    ]
    for obj in objs:
        result = scan(pickle.dumps(obj, protocol=protocol))
        found = [(f.rule_id, f.message) for f in result.findings]
        assert rules(result, Severity.LOW) == [], (type(obj), found)


def test_xgboost_model_pickled_passes() -> None:
    np = pytest.importorskip("numpy")
    xgboost = pytest.importorskip("xgboost")
    X = np.random.RandomState(0).rand(30, 3)
    model = xgboost.XGBClassifier(n_estimators=2).fit(X, np.array([0, 1] * 15))
    assert rules(scan(pickle.dumps(model)), Severity.LOW) == []


# ---------------------------------------------------------------------------------------------
# Detection, memory, opcode coverage

def test_protocol_0_detection_needs_a_real_pickle() -> None:
    assert looks_like_pickle(BytesSource(pickle.dumps({"a": [1]}, protocol=0)))
    assert looks_like_pickle(BytesSource(b"cbuiltins\nexec\n(X>\nf = 1"))  # broken after a call setup
    for text in (b"config\nfoo\n", b"config\nfoo\nName\n", b"hello world\n", b"I am text\n", b"(",
                 b"# comment\n", b"\x89PNG\r\n\x1a\n"):
        assert not looks_like_pickle(BytesSource(text)), text
        assert scan(text, "notes.txt").formats == []


def test_big_payloads_are_skipped_not_read() -> None:
    data = pickle.dumps([b"\x01" * (8 * MAX_INLINE_BYTES), {"k": 1}], protocol=4)
    result = scan(data)
    assert rules(result) == []
    assert result.bytes_read < 2 * MAX_INLINE_BYTES + 65536


def test_the_vm_handles_every_opcode_of_the_pickle_module() -> None:
    codes = {op.code.encode("latin-1")[0] for op in pickletools.opcodes}
    assert codes == set(_DISPATCH)


def test_stream_result_value_and_end() -> None:
    data = pickle.dumps({"a": [1, 2], "b": "x"}, protocol=2) + b"junk"
    ctx = ScanContext("x.pkl", Policy())
    res = scan_pickle_at(BytesSource(data), ctx)
    assert res.complete and res.value == {"a": [1, 2], "b": "x"} and res.end == len(data) - 4
    scan_pickle_stream(BytesSource(data), ctx)
    assert [f.rule_id for f in ctx.findings] == ["pickle-trailing-data"]


def test_deep_nesting_of_containers_does_not_crash() -> None:
    data = b"\x80\x02" + b"]" * 50_000 + b"a" * 49_999 + b"."
    result = scan(data)
    assert rules(result) == []


def test_stack_limit_is_a_broken_stream_not_a_crash() -> None:
    data = b"\x80\x02" + b"N" * 2000 + b"."
    result = scan_byte_source(BytesSource(data), "x.pkl",
                              ScanOptions(limits=Limits(max_pickle_stack=1000)))
    assert rules(result) == ["pickle-broken-stream"]


def _offset_of(data: bytes, needle: bytes) -> Optional[int]:
    i = data.find(needle)
    return None if i < 0 else i


def test_finding_offsets_point_at_the_import() -> None:
    data = pickle.dumps(Reduce(os.system, "x"), protocol=0)
    f = only(scan(data), "pickle-dangerous-global")
    assert f.offset == _offset_of(data, b"c")
    assert struct.calcsize("<Q") == 8  # keeps the struct import meaningful for the offset helpers


def test_joblib_array_bytes_that_are_opcodes_for_pickle_load_count() -> None:
    # A wrapper without the alignment attribute (joblib < 1.2 layout) whose "array" bytes are a
    # payload for anyone reading the file with plain pickle.load; joblib.load skips them.
    payload = b"cos\nsystem\n(Vecho\ntR0"
    dtype = b"cnumpy\ndtype\n(Vu1\nI00\nI01\ntR(K\x03V|\nNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    data = (b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(Vsubclass\ncnumpy\nndarray\n"
            b"Vshape\nK" + bytes([len(payload)]) + b"\x85Vorder\nVC\nVdtype\n" + dtype + b"ub"
            + payload + b".")
    result = scan(data)
    assert "polyglot" in rules(result)
    assert globals_of(result) == ["os.system"]
    assert "pickle-broken-stream" not in rules(result)


def test_many_short_strings_after_the_budget_still_resolve_stack_global() -> None:
    from safemodel_ci.formats import pickle as vm_module

    filler = [("x" * 1000) + str(i) for i in range((vm_module.MAX_RETAINED_BYTES // 1000) + 10)]
    data = pickle.dumps([filler, __import__("datetime").date(2020, 1, 1)], protocol=4)
    result = scan(data)
    assert rules(result) == []


def test_truncated_second_pickle_is_a_broken_stream() -> None:
    second = pickle.dumps(list(range(30)), protocol=4)
    result = scan(pickle.dumps({"a": 1}, protocol=4) + second[:-5])
    assert rules(result) == ["pickle-broken-stream"] and not result.complete


def test_protocol_2_big_bytes_reaching_a_loader_are_transcoded_and_scanned() -> None:
    # Protocol 2 writes bytes as _codecs.encode(<latin-1 text>, 'latin1'); above the in-memory cap
    # the text stays in the file and is transcoded to a temporary file for the nested scan.
    import _pickle

    inner = pickle.dumps([b"\xe9" * (MAX_INLINE_BYTES + 100), Reduce(os.system, "echo")], protocol=4)
    result = scan(pickle.dumps(Reduce(_pickle.loads, inner), protocol=2))
    assert "pickle-nested" in rules(result) and "pickle-nested-opaque" not in rules(result)
    assert any(f.member and "nested" in f.member and f.rule_id == "pickle-dangerous-global"
               for f in result.findings)


def test_big_plain_pickled_tensor_in_protocol_2_passes() -> None:
    torch = pytest.importorskip("torch")
    result = scan(pickle.dumps(torch.zeros(400_000), protocol=2))
    assert rules(result, Severity.HIGH) == [], [(f.rule_id, f.message) for f in result.findings]


def test_the_vm_has_a_handler_for_every_pickle_opcode() -> None:
    import pickletools

    from safemodel_ci.formats.pickle import _OPCODES

    assert _OPCODES == {op.code.encode("latin-1")[0] for op in pickletools.opcodes}


def test_tiny_contents_are_detected_once_and_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection of contents up to TINY_CONTENT bytes is remembered by content (a torch archive's
    "version" and "byteorder" members recur in every checkpoint); longer ones are always detected."""
    from safemodel_ci import scanner
    from safemodel_ci.source import BytesSource

    monkeypatch.setattr(scanner, "_tiny_detected", {})
    samples = [b"N.", b"3\n", b"little", b"\x80\x02N.", b"PK\x05\x06" + bytes(18),
               b"cos\nsystem\n(S'id'\ntR."]

    def names(data: bytes) -> List[str]:
        source = BytesSource(data)
        found = [r.name for r in scanner.detect(source)]
        reads[data] = source.bytes_read
        return found

    reads: Dict[bytes, int] = {}
    first = {x: names(x) for x in samples}
    first_reads = dict(reads)
    assert first == {b"N.": ["pickle"], b"3\n": [], b"little": [], b"\x80\x02N.": ["pickle"],
                     b"PK\x05\x06" + bytes(18): ["zip"], b"cos\nsystem\n(S'id'\ntR.": ["pickle"]}
    real_load = scanner.load  # readers are taken from the detector table one by one (issue 21)
    monkeypatch.setattr(scanner, "load", lambda index: pytest.fail("tiny content detected twice"))
    assert {x: names(x) for x in samples} == first
    assert reads == first_reads  # bytes counted as if the detectors had read them again
    longer = b"N." + b" " * scanner.TINY_CONTENT
    with pytest.raises(pytest.fail.Exception):
        names(longer)
    monkeypatch.setattr(scanner, "load", real_load)
    assert names(longer) == ["pickle"]
