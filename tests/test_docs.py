"""The README stays a newcomer's page and the docs/ pages stay reachable: every page is in the README's
table of contents, every relative link (and its #anchor) resolves, and the README does not regrow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# Markdown files whose links are checked: what a user reads in the repository.
LINKED = [REPO_ROOT / n for n in ("README.md", "CHANGELOG.md", "RELEASING.md", "SECURITY.md")] + PAGES
# The README holds what a newcomer needs; everything else belongs in docs/ (it was 95 KB before).
README_MAX_BYTES = 16_000

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (links in code are not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _anchors(path: Path) -> Set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', '-N' on repeats."""
    seen: Dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _prose(_text(path)), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _relative_links(path: Path) -> List[Tuple[str, Path, str]]:
    """(link as written, target file, anchor) of every link that is not to another site."""
    links = []
    for target in LINK.findall(_prose(_text(path))):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        links.append((target, resolved, anchor))
    return links


def test_docs_pages_exist_and_start_with_a_title_and_an_intro() -> None:
    names = {p.name for p in PAGES}
    assert {"formats.md", "rules.md", "configuration.md", "pre-commit.md", "github-action.md",
            "hub-and-cache.md", "security-model.md", "development.md", "benchmark.md"} <= names
    for page in PAGES:
        lines = _text(page).splitlines()
        assert lines[0].startswith("# ") and not lines[1], f"{page.name}: '# Title', then a blank line"
        assert lines[2] and not lines[2].startswith(("#", "```", "|", "-")), f"{page.name}: an intro line"
        assert "](../README.md" in _text(page), f"{page.name}: links back to the README"


def test_readme_table_of_contents_lists_every_docs_page() -> None:
    readme = _text(REPO_ROOT / "README.md")
    toc = readme.split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    listed = {resolved for _, resolved, _ in _relative_links_in(toc)}
    missing = [p.name for p in PAGES if p.resolve() not in listed]
    assert not missing, f"docs pages missing from the README's Documentation section: {missing}"


def _relative_links_in(text: str) -> List[Tuple[str, Path, str]]:
    return [(t, (REPO_ROOT / t.partition("#")[0]).resolve(), t.partition("#")[2])
            for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target, resolved, anchor in _relative_links(path):
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{path.name}: {broken}"


def test_readme_stays_a_newcomers_page() -> None:
    readme = _text(REPO_ROOT / "README.md")
    size = len(readme.encode("utf-8"))
    assert size <= README_MAX_BYTES, \
        f"README.md is {size} bytes (at most {README_MAX_BYTES}): put reference material in a docs/ page"
    for heading in ("## Usage", "### Exit codes", "## Integrations", "## Documentation"):
        assert f"\n{heading}\n" in readme, heading
    # Generated and tested material lives in exactly one place: the rules table in docs/rules.md.
    assert "<!-- rules:start -->" not in readme
