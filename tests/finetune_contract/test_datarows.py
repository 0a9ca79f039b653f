"""The row rules every reader of a JSON data file shares: bounded length and depth, strict
JSON, no string a tokenizer cannot encode, and JSONL lines read without holding an over-long
one. Cases are generated: depths around the bound, every lone surrogate kind in every place of
a row, lengths around the line bound at the first, a middle and the last line."""

from __future__ import annotations

import io
import json
import random

import pytest
from finetune_contract import datarows
from finetune_contract.datarows import (
    MAX_DEPTH,
    MAX_DIGITS,
    RowError,
    Unreadable,
    jsonl_lines,
    jsonl_record,
    nesting_depth,
    parse_row,
    read_jsonl,
    text_problem,
)

GOOD = {"text": "hello", "tags": ["a", {"b": [1, 2.5, None, True]}]}


def _nested(depth: int, kind: str) -> str:
    """A row of `depth` levels in all: the row object holding `depth - 1` nested levels."""
    inner = depth - 1
    if kind == "arrays":
        value = "[" * inner + "]" * inner
    elif kind == "objects":
        value = '{"k": ' * inner + "1" + "}" * inner
    else:  # alternating, with brackets in strings that must not count
        value = "".join('{"s": "]]}}[[", "k": ' if i % 2 else "[" for i in range(inner))
        value += "0" + "".join("}" if i % 2 else "]" for i in reversed(range(inner)))
    return '{"text": "x", "deep": ' + value + "}" if inner else '{"text": "x"}'


DEPTHS = [1, 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2, 2 * MAX_DEPTH, 1000,
          100_000]


@pytest.mark.parametrize("kind", ["arrays", "objects", "mixed"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_depth_is_bounded_before_json_recurses(depth, kind):
    text = _nested(depth, kind)
    if depth <= MAX_DEPTH:
        assert parse_row(text) == json.loads(text)
    else:  # the old reader raised RecursionError from 1000 levels on
        with pytest.raises(RowError, match=f"^nested deeper than {MAX_DEPTH} levels"):
            parse_row(text)


def _random_value(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(["[]{}", '"\\"]', "x", 1, -2.5, None, True, "\\", "}]"])
    if rng.random() < 0.5:
        return [_random_value(rng, depth - 1) for _ in range(rng.randrange(3))]
    return {f"k{i}[": _random_value(rng, depth - 1) for i in range(rng.randrange(3))}


def _true_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_true_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_true_depth, value.values()), default=0)
    return 0


@pytest.mark.parametrize("seed", range(40))
def test_nesting_depth_counts_structure_not_brackets_in_strings(seed):
    value = _random_value(random.Random(seed), 12)
    assert nesting_depth(json.dumps(value), 100) == _true_depth(value)


LONE = ["\\ud800", "\\udbff", "\\udc00", "\\udfff"]  # both halves, both ends of each range
PLACES = {  # a row with the escape in one place, and the path the message names
    "value": ('{"text": "a%sb"}', "text: "),
    "nested value": ('{"m": [{"c": "ok"}, {"c": "%s"}]}', "m[1].c: "),
    "key": ('{"te%sxt": "a"}', "a key of the row: "),
    "nested key": ('{"m": [{"%s": 1}]}', "a key of m[0]: "),
    "odd key on the path": ('{"a b": {"c": "%s"}}', '["a b"].c: '),
}


@pytest.mark.parametrize("escape", LONE)
@pytest.mark.parametrize("place", PLACES)
def test_a_lone_surrogate_anywhere_is_refused_with_its_path(place, escape):
    template, where = PLACES[place]
    with pytest.raises(RowError) as raised:
        parse_row(template % escape)
    message = str(raised.value)
    assert f"unpaired surrogate U+{escape[2:].upper()}" in message
    assert message.startswith(where)
    message.encode("utf-8")  # printable: the message itself holds no surrogate
    assert "\n" not in message


@pytest.mark.parametrize("place", PLACES)
def test_a_surrogate_pair_is_one_character_and_passes(place):
    template, _ = PLACES[place]
    value = parse_row(template % "\\ud83d\\ude00")
    assert "\U0001f600" in json.dumps(value, ensure_ascii=False)


def test_text_problem_walks_without_recursion():
    value: list = ["\ud800"]
    for _ in range(50_000):
        value = [value]
    assert "unpaired surrogate U+D800" in text_problem(value)
    assert text_problem(GOOD) is None


@pytest.mark.parametrize("literal, problem", [
    ("NaN", "NaN is not a JSON value"),
    ("Infinity", "Infinity is not a JSON value"),
    ("-Infinity", "-Infinity is not a JSON value"),
    ("1e400", "number 1e400 is too large for a float"),
    ("-1e400", "number -1e400 is too large for a float"),
    ("9" * (MAX_DIGITS + 1), f"integer of {MAX_DIGITS + 1} digits"),
    ("-" + "9" * 5000, "integer of 5000 digits"),  # Python's own limit raised ValueError
])
@pytest.mark.parametrize("where", ['{"x": %s}', '{"x": [1, {"y": %s}]}'])
def test_numbers_json_cannot_carry_are_refused(literal, problem, where):
    with pytest.raises(RowError, match=f"^{problem}"):
        parse_row(where % literal)


def test_numbers_within_the_bounds_are_kept():
    assert parse_row('{"x": %s, "y": 1.5e300}' % ("9" * MAX_DIGITS)) == {
        "x": int("9" * MAX_DIGITS), "y": 1.5e300}


@pytest.mark.parametrize("text, key", [
    ('{"text": "a", "text": "b"}', "text"),
    ('{"m": [{"role": "user", "role": "assistant"}]}', "role"),
    ('{"a": 1, "b": 2, "a": 1}', "a"),
])
def test_a_key_twice_is_refused_not_overwritten(text, key):
    with pytest.raises(RowError, match=f'^key "{key}" appears twice'):
        parse_row(text)


def test_a_bom_is_a_syntax_error():
    with pytest.raises(json.JSONDecodeError, match="Unexpected UTF-8 BOM"):
        parse_row('\ufeff{"text": "a"}')


# --------------------------------------------------------------------------- JSONL lines

BOUND = 64


@pytest.fixture
def small_bound(monkeypatch):
    monkeypatch.setattr(datarows, "MAX_ROW_BYTES", BOUND)
    monkeypatch.setattr(datarows, "_SKIP_CHUNK", 7)  # an over-long line spans many reads


def _row_of(size: int) -> bytes:
    """A JSON row of exactly `size` bytes."""
    row = b'{"text": "' + b"x" * (size - 12) + b'"}'
    assert len(row) == size
    return row


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("position", [0, 2, 4])
@pytest.mark.parametrize("size", [BOUND - 1, BOUND, BOUND + 1, 3 * BOUND, 10 * BOUND])
def test_an_over_long_line_is_passed_by_and_the_rest_is_read(small_bound, size, position,
                                                              ending):
    lines = [_row_of(20 + i) for i in range(5)]
    lines[position] = _row_of(size)
    data = ending.join(lines)  # the last line without a line break
    read = list(read_jsonl(io.BytesIO(data)))
    assert [number for number, _ in read] == [1, 2, 3, 4, 5]
    fits = size + (len(ending) - 1 if position < 4 else 0) <= BOUND
    for number, record in read:
        if number - 1 == position and not fits:
            assert record == Unreadable(datarows.too_long())
        else:
            assert record == json.loads(lines[number - 1])


def test_only_json_whitespace_makes_a_blank_line():
    data = b'{"a": 1}\n \t\r\n\n\x0c\n\xe3\x80\x80\n{"a": 2}\n'
    numbers = [n for n, _ in jsonl_lines(io.BytesIO(data))]
    # a form feed or an ideographic space is no layout JSON knows: a bad row, counted
    assert numbers == [1, 4, 5, 6]
    assert isinstance(jsonl_record(b"\x0c\n"), Unreadable)


@pytest.mark.parametrize("line, hint", [
    ('{"text": "a"}\r{"text": "b"}', "the line holds more than one row"),
    ('{"text": "a"} {"text": "b"}', "the line holds more than one row"),
    ("{", "the line holds part of a row"),
    ('  "text": "b",', "the line holds part of a row"),
    ("}", "the line holds part of a row"),
    ('{"text": "unterminated', "the line holds part of a row"),
    ('{"text": "a" "b"}', None),
    ('\ufeff{"text": "a"}', "save the file as UTF-8 without a byte order mark"),
])
def test_a_syntax_error_says_what_it_means_for_the_layout(line, hint):
    record = jsonl_record(line.encode() + b"\n")
    assert record.reason.startswith("invalid JSON (")
    if hint:
        assert hint in record.reason
    else:
        assert record.reason.endswith(")")


def test_many_brackets_side_by_side_are_not_depth():
    row = '{"text": "a", "wide": [' + ", ".join(["[{}]"] * 500) + "]}"
    assert len(parse_row(row)["wide"]) == 500


def test_an_escaped_backslash_before_u_is_text_not_a_surrogate():
    assert parse_row(r'{"text": "C:\\ud800\\x"}') == {"text": "C:\\ud800\\x"}
