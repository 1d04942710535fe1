"""Local paths: files as given, directories walked in a stable order (depth-first, sorted).

What a loader would read is what is scanned. A symlink to a file is followed wherever it points
(``torch.load`` follows it): its target's content is scanned and reported under the link's path,
and a target that cannot be opened is ``unscanned-unreadable`` (exit 2), never a pass. Symlinked
directories are not descended into unless asked (``--follow-symlinks``; loops end): a link to a
directory inside the scanned paths is a notice (its content is scanned there), one leaving them is
``unscanned-link`` (exit 2). A directory that cannot be listed is ``unscanned-unreadable``. The walk
keeps its own stack, so nesting of any depth works.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

#: Directories never descended into: version-control metadata and tool caches.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})

#: Rule ids a passed-over path is reported with (see :func:`iter_paths`'s ``skipped``).
NOTICE = "skipped-not-regular"
UNSCANNED_LINK = "unscanned-link"
UNREADABLE = "unscanned-unreadable"


def iter_paths(paths: Iterable[str], follow_symlinks: bool = False,
               skipped: Optional[List[Tuple[str, str]]] = None,
               unscanned: Optional[List[Tuple[str, str, str]]] = None) -> Iterator[str]:
    """Files named directly, and every file under named directories (sorted, ``.git`` skipped).

    Passed-over paths are appended to ``skipped`` as ``(path, reason)`` (a notice: a link to a
    directory whose content is scanned anyway) and to ``unscanned`` as ``(rule id, path, reason)``
    (a directory link leaving the scanned paths, a directory that cannot be listed): those make
    the run incomplete. Without ``unscanned`` they go to ``skipped`` too.
    """
    paths = list(paths)
    roots = [os.path.realpath(p) for p in paths]

    def passed_over(rule_id: str, path: str, reason: str) -> None:
        if rule_id != NOTICE and unscanned is not None:
            unscanned.append((rule_id, path, reason))
        elif skipped is not None:
            skipped.append((path, reason))

    for path in paths:
        if os.path.isdir(path):
            yield from _walk(path, roots, follow_symlinks, passed_over)
        else:
            yield path


def _inside(target: str, roots: Sequence[str]) -> bool:
    return any(target == r or target.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _walk(top: str, roots: Sequence[str], follow: bool, passed_over) -> Iterator[str]:  # type: ignore[no-untyped-def]
    seen = set()
    # A stack of iterators over each open directory's sorted entries: depth-first, no recursion.
    stack: List[Iterator[Tuple[str, bool, bool]]] = []

    def listing(directory: str) -> Optional[Iterator[Tuple[str, bool, bool]]]:
        if follow:  # only followed directory links can make a loop
            try:
                st = os.stat(directory)
            except OSError:
                st = None
            if st is not None:
                if (st.st_dev, st.st_ino) in seen:
                    return None
                seen.add((st.st_dev, st.st_ino))
        entries: List[Tuple[str, bool, bool]] = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    try:
                        is_link = entry.is_symlink()
                        is_dir = entry.is_dir(follow_symlinks=follow)
                    except OSError:
                        is_link, is_dir = False, False
                    entries.append((os.path.join(directory, entry.name), is_dir, is_link))
        except OSError as exc:
            passed_over(UNREADABLE, directory, f"directory could not be listed: {exc.strerror or exc}; "
                                               "its files were not scanned")
            return None
        return iter(sorted(entries))

    first = listing(top)
    if first is not None:
        stack.append(first)
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        full, is_dir, is_link = item
        if is_dir:
            if os.path.basename(full) not in SKIP_DIRS:
                sub = listing(full)
                if sub is not None:
                    stack.append(sub)
        elif is_link and not follow:
            target = os.path.realpath(full)
            if os.path.isdir(target):
                if _inside(target, roots):
                    passed_over(NOTICE, full, "symlink to a directory inside the scanned paths, not "
                                              "followed (its files are scanned there)")
                else:
                    passed_over(UNSCANNED_LINK, full,
                                f"symlink to the directory {target}, outside the scanned paths, not "
                                "followed: scan the target, or use --follow-symlinks")
            else:
                yield full  # a link to a file: its target is read, as a loader would
        else:
            yield full
