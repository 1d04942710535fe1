"""The pickle VM against CPython's own unpicklers (``tests/pickle_oracle.py``), stream by stream.

For every stream: if either CPython unpickler reaches STOP, the VM reaches STOP; every global either
of them asks ``find_class`` for is among the globals the VM reports; if both raise, the VM does not
report the stream clean (it breaks, or it has findings). Streams: the hand-made and ``pickle.dumps``
seeds, the fixture zoo, the shared attack corpus, a few thousand mutants (argument forms, line
lengths, length prefixes, protocol headers, FRAME sizes, opcode order), hypothesis-drawn batches,
and (marked slow) 100,000 more mutants.
"""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pickle_mutations import HAND_WRITTEN, mutated_streams, seed_streams
from pickle_oracle import run_oracle, violations

from safemodel_ci.context import Limits
from safemodel_ci.findings import Severity
from safemodel_ci.scanner import ScanOptions, scan_byte_source
from safemodel_ci.source import BytesSource

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "picklescan"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpus/picklescan")


def check(streams: Sequence[bytes]) -> Dict[str, int]:
    streams = list(streams)
    oracle = run_oracle(streams)
    assert len(oracle) == len(streams)
    problems, counts = violations(streams, oracle)
    assert not problems, f"{len(problems)} disagreements, first ones:\n" + "\n".join(problems[:15])
    return counts


def _zip_pickles(data: bytes) -> Iterable[bytes]:
    """The pickle members of a zip held in memory (read with zipfile; nothing is unpickled)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".pkl") and info.file_size < 1 << 20:
                    yield zf.read(info)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError):
        return


def _files_streams(directory: Path) -> List[bytes]:
    out: List[bytes] = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.stat().st_size < 4 << 20:
            data = path.read_bytes()
            out.append(data)
            out.extend(_zip_pickles(data))
    return out


# ---------------------------------------------------------------------------------------------
# Argument forms where the two unpicklers differ, each checked by name (readable failures).

KNOWN_FORMS = {
    "octal INT (C strtol only)": b"I010\n.",
    "INT digits then NUL (C only)": b"I5\x00junk\n.",
    "INT of a NUL (C: 0)": b"I\x00\n.",
    "INT with underscores (int() only)": b"I1_000\n.",
    "INT with spaces": b"I  5 \n.",
    "INT with 5000 digits": b"I" + b"7" * 5000 + b"\n.",
    "INT padded to 70,000 bytes": b"I" + b" " * 70_000 + b"5\n.",
    "LONG with L and leading zeros": b"L0000123L\n.",
    "LONG then NUL (C only)": b"L12\x00xL\n.",
    "FLOAT overflow (pickle.py only)": b"F1e999\n.",
    "FLOAT then NUL (C only)": b"F1.5\x00x\n.",
    "FLOAT with underscores": b"F1_0.5\n.",
    "FLOAT padded": b"F5" + b" " * 70_000 + b"\n.",
    "PUT/GET with leading zeros": b"N" + b"p0001\n" + b"g1\n.",
    "PUT with a 5000-digit index": b"Np" + b"0" * 5000 + b"1\ng1\n.",
    "GLOBAL names of 5000 bytes": b"c" + b"a" * 5000 + b"\n" + b"b" * 5000 + b"\n.",
    "STRING of 70,000 bytes": b"S'" + b"x" * 70_000 + b"'\n.",
    "UNICODE escape": b"V\\u1234\n.",
    "BINSTRING length with the high bit (C: unsigned)": b"T\x00\x00\x00\x80.",
    "FRAME past the end (pickle.py only)": b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.",
    "FRAME not at the end of the previous one": b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00N\x95\x01"
                                                b"\x00\x00\x00\x00\x00\x00\x00N.",
    "PROTO 0 header": b"\x80\x00N.",
    "GLOBAL cut at the end of the data (pickle.py imports os.sy)": b"cos\nsys",
    "INST without MARK (pickle.py imports first)": b"ios\nsystem\n.",
    "APPEND to a tuple": b"\x80\x02)K\x01a.",
    "SETITEM on a list, in range": b"]K\x00aK\x00K\x05s.",
    "SETITEM on a list, out of range": b"]K\x03K\x05s.",
    "unhashable dict key": b"(]K\x01d.",
    "BUILD with a state on an int": b"K\x01}K\x01K\x02sb.",
    "BUILD with an empty state on an int": b"K\x01}b.",
    "REDUCE on a str": b"\x8c\x01a)R.",
    "NEXT_BUFFER": b"\x80\x05\x97.",
    "empty APPENDS on an int (C: nothing to do)": b"K\x01(e.",
}


@pytest.mark.parametrize("name", sorted(KNOWN_FORMS))
def test_argument_forms_where_the_unpicklers_differ(name: str) -> None:
    check([KNOWN_FORMS[name]])


def test_seeds_and_fixture_zoo(tmp_path: Path) -> None:
    from fixture_factory import make_zoo

    make_zoo(tmp_path / "zoo", tmp_path / "canary")
    streams = seed_streams() + _files_streams(tmp_path / "zoo")
    counts = check(streams)
    assert counts["cpython_stop"] >= 60, counts
    assert not (tmp_path / "canary").exists()


def test_shared_attack_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"attack corpus not present at {CORPUS}")
    streams = _files_streams(CORPUS)
    assert len(streams) >= 40
    check(streams)


def test_mutated_streams_default_suite() -> None:
    """3,000 mutants of the seeds: the default suite's share of the differential run."""
    seeds = seed_streams()
    counts = check(list(mutated_streams(seeds, 3000, seed=1)))
    # The mutants exercise both outcomes, not only broken streams.
    assert counts["cpython_stop"] >= 500 and counts["both_raise"] >= 500, counts


_FRAGMENTS = [b"(", b"N", b"0", b"1", b"2", b"a", b"e", b"l", b"t", b"d", b"s", b"u", b"}", b"]", b")", b"R",
              b"b", b"o", b"\x85", b"\x86", b"\x87", b"\x88", b"\x89", b"\x8f", b"\x90", b"\x91", b"\x93",
              b"\x94", b"\x81", b"K\x01", b"K\x00", b"M\x00\x01", b"J\xff\xff\xff\xff", b"\x8c\x01a",
              b"\x8c\x08builtins", b"\x8c\x03len", b"U\x01a", b"C\x01b", b"I010\n", b"I01\n", b"I1_0\n",
              b"I5\x00x\n", b"F1e999\n", b"F.5\n", b"L5L\n", b"S'a'\n", b"Vb\n", b"p0\n", b"g0\n", b"p00\n",
              b"h\x00", b"q\x00", b"cbuiltins\nlen\n", b"ccollections\nOrderedDict\n",
              b"\x80\x02", b"\x80\x04", b"\x95\x02\x00\x00\x00\x00\x00\x00\x00",
              b"\x95\xff\x00\x00\x00\x00\x00\x00\x00", b"."]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(grammar=st.lists(st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=25), min_size=150,
                        max_size=150),
       seeds=st.lists(st.integers(0, 2**32 - 1), min_size=150, max_size=150))
def test_hypothesis_batches(grammar: List[List[bytes]], seeds: List[int]) -> None:
    """Hypothesis draws batches: opcode sequences from a fragment grammar, and seeds of mutants."""
    base = seed_streams()
    streams = [b"".join(parts) + b"." for parts in grammar]
    for s in seeds:
        streams.extend(mutated_streams(base, 1, seed=s))
    check(streams)


@pytest.mark.slow
def test_mutated_streams_100k() -> None:
    """100,000 mutants (with argument lines up to 1 MiB), in batches of 5,000 per oracle child."""
    seeds = seed_streams([CORPUS] if CORPUS.is_dir() else [])
    total: Dict[str, int] = {}
    all_streams = list(mutated_streams(seeds, 100_000, seed=int(os.environ.get("SAFEMODEL_DIFF_SEED", "7")),
                                       long_lines=(4096, 4097, 65_537, 70_000, (1 << 20) + 3)))
    problems: List[str] = []
    for i in range(0, len(all_streams), 5000):
        batch = all_streams[i:i + 5000]
        found, counts = violations(batch, run_oracle(batch))
        problems += found
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    print("differential totals:", total, "disagreements:", len(problems))
    assert total["streams"] == 100_000
    shown = "\n".join(p[:600] for p in problems[:15])
    assert not problems, f"{len(problems)} disagreements, first ones:\n{shown}"


# ---------------------------------------------------------------------------------------------
# Memory stays bounded: a line longer than max-in-memory-bytes is unscanned-limit, never "not a pickle".

def test_line_over_the_in_memory_limit_is_unscanned_limit() -> None:
    limits = Limits(max_in_memory_bytes=10_000)
    for data in (b"I" + b" " * 20_000 + b"5\n.", b"c" + b"o" * 20_000 + b"\nsystem\n.",
                 b"S'" + b"a" * 20_000 + b"'\n."):
        result = scan_byte_source(BytesSource(data, "x.bin"), "x.bin", ScanOptions(limits=limits))
        rules = [f.rule_id for f in result.findings]
        assert "unscanned-limit" in rules, rules
        assert result.formats == ["pickle"]
        # Under the default limit the same stream is a pickle walked to its STOP.
        full = scan_byte_source(BytesSource(data, "x.bin"), "x.bin", ScanOptions())
        assert not any(f.unscanned for f in full.findings), [f.rule_id for f in full.findings]


@pytest.mark.parametrize("data", [
    b"I" + b"0" * 5000 + b"\ncos\nsystem\n(S'true'\ntR.",                  # long INT line first
    b"F" + b"1" * 5000 + b".5\ncos\nsystem\n(S'true'\ntR.",                # long FLOAT line first
    b"I010\ncos\nsystem\n(S'true'\ntR.",                                   # C-only INT form first
    b"p" + b"0" * 100 + b"\n",                                              # PUT with nothing to memoize
    b"\x80\x01cos\nsystem\n(S'true'\ntR\x00",                               # PROTO 1, broken after the call
])
def test_top_level_streams_that_look_like_pickles_never_pass(data: bytes) -> None:
    """Whatever its name, a stream a loader would unpickle is walked to STOP and judged, or flagged."""
    result = scan_byte_source(BytesSource(data, "notes.txt"), "notes.txt", ScanOptions())
    flagged = [f.rule_id for f in result.findings if f.unscanned or f.severity >= Severity.HIGH]
    loads = run_oracle([data])[0].stops
    if loads or b"system" in data:
        assert flagged, (result.formats, [f.rule_id for f in result.findings])


def test_oracle_never_imports_or_calls(tmp_path: Path) -> None:
    """The oracle resolves os.system to its stub: the payload's canary is never created."""
    canary = tmp_path / "canary"
    data = f"cos\nsystem\n(S'touch {canary}'\ntR.".encode()
    ref = run_oracle([data])[0]
    assert ref.py.status == ref.c.status == "stop"
    assert ref.globals == [("os", "system")]
    assert not canary.exists()


def test_oracle_child_limits_end_only_the_stream_they_hit() -> None:
    """A stream that makes the C unpickler allocate past the child's memory limit raises MemoryError;
    the batch continues."""
    big_put = b"N" + b"r\xff\xff\xff\x7f" + b"."
    ref = run_oracle([big_put, b"N."])
    assert len(ref) == 2 and ref[1].stops


def test_random_short_streams_quickly() -> None:
    """Short random byte strings starting with an opcode: the cheapest kind of fuzz, 500 of them."""
    rng = random.Random(3)
    streams = [bytes([rng.choice(b"(NIFLcSVgp}]K\x80")]) + rng.randbytes(rng.randrange(1, 12))
               for _ in range(500)]
    streams += HAND_WRITTEN
    check(streams)
