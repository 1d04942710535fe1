"""HDF5 files, and the Keras model configs legacy ``.h5`` models keep in their root attributes.

An HDF5 file starts with its superblock signature at offset 0, or, after a user block, at 512,
1024, 2048 ... (powers of two: the HDF5 library searches there, so a scanner must too). h5py reads
the attributes (HDF5 is too involved to parse by hand: superblock versions, dense attribute
storage, global-heap strings); it is imported only when an HDF5 file is met, and it reads through
:class:`SourceIO`, so a Hub file is read with range requests like every other source.

Keras' legacy loader (``load_model`` on ``.h5``) reads the JSON in the ``model_config`` and
``training_config`` root attributes and deserializes them, running Lambda bytecode: both are
walked with the shared Keras config walk. Weights datasets are plain numbers, never unpickled.
"""

from __future__ import annotations

import json
import os
import time

from ..context import ScanContext
from ..source import ByteSource, SourceIO
from .interface import FormatReader
from .keras_config import walk_keras_config

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Root attributes holding JSON that Keras deserializes.
KERAS_ATTRIBUTES = ("model_config", "training_config")


def superblock_offset(source: ByteSource, head: bytes) -> Optional[int]:
    """Where the HDF5 signature is (0, 512, 1024, 2048, ...), or None. At most log2(size) reads."""
    offset = 0
    while offset + len(SIGNATURE) <= source.size:
        if offset + len(SIGNATURE) <= len(head):
            found = head[offset:offset + len(SIGNATURE)] == SIGNATURE
        else:
            found = source.read_at(offset, len(SIGNATURE)) == SIGNATURE
        if found:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _attribute_text(value: Any) -> Optional[str]:
    """An attribute value as text: h5py gives str, bytes, or a 0-d/1-element numpy array of them."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "size", 0) == 1:
        return _attribute_text(value.reshape(-1)[0] if shape else value[()])
    return None


def read_keras_attributes(source: ByteSource, max_bytes: int) -> Dict[str, Any]:
    """Open the file with h5py and take out what Keras would read, as plain data.

    Returns ``{"error": [rule_id, message]}`` or ``{"is_keras": bool, "attributes": {key: text},
    "problems": [[rule_id, message, key], ...]}``.
    """
    import h5py

    try:
        handle = h5py.File(SourceIO(source), "r")
    except (OSError, ValueError) as exc:
        return {"error": ["unscanned-parse-error", f"HDF5 file could not be opened: {exc}"]}
    out: Dict[str, Any] = {"attributes": {}, "problems": []}
    with handle:
        try:
            attrs = handle.attrs
            found = [k for k in KERAS_ATTRIBUTES if k in attrs]
            out["is_keras"] = bool(found) or "keras_version" in attrs or "model_weights" in handle
        except (KeyError, OSError, ValueError, RuntimeError) as exc:
            # h5py raises KeyError (not OSError) when a damaged root group cannot be opened.
            return {"error": ["unscanned-parse-error", f"HDF5 root group could not be read: {exc}"]}
        for key in found:
            try:
                size = attrs.get_id(key).get_storage_size()
            except (KeyError, OSError, AttributeError):
                size = 0
            if size > max_bytes:
                out["problems"].append(["unscanned-limit", f"attribute {key!r} of {size} bytes exceeds "
                                        "the in-memory limit", key])
                continue
            try:
                text = _attribute_text(attrs[key])
            except (OSError, TypeError, ValueError, KeyError) as exc:
                out["problems"].append(["unscanned-parse-error",
                                        f"attribute {key!r} could not be read: {exc}", key])
                continue
            if text is None:
                out["problems"].append(["unscanned-parse-error",
                                        f"attribute {key!r} is not a string; Keras would fail on it", key])
                continue
            out["attributes"][key] = text
    return out


def read_isolated(source: ByteSource, max_bytes: int, seconds: float) -> Dict[str, Any]:
    """:func:`read_keras_attributes` in a forked child with a time limit.

    libhdf5 is native code reading attacker-controlled bytes: the fuzzer found a damaged global heap
    on which it loops forever holding the GIL, so no thread or signal in this process could stop it.
    Where ``fork`` is not available the read runs in this process.
    """
    if not hasattr(os, "fork"):  # pragma: no cover - Windows
        return read_keras_attributes(source, max_bytes)
    import select  # here, not at the top: a scan without an HDF5 file never needs them
    import signal

    import h5py  # noqa: F401 - imported before forking so the child does not pay for it

    before = source.bytes_read
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's code
        status = 0
        try:
            os.close(rfd)
            try:
                result = read_keras_attributes(source, max_bytes)
            except Exception as exc:  # noqa: BLE001 - reported by the parent
                result = {"error": ["unscanned-parse-error", f"HDF5 file could not be read: "
                                                             f"{type(exc).__name__}: {exc}"]}
            result["bytes_read"] = source.bytes_read - before
            data = json.dumps(result).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + seconds
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(rfd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if timed_out:
        return {"error": ["unscanned-limit", f"the HDF5 library did not finish reading the file within "
                                             f"{seconds:g} s (a damaged or hostile file); it was stopped"]}
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        return {"error": ["unscanned-parse-error", "the HDF5 library failed while reading the file"]}
    source.bytes_read += int(result.pop("bytes_read", 0))
    return result


class Hdf5Reader(FormatReader):
    """HDF5 containers; Keras model configs inside them."""

    name = "hdf5"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return superblock_offset(source, head) is not None

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        # A user block before the superblock is legal HDF5; readers of offset 0 see it (and the
        # driver reports a polyglot when it is another format).
        offset = superblock_offset(source, source.head(4096))
        try:
            import h5py  # noqa: F401 - optional dependency, only needed for HDF5 files
        except ImportError:
            ctx.report("unscanned-unsupported", "HDF5 file, but h5py is not installed: its Keras config "
                       "attributes could not be read (pip install h5py)")
            return
        result = read_isolated(source, ctx.limits.max_in_memory_bytes, ctx.limits.max_native_parse_seconds)
        if "error" in result:
            rule_id, message = result["error"]
            ctx.report(rule_id, message, offset=offset)
            return
        if result.get("is_keras"):
            ctx.add_format("keras-h5")
        for rule_id, message, key in result["problems"]:
            ctx.report(rule_id, message, details={"attribute": key})
        for key in KERAS_ATTRIBUTES:
            text = result["attributes"].get(key)
            if text is None:
                continue
            if ctx.json_too_large(len(text), f"attribute {key!r}", offset=offset):
                continue
            try:
                doc = json.loads(text)
            except ValueError as exc:
                ctx.report("unscanned-parse-error", f"attribute {key!r} is not JSON: {exc}",
                           details={"attribute": key})
                continue
            walk_keras_config(doc, ctx, root=key)
