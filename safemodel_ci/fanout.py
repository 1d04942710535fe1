"""Scanning many Hub repos across machines: target lists, stable shards, and merging shard reports.

Any fan-out engine (a GitHub Actions matrix, Kubernetes indexed Jobs, a batch array) runs
``safemodel hub --repos-file repos.txt --shard K/N --format json -o shard-K.json`` once per K, then
``safemodel merge shard-*.json``. A repo's shard depends only on its own name, so adding a repo to
the list moves no other repo, and every repo lands in exactly one shard.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys

from .findings import FileResult, ScanReport, Severity

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import IO, Any, Dict, Iterable, List, Optional, Sequence, Tuple

#: ``K/N`` with 1 <= K <= N.
_SHARD = re.compile(r"(\d+)/(\d+)")


class FanoutError(ValueError):
    """A target list, shard spec or shard report that cannot be used (exit code 3)."""


def parse_shard(text: str) -> Tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; shards count from 1."""
    m = _SHARD.fullmatch(text.strip())
    if not m:
        raise FanoutError(f"--shard wants K/N (for example 2/8), not {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise FanoutError(f"--shard {text}: K must be between 1 and N")
    return k, n


def read_targets(stream: IO[str]) -> List[str]:
    """``org/name[@rev]`` targets, one a line; blank lines and ``#`` comments are skipped, and a
    repeated target is kept once (it would be scanned and reported twice)."""
    seen: Dict[str, None] = {}
    for number, raw in enumerate(stream, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if any(c.isspace() for c in line):
            raise FanoutError(f"line {number}: one repo a line, not {line!r}")
        seen.setdefault(line, None)
    return list(seen)


def load_targets(path: str) -> List[str]:
    """:func:`read_targets` of a file, or of standard input for ``-``."""
    if path == "-":
        return read_targets(sys.stdin)
    try:
        with open(path, encoding="utf-8") as fh:
            return read_targets(fh)
    except OSError as exc:
        raise FanoutError(f"cannot read {path}: {exc.strerror or exc}") from exc


def shard_of(target: str, count: int) -> int:
    """The shard (1..count) of one target: by a hash of its repo id alone, so it never moves
    when other repos are added or removed (the revision does not count: one repo, one shard)."""
    repo = target.split("@", 1)[0].strip().lower()
    digest = hashlib.sha256(repo.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select_shard(targets: Iterable[str], k: int, n: int) -> List[str]:
    """The targets of shard ``k`` of ``n``, in list order."""
    return [t for t in targets if shard_of(t, n) == k]


# --- merging -------------------------------------------------------------------------------------

def _load_report(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except OSError as exc:
        raise FanoutError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise FanoutError(f"{path} is not JSON: {exc}") from exc
    if (not isinstance(data, dict) or data.get("schema_version") != "1"
            or not isinstance(data.get("files"), list)):
        raise FanoutError(f"{path} is not a safemodel-ci JSON report (schema version 1)")
    return data


def merge_reports(paths: Sequence[str], fail_on: Optional[Severity] = None) -> ScanReport:
    """One report from shard reports: every file and error of each, the verdict recomputed.

    ``fail_on`` defaults to the strictest of the reports'. When the reports say which shard of how
    many they are, a missing or repeated shard is an error of the merged report (exit 2 at least),
    so a shard job that died cannot make the nightly scan look clean.
    """
    if not paths:
        raise FanoutError("no reports to merge")
    files: List[FileResult] = []
    errors: List[Tuple[str, str]] = []
    levels: List[Severity] = []
    shards: Dict[int, List[str]] = {}
    totals: set = set()
    extras: List[Dict[str, Any]] = []
    for path in paths:
        data = _load_report(path)
        try:
            files.extend(FileResult.from_dict(f) for f in data["files"])
            errors.extend((str(e["target"]), str(e["message"])) for e in data.get("errors", []))
            levels.append(Severity[data["fail_on"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise FanoutError(f"{path}: malformed report ({type(exc).__name__}: {exc})") from exc
        extra = data.get("extra") or {}
        if isinstance(extra, dict):
            extras.append(extra)
            shard = extra.get("shard")
            if isinstance(shard, str) and _SHARD.fullmatch(shard):
                k, n = parse_shard(shard)
                shards.setdefault(k, []).append(path)
                totals.add(n)
    if shards:
        if len(totals) != 1:
            errors.append(("merge", f"the reports come from different shard counts: {sorted(totals)}"))
        else:
            n = totals.pop()
            missing = [k for k in range(1, n + 1) if k not in shards]
            if missing:
                names = ", ".join(f"{k}/{n}" for k in missing)
                errors.append(("merge", f"shard report missing for shard {names}: the repos of that shard "
                                        "were not scanned"))
            for k, where in sorted(shards.items()):
                if len(where) > 1:
                    errors.append(("merge", f"shard {k}/{n} was given {len(where)} times "
                                            f"({', '.join(where)})"))
    merged_extra: Dict[str, Any] = {"merged_reports": len(paths)}
    hub = [repo for e in extras for repo in (e.get("hub") or []) if isinstance(e.get("hub"), list)]
    if hub:
        merged_extra["hub"] = hub
    # `safemodel cache` reports: what each verified (the job summary says it), one entry per report.
    caches = [e["cache"] for e in extras if isinstance(e.get("cache"), dict)]
    if caches:
        merged_extra["cache"] = caches[0] if len(caches) == 1 else caches
    return ScanReport(files, fail_on=fail_on if fail_on is not None else min(levels), errors=errors,
                      extra=merged_extra)
