"""Local paths: files as given, directories walked recursively in a stable order."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

#: Directories never descended into: version-control metadata and tool caches.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


def iter_paths(paths: Iterable[str], follow_symlinks: bool = False,
               skipped: Optional[List[Tuple[str, str]]] = None) -> Iterator[str]:
    """Files named directly, and every file under named directories (sorted, ``.git`` skipped).

    Inside a walked directory, a symlink is followed only when it resolves inside one of the
    named roots (a Hugging Face snapshot's links into its blobs count when both are scanned), or
    with ``follow_symlinks``; symlinked directories are never descended into unless asked (no
    loops). What is passed over is appended to ``skipped`` as ``(path, reason)``.
    """
    paths = list(paths)
    roots = [os.path.realpath(p) for p in paths]
    for path in paths:
        if os.path.isdir(path):
            yield from _walk(path, roots, follow_symlinks, skipped, set())
        else:
            yield path


def _inside(target: str, roots: Sequence[str]) -> bool:
    return any(target == r or target.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _walk(top: str, roots: Sequence[str], follow: bool, skipped: Optional[List[Tuple[str, str]]],
          seen: set) -> Iterator[str]:
    real = os.path.realpath(top)
    if real in seen:  # a loop through followed directory links
        return
    seen.add(real)
    entries: List[Tuple[str, bool, bool]] = []
    try:
        with os.scandir(top) as it:
            for entry in it:
                try:
                    is_link = entry.is_symlink()
                    is_dir = entry.is_dir(follow_symlinks=follow)
                except OSError:
                    is_link, is_dir = False, False
                entries.append((entry.name, is_dir, is_link))
    except OSError:
        yield top  # unreadable directory: the scan reports it
        return
    for name, is_dir, is_link in sorted(entries):
        full = os.path.join(top, name)
        if is_dir:
            if name not in SKIP_DIRS:
                yield from _walk(full, roots, follow, skipped, seen)
        elif is_link and not follow:
            target = os.path.realpath(full)
            if os.path.isdir(target):
                if skipped is not None:
                    skipped.append((full, "symlink to a directory not followed (use --follow-symlinks)"))
            elif _inside(target, roots):
                yield full
            elif skipped is not None:
                skipped.append((full, f"symlink to {target}, outside the scanned paths, not followed "
                                      "(scan the target, or use --follow-symlinks)"))
        else:
            yield full
