"""The strict JSON helper used for safetensors headers and indexes: serde_json's opinion, duplicates."""

from __future__ import annotations

import json

import pytest

from safemodel_ci.jsonutil import SERDE_MAX_DEPTH, JSONFormatError, char_to_byte_offset, parse_json_strict


@pytest.mark.parametrize("text", [
    "NaN", "[Infinity]", '{"a": -Infinity}', "1e400", "[-1e400]", '"\\ud800"', '{"\\udc00": 1}',
    '"a\x01"', "\ufeff{}", "{}\x00", "[1,]", "", "   ", "01", '{"a" 1}',
])
def test_rejects_what_serde_rejects(text: str) -> None:
    with pytest.raises(JSONFormatError):
        parse_json_strict(text)


def test_integers_follow_serde() -> None:
    value = parse_json_strict("[0, 18446744073709551615, 18446744073709551616, -9223372036854775808, "
                              "-9223372036854775809, -0, 1e2, 1e-400]").value
    assert value[0] == 0 and isinstance(value[0], int)
    assert value[1] == (1 << 64) - 1 and isinstance(value[1], int)
    assert isinstance(value[2], float)  # beyond u64: serde makes it f64
    assert isinstance(value[3], int) and isinstance(value[4], float)
    assert isinstance(value[5], float) and str(value[5]) == "-0.0"
    assert isinstance(value[6], float) and value[7] == 0.0


def test_depth_limit_matches_serde() -> None:
    ok = "[" * SERDE_MAX_DEPTH + "]" * SERDE_MAX_DEPTH
    assert parse_json_strict(ok).max_depth == SERDE_MAX_DEPTH
    with pytest.raises(JSONFormatError, match="nesting"):
        parse_json_strict("[" + ok + "]")
    with pytest.raises(JSONFormatError, match="nesting"):
        parse_json_strict("[" * 5000 + "]" * 5000)  # beyond Python's own recursion limit


def test_duplicates_are_found_anywhere_with_their_path() -> None:
    doc = parse_json_strict('{"a": 1, "a": 2, "b": [{"c": {"d": 1, "d": 1, "d": 3}}], "e": {"f": 1}}')
    assert doc.value["a"] == 2  # last wins, like serde's maps
    found = {(d.path, d.key, d.count) for d in doc.duplicates}
    assert found == {((), "a", 2), (("b", 0, "c"), "d", 3)}
    assert {d.where() for d in doc.duplicates} == {"top level", '["b"][0]["c"]'}


def test_valid_documents_match_json_module() -> None:
    text = json.dumps({"x": [1, 2.5, "é😀", None, True, {"y": "\u00e9"}], "z": "\ud83d\ude00"})
    assert parse_json_strict(text).value == json.loads(text)
    assert parse_json_strict(" \t\n{}\r\n ").value == {}


def test_error_positions_are_byte_offsets() -> None:
    text = '{"é": 1,'
    with pytest.raises(JSONFormatError) as info:
        parse_json_strict(text)
    assert info.value.pos is not None
    assert char_to_byte_offset(text, info.value.pos) == len(text[:info.value.pos].encode())
