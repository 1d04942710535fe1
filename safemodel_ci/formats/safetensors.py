"""safetensors: strict header validation, reading only the header and a little of the tail.

A safetensors file is 8 bytes of little-endian header length N, N bytes of JSON, then the tensor
bytes. It is the safe format only when it really is what the spec says, so every rule of the spec
and of the reference implementation (huggingface/safetensors ``tensor.rs``, ``read_metadata`` and
``Metadata::validate``, as shipped in safetensors 0.8) is a finding with its own rule id, checked
in the reference's order. Where the spec is stricter than the reference (leading whitespace,
padding other than spaces, unknown fields, duplicate keys) the finding says so.

Only 8 + N bytes are read (N is capped at 100,000,000 like the reference), whatever the file size.
The tensor-data region is then offered to the other readers (a zip or a pickle hiding in tensor
bytes is a polyglot), which sniff its head and tail only.
"""

from __future__ import annotations

import gc
import struct
from collections import namedtuple

from ..context import ScanContext
from ..findings import Severity
from ..jsonutil import JSONFormatError, char_to_byte_offset, parse_json_strict
from ..record import Record
from ..source import ByteSource

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

#: ``MAX_HEADER_SIZE`` of the reference.
MAX_HEADER_SIZE = 100_000_000
#: Bits per element of every dtype of the spec (``enum Dtype`` of safetensors 0.8).
DTYPE_BITS: Dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
TENSOR_FIELDS = ("dtype", "shape", "data_offsets")
METADATA_KEY = "__metadata__"
#: JSON whitespace (what serde_json skips); the spec allows only 0x20, and only as trailing padding.
JSON_WHITESPACE = b" \t\n\r"
_JSON_WS_STR = " \t\n\r"
#: Arithmetic in the reference is on usize (64 bits here); Python ints must be made to overflow.
USIZE_MAX = (1 << 64) - 1
#: Findings of one rule beyond this many are summed up in one last message.
MAX_FINDINGS_PER_RULE = 20
DATA_MEMBER = "<tensor data>"


class TensorEntry(namedtuple("TensorEntry", ("name", "dtype", "shape", "begin", "end"))):
    """One tensor of a header: ``name`` and ``dtype`` (str), ``shape`` (a tuple of int), ``begin``
    and ``end`` (int, offsets relative to the start of the data).

    A named tuple rather than a dataclass: a header may list a million tensors (a
    ``collections.namedtuple``: see :class:`~safemodel_ci.findings.Location`).
    """

    __slots__ = ()

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsHeader(Record):
    """What a header says, and whether it passed validation. (A plain record, not a dataclass: see
    safemodel_ci/record.py.)"""

    __slots__ = ("header_length", "data_start", "tensors", "metadata", "valid", "rule_ids")
    header_length: int
    #: File offset where the tensor data begins (8 + N).
    data_start: int
    tensors: Dict[str, TensorEntry]
    metadata: Optional[Dict[str, str]]
    #: True when no finding of HIGH severity or above was reported.
    valid: bool
    #: Rule ids of the findings reported while validating.
    rule_ids: List[str]

    def __init__(self, header_length: int, data_start: int, tensors: Optional[Dict[str, TensorEntry]] = None,
                 metadata: Optional[Dict[str, str]] = None, valid: bool = False,
                 rule_ids: Optional[List[str]] = None) -> None:
        self.header_length = header_length
        self.data_start = data_start
        self.tensors = {} if tensors is None else tensors
        self.metadata = metadata
        self.valid = valid
        self.rule_ids = [] if rule_ids is None else rule_ids


class _Reporter:
    """Reports findings, at most :data:`MAX_FINDINGS_PER_RULE` per rule, and remembers the worst."""

    def __init__(self, ctx: ScanContext) -> None:
        self.ctx = ctx
        self.counts: Dict[str, int] = {}
        self.worst = Severity.INFO
        self.rule_ids: List[str] = []

    def __call__(self, rule_id: str, message: str, *, offset: Optional[int] = None,
                 details: Optional[Dict[str, Any]] = None) -> None:
        n = self.counts.get(rule_id, 0) + 1
        self.counts[rule_id] = n
        if rule_id not in self.rule_ids:
            self.rule_ids.append(rule_id)
        if n <= MAX_FINDINGS_PER_RULE:
            finding = self.ctx.report(rule_id, message, offset=offset, details=details)
            self.worst = max(self.worst, finding.severity)

    def finish(self) -> None:
        for rule_id, n in self.counts.items():
            if n > MAX_FINDINGS_PER_RULE:
                self.ctx.report(rule_id, f"... and {n - MAX_FINDINGS_PER_RULE} more findings of this rule "
                                         "in this header (not listed one by one)",
                                details={"omitted": n - MAX_FINDINGS_PER_RULE})

    @property
    def blocking(self) -> bool:
        return self.worst >= Severity.HIGH


def header_length(head: bytes) -> Optional[int]:
    """N, the little-endian u64 at the start, or None for fewer than 8 bytes."""
    if len(head) < 8:
        return None
    return int(struct.unpack_from("<Q", head, 0)[0])


def claims_safetensors(source: ByteSource, head: bytes) -> bool:
    """True when the content is, or says it is, a safetensors file.

    The JSON header must start (after optional whitespace) like an object: ``{`` followed by a
    key or ``}``. With a plausible N that is enough; with an impossible N (too large, past the
    end) the head must also contain a safetensors field name, so that random binary data with a
    ``{"`` at offset 8 is not taken for a broken safetensors file.
    """
    n = header_length(head)
    if n is None:
        return False
    body = head[8:].lstrip(JSON_WHITESPACE)
    if not body.startswith(b"{"):
        return False
    rest = body[1:].lstrip(JSON_WHITESPACE)
    if not rest.startswith((b'"', b"}")):
        return False
    if n <= MAX_HEADER_SIZE and 8 + n <= source.size:
        return True
    # An impossible length made of text bytes is a text file (a JSON list indented by 8), not a
    # broken safetensors file; a binary length next to safetensors field names is a claim.
    if head[:8].isascii() and all(b >= 0x20 or b in JSON_WHITESPACE for b in head[:8]):
        return False
    return any(marker in head for marker in (b'"dtype"', b'"data_offsets"', b'"__metadata__"'))


def _all_usize(values: Any) -> bool:
    """A JSON array of unsigned 64-bit integers (``type() is int`` also rules out booleans)."""
    if type(values) is not list:
        return False
    for v in values:
        if type(v) is not int or not 0 <= v <= USIZE_MAX:
            return False
    return True


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked_size_bits(shape: Tuple[int, ...], bits: int) -> Optional[int]:
    """Elements x bits as the reference computes it (checked usize multiplies, left to right)."""
    count = 1
    for dim in shape:
        count *= dim
        if count > USIZE_MAX:
            return None
    total = count * bits
    return None if total > USIZE_MAX else total


def read_safetensors_header(source: ByteSource, ctx: ScanContext) -> Optional[SafetensorsHeader]:
    """Validate the header of ``source``, reporting each broken rule into ``ctx``.

    Returns the parsed header (``valid`` tells whether it passed), or None when it could not be
    parsed far enough to list tensors. Reads 8 + N bytes at most.
    """
    report = _Reporter(ctx)
    # A header can hold millions of JSON containers, none of them cyclic: pausing the cyclic
    # garbage collector avoids its repeated full passes over them (a 100 MB header: 3x faster).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _read_header(source, ctx, report)
    finally:
        if collecting:
            gc.enable()
        report.finish()


def _read_header(source: ByteSource, ctx: ScanContext, report: _Reporter) -> Optional[SafetensorsHeader]:
    size = source.size
    if size < 8:
        report("safetensors-too-small",
               f"file is {size} bytes long; a safetensors file starts with an 8-byte header length",
               offset=0, details={"size": size})
        return None
    n = header_length(source.read_exact(0, 8))
    assert n is not None
    if n > MAX_HEADER_SIZE:
        report("safetensors-header-too-large",
               f"header length N={n} exceeds the reference's limit of {MAX_HEADER_SIZE:,} bytes",
               offset=0, details={"header_length": n, "limit": MAX_HEADER_SIZE})
        return None
    if 8 + n > size:
        report("safetensors-header-length",
               f"header length N={n} reaches byte {8 + n}, past the end of the {size}-byte file",
               offset=0, details={"header_length": n, "size": size})
        return None
    if n > ctx.limits.max_in_memory_bytes:
        ctx.report("unscanned-limit", f"safetensors header of {n} bytes exceeds the in-memory limit of "
                                      f"{ctx.limits.max_in_memory_bytes} bytes", offset=8)
        return None
    if ctx.json_too_large(n, "safetensors header", offset=8):
        return None
    try:
        text = source.read_exact(8, n).decode("utf-8")  # the bytes are not kept: memory
    except UnicodeDecodeError as exc:
        report("safetensors-header-not-utf8",
               f"header is not valid UTF-8 ({exc.reason} at header byte {exc.start}, file offset "
               f"{8 + exc.start})", offset=8 + exc.start, details={"header_offset": exc.start})
        return None

    leading = len(text) - len(text.lstrip(_JSON_WS_STR))
    if text[leading:leading + 1] == "{" and leading:
        report("safetensors-header-start",
               f"header starts with {leading} whitespace byte(s) before '{{': the spec says the header "
               "MUST begin with '{' (safetensors 0.8 tolerates it, other parsers may not)",
               offset=8, details={"leading_whitespace": leading})
    try:
        doc = parse_json_strict(text)
    except JSONFormatError as exc:
        pos = char_to_byte_offset(text, exc.pos)
        report("safetensors-header-not-json", f"header is not valid JSON: {exc.message}",
               offset=8 + pos if pos is not None else 8,
               details={"header_offset": pos} if pos is not None else None)
        return None
    header = doc.value
    if not isinstance(header, dict):
        report("safetensors-header-not-object",
               f"header JSON is a {type(header).__name__}, not an object of tensors", offset=8)
        return None

    trailing = text[len(text.rstrip(_JSON_WS_STR)):]
    odd = sorted({c for c in trailing if c != " "})
    if odd:
        report("safetensors-header-padding",
               "header is padded with " + ", ".join(repr(c) for c in odd) + ": the spec allows only "
               "spaces (0x20) as trailing padding (safetensors 0.8 accepts any JSON whitespace)",
               offset=8 + n - len(trailing.encode()), details={"padding": "".join(odd)})

    for dup in doc.duplicates:
        if not dup.path and dup.key != METADATA_KEY:
            what = (f"tensor {dup.key!r} is defined {dup.count} times: safetensors 0.8 loads the last "
                    "definition, parsers that keep the first see another tensor")
        elif not dup.path or (len(dup.path) == 1 and dup.path[0] != METADATA_KEY
                              and dup.key in TENSOR_FIELDS):
            where = "the header" if not dup.path else f"tensor {dup.path[0]!r}"
            what = (f"field {dup.key!r} appears {dup.count} times in {where}: safetensors 0.8 refuses it, "
                    "parsers that keep the first or the last value disagree")
        elif dup.path[0] != METADATA_KEY:
            what = (f"key {dup.key!r} appears {dup.count} times in header object {dup.where()}, inside an "
                    "unknown field that safetensors 0.8 ignores: parsers disagree on which value counts")
        else:
            what = (f"key {dup.key!r} appears {dup.count} times in header object {dup.where()}: parsers "
                    "disagree on which value counts (safetensors 0.8 keeps the last)")
        report("safetensors-duplicate-key", what, offset=8,
               details={"key": dup.key, "count": dup.count, "path": list(dup.path)})

    result = SafetensorsHeader(header_length=n, data_start=8 + n)
    structural_ok = _check_entries(header, result, report)
    del doc, header, text  # the tensor list is all that is needed from here on: free the rest
    if structural_ok:
        covered = _validate_offsets(result, report)
        if covered is not None and covered + 8 + n != size:
            missing = covered + 8 + n > size
            report("safetensors-data-coverage",
                   f"tensors cover data bytes 0..{covered} (file bytes {8 + n}..{8 + n + covered}) but "
                   f"the file is {size} bytes: "
                   + (f"{covered + 8 + n - size} bytes are missing (truncated)" if missing
                      else f"{size - covered - 8 - n} trailing bytes belong to no tensor"),
                   offset=min(size, 8 + n + covered),
                   details={"data_end": covered, "file_size": size, "data_start": 8 + n})
    result.valid = not report.blocking
    result.rule_ids = list(report.rule_ids)
    return result


def _check_entries(header: Dict[str, Any], result: SafetensorsHeader, report: _Reporter) -> bool:
    """Types and fields of ``__metadata__`` and every tensor entry; fills ``result.tensors``."""
    all_ok = True
    for name, entry in header.items():
        if name == METADATA_KEY:
            all_ok = _check_metadata(entry, result, report) and all_ok
            continue
        ok = True
        if type(entry) is not dict:
            kind = "array" if isinstance(entry, list) else type(entry).__name__
            report("safetensors-tensor-not-object",
                   f"tensor {name!r}: entry is a JSON {kind}, not an object with dtype, shape and "
                   "data_offsets",
                   offset=8, details={"tensor": name})
            all_ok = False
            continue
        # The usual entry has exactly the three fields: skip the field bookkeeping for it.
        if not (len(entry) == 3 and "dtype" in entry and "shape" in entry and "data_offsets" in entry):
            missing = [f for f in TENSOR_FIELDS if f not in entry]
            if missing:
                report("safetensors-tensor-missing-field",
                       f"tensor {name!r}: missing field(s) {', '.join(missing)}", offset=8,
                       details={"tensor": name, "missing": missing})
                ok = False
            unknown = sorted(k for k in entry if k not in TENSOR_FIELDS)
            if unknown:
                report("safetensors-tensor-unknown-field",
                       f"tensor {name!r}: unknown field(s) {', '.join(repr(k) for k in unknown[:10])}; the "
                       "spec defines only dtype, shape and data_offsets (safetensors 0.8 ignores the rest)",
                       offset=8, details={"tensor": name, "fields": unknown[:50]})
        dtype = entry.get("dtype")
        if "dtype" in entry and (type(dtype) is not str or dtype not in DTYPE_BITS):
            report("safetensors-dtype",
                   f"tensor {name!r}: dtype {_describe(dtype)} is not one of the spec's dtypes", offset=8,
                   details={"tensor": name, "dtype": _describe(dtype)})
            ok = False
        shape: Any = entry.get("shape")
        if "shape" in entry and not _all_usize(shape):
            report("safetensors-shape",
                   f"tensor {name!r}: shape {_describe(shape)} is not a list of non-negative integers",
                   offset=8, details={"tensor": name, "shape": _describe(shape)})
            ok = False
        offsets: Any = entry.get("data_offsets")
        if "data_offsets" in entry and not (_all_usize(offsets) and len(offsets) == 2):
            report("safetensors-data-offsets",
                   f"tensor {name!r}: data_offsets {_describe(offsets)} is not a pair of non-negative "
                   "integers",
                   offset=8, details={"tensor": name, "data_offsets": _describe(offsets)})
            ok = False
        if ok:  # every field is present and well typed here
            result.tensors[name] = TensorEntry(name, str(dtype), tuple(shape or ()), int(offsets[0]),
                                               int(offsets[1]))
        all_ok = all_ok and ok
    return all_ok


def _check_metadata(entry: Any, result: SafetensorsHeader, report: _Reporter) -> bool:
    if entry is None:  # serde reads it as Option::None; harmless
        return True
    if isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values()):
        result.metadata = dict(entry)
        return True
    if isinstance(entry, dict):
        bad = [k for k, v in entry.items() if not isinstance(v, str)]
        what = f"values of {', '.join(repr(k) for k in bad[:5])} are not strings"
    else:
        what = f"it is a JSON {type(entry).__name__}, not an object"
    report("safetensors-metadata-type",
           f"__metadata__ must map strings to strings: {what}", offset=8,
           details={"bad_keys": bad[:20]} if isinstance(entry, dict) else None)
    return False


def _where(t: TensorEntry, data_start: int) -> str:
    return f"data_offsets [{t.begin}, {t.end}] (file bytes {data_start + t.begin}..{data_start + t.end})"


def _details(t: TensorEntry, **extra: Any) -> Dict[str, Any]:
    return {"tensor": t.name, "data_offsets": [t.begin, t.end], "dtype": t.dtype, "shape": list(t.shape),
            **extra}


def _validate_offsets(result: SafetensorsHeader, report: _Reporter) -> Optional[int]:
    """``Metadata::validate``: contiguous offsets from 0, checked sizes. The end of the data, or None."""
    data_start = result.data_start
    start = 0
    ok = True
    # Messages are only built for failures: a header may list a million tensors.
    for t in sorted(result.tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != start or t.end < t.begin:
            if t.end < t.begin:
                why = "ends before it begins"
            elif t.begin > start:
                why = f"leaves a hole: the previous tensor ends at {start}"
            else:
                why = f"overlaps the previous tensor, which ends at {start}"
            report("safetensors-offsets-not-contiguous", f"tensor {t.name!r}: {_where(t, data_start)} {why}",
                   offset=data_start + min(t.begin, USIZE_MAX), details=_details(t))
            ok = False
            start = max(start, t.end)
            continue
        start = t.end
        bits = _checked_size_bits(t.shape, DTYPE_BITS[t.dtype])
        if bits is None:
            report("safetensors-size-overflow",
                   f"tensor {t.name!r}: shape {list(t.shape)} x {t.dtype} overflows 64-bit size arithmetic",
                   offset=data_start + t.begin, details=_details(t))
            ok = False
        elif bits % 8:
            report("safetensors-subbyte-misaligned",
                   f"tensor {t.name!r}: {t.dtype} shape {list(t.shape)} is {bits} bits, which does not end "
                   "on a byte boundary", offset=data_start + t.begin, details=_details(t))
            ok = False
        elif bits >> 3 != t.end - t.begin:
            report("safetensors-tensor-size",
                   f"tensor {t.name!r}: {t.dtype} shape {list(t.shape)} needs {bits // 8} bytes but "
                   f"{_where(t, data_start)} spans {t.nbytes}", offset=data_start + t.begin,
                   details=_details(t, expected_bytes=bits // 8))
            ok = False
    return start if ok else None


__all__ = ["DTYPE_BITS", "MAX_HEADER_SIZE", "SafetensorsHeader", "TensorEntry",
           "claims_safetensors", "read_safetensors_header"]
