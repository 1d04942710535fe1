"""Helpers shared by the container tests (test_containers_*.py)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from safemodel_ci.context import Limits
from safemodel_ci.findings import FileResult, Finding, ScanReport
from safemodel_ci.scanner import ScanOptions, scan_file


class Evil:
    """Pickles to ``os.system(...)``; dumping does not run it and nothing here ever loads it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo owned > /tmp/safemodel-container-canary",))


def evil_pickle(protocol: int = 2) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0], "run": Evil()}, protocol=protocol)


def benign_pickle(protocol: int = 2) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0], "name": "layer"}, protocol=protocol)


def scan(path: "Path | str", limits: Optional[Limits] = None) -> Tuple[int, FileResult]:
    """Exit code and result of scanning one file, as ``safemodel scan`` decides them."""
    options = ScanOptions(limits=limits) if limits is not None else ScanOptions()
    result = scan_file(str(path), options)
    return ScanReport([result]).exit_code, result


def rules(result: FileResult) -> List[str]:
    return [f.rule_id for f in result.findings]


def find(result: FileResult, rule_id: str) -> List[Finding]:
    return [f for f in result.findings if f.rule_id == rule_id]


def code_findings(result: FileResult) -> List[Finding]:
    """Findings that say loading runs code (the pickle VM's global checks)."""
    return [f for f in result.findings
            if f.rule_id in ("pickle-dangerous-global", "pickle-unresolved-global") and not f.unscanned]


def assert_malicious(path: "Path | str", member: Optional[str] = None,
                     limits: Optional[Limits] = None) -> FileResult:
    """Exit 1, with a code-execution finding that names ``member`` (when given) and an offset."""
    code, result = scan(path, limits)
    assert code == 1, [f.to_dict() for f in result.findings]
    hits = code_findings(result)
    assert hits, [f.to_dict() for f in result.findings]
    if member is not None:
        assert any(f.member == member for f in hits), [(f.member, f.rule_id) for f in hits]
    assert all(f.offset is not None for f in hits), [f.to_dict() for f in hits]
    return result


def assert_benign(path: "Path | str") -> FileResult:
    """Exit 0: no finding at or above HIGH, nothing unscanned."""
    code, result = scan(path)
    assert code == 0, [f.to_dict() for f in result.findings]
    return result


def _vm_ready() -> bool:
    from safemodel_ci.formats import pickle as pickle_reader

    return hasattr(pickle_reader, "scan_pickle_at")


#: End-to-end tests need the pickle VM (issue 2); until it is in the tree they skip with a reason.
needs_vm = pytest.mark.skipif(not _vm_ready(),
                              reason="pickle VM (safemodel_ci/formats/pickle.py) not yet in tree")
