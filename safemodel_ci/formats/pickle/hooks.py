"""The policy hooks of the VM: what an import, a call or an operation on a value means.

Every import goes to the policy (allowlist first) and becomes a :class:`~.values.Global` carrying its
verdict; every call site (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD, and the method calls
APPEND/SETITEM/ADDITEMS make on non-builtin objects) is recorded against the callable it calls; bytes
built in the stream that reach a loader (``pickle.loads``, ``torch.load`` ...) are queued for a nested
scan. Operations on values the stream built itself (lists, dicts, sets, literals) are checked as the
loader would run them: where both unpicklers raise, the walk breaks.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import re

from ...context import ScanContext
from ...findings import Severity
from ...pickle_policy import ARGUMENT_CALLERS, full_name
from ...policy import GlobalVerdict
from ...source import ByteSource, BytesSource
from . import joblib_arrays
from .base import _C, _PY, MAX_RECORDS, MAX_RETAINED_ITEMS, _Broken, _Record
from .joblib_arrays import _JOBLIB_WRAPPERS
from .reading import _FastReader, _Latin1OfUtf8
from .values import (
    _HASHABLE,
    _NOT_ITERABLE,
    _SYMBOLIC,
    BigData,
    Global,
    Obj,
    Opaque,
    PDict,
    PList,
    PSet,
    Sym,
    _CByteArray,
    _computed,
    _Lost,
    _is_byte,
    _is_kwargs,
    _item_assignable,
    _truthy,
    _unhashable,
    describe,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

_BYTES_IO = frozenset({"io.BytesIO", "_io.BytesIO"})

# Text codecs whose result the VM computes for ``_codecs.encode(str, encoding)`` (pure functions).
_CODEC_ALIASES = {
    "latin1": "latin-1", "latin_1": "latin-1", "latin-1": "latin-1", "iso8859_1": "latin-1",
    "iso_8859_1": "latin-1", "iso-8859-1": "latin-1", "l1": "latin-1", "8859": "latin-1",
    "utf8": "utf-8", "utf_8": "utf-8", "utf-8": "utf-8", "u8": "utf-8", "ascii": "ascii",
    "us_ascii": "ascii", "us-ascii": "ascii", "raw_unicode_escape": "raw-unicode-escape",
    "unicode_escape": "unicode-escape", "rot13": "rot13", "rot_13": "rot13",
    "utf_16": "utf-16", "utf-16": "utf-16", "utf16": "utf-16", "utf_32": "utf-32", "utf-32": "utf-32",
}


_CALL_KINDS = frozenset({"REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})
_IDENTIFIER_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def _verdict_rank(v: GlobalVerdict) -> int:
    return -1 if v.rule_id is None else int(v.severity)

class _PolicyHooks:
    """The meaning of imports, calls and operations on values, mixed into :class:`~.vm._PickleVM`.

    It works on the machine's state (stack, reader, records) and uses the machine's operations
    ``_read``, ``_kill`` and ``_scan_stream`` (the stream scanner, for nested pickles) and
    ``_scan_inline_pickle`` / ``_check_array_bytes_as_opcodes`` (through :mod:`.joblib_arrays`).
    """

    source: ByteSource
    ctx: Optional[ScanContext]
    silent: bool
    policy: Any
    reader: _FastReader
    stack: List[Any]
    proto: int
    records: Dict[Tuple[str, str], _Record]
    dropped_records: int
    globals: List[Tuple[str, str]]
    _globals_seen: set
    retained_items: int
    import_evidence: bool
    _just_imported: bool
    _pending_nested: List[Callable[[], None]]
    _loader_imported: bool
    memo_exact: int

    # -- findings ------------------------------------------------------------------------------
    def _record(self, key: Tuple[str, str], make: Callable[[], _Record]) -> Optional[_Record]:
        rec = self.records.get(key)
        if rec is not None:
            rec.count += 1
            return rec
        if len(self.records) >= MAX_RECORDS:
            self.dropped_records += 1
            return None
        rec = make()
        self.records[key] = rec
        return rec

    def _anomaly(self, rule_id: str, subject: str, reason: str, pos: int, opcode: str,
                 key: Optional[str] = None, severity: Optional[Severity] = None) -> Optional[_Record]:
        from ...rules import rule

        sev = severity if severity is not None else rule(rule_id).severity
        return self._record((rule_id, key or subject),
                            lambda: _Record(rule_id, sev, subject, reason, pos, opcode))

    def _classify(self, module: str, name: str) -> GlobalVerdict:
        if self.policy is None:
            from ...pickle_policy import classify_global
            return classify_global(module, name, frozenset())
        return self.policy.classify_global(module, name)

    def _global(self, module: str, name: str, pos: int, opcode: str) -> Global:
        """Resolve and judge an import, as ``Unpickler.find_class`` would see it."""
        mapped = (module, name)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            mapped = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            mapped = (_compat_pickle.IMPORT_MAPPING[module], name)
        if self.proto < 3:  # the loader maps Python 2 names (fix_imports) below protocol 3
            verdict = self._classify(*mapped)
            module, name = mapped
        else:
            verdict = self._classify(module, name)
            if mapped != (module, name):  # a Python 2 name: the worse of both readings
                other = self._classify(*mapped)
                if _verdict_rank(other) > _verdict_rank(verdict):
                    verdict = other
        if (module, name) not in self._globals_seen and len(self.globals) < 10_000:
            self._globals_seen.add((module, name))
            self.globals.append((module, name))
        record = None
        path = full_name(module, name)
        plausible = bool(_IDENTIFIER_PATH.match(module) and _IDENTIFIER_PATH.match(name))
        self._just_imported = plausible
        if verdict.rule_id is not None:
            record = self._record(
                (verdict.rule_id, path),
                lambda: _Record(verdict.rule_id or "", verdict.severity, path, verdict.reason, pos, opcode,
                                extra={"global": path, "module": module, "name": name}))
        elif verdict.allowed_by:  # a config entry turned a finding off: one INFO note per entry
            extra = {"global": path, "entry": verdict.allowed_by, "turned_off": verdict.turned_off}
            self._record(("allowed-by-config", verdict.allowed_by),
                         lambda: _Record("allowed-by-config", Severity.INFO, path, verdict.reason, pos,
                                         opcode, extra=extra))
        glob = Global(module, name, record, allowed=verdict.rule_id is None)
        glob.plausible = plausible
        if glob.loader and glob.allowed:
            self._loader_imported = True
        return glob

    def _unresolved(self, module: Any, name: Any, pos: int, opcode: str) -> Global:
        reason = (f"module {describe(module)} and name {describe(name)} are not literal strings; "
                  "what is imported is only known when the pickle runs")
        rec = self._anomaly("pickle-unresolved-global", f"{opcode} at offset {pos}", reason, pos, opcode,
                            key=str(pos))
        return Global(None, None, rec, allowed=False)

    def _lost_global(self, module: Any, name: Any, pos: int) -> Global:
        """STACK_GLOBAL of a module or name a memo entry past the memo budget held: the import is not
        known, and it is a scan limit (``unscanned-limit``), not an import the stream computed."""
        reason = (f"the module ({describe(module)}) or name ({describe(name)}) of this import comes from a "
                  f"memo entry past the first {self.memo_exact} entries, whose text the scan does not keep "
                  "(memory bound): the import is not known; the rest of the stream was scanned")
        rec = self._anomaly("unscanned-limit", f"STACK_GLOBAL at offset {pos}", reason, pos, "STACK_GLOBAL",
                            key=f"lost-global@{pos}")
        return Global(None, None, rec, allowed=False)

    # -- calls -----------------------------------------------------------------------------------
    def _note_call(self, target: Any, kind: str, pos: int) -> None:
        if isinstance(target, Global) and target.plausible and kind in _CALL_KINDS:
            self.import_evidence = True
        rec = None
        if isinstance(target, Global):
            rec = target.record
        elif isinstance(target, Obj) and target.cls is not None:
            rec = target.cls.record
        elif isinstance(target, Opaque):
            rec = target.record
        if rec is not None:
            rec.add_call(kind, pos)

    def _check_escaped_loaders(self, values: Sequence[Any], pos: int) -> None:
        """An allowlisted loader handed to another callable would load bytes nobody scanned."""
        if not self._loader_imported:
            return
        todo = [(v, 0) for v in values]
        seen = 0
        while todo and seen < 2000:
            v, depth = todo.pop()
            seen += 1
            if isinstance(v, Global):
                if v.loader and v.allowed:
                    self._anomaly("pickle-nested-opaque", v.path,
                                  f"{v.path} is passed on as a value, so what it loads cannot be "
                                  "followed without running the pickle", pos, "REDUCE")
            elif depth < 4:
                if isinstance(v, (tuple, PList)):
                    todo.extend((x, depth + 1) for x in v)
                elif isinstance(v, PDict):
                    todo.extend((x, depth + 1) for kv in v.pairs for x in kv)
                elif isinstance(v, PSet):
                    todo.extend((x, depth + 1) for x in v.items)

    def _call(self, callee: Any, args: Any, kind: str, pos: int, kwargs: Any = None) -> Any:
        """What calling ``callee(*args)`` returns, symbolically; records the call site."""
        if not isinstance(callee, _SYMBOLIC) or (kind in ("NEWOBJ", "NEWOBJ_EX")
                                                  and not isinstance(callee, Global)):
            # NEWOBJ takes a class: an imported one (what a call or a persistent load returns is an
            # instance, and _pickle checks for a type).
            raise _Broken(pos, f"{kind} calls {describe(callee)}, which is not callable (the loader raises)")
        if type(args) in _NOT_ITERABLE or (kwargs is not None and not _is_kwargs(kwargs)):
            raise _Broken(pos, f"{kind} with arguments {describe(args)} (the loader raises TypeError)")
        self._note_call(callee, kind, pos)
        if not isinstance(callee, Global):
            # The callee is an instance the stream made (or a loaded/persistent object): the call runs
            # its type's __call__, which no allowlist entry admits.
            self._built_call(callee, f"{kind} calls {describe(callee)}", pos, kind)
        extra = [kwargs] if kwargs is not None else []
        direct_loader = isinstance(callee, Global) and callee.loader and kind in ("REDUCE", "INST", "OBJ")
        self._check_escaped_loaders([args, *extra] if not direct_loader else [*extra], pos)
        if not isinstance(callee, Global) or callee.module is None:
            return Obj(None)
        path = callee.path
        argv = tuple(args) if isinstance(args, (tuple, PList)) else None
        if argv is not None and kind in ("REDUCE", "INST", "OBJ"):
            for i in ARGUMENT_CALLERS.get(path, ()):
                if i < len(argv) and isinstance(argv[i], Sym) and not isinstance(argv[i], Global):
                    self._built_call(argv[i], f"{path} calls its argument {i} ({describe(argv[i])})",
                                     pos, kind)
        if direct_loader:
            self._nested(callee, argv, pos)
            return Opaque(f"the object {path} loads")
        if argv is None:
            return Obj(callee)
        if path == "_codecs.encode" and kind == "REDUCE":
            return _computed(self._codecs_encode(argv))
        if path in ("builtins.bytes", "builtins.bytearray") and kind in ("REDUCE", "NEWOBJ"):
            value = self._codecs_encode(argv) if len(argv) == 2 else (
                argv[0] if argv and isinstance(argv[0], (bytes, bytearray, BigData)) else
                (b"" if not argv else Obj(callee)))
            if path == "builtins.bytearray" and isinstance(value, bytes):
                return _CByteArray(value)
            return _computed(value)
        if path in _BYTES_IO:
            return Obj(callee, {"bytes": argv[0] if argv else b""})
        if path in ("copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__") and argv \
                and isinstance(argv[0], Global):
            self._note_call(argv[0], f"{kind} via {path}", pos)
            if path == "copyreg._reconstructor" and len(argv) > 1:  # runs base.__init__(obj, state)
                self._note_call(argv[1], f"{kind} via {path}", pos)
                base = argv[1]
                if isinstance(base, Global) and 0 in ARGUMENT_CALLERS.get(base.path, ()) and len(argv) > 2 \
                        and isinstance(argv[2], Sym) and not isinstance(argv[2], Global):
                    # state is __init__'s first argument, which that __init__ calls
                    self._built_call(argv[2], f"{path} runs {base.path}.__init__, which calls its argument "
                                     f"0 ({describe(argv[2])})", pos, kind)
            cls = argv[0]
            rest = argv[1:] if path != "copyreg._reconstructor" else ()
            return self._construct(cls, rest, kind if path != "copyreg._reconstructor" else "NEWOBJ")
        return self._construct(callee, argv, kind)

    def _built_call(self, target: Any, what: str, pos: int, opcode: str) -> None:
        """Report a call whose callable is not an imported global (its __call__ was never judged)."""
        cls = target.cls.path if isinstance(target, Obj) and target.cls is not None else None
        reason = (f"{what}: the call runs the __call__ of "
                  f"{'an instance of ' + cls if cls else 'an object built at load time'}, which no "
                  "allowlist entry admits (an admitted class's instance can dispatch to any function)")
        self._anomaly("pickle-calls-built-object", f"{opcode} at offset {pos}", reason, pos, opcode,
                      key=str(pos))

    def _construct(self, cls: Global, argv: Sequence[Any], kind: str) -> Obj:
        if cls.path == "numpy.dtype" and argv:
            return Obj(cls, {"descr": argv[0], "argv": tuple(argv)})
        if cls.path in _JOBLIB_WRAPPERS:
            return Obj(cls, joblib_arrays.wrapper_attrs(argv, kind))
        return Obj(cls)

    def _codecs_encode(self, argv: Sequence[Any]) -> Any:
        text = argv[0] if argv else None
        encoding = argv[1] if len(argv) > 1 else "utf-8"
        if not isinstance(encoding, str):
            return BigData("bytes", None, None)
        codec = _CODEC_ALIASES.get(encoding.strip().lower().replace(" ", "_"))
        if isinstance(text, BigData):
            # A large string still has a known source range: protocol 2 writes big bytes objects as
            # _codecs.encode(<BINUNICODE of their latin-1 text>, 'latin1').
            if text.offset is not None and text.kind == "str8" and codec == "latin-1":
                return BigData("bytes", text.length, text.offset)
            if text.offset is not None and text.kind == "str" and codec == "utf-8":
                return BigData("bytes", text.length, text.offset)
            if text.offset is not None and text.kind == "str" and codec == "latin-1":
                return BigData("bytes-from-utf8", text.length, text.offset)
            return BigData("bytes", None, None)
        if codec is None or not isinstance(text, str):
            return BigData("bytes", None, None)
        try:
            if codec == "rot13":
                return codecs.encode(text, "rot13").encode("latin-1")
            return text.encode(codec)
        except (UnicodeError, ValueError):
            return BigData("bytes", None, None)

    def _nested(self, loader: Global, argv: Optional[Tuple[Any, ...]], pos: int) -> None:
        """Scan what ``loader`` would load: bytes built in the stream, or say it cannot be known."""
        data = argv[0] if argv else None
        if isinstance(data, Obj) and data.cls is not None and data.cls.path in _BYTES_IO and data.attrs:
            data = data.attrs.get("bytes")
        src: Optional[ByteSource] = None
        if isinstance(data, (bytes, bytearray)):
            src = BytesSource(bytes(data), name=f"<nested @{pos}>")
        elif isinstance(data, BigData) and data.kind in ("bytes", "bytearray") and data.offset is not None:
            src = self.source.slice(data.offset, data.length or 0)
        elif isinstance(data, BigData) and data.kind == "bytes-from-utf8" and data.offset is not None:
            src = _Latin1OfUtf8(self.source, data.offset, data.length or 0)
        if src is None:
            self._anomaly("pickle-nested-opaque", loader.path,
                          f"{loader.path} is called on {describe(data)}"
                          + ("" if isinstance(data, _Lost) else ", which is computed at load time"),
                          pos, "REDUCE", key=f"{loader.path}@{pos}")
            return
        if self.silent or self.ctx is None:
            return
        kind = loader.loader
        ctx = self.ctx
        n = src.size

        def run() -> None:
            ctx.report("pickle-nested", f"{loader.path} loads {n} bytes built inside the stream; they "
                       f"were scanned as a nested {'pickle' if kind == 'pickle' else 'file'}",
                       offset=pos, details={"loader": loader.path, "size": n})
            member = f"<nested pickle @{pos}>"
            # The context's one depth check: too deep, it reports unscanned-limit there and gives None.
            child = ctx.enter(member, "nested pickle not scanned")
            if child is None:
                return
            try:
                source = src.materialize() if isinstance(src, _Latin1OfUtf8) else src
            except UnicodeError:  # not latin-1 text: the loader's encode fails, nothing loads
                return
            try:
                if kind == "pickle":
                    child.add_format("pickle")
                    self._scan_stream(source, child)
                else:
                    child.scan(source)
            finally:
                if source is not src:
                    source.close()

        self._pending_nested.append(run)

    # -- containers ------------------------------------------------------------------------------
    def _keep(self, n: int) -> bool:
        if self.retained_items + n > MAX_RETAINED_ITEMS:
            return False
        self.retained_items += n
        return True

    def _append(self, target: Any, items: List[Any], pos: int, kind: str) -> None:
        if isinstance(target, PList):
            if self._keep(len(items)):
                target.extend(items)
            else:
                target.dropped += len(items)
            return
        if not isinstance(target, _SYMBOLIC):
            # A value the stream built itself has no append/extend (a bytearray takes bytes):
            # both unpicklers raise, except _pickle on an empty APPENDS, which does nothing.
            if not (isinstance(target, bytearray) and all(_is_byte(v) for v in items)):
                if items:
                    raise _Broken(pos, f"{kind} to {describe(target)} (the loader raises)")
                self._kill(_PY, pos, f"empty {kind} to {describe(target)}")  # pickle.py looks up extend
            return
        # Anything else: the loader calls target.append / target.extend, a method call.
        self._mutating_call(target, items, pos, kind)

    def _mutating_call(self, target: Any, values: Sequence[Any], pos: int, kind: str) -> None:
        if isinstance(target, Global):
            self._anomaly("pickle-global-mutation", target.path,
                          f"{kind} modifies the imported object {target.path} itself", pos, kind)
        self._note_call(target, kind, pos)
        self._check_escaped_loaders(values, pos)
        if kind.startswith("SETITEM") and "__setstate__" in [k for k in values[0::2] if isinstance(k, str)]:
            # a mapping class whose __getattr__ reads its items would hand the value to a later BUILD
            self._state_hook(pos, kind)

    def _check_state_hook(self, state: Any, pos: int, kind: str) -> None:
        """BUILD's state (dict state or slot state) that gives the instance its own __setstate__."""
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if isinstance(part, PDict) and any(isinstance(k, str) and k == "__setstate__"
                                               for k, _ in part.pairs):
                self._state_hook(pos, kind)

    def _state_hook(self, pos: int, kind: str) -> None:
        # Both unpicklers find __setstate__ with getattr(inst, '__setstate__'), which reads the
        # instance's own attributes: the next BUILD on this object calls the stored value with its
        # state, a call of something no allowlist entry judged as a call target.
        self._built_call(None, f"{kind} stores a __setstate__ on an instance; the next BUILD on it calls "
                         "that value with its state", pos, kind)

    def _setitems(self, target: Any, pairs: List[Any], pos: int, kind: str) -> None:
        if len(pairs) % 2:
            raise _Broken(pos, f"{kind} with an odd number of items")
        if isinstance(target, PDict):
            for key in pairs[0::2]:
                if type(key) not in _HASHABLE and _unhashable(key):
                    raise _Broken(pos, f"{kind} with the unhashable key {describe(key)} (the loader raises)")
            if self._keep(len(pairs) // 2):
                target.add_pairs(zip(pairs[0::2], pairs[1::2]))
            else:
                target.dropped += len(pairs) // 2
            return
        if not isinstance(target, _SYMBOLIC):
            if pairs and not _item_assignable(target, pairs):
                raise _Broken(pos, f"{kind} on {describe(target)} (the loader raises)")
            return
        self._mutating_call(target, pairs, pos, kind)

    def _build(self, inst: Any, state: Any, pos: int) -> None:
        """BUILD: ``inst.__setstate__(state)`` or an attribute update; joblib arrays follow it."""
        if isinstance(inst, Global):
            self._anomaly("pickle-global-mutation", inst.path,
                          f"BUILD sets attributes of the imported object {inst.path} itself (not of "
                          "an instance): it rewrites a module, class or function for later use", pos, "BUILD")
        if not isinstance(inst, _SYMBOLIC):
            # No __setstate__ and no __dict__: pickle.py accepts only a false state (and slot state).
            slots = None
            if isinstance(state, tuple) and len(state) == 2:
                state, slots = state
            # pickle.py: a false state and slot state do nothing; _pickle: only a None state does, and
            # a slot state must be a dict (empty here).
            py_ok = not _truthy(state) and not _truthy(slots)
            c_ok = state is None and (slots is None or isinstance(slots, PDict) and not _truthy(slots))
            if not (py_ok or c_ok):
                raise _Broken(pos, f"BUILD sets the state of {describe(inst)} (the loader raises)")
            if not (py_ok and c_ok):
                self._kill(_C if py_ok else _PY, pos, f"BUILD on {describe(inst)}")
            return
        self._note_call(inst, "BUILD", pos)
        self._check_escaped_loaders([state], pos)
        self._check_state_hook(state, pos, "BUILD")
        if not isinstance(inst, Obj) or inst.cls is None:
            return
        path = inst.cls.path
        if path == "numpy.dtype":
            inst.attrs = dict(inst.attrs or {}, state=state)
        elif path in _JOBLIB_WRAPPERS:
            joblib_arrays.set_state(inst, state)
            joblib_arrays.skip_array(self, inst, pos)
