"""Local paths: files as given, directories walked recursively in a stable order."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, List, Tuple

#: Directories never descended into: version-control metadata and tool caches.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


def iter_paths(paths: Iterable[str], follow_symlinks: bool = False) -> Iterator[str]:
    """Files named directly, and every file under named directories (sorted, ``.git`` skipped).

    Symlinked directories are not followed by default (no loops, no escaping the tree).
    """
    for path in paths:
        if os.path.isdir(path):
            yield from _walk(path, follow_symlinks)
        else:
            yield path


def _walk(top: str, follow_symlinks: bool) -> Iterator[str]:
    entries: List[Tuple[str, bool]] = []
    try:
        with os.scandir(top) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=follow_symlinks)
                except OSError:
                    is_dir = False
                entries.append((entry.name, is_dir))
    except OSError:
        yield top  # unreadable directory: the scan reports it
        return
    for name, is_dir in sorted(entries):
        full = os.path.join(top, name)
        if is_dir:
            if name not in SKIP_DIRS:
                yield from _walk(full, follow_symlinks)
        else:
            yield full
