"""JSON: the documented, versioned report schema (``schemas/report-v1.json``)."""

from __future__ import annotations

import json

from .. import __version__
from ..findings import ScanReport
from .interface import ReportWriter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict

SCHEMA_VERSION = "1"


def report_dict(report: ScanReport) -> Dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "safemodel-ci", "version": __version__},
        "fail_on": report.fail_on.name,
        "exit_code": report.exit_code,
        "summary": {
            "files": len(report.files),
            "blocking": len(report.blocking),
            "incomplete": len(report.incomplete),
            "by_severity": report.counts(),
            "errors": len(report.errors),
        },
        "files": [r.to_dict() for r in report.files],
        "errors": [{"target": t, "message": m} for t, m in report.errors],
        **({"extra": report.extra} if report.extra else {}),
    }


class JsonWriter(ReportWriter):
    name = "json"

    def render(self, report: ScanReport) -> str:
        # One line per file: readable and greppable, and every value is encoded by json's C
        # encoder (``indent`` would force its pure-Python one: 0.1 s on 2,000 files).
        parts = []
        for key, value in report_dict(report).items():
            if key == "files" and value:
                rows = ",\n    ".join(json.dumps(entry) for entry in value)
                parts.append(f'  "files": [\n    {rows}\n  ]')
            else:
                parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
        return "{\n" + ",\n".join(parts) + "\n}\n"
