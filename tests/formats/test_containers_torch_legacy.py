"""Legacy torch.save files (five pickles + raw storages) and the legacy tar format."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import tarfile
from pathlib import Path
from typing import List

import pytest
from container_support import Evil, assert_benign, assert_malicious, evil_pickle, find, needs_vm, rules, scan

from safemodel_ci.formats.torch_legacy import TorchLegacyReader
from safemodel_ci.formats.torch_storages import storages_from_persistent_ids
from safemodel_ci.source import BytesSource

torch = pytest.importorskip("torch")


def legacy_save(obj: object, path: Path) -> bytes:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


def pickle_ends(data: bytes, count: int = 5) -> List[int]:
    """Offsets just after each of the first ``count`` pickles (pickletools only parses)."""
    ends, pos = [], 0
    stream = io.BytesIO(data)
    for _ in range(count):
        stream.seek(pos)
        for _op, _arg, _at in pickletools.genops(stream):
            pass
        pos = stream.tell()
        ends.append(pos)
    return ends


def test_detects_the_magic_pickle(tmp_path: Path) -> None:
    data = legacy_save({"w": torch.zeros(3)}, tmp_path / "a.pt")
    assert TorchLegacyReader().detect(BytesSource(data), data[:4096])
    framed = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=4)
    assert TorchLegacyReader().detect(BytesSource(framed), framed)
    assert not TorchLegacyReader().detect(BytesSource(b"\x80\x02K\x01."), b"\x80\x02K\x01.")


def test_persistent_ids_give_storage_layout() -> None:
    """The storage type is the imported torch class (its dtype gives torch's element size); a
    string, a tuple or another module's class has no size known here (torch would fail on it)."""
    from safemodel_ci.formats.pickle import Global

    pids = [("storage", Global("torch", "FloatStorage", None, True), "0", "cpu", 6, None),
            ("storage", Global("torch", "HalfStorage", None, True), "1", "cpu", 2, None),
            ("storage", "torch.HalfStorage", "2", "cpu", 2, None),
            ("storage", Global("evil", "FloatStorage", None, False), "3", "cpu", 2, None),
            ("module", None, None, None)]
    assert storages_from_persistent_ids(pids) == {"0": (4, 6), "1": (2, 2), "2": (None, 2), "3": (None, 2)}


@needs_vm
def test_benign_legacy_checkpoint_reads_only_its_pickles(tmp_path: Path) -> None:
    path = tmp_path / "big.pt"
    legacy_save({"w": torch.ones(4_000_000), "h": torch.ones(7, dtype=torch.float16),
                 "i": torch.arange(5)}, path)
    result = assert_benign(path)
    assert "torch-legacy" in result.formats
    # Five pickles (the VM reads in buffered blocks) and the tail a zip detector looks at: the
    # 16 MB of raw storage are not read.
    assert result.bytes_read < 1_000_000, result.bytes_read


@needs_vm
def test_payload_in_the_main_pickle(tmp_path: Path) -> None:
    data = legacy_save({"w": torch.zeros(4), "x": Evil()}, tmp_path / "evil.pt")
    ends = pickle_ends(data)
    result = assert_malicious(tmp_path / "evil.pt")
    hits = [f for f in result.findings if f.rule_id == "pickle-dangerous-global"]
    assert all(ends[2] <= f.offset < ends[3] for f in hits)


@needs_vm
@pytest.mark.parametrize("index", [2, 3, 4])
def test_payload_in_any_of_the_five_pickles(tmp_path: Path, index: int) -> None:
    """Replace the 3rd (sys_info), 4th (main) or 5th (storage keys) pickle by a payload."""
    data = legacy_save({"w": torch.zeros(4)}, tmp_path / "a.pt")
    ends = pickle_ends(data)
    starts = [0] + ends[:-1]
    payload = evil_pickle(2)
    crafted = data[:starts[index]] + payload + data[ends[index]:]
    path = tmp_path / f"evil{index}.pt"
    path.write_bytes(crafted)
    result = assert_malicious(path)
    hits = [f for f in result.findings if f.rule_id == "pickle-dangerous-global"]
    assert any(starts[index] <= f.offset < starts[index] + len(payload) for f in hits), \
        [(f.offset, starts[index]) for f in hits]


@needs_vm
def test_payload_appended_after_the_storages(tmp_path: Path) -> None:
    data = legacy_save({"w": torch.ones(100)}, tmp_path / "a.pt")
    path = tmp_path / "tail.pt"
    path.write_bytes(data + evil_pickle(2))
    result = assert_malicious(path)
    assert find(result, "torch-unaccounted-bytes")[0].offset == len(data)
    assert any(f.offset >= len(data) for f in result.findings if f.rule_id == "pickle-dangerous-global")


@needs_vm
def test_payload_carved_from_a_damaged_storage_area(tmp_path: Path) -> None:
    data = legacy_save({"w": torch.ones(100)}, tmp_path / "a.pt")
    ends = pickle_ends(data)
    # The first storage's count now claims far more than the file holds; a payload hides inside.
    crafted = bytearray(data)
    struct.pack_into("<Q", crafted, ends[4], 10**9)
    crafted[ends[4] + 8 + 40:ends[4] + 8 + 40] = evil_pickle(2)
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(crafted))
    code, result = scan(path)
    assert code == 1
    assert "unscanned-parse-error" in rules(result)
    assert any(f.rule_id == "pickle-dangerous-global" for f in result.findings)


def _tar(members: List[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _legacy_tar_storages(extra: bytes = b"") -> bytes:
    """The ``storages`` member of torch's tar format: count, then (key, location, type) + raw, then
    the list of storage views (torch.load reads all three parts)."""
    out = pickle.dumps(1, protocol=2)
    out += pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2)
    out += struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4)
    out += pickle.dumps([], protocol=2)
    return out + extra


@needs_vm
def test_legacy_tar_format(tmp_path: Path) -> None:
    members = [("sys_info", pickle.dumps({"little_endian": True}, protocol=2)),
               ("pickle", pickle.dumps({"w": 1}, protocol=2)),
               ("tensors", pickle.dumps(0, protocol=2))]
    ok = tmp_path / "ok.tar"
    ok.write_bytes(_tar(members + [("storages", _legacy_tar_storages())]))
    result = assert_benign(ok)
    assert "torch-legacy-tar" in result.formats
    bad = tmp_path / "bad.tar"
    bad.write_bytes(_tar(members + [("storages", _legacy_tar_storages(evil_pickle(2)))]))
    assert_malicious(bad, member="storages")


@needs_vm
@pytest.mark.parametrize("link", [tarfile.SYMTYPE, tarfile.LNKTYPE])
@pytest.mark.parametrize("name", ["storages", "tensors", "pickle"])
def test_legacy_tar_member_that_is_a_link_is_critical(tmp_path: Path, name: str, link: bytes) -> None:
    """torch.load's legacy_load runs tar.extract('storages'/'tensors', tmpdir) with tarfile's default
    filter (fully trusted before Python 3.14) and pickle.loads the extracted path, and reads 'pickle'
    with extractfile: a link member makes it unpickle a file (or member) the scan never saw."""
    regular = {"sys_info": pickle.dumps({"little_endian": True}, protocol=2),
               "pickle": pickle.dumps({"w": 1}, protocol=2),
               "tensors": pickle.dumps(0, protocol=2),
               "storages": _legacy_tar_storages()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for member, data in regular.items():
            info = tarfile.TarInfo(member)
            if member == name:
                info.type = link
                info.linkname = str(tmp_path / "planted.pkl") if link == tarfile.SYMTYPE else "sys_info"
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    path = tmp_path / "linked.pt"
    path.write_bytes(buf.getvalue())
    code, result = scan(path)
    assert code == 1
    hits = find(result, "torch-tar-link")
    assert len(hits) == 1 and name in hits[0].message and hits[0].offset is not None


@needs_vm
def test_corpus_legacy_checkpoint(corpus_dir: Path) -> None:
    result = assert_benign(corpus_dir / "pytorch_model.bin")
    assert "torch-legacy" in result.formats


@needs_vm
def test_many_storages(tmp_path: Path) -> None:
    path = tmp_path / "many.pt"
    legacy_save({f"t{i}": torch.full((i % 7,), float(i)) for i in range(3000)}, path)
    assert_benign(path)


@needs_vm
def test_payload_after_storages_of_mixed_types(tmp_path: Path) -> None:
    data = legacy_save({"f": torch.ones(100), "h": torch.ones(3, dtype=torch.float16),
                        "l": torch.arange(5), "b": torch.ones(4, dtype=torch.bool)}, tmp_path / "a.pt")
    assert_benign(tmp_path / "a.pt")
    path = tmp_path / "mixed_tail.pt"
    path.write_bytes(data + evil_pickle(2))
    result = assert_malicious(path)
    assert find(result, "torch-unaccounted-bytes")
    assert any(f.offset >= len(data) for f in result.findings if f.rule_id == "pickle-dangerous-global")


def test_tar_header_checksum_detection() -> None:
    from safemodel_ci.formats.tar import header_checksum_ok

    data = _tar([("a.txt", b"hi")])
    assert header_checksum_ok(data[:512])
    broken = bytearray(data[:512])
    broken[0] ^= 1
    assert not header_checksum_ok(bytes(broken))
    assert not header_checksum_ok(b"\0" * 512)
    # Old tar writers summed the header as signed bytes: a name with bytes over 127 tells the two
    # sums apart, and a header checksummed either way is a tar header (as tarfile accepts both).
    header = bytearray(data[:512])
    header[1:3] = "\u00e9\u00fc".encode("latin-1")  # a name a latin-1 system wrote
    body = header[:148] + b" " * 8 + header[156:]
    for total in (sum(body), sum(b - 256 if b > 127 else b for b in body)):
        header[148:156] = b"%06o\0 " % total
        assert header_checksum_ok(bytes(header))
    header[148:156] = b"%06o\0 " % (sum(body) + 1)
    assert not header_checksum_ok(bytes(header))


@needs_vm
def test_generic_tar_members_by_content(tmp_path: Path) -> None:
    import gzip

    data = _tar([("README", b"docs"), ("weights/model.txt", evil_pickle(2))])
    (tmp_path / "m.tar").write_bytes(data)
    assert_malicious(tmp_path / "m.tar", member="weights/model.txt")
    (tmp_path / "m.tar.gz").write_bytes(gzip.compress(data))
    assert_malicious(tmp_path / "m.tar.gz", member="<gzip>:weights/model.txt")
