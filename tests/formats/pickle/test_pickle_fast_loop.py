"""The VM's inline loop (``_PickleVM._fast_loop``) and its compact memo (``memo_lost``).

The inline loop must do exactly what the opcode handlers do: every stream here is walked by both
loops, with the reader's buffer cut into a few bytes so that arguments straddle refills, and the
walks are compared. Past ``memo_exact`` entries, inert memo values are kept as their kind only:
what that may change is only ever a conservative verdict (``unscanned-limit``, an opaque nested
load), never a missed import. Nothing here loads a pickle.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, List, Optional, Tuple

import pytest

from pickle_mutations import mutated_streams, seed_streams

from safemodel_ci.findings import FileResult
from safemodel_ci.formats.pickle import _PickleVM, describe
from safemodel_ci.formats.pickle.values import _Lost, _maybe_literal
from safemodel_ci.scanner import ScanOptions, scan_byte_source
from safemodel_ci.source import BytesSource


class _HandlerLoopVM(_PickleVM):
    """The same VM with every opcode through its handler (the reference for the inline loop)."""

    _fast_loop = _PickleVM._loop


class Reduce:
    """Pickles to ``func(*args)``; dumping does not call it."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (self.func, self.args)


def walk(cls: type, data: bytes, buffer: Optional[int], max_ops: Optional[int] = None,
         memo_exact: Optional[int] = None, max_stack: Optional[int] = None) -> Tuple[Any, ...]:
    """Everything a walk decides: outcome, offsets, imports, findings, memo, top of stack."""
    vm = cls(BytesSource(data), None, 0, None, silent=True, max_ops=max_ops)
    if max_stack is not None:
        vm.max_stack = max_stack
    if buffer is not None:  # refill every few bytes: arguments straddle the buffer's end
        vm.reader._buffer_size = buffer
        vm.reader._next_fill = buffer
    if memo_exact is not None:
        vm.memo_exact = memo_exact
    res = vm.run()
    records = sorted((k, r.rule_id, r.count, tuple(r.calls)) for k, r in vm.records.items())
    # Opcodes are counted only against a budget (the inline loop bounds them by positions otherwise).
    ops = vm.ops if max_ops is not None else None
    return (res.complete, res.end, res.error, vm.broken.offset if vm.broken else None, ops, vm.out_of_ops,
            vm.import_evidence, tuple(res.globals), records, len(vm.memo), sorted(map(repr, vm.memo)),
            bytes(vm.memo_lost), vm.lost_count, len(vm.stack), len(vm.metastack), vm.retained_bytes,
            vm.retained_items, repr(_maybe_literal(res.top)), describe(res.top), vm.reader.alive,
            vm.reader.frame_end, vm.frames_irregular)


def streams(count: int, seed: int) -> List[bytes]:
    base = seed_streams()
    return base + list(mutated_streams(base, count, seed=seed))


# 300 and 701: a buffer just past _INLINE_WIDTH, so that small streams go inline, to the refill at
# the buffer's end and back.
@pytest.mark.parametrize("buffer", [None, 1, 7, 64, 300, 701])
def test_inline_loop_walks_like_the_handlers(buffer: Optional[int]) -> None:
    all_streams = streams(1500, seed=11)
    differ = []
    for data in all_streams:
        fast = walk(_PickleVM, data, buffer)
        slow = walk(_HandlerLoopVM, data, buffer)
        if fast != slow:
            differ.append((data[:80], fast, slow))
    assert not differ, differ[:3]


@pytest.mark.parametrize("max_ops", [1, 2, 3, 7, 50])
def test_inline_loop_stops_at_the_opcode_budget_like_the_handlers(max_ops: int) -> None:
    for data in streams(300, seed=12):
        for buffer in (5, 300):
            assert walk(_PickleVM, data, buffer, max_ops) == walk(_HandlerLoopVM, data, buffer, max_ops)


@pytest.mark.parametrize("max_stack", [1, 2, 3, 5, 9])
def test_inline_loop_hits_the_stack_limits_like_the_handlers(max_stack: int) -> None:
    deep = [b"\x80\x04" + b"(" * 12 + b"N" * 12 + b".", b"\x80\x02" + b"K\x01" * 12 + b".",
            b"(" + b"(I1\nI2\nt" * 6 + b"l."]
    for data in streams(300, seed=14) + deep:
        for buffer in (None, 3, 300):
            fast = walk(_PickleVM, data, buffer, max_stack=max_stack)
            assert fast == walk(_HandlerLoopVM, data, buffer, max_stack=max_stack), data[:80]


def test_compact_memo_walks_like_the_handlers() -> None:
    """With the memo budget at 0, 3 and 40 entries both loops keep the same kinds and values."""
    rows = [(i, i / 2, f"r{i}", b"b%d" % i, ((i,), "x")) for i in range(300)]
    extra = [pickle.dumps(rows, protocol=p) for p in range(6)]
    for data in streams(300, seed=13) + extra:
        for budget in (0, 3, 40):
            fast = walk(_PickleVM, data, 9, memo_exact=budget)
            assert fast == walk(_HandlerLoopVM, data, 9, memo_exact=budget), data[:80]


def scan(data: bytes, monkeypatch: pytest.MonkeyPatch, budget: int) -> FileResult:
    monkeypatch.setattr(_PickleVM, "memo_exact", budget)
    return scan_byte_source(BytesSource(data, "x.pkl"), "x.pkl", ScanOptions())


def test_big_benign_rows_past_the_budget_scan_clean_and_keep_a_byte_per_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Text that cannot name an import ("row 000123": a space): names are kept, bounded (see below).
    rows = [(i, i * 0.5, f"row {i:06d}") for i in range(20_000)]
    for protocol in (0, 2, 4):
        data = pickle.dumps(rows, protocol=protocol)
        result = scan(data, monkeypatch, 1000)
        assert result.complete and result.findings == [], [f.message for f in result.findings]
        vm = _PickleVM(BytesSource(data), None, 0, None, silent=True)
        vm.memo_exact = 1000
        assert vm.run().complete
        assert len(vm.memo) == 1000 and vm.lost_count == 40_000 - 1000 + 1  # the list stays exact
        assert len(vm.memo_lost) == 40_001


def sbu(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def test_an_import_named_by_a_lost_memo_entry_is_unscanned_not_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    # posix.system named from the stack (known: a finding), then again from the memo (lost): with no
    # room left for names past the budget (MAX_KEPT_NAMES and MAX_POLICY_ENTRIES used up), the module
    # string is a byte.
    from safemodel_ci.formats.pickle import vm as vm_module

    monkeypatch.setattr(vm_module, "MAX_KEPT_NAMES", 0)
    monkeypatch.setattr(vm_module, "MAX_POLICY_ENTRIES", 0)
    data = (b"\x80\x04" + sbu("posix") + b"\x94" + sbu("system") + b"\x94\x93" + b"0"
            + b"h\x00h\x01\x93" + sbu("echo") + b"\x85R.")
    result = scan(data, monkeypatch, 0)
    found = {f.rule_id for f in result.findings}
    assert {"pickle-dangerous-global", "unscanned-limit"} <= found, found
    assert not result.complete or any(f.unscanned for f in result.findings)
    limit = next(f for f in result.findings if f.rule_id == "unscanned-limit")
    assert "memo entry past the first 0 entries" in limit.message and "REDUCE" in str(limit.details["calls"])
    # With the memo kept exactly, the same stream imports posix.system twice.
    exact = scan(data, monkeypatch, 100_000)
    assert "unscanned-limit" not in {f.rule_id for f in exact.findings}


def test_bytes_a_loader_gets_from_a_lost_memo_entry_are_opaque(monkeypatch: pytest.MonkeyPatch) -> None:
    inner = pickle.dumps(Reduce(os.system, "echo"), protocol=2)
    data = (b"\x80\x04C" + bytes([len(inner)]) + inner + b"\x94" + b"0"
            + sbu("_pickle") + sbu("loads") + b"\x93h\x00\x85R.")
    lost = scan(data, monkeypatch, 0)
    assert "pickle-nested-opaque" in {f.rule_id for f in lost.findings}
    opaque = [f.message for f in lost.findings if f.rule_id == "pickle-nested-opaque"]
    assert any("not kept in memory" in m for m in opaque), opaque
    exact = scan(data, monkeypatch, 100_000)
    assert "pickle-nested" in {f.rule_id for f in exact.findings}
    assert "os.system" in str([f.details for f in exact.findings]) or any(
        "system" in f.message for f in exact.findings)


def test_lost_values_behave_as_their_kind() -> None:
    """A lost str/bytes/tuple is hashable, true and iterable; calling it or appending to it breaks the
    walk as it breaks the loader; READONLY_BUFFER accepts lost bytes only."""
    def run(body: bytes) -> Any:
        vm = _PickleVM(BytesSource(b"\x80\x04" + body), None, 0, None, silent=True)
        vm.memo_exact = 0
        return vm, vm.run()

    vm, res = run(sbu("k") + b"\x94}h\x00h\x00s.")  # a dict keyed by a lost str
    assert res.complete
    vm, res = run(b"C\x01b\x94h\x00\x98.")  # READONLY_BUFFER of lost bytes
    assert res.complete and isinstance(res.top, _Lost)
    vm, res = run(sbu("s") + b"\x94h\x00\x98.")  # of a lost str: the loader raises
    assert not res.complete and "READONLY_BUFFER" in (res.error or "")
    vm, res = run(sbu("s") + b"\x94h\x00)R.")  # calling a str
    assert not res.complete and "not callable" in (res.error or "")
    vm, res = run(sbu("s") + b"\x94h\x00Na.")  # appending to a str
    assert not res.complete
    vm, res = run(b"K\x01K\x02\x86\x94]h\x00a.")  # a list holding a lost tuple: not a literal
    assert res.complete and res.value is None


def test_the_big_pickle_benchmark_builds_real_pickles() -> None:
    """bench/big_pickle.py's 240 MB file is the frame contents of pickle.dumps repeated: checked on a
    small table, opcode by opcode (pickletools parses, nothing loads)."""
    import importlib.util
    import pickletools
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "big_pickle", Path(__file__).resolve().parents[3] / "bench" / "big_pickle.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    frame_contents, rows = bench.frame_contents, bench.rows

    data = pickle.dumps(rows(5000), protocol=4)
    body = frame_contents(data)
    assert body[:2] == b"]\x94" and body[-1:] == b"."
    big = b"\x80\x04]\x94" + body[2:-1] * 3 + b"."
    ops = [op.name for op, _, _ in pickletools.genops(big)]
    assert ops.count("MEMOIZE") == 3 * 2 * 5000 + 1 and "FRAME" not in ops
    vm = _PickleVM(BytesSource(big), None, 0, None, silent=True)
    vm.memo_exact = 100
    # Every entry past the budget is a byte, or a row's string kept as a possible name (bounded).
    assert vm.run().complete and vm.lost_count + vm.names.entries == 3 * 2 * 5000 + 1 - 100
    assert vm.lost_count >= 3 * 5000 - 100  # the tuples


def _past_the_budget(tail: List[Any], identifiers: int) -> bytes:
    """``pickle.dumps`` (protocol 4) of a list: 100,500 strings that are not identifiers (lost past the
    100,000-entry budget), ``identifiers`` distinct dotted identifiers (they fill the VM's budget of
    other names when over MAX_KEPT_NAMES, 16,384), then ``tail``, whose imports' module strings are
    first memoized after entry 100,000 and reused by GET for a second class of the same module."""
    fill: List[Any] = [f"v {i}" for i in range(100_500)] + [f"col{i}" for i in range(identifiers)]
    return pickle.dumps(fill + tail, protocol=4)


def _module_reused_by_get(data: bytes, module: str) -> bool:
    import pickletools

    ops = list(pickletools.genops(data))
    index = next(i for i, (op, arg, _) in enumerate(ops) if op.name == "SHORT_BINUNICODE" and arg == module)
    memo_index = sum(1 for op, _, _ in ops[:index + 1] if op.name == "MEMOIZE")  # its MEMOIZE's index
    return memo_index > 100_000 and any(op.name == "LONG_BINGET" and arg == memo_index for op, arg, _ in ops)


@pytest.mark.parametrize("identifiers", [0, 70_000])
def test_an_ordinary_import_named_through_get_past_the_budget_stays_known(identifiers: int) -> None:
    """Over 150,000 memo entries (the real budget, MAX_MEMO_EXACT), then allowlisted classes whose
    module string ('collections', 'numpy') a second import takes by GET: clean, nothing unscanned. With
    70,000 other identifiers first, 'collections' and 'numpy' are kept as the policy's names."""
    import collections

    import numpy as np

    tail = [collections.Counter(a=1), collections.OrderedDict(b=2), np.arange(3), np.zeros(2)]
    data = _past_the_budget(tail, identifiers)
    assert _module_reused_by_get(data, "collections") and _module_reused_by_get(data, "numpy")
    result = scan_byte_source(BytesSource(data, "x.pkl"), "x.pkl", ScanOptions())
    assert result.complete and result.findings == [], [(f.rule_id, f.message) for f in result.findings]
    vm = _PickleVM(BytesSource(data), None, 0, None, silent=True)
    assert vm.run().complete and vm.lost_count >= 500  # the budget was passed: the fill is compact
    assert {"collections", "numpy"} <= set(vm.names.kept)


@pytest.mark.parametrize("identifiers", [0, 70_000])
def test_a_dangerous_import_named_through_get_past_the_budget_is_still_found(identifiers: int) -> None:
    """The same with posix.system then posix.getcwd (the second by GET of 'posix'): both imports are
    known and judged, the file is blocked (CRITICAL), not clean and not merely unscanned."""
    tail = [Reduce(os.system, "echo"), Reduce(os.getcwd)]
    data = _past_the_budget(tail, identifiers)
    assert _module_reused_by_get(data, os.system.__module__)
    result = scan_byte_source(BytesSource(data, "x.pkl"), "x.pkl", ScanOptions())
    dangerous = [f for f in result.findings if f.rule_id == "pickle-dangerous-global"]
    assert dangerous and max(f.severity for f in dangerous).name == "CRITICAL"
    assert "unscanned-limit" not in {f.rule_id for f in result.findings}
    subjects = " ".join(f.message for f in result.findings)
    assert "system" in subjects and "getcwd" in subjects, subjects


def test_names_kept_past_the_budget_are_bounded() -> None:
    """Strings kept past the budget for being names: at most MAX_KEPT_NAMES distinct other identifiers,
    equal ones shared, at most MAX_KEPT_ENTRIES entries; everything else still a byte."""
    from safemodel_ci.formats.pickle import vm as vm_module

    rows = [f"name{i}" for i in range(vm_module.MAX_KEPT_NAMES + 5000)]
    data = pickle.dumps([f"v {i}" for i in range(1000)] + rows + [str(s + "") for s in rows[:10]], protocol=4)
    vm = _PickleVM(BytesSource(data), None, 0, None, silent=True)
    vm.memo_exact = 1000
    assert vm.run().complete
    others = [n for n in vm.names.kept if n.startswith("name")]
    assert len(others) == vm_module.MAX_KEPT_NAMES
    assert vm.names.entries <= vm_module.MAX_KEPT_ENTRIES
    assert len(vm.memo) <= 1000 + vm_module.MAX_KEPT_ENTRIES + vm_module.MAX_POLICY_ENTRIES
    kept = [v for v in vm.memo.values() if v.__class__ is str and v.startswith("name")]
    assert all(vm.names.kept[v] is v for v in kept)  # one object per distinct string
