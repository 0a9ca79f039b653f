"""A .json dataset read strictly: damage to the array stops both modes at its file:line (the
old reader took a missing or trailing comma, a missing ']' or a second array without a word,
and lost the rows after some of them); a row that is JSON but not usable is a bad row at the
line it starts on, and every other row is read. Cases are generated: each kind of damage at
the first, a middle and the last row, in several layouts."""

from __future__ import annotations

import json
import random

import pytest
from finetune_contract import datarows
from finetune_contract.datarows import MAX_DEPTH, Unreadable
from finetune_trainer.errors import TrainerError
from finetune_trainer.json_array import read_json_array

ROWS = 5
POSITIONS = [0, 2, ROWS - 1]  # first, middle, last


def _rows() -> list[str]:
    return [json.dumps({"text": f"row {i}", "n": i}) for i in range(ROWS)]


def _array(rows: list[str]) -> str:
    """One row a line: row i on line i + 2."""
    return "[\n" + ",\n".join(rows) + "\n]\n"


def _read(tmp_path, text: str):
    path = tmp_path / "train.json"
    path.write_text(text, encoding="utf-8")
    return path, list(read_json_array(path))


def _fails(tmp_path, text: str) -> tuple[str, str]:
    path = tmp_path / "train.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TrainerError) as raised:
        list(read_json_array(path))
    message = str(raised.value)
    assert "\n" not in message
    return str(path), message


def _damaged() -> list[tuple[str, str, int, str]]:
    """(name, file text, line of the damage, what the error says) for each kind and place."""
    cases = []
    for p in POSITIONS:
        rows = _rows()
        if p > 0:
            text = "[\n" + ",\n".join(rows[:p]) + "\n" + ",\n".join(rows[p:]) + "\n]\n"
            cases.append((f"missing comma before row {p}", text, p + 2,
                          "invalid JSON (a ',' is missing before this row)"))
        cases.append((f"cut after row {p}", "[\n" + ",\n".join(rows[:p + 1]) + "\n", p + 3,
                      "the array has no closing ']' (is the file cut short?)"))
        cases.append((f"cut after row {p} and its comma", "[\n" + ",\n".join(rows[:p + 1]) + ",",
                      p + 2, "the array has no closing ']'"))
        cut = "[\n" + ",\n".join(rows[:p + 1])
        cases.append((f"cut inside row {p}", cut[:-6], p + 2,
                      "invalid JSON (Unterminated string starting at"))
        if p < ROWS - 1:
            cases.append((f"double comma after row {p}",
                          _array(rows[:p + 1] + [""] + rows[p + 1:]), p + 3,
                          "invalid JSON (Expecting value); a broken array"))
            cases.append((f"array closed after row {p}",
                          _array(rows[:p + 1]) + ",\n" + ",\n".join(rows[p + 1:]) + "\n]\n",
                          p + 4, "text after the array's closing ']'"))
            cases.append((f"stray brace after row {p}",
                          _array(rows[:p + 1] + ["}" + rows[p + 1]] + rows[p + 2:]), p + 3,
                          "invalid JSON (a '}' that closes nothing)"))
    rows = _rows()
    for space in ["", " ", "\n", "\r\n  "]:
        cases.append((f"trailing comma {space!r}", "[\n" + ",\n".join(rows) + "," + space + "]",
                      ROWS + 1, "a ',' after the last row (JSON allows no trailing comma"))
    cases.append(("second array", _array(rows) + "[]\n", ROWS + 3,
                  "text after the array's closing ']'"))
    cases.append(("an object", json.dumps({"rows": []}), 1, "a .json dataset must be an array of rows"))
    cases.append(("nothing", " \n", 2, "a .json dataset must be an array of rows"))
    cases.append(("a byte order mark", "\ufeff" + _array(rows), 1, "the file starts with a byte order mark"))
    return cases


DAMAGED = _damaged()


@pytest.mark.parametrize("name, text, line, problem", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_damage_to_the_array_stops_with_its_file_and_line(tmp_path, name, text, line, problem):
    path, message = _fails(tmp_path, text)
    assert message.startswith(f"{path}:{line}: {problem}"), message


BAD_ROWS = {  # a row that is JSON, but not one any reader takes; and what it is called
    "too deep": ('{"text": "x", "d": ' + "[" * (MAX_DEPTH) + "]" * MAX_DEPTH + "}",
                 "nested deeper than"),
    "100000 deep": ('{"d": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than"),
    "lone surrogate": ('{"text": "a\\udc00"}', "text: unpaired surrogate U+DC00"),
    "NaN": ('{"text": "a", "score": NaN}', "NaN is not a JSON value"),
    "key twice": ('{"text": "a", "text": "b"}', 'key "text" appears twice'),
    "pretty-printed and deep": ('{\n"d":\n' + "[\n" * 70 + "]\n" * 70 + "}", "nested deeper"),
}


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("kind", BAD_ROWS)
def test_a_bad_row_is_unreadable_at_its_line_and_the_rest_is_read(tmp_path, kind, position):
    bad, reason = BAD_ROWS[kind]
    rows = _rows()
    rows[position] = bad
    path, records = _read(tmp_path, _array(rows))
    assert len(records) == ROWS
    line = 2
    for i, (origin, record) in enumerate(records):
        assert origin == f"{path}:{line}"
        if i == position:
            assert isinstance(record, Unreadable) and record.reason.startswith(reason)
        else:
            assert record == json.loads(rows[i])
        line += rows[i].count("\n") + 1


@pytest.mark.parametrize("position", POSITIONS)
def test_a_row_over_the_length_bound_is_unreadable(tmp_path, monkeypatch, position):
    monkeypatch.setattr(datarows, "MAX_ROW_BYTES", 100)
    rows = _rows()
    rows[position] = json.dumps({"text": "é" * 45})  # 90 characters of text, over 100 bytes
    _, records = _read(tmp_path, _array(rows))
    assert [isinstance(r, Unreadable) for _, r in records] == [i == position
                                                               for i in range(ROWS)]


def _layout(rng: random.Random, rows: list) -> tuple[str, list[int]]:
    """The rows in a random but valid layout, and the line each row starts on."""
    space = ["", " ", "\n", "\r\n", "\t", "\n\n  "]
    text, starts = "[" + rng.choice(space), []
    for i, row in enumerate(rows):
        text += rng.choice(space)
        starts.append(text.count("\n") + 1)
        text += json.dumps(row, indent=rng.choice([None, 1, 2]))
        text += rng.choice(space) + ("," if i < len(rows) - 1 else "") + rng.choice(space)
    return text + "]" + rng.choice(space), starts


@pytest.mark.parametrize("seed", range(25))
def test_every_row_of_a_valid_array_is_read_at_the_line_it_starts_on(tmp_path, seed):
    rng = random.Random(seed)
    rows = [{"text": f"row {i} ,]}}[{{", "m": [{"c": "\\\"]"}] * rng.randrange(3)}
            for i in range(rng.randrange(1, 8))]
    text, starts = _layout(rng, rows)
    path, records = _read(tmp_path, text)
    assert [r for _, r in records] == rows == json.loads(text)
    assert [origin for origin, _ in records] == [f"{path}:{line}" for line in starts]


@pytest.mark.parametrize("text", ["[]", "[ ]\n", "\n[\r\n]\r\n"])
def test_an_empty_array_has_no_rows(tmp_path, text):
    assert _read(tmp_path, text)[1] == []
