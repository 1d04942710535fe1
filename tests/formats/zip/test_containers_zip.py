"""ZIP containers: torch archives, TorchScript, npz, and hand-crafted zip tricks."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import List, Tuple

import pytest
from container_support import (
    assert_benign,
    assert_malicious,
    benign_pickle,
    evil_pickle,
    find,
    needs_vm,
    rules,
    scan,
)

from safemodel_ci.formats.zip.container import find_directory, read_central_directory
from safemodel_ci.formats.zip.reader import ZipReader
from safemodel_ci.source import BytesSource


def zip_bytes(members: List[Tuple[str, bytes]], compression: int = zipfile.ZIP_STORED,
              force_zip64: bool = False) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some tests
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in members:
                if force_zip64:
                    with zf.open(name, "w", force_zip64=True) as fh:
                        fh.write(data)
                else:
                    zf.writestr(name, data)
    return buf.getvalue()


def central_records(data: bytes) -> List[int]:
    """Offsets of the central directory records (in order)."""
    out, pos = [], data.find(b"PK\x01\x02")
    while pos >= 0:
        out.append(pos)
        nlen, elen, clen = struct.unpack_from("<HHH", data, pos + 28)
        pos = pos + 46 + nlen + elen + clen
        if data[pos:pos + 4] != b"PK\x01\x02":
            break
    return out


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- structure (no pickle VM needed) ------------------------------------------------------------

def test_directory_parsed_by_hand_matches_zipfile() -> None:
    data = zip_bytes([("a.txt", b"hello"), ("dir/b.bin", b"\0" * 100)], zipfile.ZIP_DEFLATED)
    source = BytesSource(data)
    directory = find_directory(source)
    assert directory is not None
    read_central_directory(source, directory, 1 << 20)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        expected = [(i.filename, i.compress_size, i.file_size, i.CRC, i.header_offset) for i in zf.infolist()]
    got = [(e.name, e.csize, e.usize, e.crc, e.local_offset) for e in directory.entries]
    assert got == expected


def test_zip64_records_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "z64.zip", zip_bytes([("m.txt", b"x" * 10)], force_zip64=True))
    code, result = scan(path)
    assert code == 0
    assert "zip" in result.formats


def test_zip_detected_by_end_record_even_with_leading_bytes() -> None:
    data = b"leading junk that is no format\n" + zip_bytes([("a.txt", b"hi")])
    assert ZipReader().detect(BytesSource(data), data[:4096])


def test_random_pk_bytes_in_tail_are_not_a_zip() -> None:
    data = b"\0" * 1000 + b"PK\x05\x06" + b"\xff" * 18
    assert not ZipReader().detect(BytesSource(data), data[:4096])


def test_truncated_zip_fails_closed(tmp_path: Path) -> None:
    data = zip_bytes([("a.txt", b"hello world")])
    path = write(tmp_path, "cut.zip", data[:data.find(b"PK\x01\x02")])
    code, result = scan(path)
    assert code == 2
    assert "unscanned-parse-error" in rules(result)


def test_real_encryption_is_unscanned(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("secret.bin", bytes(range(256)) * 4)]))
    # Make it look like ZipCrypto: flag bit 0 set and the content replaced by noise.
    for pos in [0] + central_records(bytes(data)):
        off = 6 if pos == 0 else 8
        struct.pack_into("<H", data, pos + off, struct.unpack_from("<H", data, pos + off)[0] | 1)
    start = 30 + len("secret.bin")
    noise = bytes((i * 197 + 13) % 251 for i in range(1024))
    data[start:start + 1024] = noise
    code, result = scan(write(tmp_path, "enc.zip", bytes(data)))
    assert code == 2
    assert find(result, "unscanned-encrypted")[0].member == "secret.bin"


def test_torch_storage_members_are_only_sniffed(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "big.pt"
    torch.save({"w": torch.ones(2_000_000), "b": torch.zeros(10)}, path)  # 8 MB of storage
    code, result = scan(path)
    assert code == 0, [f.to_dict() for f in result.findings]
    assert "torch-zip" in result.formats
    assert result.bytes_read < 200_000, result.bytes_read


def test_limits_members_per_archive(tmp_path: Path) -> None:
    from safemodel_ci.context import Limits

    path = write(tmp_path, "many.zip", zip_bytes([(f"m{i}.txt", b"x") for i in range(10)]))
    code, result = scan(path, Limits(max_members=3))
    assert code == 2
    limit = find(result, "unscanned-limit")
    assert limit and "members-per-archive" in limit[0].message


def test_limits_nesting_depth(tmp_path: Path) -> None:
    from safemodel_ci.context import Limits

    data = b"innermost"
    for i in range(5):
        data = zip_bytes([(f"level{i}.zip", data)])
    code, result = scan(write(tmp_path, "nested.zip", data), Limits(max_depth=3))
    assert code == 2
    assert any("nesting deeper" in f.message for f in find(result, "unscanned-limit"))


def test_limits_decompression_ratio(tmp_path: Path) -> None:
    from safemodel_ci.context import Limits

    path = write(tmp_path, "bomb.zip", zip_bytes([("zeros.bin", b"\0" * (8 << 20))], zipfile.ZIP_DEFLATED))
    code, result = scan(path, Limits(max_compression_ratio=50))
    assert code == 2
    assert any("ratio" in f.message for f in find(result, "unscanned-limit"))


def test_limits_time_budget(tmp_path: Path) -> None:
    from safemodel_ci.context import Limits

    path = write(tmp_path, "t.zip", zip_bytes([("a.txt", b"x")]))
    code, result = scan(path, Limits(max_seconds_per_file=0))
    assert code == 2
    assert any("time budget" in f.message for f in find(result, "unscanned-limit"))


# -- end to end: malicious members are found wherever they hide ----------------------------------

@needs_vm
@pytest.mark.parametrize("name", ["archive/data.pkl", "archive/other.pkl", "archive/data/0", "x.txt"])
def test_member_scanned_by_content_whatever_its_name(tmp_path: Path, name: str) -> None:
    members = [("archive/data.pkl", benign_pickle()), ("archive/version", b"3\n")]
    members = [(n, d) for n, d in members if n != name] + [(name, evil_pickle())]
    assert_malicious(write(tmp_path, "m.zip", zip_bytes(members)), member=name)


@needs_vm
@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compressed_member(tmp_path: Path, compression: int) -> None:
    path = write(tmp_path, "c.zip", zip_bytes([("model/data.pkl", evil_pickle())], compression))
    assert_malicious(path, member="model/data.pkl")


@needs_vm
def test_bad_crc_is_reported_and_scanned(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("archive/data.pkl", evil_pickle())]))
    struct.pack_into("<I", data, 14, 0xDEADBEEF)
    struct.pack_into("<I", data, central_records(bytes(data))[0] + 16, 0xDEADBEEF)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(bytes(data))).read("archive/data.pkl")
    result = assert_malicious(write(tmp_path, "crc.pt", bytes(data)), member="archive/data.pkl")
    assert find(result, "zip-crc-mismatch")[0].member == "archive/data.pkl"


@needs_vm
@pytest.mark.parametrize("bit", [0x1, 0x20, 0x40])
def test_flag_bits_on_plain_content(tmp_path: Path, bit: int) -> None:
    data = bytearray(zip_bytes([("model/config.pkl", evil_pickle(4))]))
    struct.pack_into("<H", data, 6, bit)
    struct.pack_into("<H", data, central_records(bytes(data))[0] + 8, bit)
    result = assert_malicious(write(tmp_path, "flags.zip", bytes(data)), member="model/config.pkl")
    assert "zip-flag-bits" in rules(result)


@needs_vm
def test_local_and_central_names_differ(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("data.pkl", evil_pickle())]))
    data[30:38] = b"datap.kl"
    result = assert_malicious(write(tmp_path, "names.zip", bytes(data)), member="data.pkl")
    assert find(result, "zip-name-mismatch")[0].details["local_name"] == "datap.kl"


@needs_vm
@pytest.mark.parametrize("evil_first", [True, False])
def test_duplicate_members_every_copy_scanned(tmp_path: Path, evil_first: bool) -> None:
    pair = [evil_pickle(), benign_pickle()] if evil_first else [benign_pickle(), evil_pickle()]
    data = zip_bytes([("archive/data.pkl", pair[0]), ("archive/data.pkl", pair[1])])
    member = "archive/data.pkl" if evil_first else "archive/data.pkl#2"
    result = assert_malicious(write(tmp_path, "dup.pt", data), member=member)
    assert find(result, "zip-duplicate-member")[0].details["count"] == 2


@needs_vm
def test_prepended_data(tmp_path: Path) -> None:
    data = b"#!/bin/sh\nexit 0\n" + zip_bytes([("m/data.pkl", evil_pickle())])
    result = assert_malicious(write(tmp_path, "pre.zip", data), member="m/data.pkl")
    assert find(result, "zip-prepended-data")[0].details["length"] == len(b"#!/bin/sh\nexit 0\n")


@needs_vm
def test_pickle_with_appended_zip_is_read_both_ways(tmp_path: Path) -> None:
    # pickle.load runs the first part; zipfile sees the member: each reading is scanned.
    data = evil_pickle() + zip_bytes([("m/data.pkl", benign_pickle())])
    code, result = scan(write(tmp_path, "poly.bin", data))
    assert code == 1
    assert "polyglot" in rules(result)
    assert {"pickle", "zip"} <= set(result.formats)
    assert any(f.member is None and f.offset is not None for f in result.findings
               if f.rule_id == "pickle-dangerous-global")
    data = benign_pickle() + zip_bytes([("m/data.pkl", evil_pickle())])
    result = assert_malicious(write(tmp_path, "poly2.bin", data), member="m/data.pkl")
    assert "polyglot" in rules(result)


@needs_vm
def test_member_hidden_between_entries(tmp_path: Path) -> None:
    data = zip_bytes([("a.txt", b"first"), ("hidden.pkl", evil_pickle()), ("b.txt", b"second")])
    records = central_records(data)
    cd_start = records[0]
    eocd = data.rfind(b"PK\x05\x06")
    # Drop the hidden entry's central record and fix the end record's counts and sizes.
    cd = data[records[0]:records[1]] + data[records[2]:eocd]
    end = bytearray(data[eocd:])
    struct.pack_into("<HHI", end, 8, 2, 2, len(cd))
    crafted = data[:cd_start] + cd + bytes(end)
    with zipfile.ZipFile(io.BytesIO(crafted)) as zf:
        assert zf.namelist() == ["a.txt", "b.txt"]
    result = assert_malicious(write(tmp_path, "hidden.zip", crafted))
    gaps = find(result, "zip-unaccounted-bytes")
    assert gaps and any(f.member and f.member.startswith("<gap@") for f in result.findings
                        if f.rule_id == "pickle-dangerous-global")


@needs_vm
def test_torch_save_benign_and_with_payload(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from container_support import Evil

    torch.save({"w": torch.randn(3, 3), "step": 7}, tmp_path / "ok.pt")
    assert_benign(tmp_path / "ok.pt")
    torch.save({"w": torch.randn(3, 3), "x": Evil()}, tmp_path / "evil.pt")
    assert_malicious(tmp_path / "evil.pt", member="evil/data.pkl")


@needs_vm
def test_torch_archive_with_multiple_roots(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, tmp_path / "a.pt")
    with zipfile.ZipFile(tmp_path / "a.pt") as src:
        members = [(i.filename, src.read(i)) for i in src.infolist()]
    members.append(("other/data.pkl", evil_pickle()))
    result = assert_malicious(write(tmp_path, "roots.pt", zip_bytes(members)), member="other/data.pkl")
    assert "zip-multiple-roots" in rules(result)


@needs_vm
def test_torchscript_archive_gets_a_notice(tmp_path: Path) -> None:
    """A plain TorchScript export passes with a LOW notice (its ops: tests/formats/test_torchscript.py)."""
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return x * 2

    torch.jit.save(torch.jit.script(Tiny()), str(tmp_path / "ts.pt"))
    code, result = scan(tmp_path / "ts.pt")
    assert code == 0
    assert "torchscript" in result.formats
    code_finding = find(result, "torch-script-code")
    assert code_finding and code_finding[0].details["root"] == "ts"
    assert any(m.startswith("ts/code/") for m in code_finding[0].details["members"])
    # Its pickles were scanned too (data.pkl names TorchScript classes, constants.pkl tensors).
    assert "ts/data.pkl=pickle" in result.formats


@needs_vm
def test_npz_members(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    from container_support import Evil

    np.savez(tmp_path / "a.npz", x=np.arange(5), y=np.ones((2, 2)))
    np.savez_compressed(tmp_path / "b.npz", x=np.arange(5))
    np.savez(tmp_path / "objects.npz", o=np.array([{"k": 1}, "s", None], dtype=object))
    for name in ("a.npz", "b.npz", "objects.npz"):
        assert_benign(tmp_path / name)
    np.savez_compressed(tmp_path / "evil.npz", x=np.arange(3), o=np.array([Evil(), 1], dtype=object))
    result = assert_malicious(tmp_path / "evil.npz", member="o.npy")
    assert find(result, "npy-object-array")[0].member == "o.npy"


def test_crc_of_deflated_member_checked(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("notes.txt", b"plain text " * 100)], zipfile.ZIP_DEFLATED))
    struct.pack_into("<I", data, central_records(bytes(data))[0] + 16, zlib.crc32(b"other"))
    code, result = scan(write(tmp_path, "crc.zip", bytes(data)))
    assert code == 0  # a MEDIUM notice; the content itself is harmless
    assert find(result, "zip-crc-mismatch")[0].member == "notes.txt"


@needs_vm
def test_storage_bytes_that_merely_start_like_a_pickle(tmp_path: Path) -> None:
    """Raw tensor bytes beginning ``80 02`` + an opcode are numbers to torch: no noise, exit 0."""
    torch = pytest.importorskip("torch")
    raw = bytes([0x80, 0x02, 0x7D, 0xFF, 0x00, 0x13]) + bytes(range(256)) * 4
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8)}, tmp_path / "lookalike.pt")
    result = assert_benign(tmp_path / "lookalike.pt")
    assert not any(f.unscanned for f in result.findings)


@needs_vm
def test_understated_directory_size_does_not_hide_an_entry(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("archive/data.pkl", evil_pickle())]))
    eocd = bytes(data).rfind(b"PK\x05\x06")
    struct.pack_into("<I", data, eocd + 12, struct.unpack_from("<I", data, eocd + 12)[0] - 2)
    result = assert_malicious(write(tmp_path, "short_cd.zip", bytes(data)), member="archive/data.pkl")
    assert "zip-malformed" in rules(result)


@needs_vm
def test_end_record_pointing_nowhere_fails_closed(tmp_path: Path) -> None:
    for name, payload, expected in (("ok.zip", benign_pickle(), 2), ("evil.zip", evil_pickle(), 1)):
        data = bytearray(b"JUNK" + zip_bytes([("m/data.pkl", payload)])[4:])
        eocd = bytes(data).rfind(b"PK\x05\x06")
        struct.pack_into("<II", data, eocd + 12, 7, 3)  # directory size and offset: nonsense
        code, result = scan(write(tmp_path, name, bytes(data)))
        assert code == expected, [f.to_dict() for f in result.findings]
        assert "unscanned-parse-error" in rules(result)


@needs_vm
def test_damaged_pickle_in_front_of_a_zip_is_carved(tmp_path: Path) -> None:
    damaged = b"\x81" + evil_pickle(2)[1:]  # pickle.load fails at once; the payload bytes remain
    data = damaged + zip_bytes([("a.txt", b"hello")])
    code, result = scan(write(tmp_path, "carved.bin", data))
    assert code == 1
    assert any(f.rule_id == "pickle-dangerous-global" and f.offset < len(damaged) for f in result.findings)


@needs_vm
def test_zip_in_zip_names_the_whole_path(tmp_path: Path) -> None:
    inner = zip_bytes([("archive/data.pkl", evil_pickle())])
    outer = zip_bytes([("README.md", b"# model"), ("bundle/model.pt", inner)], zipfile.ZIP_DEFLATED)
    assert_malicious(write(tmp_path, "outer.zip", outer), member="bundle/model.pt:archive/data.pkl")
