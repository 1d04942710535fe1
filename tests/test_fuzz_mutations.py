"""Property-based fuzzing of every reader through the real scan driver, seeded with real fixtures.

Mutations: bit flips, truncation, length-like fields forced to extremes, duplicated and reordered
chunks. Properties: no reader crashes (a ``scanner-error`` finding means a reader raised something
it did not turn into a precise finding), no scan of these (< 1 MB) files takes over 2 s of CPU time, and a
mutated malicious file whose payload bytes are still present is never reported clean.

Runs are derandomized (the seed is fixed, so a failure reproduces exactly); raise
``SAFEMODEL_FUZZ_EXAMPLES`` for a longer local run. ``fuzz/`` holds the atheris harness.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from cputime import cpu_seconds
from fixture_factory import MALICIOUS, make_zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safemodel_ci.findings import EXIT_OK, ScanReport
from safemodel_ci.scanner import ScanOptions, scan_byte_source
from safemodel_ci.source import BytesSource

EXAMPLES = int(os.environ.get("SAFEMODEL_FUZZ_EXAMPLES", "150"))
#: Bytes that show the os.system payload is still in a (not compressed) malicious fixture.
PAYLOAD_MARKERS = (b"system", b"posix")
OPTIONS = ScanOptions()

_ZOO: Dict[str, Tuple[bytes, str]] = {}
FIXED_CANARY = Path("/nonexistent/safemodel-fuzz-canary")
#: Seeds whose payload sits in a container appended to another format: a mutation that breaks the
#: container's structure makes the payload unreachable to every loader (zip readers need a valid
#: end record and directory), so only crashes and time are checked for them.
APPENDED_PAYLOAD = frozenset({"evil_tail.safetensors"})
#: Seeds whose reader can loop inside a C library on some mutations: libhdf5 never returns from some
#: damaged global heaps. The HDF5 reader now stops h5py's forked child after
#: ``Limits.max_native_parse_seconds`` (an ``unscanned-limit``, ``test_hardening_regressions``), but
#: that is longer than this test's 2 s per scan, so these seeds get the truncation test only.
HANGS_IN_C = frozenset({"model.h5", "evil_module.h5"})


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


#: Opcodes that call what the stack holds: the payload runs when one of them runs after its import.
CALL_OPCODES = frozenset({"REDUCE", "OBJ", "INST", "NEWOBJ", "NEWOBJ_EX", "BUILD"})


def _pickle_load_stops_before_payload(data: bytes) -> bool:
    """True when ``pickle.load`` from offset 0 cannot run the payload (it fails or stops first).

    ``pickletools.dis`` walks opcodes with stack and mark checking and never executes anything; it
    prints an opcode once that opcode's checks passed, so a loader gets as far as the printed
    opcodes. The payload runs when a call opcode (``REDUCE``, ``OBJ``, ``INST`` ...) is reached
    after the payload's import; a stream that breaks between the import and the call only
    imports (here ``posix``, already imported).
    """
    payload_at = min((data.find(m) for m in PAYLOAD_MARKERS if m in data), default=len(data))
    out = io.StringIO()
    try:
        pickletools.dis(data, out)
    except Exception:  # noqa: BLE001 - any disassembly error is where a loader fails too
        pass
    printed = []
    for line in out.getvalue().splitlines():
        head, _, rest = line.partition(":")
        tokens = rest.split()
        if head.strip().isdigit() and len(tokens) >= 2:
            printed.append((int(head), tokens[1], line))
    limit = len(data)
    try:  # dis accepts any PROTO argument; the unpickler refuses unknown protocols at once
        for op, arg, pos in pickletools.genops(data):
            if op.name == "PROTO" and not 0 <= arg <= pickle.HIGHEST_PROTOCOL:
                limit = pos
                break
    except Exception:  # noqa: BLE001
        pass
    for pos, name, line in printed:
        if pos >= limit:
            break
        if name in CALL_OPCODES and (pos > payload_at or any(m.decode() in line for m in PAYLOAD_MARKERS)):
            return False
    return True


def _stored_zip_members(data: bytes) -> Optional[List[bytes]]:
    """The raw bytes of every stored member, as torch reads them (no CRC check); None if not a zip
    that zipfile's directory parser accepts (then no zip loader reaches its members either)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception:  # noqa: BLE001 - any directory error means no loader opens it
        return None
    members = []
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            continue
        local = data[info.header_offset:info.header_offset + 30]
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            continue
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + \
            int.from_bytes(local[28:30], "little")
        members.append(data[start:start + info.compress_size])
    return members


def _payload_unreachable(mutated: bytes, result_formats: List[str]) -> bool:
    """True when no loader can reach the payload: a top-level pickle that stops before it, or a zip
    whose every stored member holding the payload is a pickle that stops before it."""
    if not result_formats:
        return _pickle_load_stops_before_payload(mutated)
    members = _stored_zip_members(mutated)
    if not members:
        return False
    carriers = [m for m in members if any(marker in m for marker in PAYLOAD_MARKERS)]
    return bool(carriers) and all(_pickle_load_stops_before_payload(m) for m in carriers)


def _check(name: str, original: bytes, verdict: str, mutated: bytes) -> None:
    start = cpu_seconds()  # CPU time: a loaded CI machine cannot fail the 2 s property
    result = scan_byte_source(BytesSource(mutated, name=name), name, OPTIONS)
    elapsed = cpu_seconds() - start
    crashes = [f for f in result.findings if f.rule_id == "scanner-error"]
    assert not crashes, f"{name}: reader crashed on a mutation: {crashes[0].message}"
    assert elapsed < 2.0, f"{name}: scan of a {len(mutated)}-byte mutation took {elapsed:.2f}s of CPU time"
    if verdict == MALICIOUS and name not in APPENDED_PAYLOAD and any(m in original for m in PAYLOAD_MARKERS):
        unreachable = _payload_unreachable(mutated, result.formats)
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
    if name in HANGS_IN_C:
        pytest.skip(f"{name}: h5py can hang in C on mutations (see HANGS_IN_C)")
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
