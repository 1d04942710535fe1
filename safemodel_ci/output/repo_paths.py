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
import re
from typing import Optional
from urllib.parse import quote

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


#: How ``safemodel hub`` names a file: ``[datasets/|spaces/]org/name@<sha>:path/in/repo``.
_HUB_PATH = re.compile(r"^((?:datasets/|spaces/)?[^/@:\s]+/[^/@:\s]+)@([0-9A-Za-z._-]+):(.+)$", re.S)


def hub_url(path: str) -> Optional[str]:
    """The Hub web URL of a file reported by ``safemodel hub``, or None for other paths.

    A path that exists locally is always a local file, whatever it looks like.
    """
    match = _HUB_PATH.match(path)
    if match is None or os.path.lexists(path):
        return None
    repo, revision, inner = match.groups()
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{quote(repo, safe='/')}/blob/{quote(revision, safe='')}/{path_to_uri(inner)}"


_HUB_REPO = re.compile(r"^((?:datasets/|spaces/)?[^/@:\s]+/[^/@:\s]+)(?:@([0-9A-Za-z._-]+))?$")


def hub_repo_url(target: str) -> Optional[str]:
    """The Hub web URL of a repo named ``org/name[@revision]`` (a ``safemodel hub`` error target)."""
    match = _HUB_REPO.match(target)
    if match is None or os.path.lexists(target):
        return None
    repo, revision = match.groups()
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{quote(repo, safe='/')}" + (f"/tree/{quote(revision, safe='')}" if revision else "")


def is_remote(path: str) -> bool:
    """True for reported paths that name something other than a local file (a URL, a Hub file)."""
    return "://" in path or hub_url(path) is not None


@functools.lru_cache(maxsize=64)
def _realpath(path: str) -> str:
    # The root is resolved once per report, not once per finding.
    return os.path.realpath(path)


def repo_relative(path: str, root: str) -> Optional[str]:
    """``path`` as a ``/``-separated path relative to ``root``, or None when it lies outside it.

    The path is resolved lexically against the current directory (not through symlinks: the
    repository's own name for a file is what code scanning shows).
    """
    if is_remote(path):
        return None
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
