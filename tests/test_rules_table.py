"""The rules table is the single source: ids are unique and stable-looking, and docs/rules.md shows it."""

from __future__ import annotations

import re

from conftest import REPO_ROOT

from safemodel_ci.cli import main
from safemodel_ci.rules import RULES, RULES_BY_ID


def test_rule_ids_are_unique_kebab_case_with_text() -> None:
    assert len(RULES_BY_ID) == len(RULES)
    for r in RULES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", r.id), r.id
        assert r.title and r.description and r.remedy, r.id


def test_docs_rules_table_is_generated_from_the_rules(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["rules", "--format", "markdown"]) == 0
    generated = capsys.readouterr().out
    page = (REPO_ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    shown = page.split("<!-- rules:start -->\n", 1)[1].split("<!-- rules:end -->", 1)[0]
    assert shown == generated, \
        "docs/rules.md rules table is stale: regenerate with `safemodel rules --format markdown`"
