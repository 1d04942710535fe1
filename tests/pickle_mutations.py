"""Pickle streams for the differential tests and the fuzzer: seeds made with ``pickle.dumps`` and by
hand, and mutations aimed at the places where a reader can differ from CPython's unpicklers:
argument lines (digit forms, signs, whitespace, underscores, NULs, lengths), length prefixes,
protocol headers, FRAME sizes, and the order of opcodes.

Nothing here loads a pickle; ``pickletools.genops`` only parses the seeds (which are valid).
"""

from __future__ import annotations

import collections
import datetime
import decimal
import os
import pickle
import pickletools
import random
import struct
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple


class _Payload:
    """Pickles to ``os.system('true')``; dumping does not run it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("true",))


def _values() -> List[object]:
    return [
        {"a": [1, 2.5, "x", b"y", None, True, False], "b": (1, (2, 3)), "c": {1, 2}, "d": frozenset({3})},
        [0, -1, 255, 256, 65535, 65536, -(2**31), 2**31, 2**63, -(2**70), 10**40],
        ["", "é", "\u1234", "\U0001f600", "a\nb", "q'\"\\"],
        [b"", b"\x00\xff", bytearray(b"ab"), 1.5, -0.0, float("inf"), float("nan")],
        collections.OrderedDict([("k", [1, 2]), ("z", {"n": None})]),
        [datetime.date(2020, 1, 2), decimal.Decimal("1.5")],
        {"w": [0.5] * 3, "p": _Payload()},
        ((), [], {}, set(), frozenset()),
    ]


#: Hand-written protocol 0/1 streams: every text opcode, INST, PERSID, LONG, memo by text.
HAND_WRITTEN: List[bytes] = [
    b"(lp0\nI1\naI01\naL12L\naF1.5\naS'x'\naVy\na(I2\nI3\ntp1\nag1\na.",
    b"(dp0\nS'a'\np1\nI00\nsS'b'\np2\ng1\ns.",
    b"(icollections\nOrderedDict\np0\n(dp1\nb.",
    b"ccollections\nOrderedDict\np0\n(tRp1\n.",
    b"cos\nsystem\n(S'true'\ntR.",
    b"(S'true'\nios\nsystem\n.",
    b"Pabc\n.",
    b"(I1\nI2\nd.",
    b"]q\x00(K\x01K\x02e.",
    b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x01a\x94\x8c\x01b\x94\x86.",
    b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x03len\x93.",
]


def seed_streams(extra_dirs: Sequence[Path] = ()) -> List[bytes]:
    """Valid pickles: every value above at protocols 0-5, the hand-written ones, and the pickle files
    under ``extra_dirs`` that ``pickletools`` parses."""
    seeds = [pickle.dumps(v, protocol=p) for v in _values() for p in range(6)]
    seeds += HAND_WRITTEN
    for directory in extra_dirs:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file() and path.stat().st_size < 1 << 20:
                data = path.read_bytes()
                if _ops(data):
                    seeds.append(data)
    return seeds


Op = Tuple[str, bytes, int, int]  # (opcode name, opcode byte, argument start, end)


def _ops(data: bytes) -> Optional[List[Op]]:
    """The opcodes of a valid pickle, with where each one's argument lies; None if not one."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a pickle pickletools can walk
        return None
    out: List[Op] = []
    for i, (op, _arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        out.append((op.name, data[pos:pos + 1], pos + 1, end))  # type: ignore[arg-type]
    return out if out and out[-1][0] == "STOP" else None


_INT_FORMS = [b"0", b"00", b"01", b"000123", b"+5", b"-0", b"+0", b" 5", b"5 ", b"\t5\r", b"1_000", b"1__0",
              b"_1", b"0x1F", b"0X1f", b"0x", b"0o17", b"0b101", b"010", b"08", b"0_0", b"5\x00junk", b"\x00",
              b"", b" ", b"+", b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
              b"-9223372036854775809", b"0777777777777777777777777", b"0x" + b"f" * 40, b"1e3", b"5L",
              b"\xd9\xa1", b"1" * 19, b"1" * 20, b"0" * 300 + b"1", b" \x00", b"12\x0b", b"0\x00"]
_FLOAT_FORMS = [b"1.5", b"1_0.5", b" 1.5 ", b"inf", b"-Infinity", b"nan", b"+NaN", b"1e999", b"-1e999",
                b"1e-999", b".5", b"5.", b".", b"0x1p3", b"1.5\x00x", b"1e999\x00", b"inf\x00", b"", b"1.5.5",
                b"1" * 400, b"1e", b"1e+", b"  ", b"\x00", b"1_", b"1.5\t", b"in f", b"infinityx"]
_INDEX_FORMS = [b"0", b"00", b" 1 ", b"+1", b"1_0", b"-1", b"1\x00x", b"99999999999999999999",
                b"0" * 100 + b"1", b"", b"x", b"0x1", b"1 1", b"\x000"]
_STRING_FORMS = [b"'abc'", b'"abc"', b"'abc\"", b"'", b"''", b"'\\x4'", b"'abc\\'", b"'\\xff'", b"'\xc3\xa9'",
                 b"abc", b"'a\\nb'", b"'\\q'", b"'\\777'"]
_UNICODE_FORMS = [b"abc", b"\\u12", b"\\u1234", b"\\U00110000", b"\\U0001F600", b"\\x41", b"\xff", b"\\", b""]
_NAME_FORMS = [b"os", b"builtins", b"", b"\xc3\xa9", b"\xff", b"a" * 5000, b"collections\x00", b"a.b", b" os"]


def _line_forms(name: str) -> List[bytes]:
    return {"INT": _INT_FORMS, "LONG": [f + s for f in _INT_FORMS[:30] for s in (b"", b"L", b"LL")],
            "FLOAT": _FLOAT_FORMS, "GET": _INDEX_FORMS, "PUT": _INDEX_FORMS, "STRING": _STRING_FORMS,
            "UNICODE": _UNICODE_FORMS, "PERSID": [b"abc", b"\xff", b"", b"a" * 5000]}.get(name, [])


def _long_line(rng: random.Random, name: str, long_lines: Sequence[int]) -> Optional[bytes]:
    """A valid argument padded to one of ``long_lines`` bytes (whitespace where int()/float() allow)."""
    n = rng.choice(long_lines)
    if name in ("INT", "LONG"):
        return rng.choice([b" " * n + b"5", b"0" * n, b"0x" + b"0" * n + b"1", b"1" * min(n, 20000)])
    if name == "FLOAT":
        return rng.choice([b"5" + b" " * n, b"0." + b"1" * n, b"1" * min(n, 20000) + b".5"])
    if name in ("GET", "PUT"):
        return b"0" * n + b"0"
    if name == "STRING":
        return b"'" + b"a" * n + b"'"
    if name in ("UNICODE", "PERSID"):
        return b"a" * n
    return None


def mutate(data: bytes, rng: random.Random, long_lines: Sequence[int] = (4096, 4097, 70_000)) -> bytes:
    """One mutation of a seed, aimed at argument forms, lengths, headers, frames, or opcode order."""
    ops = _ops(data)
    kind = rng.randrange(10)
    if ops is None or kind == 9:  # plain byte-level damage
        return _byte_mutation(data, rng)
    i = rng.randrange(len(ops))
    name, code, a, b = ops[i]
    if kind <= 3:  # a text argument line in another form
        texty = [k for k, op in enumerate(ops) if _line_forms(op[0]) or op[0] in ("GLOBAL", "INST")]
        if texty:
            i = rng.choice(texty)
            name, code, a, b = ops[i]
            if name in ("GLOBAL", "INST"):
                first = data.index(b"\n", a)
                module, nm = data[a:first], data[first + 1:b - 1]
                if rng.random() < 0.5:
                    module = rng.choice(_NAME_FORMS)
                else:
                    nm = rng.choice(_NAME_FORMS)
                return data[:a] + module + b"\n" + nm + b"\n" + data[b:]
            if rng.random() < 0.15:
                line = _long_line(rng, name, long_lines)
            else:
                line = rng.choice(_line_forms(name))
            if line is not None:
                return data[:a] + line + b"\n" + data[b:]
    if kind == 4:  # a binary argument: lengths and values at their edges
        size = b - a
        if 1 <= size <= 9:
            width = {1: 1, 2: 2, 4: 4, 8: 8, 9: 8}.get(size, 1)
            if name in ("BINSTRING", "BINBYTES", "BINUNICODE", "LONG4"):
                width = 4
            elif name in ("SHORT_BINSTRING", "SHORT_BINBYTES", "SHORT_BINUNICODE", "LONG1"):
                width = 1
            elif name in ("BINBYTES8", "BINUNICODE8", "BYTEARRAY8", "FRAME"):
                width = 8
            value = rng.choice([0, 1, 2, 127, 128, 255, 256, 2**31 - 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1])
            value &= (1 << (8 * width)) - 1
            return data[:a] + value.to_bytes(width, "little") + data[a + width:]
        if size > 9:  # a length-prefixed payload: the length off by a little
            for width in (4, 1, 8):
                if name in {4: ("BINSTRING", "BINBYTES", "BINUNICODE", "LONG4"),
                            1: ("SHORT_BINSTRING", "SHORT_BINBYTES", "SHORT_BINUNICODE", "LONG1"),
                            8: ("BINBYTES8", "BINUNICODE8", "BYTEARRAY8")}[width]:
                    n = int.from_bytes(data[a:a + width], "little") + rng.choice([-1, 1, -2, 2, 8])
                    n &= (1 << (8 * width)) - 1
                    return data[:a] + n.to_bytes(width, "little") + data[a + width:]
        return _byte_mutation(data, rng)
    if kind == 5:  # protocol header
        body = data[2:] if data[:1] == b"\x80" else data
        p = rng.choice([0, 1, 2, 3, 4, 5, 6, 255])
        return rng.choice([b"\x80" + bytes([p]) + body, body, b"\x80" + bytes([p]) + data])
    if kind == 6:  # a FRAME somewhere, of a size near the right one or far from it
        at = ops[i][2] - 1
        rest = len(data) - at
        size = rng.choice([rest, rest - 1, rest + 1, rest + 100, 0, 1, 2**63, 2**63 - 1, 2**64 - 1,
                           max(0, rest - rng.randrange(1, 16))])
        frame = b"\x95" + struct.pack("<Q", size)
        return data[:at] + frame + data[at:]
    if kind == 7:  # opcode order: delete, duplicate or swap
        seg = data[a - 1:b]
        choice = rng.randrange(3)
        if choice == 0:
            return data[:a - 1] + data[b:]
        if choice == 1:
            return data[:b] + seg + data[b:]
        if i + 1 < len(ops):
            _, _, a2, b2 = ops[i + 1]
            return data[:a - 1] + data[a2 - 1:b2] + seg + data[b2:]
        return data
    # kind 8: an opcode of another kind inserted, with a plausible argument
    at = ops[i][2] - 1
    return data[:at] + _random_op(rng) + data[at:]


def _random_op(rng: random.Random) -> bytes:
    simple = b"(.012NQRabdeklostu}])\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98"
    choice = rng.randrange(4)
    if choice == 0:
        return bytes([rng.choice(simple)])
    if choice == 1:
        code = rng.choice(b"IFLgpSVP")
        name = {ord("I"): "INT", ord("F"): "FLOAT", ord("L"): "LONG", ord("g"): "GET", ord("p"): "PUT",
                ord("S"): "STRING", ord("V"): "UNICODE", ord("P"): "PERSID"}[code]
        return bytes([code]) + rng.choice(_line_forms(name)) + b"\n"
    if choice == 2:
        return rng.choice([b"cbuiltins\nlen\n", b"ccollections\nOrderedDict\n", b"cos\nsystem\n",
                           b"\x8c\x08builtins\x8c\x03len\x93", b"\x82\x01"])
    return rng.choice([b"K\x05", b"M\x00\x01", b"J\xff\xff\xff\xff", b"\x8a\x01\xff", b"U\x01a", b"C\x01a",
                       b"\x8c\x01a", b"X\x01\x00\x00\x00a", b"h\x00", b"q\x00",
                       b"G" + struct.pack(">d", 1.5)])


def _byte_mutation(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    pos = rng.randrange(len(data))
    choice = rng.randrange(5)
    if choice == 0:
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1:]
    if choice == 1:
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos:]
    if choice == 2:
        return data[:pos] + data[pos + 1:]
    if choice == 3:
        return data[:pos]
    return data[:pos] + b"\n" + data[pos:]


def mutated_streams(seeds: Sequence[bytes], count: int, seed: int = 0,
                    long_lines: Sequence[int] = (4096, 4097, 70_000)) -> Iterator[bytes]:
    """``count`` mutants of ``seeds`` (one to three mutations each), reproducible from ``seed``."""
    rng = random.Random(seed)
    for _ in range(count):
        data = rng.choice(seeds)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = mutate(data, rng, long_lines)
        yield data
