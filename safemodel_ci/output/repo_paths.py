"""Where a reported path sits relative to the repository root (SARIF URIs, annotation ``file=``).

GitHub maps SARIF results and annotations to files by their path relative to the repository root,
so every output that links to a file needs the same notion of that root: ``--repo-root``, else
``SAFEMODEL_REPO_ROOT``, else ``GITHUB_WORKSPACE`` (set by Actions), else the enclosing Git work
tree of the current directory, else the current directory.
"""

from __future__ import annotations

import functools
import os
import posixpath
from urllib.parse import quote

from ..findings import Location

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

#: Characters kept as they are in a URI path segment (RFC 3986 unreserved, plus the separator).
_URI_SAFE = "/-._~"


def find_repo_root(explicit: Optional[str] = None) -> str:
    """The absolute repository root to make paths relative to (see the module docstring)."""
    for candidate in (explicit, os.environ.get("SAFEMODEL_REPO_ROOT"), os.environ.get("GITHUB_WORKSPACE")):
        if candidate:
            return os.path.realpath(candidate)
    here = os.path.realpath(os.getcwd())
    probe = here
    while True:
        if os.path.exists(os.path.join(probe, ".git")):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return here
        probe = parent


def hub_url(location: Location) -> Optional[str]:
    """The Hub web URL of a Hub (or Hugging Face cache) location: a file at its revision, or the
    repo itself (at its revision when known); None for a local file."""
    if location.repo is None:
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    repo = f"{endpoint}/{quote(location.repo, safe='/')}"
    revision = quote(location.revision, safe="") if location.revision else None
    if not location.path:
        return repo + (f"/tree/{revision}" if revision else "")
    return f"{repo}/blob/{revision or 'main'}/{path_to_uri(location.path)}"


def local_path(location: Location) -> Optional[str]:
    """The local filesystem path of a location, or None when it names something else (a Hub or
    cache file, a URL given as a target)."""
    if location.repo is not None or "://" in location.path:
        return None
    return location.path


@functools.lru_cache(maxsize=64)
def _realpath(path: str) -> str:
    # The root is resolved once per report, not once per finding.
    return os.path.realpath(path)


def repo_relative(path: str, root: str) -> Optional[str]:
    """``path`` as a ``/``-separated path relative to ``root``, or None when it lies outside it.

    ``path`` is a local path (see :func:`local_path`). It is resolved lexically against the current
    directory (not through symlinks: the repository's own name for a file is what code scanning shows).
    """
    absolute = os.path.normpath(os.path.join(os.getcwd(), path))
    root_abs = os.path.normpath(root)
    real_root = _realpath(root_abs)
    for base in (root_abs, real_root):
        try:
            rel = os.path.relpath(absolute, base)
        except ValueError:  # another drive on Windows
            continue
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep) and not os.path.isabs(rel):
            return posixpath.normpath(rel.replace(os.sep, "/"))
    # The path may reach the root through a symlinked directory (/tmp vs /private/tmp).
    real = os.path.realpath(absolute)
    rel = os.path.relpath(real, real_root)
    if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
        return posixpath.normpath(rel.replace(os.sep, "/"))
    return None


def path_to_uri(relative: str) -> str:
    """A relative path as a URI reference: each segment percent-encoded (UTF-8), ``/`` kept.

    ``:`` is encoded too, so a first segment like ``c:x`` is not read as a scheme.
    """
    # The name's bytes (a non-UTF-8 name's too, kept by Python as surrogates) are percent-encoded.
    return quote(relative.encode("utf-8", "surrogateescape"), safe=_URI_SAFE)


def file_uri(absolute: str, directory: bool = False) -> str:
    """A ``file://`` URI for an absolute local path (``directory`` adds the trailing ``/``)."""
    posix = os.path.abspath(absolute).replace(os.sep, "/")
    if not posix.startswith("/"):  # Windows drive path: file:///C:/...
        posix = "/" + posix
    safe = "/-._~:" if os.name == "nt" else _URI_SAFE
    uri = "file://" + quote(posix.encode("utf-8", "surrogateescape"), safe=safe)
    if directory and not uri.endswith("/"):
        uri += "/"
    return uri
