"""Differential oracle for the pickle VM: CPython's own two unpicklers, made inert.

``pickle._Unpickler`` (pure Python, what joblib uses) and the C ``pickle.Unpickler`` (what
``pickle.load``, torch and numpy use) are subclassed so that ``find_class`` records the (module,
name) it is asked for and returns :class:`Stub`, an inert class, and ``persistent_load`` returns a
Stub instance. Nothing real is imported or called: every global resolves to the stub, EXT codes find
an empty registry, and the only callables a stream can reach are the stub and its methods, which
accept any arguments and do nothing.

They run in a child process (``python pickle_oracle.py --child FILE``) under CPU and address-space
limits (``resource.setrlimit``), many streams per child; a child killed by a limit loses only the
stream it was on (reported as ``killed``), the batch goes on in a new child.

The C unpickler runs twice: on a peekable file (``pickle.load`` of an open file, numpy; it then
reads like ``pickle.loads``) and on a plain ``io.BytesIO`` (torch), where a read that crosses the
end of a FRAME drops the rest of the frame's bytes.

Loader settings are the most permissive any real loader uses, so that "CPython raises" means every
loader raises: ``encoding='latin1'`` (numpy and torch may pass 'latin1'; with the default 'ASCII' a
non-ASCII STRING raises) and no 4300-digit limit on int() (Python < 3.11 and
``sys.set_int_max_str_digits(0)`` read any length).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Sequence, Set, Tuple

#: Per child process: CPU seconds and address space.
CHILD_CPU_SECONDS = 300
CHILD_MEMORY_BYTES = 1536 << 20


@dataclass
class Outcome:
    """What one unpickler did with one stream."""

    #: "stop" (load() returned), "error" (it raised), "killed" (a resource limit ended the child).
    status: str
    globals: List[Tuple[str, str]] = field(default_factory=list)
    error: str = ""


@dataclass
class OracleResult:
    """Both unpicklers on one stream."""

    py: Outcome
    c: Outcome
    c_bytesio: Outcome

    @property
    def outcomes(self) -> Tuple[Outcome, Outcome, Outcome]:
        return (self.py, self.c, self.c_bytesio)

    @property
    def stops(self) -> bool:
        """Some unpickler reached STOP: some loader loads this stream."""
        return any(o.status == "stop" for o in self.outcomes)

    @property
    def both_raise(self) -> bool:
        """Every unpickler raised (none killed): no loader loads it."""
        return all(o.status == "error" for o in self.outcomes)

    @property
    def globals(self) -> List[Tuple[str, str]]:
        """Every (module, name) any unpickler asked ``find_class`` for, in order, once each."""
        seen: Dict[Tuple[str, str], None] = {}
        for g in self.py.globals + self.c.globals + self.c_bytesio.globals:
            seen.setdefault(tuple(g), None)  # type: ignore[arg-type]
        return list(seen)  # type: ignore[arg-type]


_KINDS = ("py", "c", "c_bytesio")


def _write_batch(path: str, streams: Sequence[bytes]) -> None:
    with open(path, "wb") as fh:
        for data in streams:
            fh.write(struct.pack("<Q", len(data)))
            fh.write(data)


def run_oracle(streams: Sequence[bytes]) -> List[OracleResult]:
    """Both CPython unpicklers on every stream, in resource-limited child processes."""
    results: List[OracleResult] = []
    start = 0
    with tempfile.TemporaryDirectory(prefix="safemodel-oracle-") as tmp:
        while start < len(streams):
            batch = os.path.join(tmp, "batch")
            _write_batch(batch, streams[start:])
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", batch],
                                  capture_output=True, text=True)
            got = 0
            for line in proc.stdout.splitlines():
                rec = json.loads(line)
                results.append(OracleResult(*(
                    Outcome(rec[k][0], [tuple(g) for g in rec[k][1]], rec[k][2]) for k in _KINDS)))
                got += 1
            start += got
            if start < len(streams):  # the child died on streams[start]: a limit, or a crash
                if proc.returncode == 0:
                    raise RuntimeError(f"oracle child stopped early without an error: {proc.stderr[-2000:]}")
                why = f"child ended with {proc.returncode}"
                results.append(OracleResult(*(Outcome("killed", error=why) for _ in _KINDS)))
                start += 1
    return results


# ---------------------------------------------------------------------------------------------
# The comparison with the VM (used by tests/formats/pickle/test_pickle_differential.py and
# fuzz/fuzz_readers.py).

def _mapped(module: str, name: str) -> Tuple[str, str]:
    import _compat_pickle

    """The name the unpickler's own find_class imports (Python 2 names mapped, as fix_imports does)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def vm_outcome(data: bytes) -> Tuple[bool, Set[Tuple[str, str]], bool, List[str]]:
    """(reached STOP, globals reported, clean, finding rule ids) of the VM on one stream."""
    from safemodel_ci.context import Limits, ScanContext
    from safemodel_ci.findings import Severity
    from safemodel_ci.formats.pickle import scan_pickle_at
    from safemodel_ci.policy import Policy
    from safemodel_ci.source import BytesSource

    ctx = ScanContext("stream.pkl", Policy(), Limits())
    result = scan_pickle_at(BytesSource(data), ctx)
    bad = [f.rule_id for f in ctx.findings if f.unscanned or f.severity > Severity.INFO]
    return result.complete, set(result.globals), result.complete and not bad, bad


def violations(streams: Sequence[bytes], oracle: Sequence[OracleResult]) -> Tuple[List[str], Dict[str, int]]:
    """Every disagreement with the oracle, described; and counts of what the streams did."""
    from safemodel_ci.formats.pickle import MAX_INLINE_BYTES

    problems: List[str] = []
    counts = {"streams": len(streams), "cpython_stop": 0, "both_raise": 0, "killed": 0, "vm_stop": 0}
    for data, ref in zip(streams, oracle):
        stop, globs, clean, bad = vm_outcome(data)
        counts["vm_stop"] += stop
        counts["cpython_stop"] += ref.stops
        counts["both_raise"] += ref.both_raise
        counts["killed"] += any(o.status == "killed" for o in ref.outcomes)
        shown = repr(data[:300]) + ("..." if len(data) > 300 else "")
        if ref.stops and not stop:
            problems.append(f"CPython reaches STOP ({[o.status for o in ref.outcomes]}), the VM does "
                            f"not ({bad}): {shown}")
        missing = [g for g in ref.globals if g not in globs and _mapped(*g) not in globs]
        if "pickle-unresolved-global" in bad:
            # A module or name over MAX_INLINE_BYTES is not kept: the VM reports the import as
            # unresolved (CRITICAL) instead of by name.
            missing = [g for g in missing if max(len(g[0]), len(g[1])) <= MAX_INLINE_BYTES]
        if missing:
            problems.append(f"globals CPython resolves that the VM does not report: {missing[:5]}: {shown}")
        # joblib's own unpickler reads an array's raw bytes after a NumpyArrayWrapper's BUILD, which
        # plain unpicklers run as opcodes: the VM walks it as joblib.load does (a real loader).
        joblib = any(g[1] == "NumpyArrayWrapper" for g in ref.globals)
        if ref.both_raise and clean and not joblib:
            problems.append(f"every unpickler raises ({[o.error for o in ref.outcomes]}) but the VM "
                            f"reports the stream clean: {shown}")
    return problems, counts


# ---------------------------------------------------------------------------------------------
# The child: never imported by the tests, run as a script.

def _child(batch_path: str) -> None:  # pragma: no cover - runs in the child process
    import io
    import pickle
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU_SECONDS, CHILD_CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)

    def anything(*args: object, **kwargs: object) -> None:
        return None

    class StubType(type):
        """Stub classes iterate as empty (a real class may be iterable: an Enum)."""

        def __iter__(cls) -> "Iterator[object]":
            return iter(())

    class Stub(bytearray, metaclass=StubType):
        """Whatever a global or a persistent id would have been: accepts any construction, call,
        state, item or attribute, and does nothing. A bytearray subclass so that READONLY_BUFFER
        on it works (a loader's array would be a buffer too); hashable by identity."""

        def __new__(cls, *args: object, **kwargs: object) -> "Stub":
            return bytearray.__new__(cls)

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __call__(self, *args: object, **kwargs: object) -> "Stub":
            return Stub()

        __hash__ = object.__hash__
        __eq__ = object.__eq__
        __ne__ = object.__ne__

        def __bool__(self) -> bool:
            return True

        # Defined without ``self`` so that they work on the class and on instances alike.
        __setstate__ = staticmethod(anything)
        append = staticmethod(anything)
        extend = staticmethod(anything)
        add = staticmethod(anything)

        def __setitem__(self, key: object, value: object) -> None:
            pass

    found: List[Tuple[str, str]] = []

    def make(base: type) -> type:
        class Oracle(base):  # type: ignore[misc, valid-type]
            def find_class(self, module: str, name: str) -> type:
                found.append((module, name))
                return Stub

            def persistent_load(self, pid: object) -> Stub:
                return Stub()

        return Oracle

    kinds = {"py": (make(pickle._Unpickler), io.BytesIO),  # type: ignore[attr-defined]
             "c": (make(pickle.Unpickler), lambda d: io.BufferedReader(io.BytesIO(d))),
             "c_bytesio": (make(pickle.Unpickler), io.BytesIO)}
    out = sys.stdout
    with open(batch_path, "rb") as fh:
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            data = fh.read(struct.unpack("<Q", head)[0])
            rec = {}
            for kind, (cls, wrap) in kinds.items():
                del found[:]
                try:
                    value = cls(wrap(data), encoding="latin1").load()
                    del value
                    status, err = "stop", ""
                except BaseException as exc:  # noqa: BLE001 - anything the unpickler raises
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    status, err = "error", f"{type(exc).__name__}: {str(exc)[:200]}"
                rec[kind] = [status, found[:10_000], err]
            out.write(json.dumps(rec) + "\n")
            out.flush()


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        sys.exit("usage: pickle_oracle.py --child BATCH_FILE")
