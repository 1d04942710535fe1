"""Property-based fuzzing of every reader through the real scan driver, seeded with real fixtures.

Mutations: bit flips, truncation, length-like fields forced to extremes, duplicated and reordered
chunks. Properties: no reader crashes (a ``scanner-error`` finding means a reader raised something
it did not turn into a precise finding), no scan of these (< 1 MB) files takes over 2 s, and a
mutated malicious file whose payload bytes are still present is never reported clean.

Runs are derandomized (the seed is fixed, so a failure reproduces exactly); raise
``SAFEMODEL_FUZZ_EXAMPLES`` for a longer local run. ``fuzz/`` holds the atheris harness.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest
from fixture_factory import MALICIOUS, make_zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safemodel_ci.findings import EXIT_OK, ScanReport
from safemodel_ci.scanner import ScanOptions, scan_byte_source
from safemodel_ci.source import BytesSource

EXAMPLES = int(os.environ.get("SAFEMODEL_FUZZ_EXAMPLES", "25"))
#: Bytes that show the os.system payload is still in a (not compressed) malicious fixture.
PAYLOAD_MARKERS = (b"system", b"posix")
OPTIONS = ScanOptions()

_ZOO: Dict[str, Tuple[bytes, str]] = {}
FIXED_CANARY = Path("/nonexistent/safemodel-fuzz-canary")
#: Seeds whose payload sits in a container appended to another format: a mutation that breaks the
#: container's structure makes the payload unreachable to every loader (zip readers need a valid
#: end record and directory), so only crashes and time are checked for them.
APPENDED_PAYLOAD = frozenset({"evil_tail.safetensors"})


def _zoo(tmp_dir: Path) -> Dict[str, Tuple[bytes, str]]:
    if not _ZOO:
        # A fixed canary path keeps the seeds byte-identical between runs (derandomized examples).
        expected = make_zoo(tmp_dir / "zoo", FIXED_CANARY)
        for name, verdict in sorted(expected.items()):
            _ZOO[name] = ((tmp_dir / "zoo" / name).read_bytes(), verdict)
    return _ZOO


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        kind = draw(st.sampled_from(["flip", "truncate", "extreme", "duplicate", "swap", "byte"]))
        i = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            buf[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del buf[i:]
        elif kind == "extreme":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 0xFF, 0x7F]))
            buf[i:i + width] = bytes([value]) * width
        elif kind == "duplicate":
            j = draw(st.integers(i, min(len(buf), i + 512)))
            buf[j:j] = buf[i:j]
        elif kind == "swap":
            j = draw(st.integers(i, min(len(buf), i + 256)))
            k = draw(st.integers(j, min(len(buf), j + 256)))
            buf[i:k] = buf[j:k] + buf[i:j]
    return bytes(buf)


def _pickle_load_stops_before_payload(data: bytes) -> bool:
    """True when ``pickle.load`` from offset 0 cannot reach the payload (it fails or stops first).

    ``pickletools.dis`` walks opcodes with stack checking and never executes anything; the
    position of the last opcode it printed is where a loader would fail or stop.
    """
    payload_at = min((data.find(m) for m in PAYLOAD_MARKERS if m in data), default=len(data))
    out = io.StringIO()
    try:
        pickletools.dis(data, out)
    except Exception:  # noqa: BLE001 - any disassembly error is where a loader fails too
        pass
    positions = [int(line.split(":", 1)[0]) for line in out.getvalue().splitlines()
                 if line.split(":", 1)[0].strip().isdigit()]
    stops_at = max(positions) if positions else 0
    try:  # dis accepts any PROTO argument; the unpickler refuses unknown protocols at once
        for op, arg, pos in pickletools.genops(data):
            if op.name == "PROTO" and not 0 <= arg <= pickle.HIGHEST_PROTOCOL:
                stops_at = min(stops_at, pos)
                break
    except Exception:  # noqa: BLE001
        pass
    return stops_at < payload_at


def _check(name: str, original: bytes, verdict: str, mutated: bytes) -> None:
    start = time.monotonic()
    result = scan_byte_source(BytesSource(mutated, name=name), name, OPTIONS)
    elapsed = time.monotonic() - start
    crashes = [f for f in result.findings if f.rule_id == "scanner-error"]
    assert not crashes, f"{name}: reader crashed on a mutation: {crashes[0].message}"
    assert elapsed < 2.0, f"{name}: scan of a {len(mutated)}-byte mutation took {elapsed:.2f}s"
    if verdict == MALICIOUS and name not in APPENDED_PAYLOAD and any(m in original for m in PAYLOAD_MARKERS):
        unreachable = not result.formats and _pickle_load_stops_before_payload(mutated)
        if any(m in mutated for m in PAYLOAD_MARKERS) and not unreachable:
            report = ScanReport([result])
            assert report.exit_code != EXIT_OK, (
                f"{name}: mutated malicious file reported clean: {[f.rule_id for f in result.findings]}")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[bytes, str]]:
    return _zoo(tmp_path_factory.mktemp("fuzz"))


def _seed_names() -> list:
    # Names are fixed by the factory; the fixture builds the files once per module.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return sorted(make_zoo(Path(d), Path(d) / "CANARY"))


@pytest.mark.parametrize("name", _seed_names())
def test_mutated_fixtures_never_crash_hang_or_pass(name: str, zoo: Dict[str, Tuple[bytes, str]]) -> None:
    original, verdict = zoo[name]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations(original))
    def run(mutated: bytes) -> None:
        _check(name, original, verdict, mutated)

    run()


@pytest.mark.parametrize("name", _seed_names())
def test_every_truncation_prefix_is_handled(name: str, zoo: Dict[str, Tuple[bytes, str]]) -> None:
    """Truncation at evenly spaced points (where loaders see 'unexpected end of file')."""
    original, verdict = zoo[name]
    step = max(1, len(original) // 16)
    for cut in range(0, len(original), step):
        _check(name, original, verdict, original[:cut])
