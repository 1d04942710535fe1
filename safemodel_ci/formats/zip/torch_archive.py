"""Torch's rules for a zip: which folders are torch archive roots, how torch looks records up
(ASCII case folded), which members it unpickles and how (``data.pkl`` once, as torch's unpickler
reads it), which members are raw storages it never parses.
"""

from __future__ import annotations


from ...context import ScanContext
from ...source import ByteSource
from .container import CentralEntry

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import List

#: Storage members of a torch archive are only sniffed: this many leading bytes.
STORAGE_SNIFF = 4096
#: Files whose presence marks a torch archive root (``torch.save``, TorchScript, torch.package).
TORCH_ROOT_MARKERS = ("data.pkl", "constants.pkl", "bytecode.pkl")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def torch_key(name: str) -> str:
    """``name`` as torch's reader looks records up: miniz's sorted-directory search (no
    ``MZ_ZIP_FLAG_CASE_SENSITIVE``) compares names with ASCII-only ``MZ_TOLOWER``, so
    ``get_record("code/__torch__.py")`` also finds ``archive/CODE/__torch__.PY``."""
    return name.translate(_ASCII_LOWER)


def torch_pickle_kind(name: str, torch_roots: List[str]) -> str:
    """Whether torch unpickles the member ``name`` of a torch archive: ``"data"`` for
    ``<root>/data.pkl`` (``torch.load``), ``"other"`` for every other ``.pkl`` in a root or below
    it (TorchScript's ``constants.pkl``, mobile ``bytecode.pkl`` and debug handles, torch.package
    resources read with ``load_pickle``, TorchScript ``code/*.debug_pkl`` source ranges), ``""`` for
    the rest (storages, code, version records, ``extra/`` files)."""
    for root in torch_roots:
        if name == root + "/data.pkl":
            return "data"
        if name.startswith(root + "/") and name.endswith((".pkl", ".debug_pkl")) \
                and not name.startswith((root + "/data/", root + "/extra/")):
            # (extra/ holds _extra_files, which torch.jit.load returns as bytes, unparsed)
            return "other"
    return ""


def torch_roots(entries: List[CentralEntry]) -> List[str]:
    """The roots (``torch_key`` of the top folder) of the torch archives in a zip: folders holding
    a ``data.pkl``, ``constants.pkl`` or ``bytecode.pkl``, or torch.package's ``.data/version``."""
    roots = []
    for e in entries:
        # Roots are kept as torch_key(): torch finds data.pkl, code/ ... case-insensitively.
        parts = torch_key(e.name).split("/")
        marker = (len(parts) == 2 and parts[1] in TORCH_ROOT_MARKERS) or \
            (len(parts) == 3 and parts[1:] == [".data", "version"])  # torch.package
        if marker and parts[0] not in roots:
            roots.append(parts[0])
    return roots


def scan_member(member: ByteSource, ctx: ScanContext, torch_pickle: str) -> None:
    """Scan a member by content; a member torch unpickles is read as a pickle whatever it
    looks like (``torch_pickle``: ``"data"`` for ``data.pkl``, ``"other"`` for the other
    pickles of a torch archive, ``""`` for everything else)."""
    if torch_pickle == "data":
        # torch unpickles data.pkl once; the VM then knows to expect protocol 2 only. What it
        # cannot walk to STOP is its finding (pickle-broken-stream), never "not a pickle".
        ctx.add_format("pickle")
        result = ctx.scan_pickle_at(member, 0, torch_archive=True)
        if result.complete and result.end is not None and result.end < member.size:
            ctx.scan_pickle_stream(member, result.end)
        return
    if torch_pickle:
        ctx.scan_as("pickle", member)
        return
    ctx.scan(member)
