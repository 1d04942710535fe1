"""Sharded-checkpoint indexes (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``).

An index is ``{"metadata": {"total_size": N}, "weight_map": {tensor: shard file}}``. transformers
joins each shard name to the model directory without checking it, and loads every tensor of every
shard, so the index must name plain files beside it, and its map must agree with the shards'
headers. Shards are scanned as files of their own when a directory is scanned; this reader reads
only their safetensors headers (8 + N bytes each), in a scratch context, to cross-check the map.
"""

from __future__ import annotations

import re

from ..context import ScanContext
from ..jsonutil import JSONFormatError, parse_json_strict
from ..source import ByteSource
from .interface import FormatReader
from .safetensors import SafetensorsHeader, claims_safetensors, read_safetensors_header

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Set

#: Bytes searched for the ``"weight_map"`` key when sniffing (it comes right after a small metadata).
SNIFF_BYTES = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
#: Per-rule cap on listed tensors in one finding's details.
MAX_LISTED = 20


def shard_name_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a plain file name in the index's directory, or None when it is."""
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if "\x00" in name:
        return "contains a NUL byte"
    return None


def _looks_like_index(source: ByteSource, head: bytes) -> bool:
    body = head.lstrip(b" \t\n\r")
    if not body.startswith(b"{"):
        return False
    if b'"weight_map"' in head:
        return True
    if source.size <= len(head):
        return False
    return b'"weight_map"' in source.read_at(0, SNIFF_BYTES)


class SafetensorsIndexReader(FormatReader):
    """Checks a sharded-checkpoint index against itself and against its shards' headers."""

    name = "safetensors-index"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return _looks_like_index(source, head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        if source.size > ctx.limits.max_in_memory_bytes:
            ctx.report("unscanned-limit", f"index of {source.size} bytes exceeds the in-memory limit")
            return
        if ctx.json_too_large(source.size, "shard index"):
            return
        raw = source.read_exact(0, source.size)
        try:
            doc = parse_json_strict(raw.decode("utf-8"))
        except (UnicodeDecodeError, JSONFormatError) as exc:
            ctx.report("safetensors-index-invalid", f"index is not valid UTF-8 JSON: {exc}", offset=0)
            return
        index = doc.value
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            ctx.report("safetensors-index-invalid", "index has no weight_map object", offset=0)
            return
        for dup in doc.duplicates:
            ctx.report("safetensors-index-duplicate-key",
                       f"key {dup.key!r} appears {dup.count} times in {dup.where()} of the index: readers "
                       "disagree on which value counts", details={"key": dup.key, "count": dup.count,
                                                                  "path": list(dup.path)})
        bad_values = [k for k, v in weight_map.items() if not isinstance(v, str)]
        if bad_values:
            ctx.report("safetensors-index-invalid",
                       f"weight_map values of {len(bad_values)} tensor(s) are not file names "
                       f"(e.g. {bad_values[0]!r})", details={"tensors": bad_values[:MAX_LISTED]})
        shards: Dict[str, List[str]] = {}
        for tensor, shard in weight_map.items():
            if isinstance(shard, str):
                shards.setdefault(shard, []).append(tensor)
        total_size = self._total_size(index, ctx)

        plain: List[str] = []
        for shard in shards:
            problem = shard_name_problem(shard)
            if problem:
                ctx.report("safetensors-index-shard-path",
                           f"shard name {shard!r} {problem}: loaders would read a file outside the model "
                           "directory or one this index does not control", details={"shard": shard})
            else:
                plain.append(shard)
        headers = self._shard_headers(ctx, plain, shards)
        if headers is None:
            return
        self._cross_check(ctx, weight_map, shards, headers, total_size,
                          complete=len(headers) == len(shards) and not bad_values)

    @staticmethod
    def _total_size(index: Dict[str, Any], ctx: ScanContext) -> Optional[int]:
        metadata = index.get("metadata")
        if metadata is None or not isinstance(metadata, dict) or "total_size" not in metadata:
            return None
        value = metadata["total_size"]
        # Some writers store it as a float with no fractional part; accept that, reject the rest.
        if isinstance(value, float) and value.is_integer() and value >= 0:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            ctx.report("safetensors-index-invalid",
                       f"metadata.total_size {value!r} is not a non-negative integer",
                       details={"total_size": repr(value)[:60]})
            return None
        return value

    @staticmethod
    def _shard_headers(ctx: ScanContext, plain: List[str],
                       shards: Dict[str, List[str]]) -> Optional[Dict[str, SafetensorsHeader]]:
        """Headers of the shards that exist and are safetensors; None when shards cannot be opened."""
        if ctx.siblings is None or ctx.member is not None:
            return None  # not scanning a directory or repository: existence cannot be judged
        headers: Dict[str, SafetensorsHeader] = {}
        for shard in plain:
            ctx.check_deadline()
            source = ctx.open_sibling(shard)
            if source is None:
                ctx.report("safetensors-index-shard-missing",
                           f"shard {shard!r} (mapped for {len(shards[shard])} tensor(s)) does not exist "
                           "beside the index", details={"shard": shard, "tensors": len(shards[shard])})
                continue
            try:
                head = source.head(4096)
                if not claims_safetensors(source, head):
                    # A shard named .safetensors, or any shard of a safetensors index, is opened
                    # with safe_open (transformers): content it refuses blocks.
                    if shard.endswith(".safetensors") or ctx.basename.endswith(".safetensors.index.json"):
                        ctx.report("safetensors-index-shard-invalid",
                                   f"shard {shard!r} is named by a safetensors index or named .safetensors "
                                   "but its content is not a safetensors file", details={"shard": shard})
                    continue  # a pickle shard (pytorch_model-*.bin): its tensors cannot be listed cheaply
                scratch = ScanContext(ctx.path, ctx.policy, ctx.limits, location=ctx.location.inside(shard))
                header = read_safetensors_header(source, scratch)
            finally:
                source.close()
            if header is None or not header.valid:
                rules = sorted({f.rule_id for f in scratch.findings})
                ctx.report("safetensors-index-shard-invalid",
                           f"shard {shard!r} fails safetensors validation ({', '.join(rules)}); its "
                           "findings are reported when it is scanned",
                           details={"shard": shard, "rules": rules})
                continue
            headers[shard] = header
        return headers

    @staticmethod
    def _cross_check(ctx: ScanContext, weight_map: Dict[str, Any], shards: Dict[str, List[str]],
                     headers: Dict[str, SafetensorsHeader], total_size: Optional[int],
                     complete: bool) -> None:
        for shard, header in headers.items():
            missing = [t for t in shards[shard] if t not in header.tensors]
            if missing:
                ctx.report("safetensors-index-tensor-missing",
                           f"{len(missing)} tensor(s) mapped to {shard!r} are not in its header "
                           f"(e.g. {missing[0]!r})",
                           details={"shard": shard, "tensors": missing[:MAX_LISTED]})
            unmapped = [t for t in header.tensors if weight_map.get(t) != shard]
            if unmapped:
                ctx.report("safetensors-index-tensor-unmapped",
                           f"shard {shard!r} holds {len(unmapped)} tensor(s) the index does not map to it "
                           f"(e.g. {unmapped[0]!r})",
                           details={"shard": shard, "tensors": unmapped[:MAX_LISTED]})
        seen: Dict[str, str] = {}
        doubled: Dict[str, Set[str]] = {}
        for shard, header in headers.items():
            for tensor in header.tensors:
                if tensor in seen:
                    doubled.setdefault(tensor, {seen[tensor]}).add(shard)
                else:
                    seen[tensor] = shard
        for tensor, where in list(doubled.items())[:MAX_LISTED]:
            ctx.report("safetensors-index-tensor-in-two-shards",
                       f"tensor {tensor!r} is in {len(where)} shards ({', '.join(sorted(where))}); the index "
                       f"maps it to {weight_map.get(tensor)!r}",
                       details={"tensor": tensor, "shards": sorted(where)})
        if len(doubled) > MAX_LISTED:
            ctx.report("safetensors-index-tensor-in-two-shards",
                       f"... and {len(doubled) - MAX_LISTED} more tensors in several shards",
                       details={"omitted": len(doubled) - MAX_LISTED})
        if total_size is not None and complete:
            # What is compared: total_size against the sum of (end - begin) of every mapped tensor,
            # as the shards' headers state it (each tensor counted once, in the shard the map names).
            counted = sum(headers[s].tensors[t].nbytes for t, s in weight_map.items()
                          if isinstance(s, str) and s in headers and t in headers[s].tensors)
            if counted != total_size:
                ctx.report("safetensors-index-total-size",
                           f"metadata.total_size is {total_size} but the mapped tensors in the shard headers "
                           f"add up to {counted} bytes",
                           details={"total_size": total_size, "tensor_bytes": counted})
