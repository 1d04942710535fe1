"""What every module of the pickle VM shares: its memory and report limits, the bits naming the two
unpicklers a walk follows, and the signals and records a walk produces."""

from __future__ import annotations


from ...findings import Severity
from ...record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional

#: A str/bytes payload longer than this is not read: a placeholder keeps its length and offset.
MAX_INLINE_BYTES = 1 << 20
#: Total bytes of str/bytes values kept in memory per stream; beyond it payloads become placeholders.
MAX_RETAINED_BYTES = 32 << 20
#: Items kept in lists/dicts/sets per stream; items appended beyond it are counted, not kept.
MAX_RETAINED_ITEMS = 200_000
#: Protocol 0/1 detection: this many valid opcodes make a file a pickle even before its STOP.
TRIAL_OPS = 100_000
#: Findings of one kind kept per stream (the rest are counted in the last one's details).
MAX_RECORDS = 200
#: Call sites listed per imported global.
MAX_CALLS_LISTED = 10
#: Memo entries kept exactly per stream before inert values (str, bytes, tuples of literals) are kept
#: as their kind only (one byte each; see ``_PickleVM.memo_exact``); strings that may name an import
#: stay exact past it, in bounded number (``vm._KeptNames``).
MAX_MEMO_EXACT = 100_000
#: The two unpicklers, as bits of ``_FastReader.alive``.
_PY, _C = 1, 2


class _Broken(Exception):
    """The stream cannot be parsed further at ``offset``. ``reported``: a nested VM said so already."""

    def __init__(self, offset: int, reason: str, reported: bool = False, limit: bool = False) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.reported = reported
        #: A scan limit stopped the walk (the stream may be fine): ``unscanned-limit``, and detection
        #: counts the stream as a pickle.
        self.limit = limit


class _Stop(Exception):
    pass


class _Record(Record):
    """One finding in the making: an import (or anomaly) with where and how it is used."""

    # A plain record, not a dataclass: see safemodel_ci/record.py (start-up cost).
    __slots__ = ("rule_id", "severity", "subject", "reason", "offset", "opcode", "count", "calls", "extra")
    rule_id: str
    severity: Severity
    subject: str
    reason: str
    offset: int
    opcode: str
    count: int
    calls: List[str]
    extra: Dict[str, Any]

    def __init__(self, rule_id: str, severity: Severity, subject: str, reason: str, offset: int, opcode: str,
                 count: int = 1, calls: Optional[List[str]] = None,
                 extra: Optional[Dict[str, Any]] = None) -> None:
        self.rule_id = rule_id
        self.severity = severity
        self.subject = subject
        self.reason = reason
        self.offset = offset
        self.opcode = opcode
        self.count = count
        self.calls = [] if calls is None else calls
        self.extra = {} if extra is None else extra

    def add_call(self, kind: str, offset: int) -> None:
        if len(self.calls) < MAX_CALLS_LISTED:
            self.calls.append(f"{kind}@{offset}")
        else:
            self.extra["more_calls"] = self.extra.get("more_calls", 0) + 1

