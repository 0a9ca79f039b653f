"""Hostile rows through the trainer's data pipeline (prepare), in every format and both file
types: a lone surrogate in each field, nesting around the depth bound and far past it, NaN, a
key twice, an over-long JSONL line; each at the first, a middle and the last row.

onError: fail stops at the row's file:line with its reason; onError: skip skips exactly that
row, counts it under its reason, and keeps every good row. The old reader passed surrogates
on to the tokenizer (a TypeError there, with no file:line), died of RecursionError on deep
rows in both modes and kept the last of two keys without a word."""

from __future__ import annotations

import json

import pytest
from finetune_contract import datarows
from finetune_contract.api import DatasetSpec
from finetune_contract.datarows import MAX_DEPTH
from finetune_trainer.data import prepare
from finetune_trainer.errors import TrainerError

ROWS = 6
POSITIONS = [0, 3, ROWS - 1]  # first, middle, last
MARK = "@@"  # stands for the damage in a row's JSON text
NUM_LABELS = 3


def _good(fmt: str, i: int) -> dict:
    """Row i of a format, distinct from the others (dedupe keeps them all)."""
    return {
        "messages": {"messages": [{"role": "user", "content": f"question {i}"},
                                  {"role": "assistant", "content": f"answer {i}"}]},
        "prompt-completion": {"prompt": f"prompt {i}", "completion": f"completion {i}"},
        "text": {"text": f"text {i}"},
        "classification": {"text": f"text {i}", "label": i % NUM_LABELS},
    }[fmt]


# Where a surrogate goes in each format (a value's path, or a key), and the path reported.
SURROGATE_PLACES = {
    "messages": [("messages", 0, "role"), ("messages", 0, "content"),
                 ("messages", 1, "content"), ("meta",), ("key",)],
    "prompt-completion": [("prompt",), ("completion",), ("meta",), ("key",)],
    "text": [("text",), ("meta",), ("key",)],
    "classification": [("text",), ("meta",), ("key",)],
}


def _with_mark(row: dict, place: tuple) -> str:
    """The row's JSON text with MARK at `place` (inside a string, or in an extra key)."""
    row = json.loads(json.dumps(row))
    if place == ("key",):
        row["no" + MARK + "te"] = 1
    elif place == ("meta",):
        row["meta"] = "x" + MARK
    else:
        *parents, last = place
        target = row
        for step in parents:
            target = target[step]
        target[last] = target[last] + MARK
    return json.dumps(row)


def _reported(place: tuple) -> str:
    if place == ("key",):
        return "a key of the row: unpaired surrogate"
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in place)[1:] + \
        ": unpaired surrogate"


def _damage_cases() -> list[tuple[str, str, str, str | None]]:
    """(id, format, bad row text, reason it is skipped under, or None: a good row)."""
    cases = []
    for fmt, places in SURROGATE_PLACES.items():
        for place in places:
            for escape in ("\\ud800", "\\udfff"):
                name = f"{fmt}-surrogate-in-{'.'.join(map(str, place))}-{escape[1:]}"
                text = _with_mark(_good(fmt, 99), place).replace(MARK, escape)
                cases.append((name, fmt, text, _reported(place)))
        for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 100_000):
            meta = "[" * (depth - 1) + "]" * (depth - 1)  # the row itself is one level more
            text = json.dumps(_good(fmt, 99))[:-1] + ', "meta": ' + meta + "}"
            reason = f"nested deeper than {MAX_DEPTH} levels" if depth > MAX_DEPTH else None
            cases.append((f"{fmt}-depth-{depth}", fmt, text, reason))
        cases.append((f"{fmt}-nan", fmt, json.dumps(_good(fmt, 99))[:-1] + ', "x": NaN}',
                      "NaN is not a JSON value"))
        first = next(iter(_good(fmt, 99)))
        twice = json.dumps(_good(fmt, 99))[:-1] + f', "{first}": null}}'
        cases.append((f"{fmt}-key-twice", fmt, twice, f'key "{first}" appears twice'))
    return cases


CASES = _damage_cases()


def _write(tmp_path, fmt: str, bad: str, position: int, suffix: str):
    """ROWS rows, the bad one at `position`; one row a line in both file types."""
    rows = [json.dumps(_good(fmt, i)) for i in range(ROWS)]
    rows[position] = bad
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        line = position + 1
    else:
        path.write_text("[\n" + ",\n".join(rows) + "\n]\n", encoding="utf-8")
        line = position + 2
    return path, line


def _prepare(path, fmt: str, on_error: str):
    dataset = DatasetSpec.model_validate({"format": fmt, "onError": on_error,
                                          "train": {"path": path.name}})
    return prepare(dataset, resolve=lambda p: path.parent / p,
                   num_labels=NUM_LABELS if fmt == "classification" else None,
                   assistant_only_loss=True, seed=0)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name, fmt, bad, reason", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_row_stops_strict_mode_and_is_skipped_alone(tmp_path, name, fmt, bad, reason,
                                                               position, suffix):
    path, line = _write(tmp_path, fmt, bad, position, suffix)
    if reason is None:  # within the bounds: an ordinary row, kept in both modes
        assert len(_prepare(path, fmt, "fail").train) == ROWS
        return
    with pytest.raises(TrainerError) as raised:
        _prepare(path, fmt, "fail")
    message = str(raised.value)
    assert message.startswith(f"{path}:{line}: {reason}"), message
    assert message.endswith("(set dataset.onError: skip to skip bad rows)")
    assert "\n" not in message
    message.encode("utf-8")  # printable on any stderr: no surrogate in the message itself

    data = _prepare(path, fmt, "skip")
    report = data.report.to_dict()
    assert report["read"] == {path.name: ROWS}
    assert report["skippedTotal"] == 1
    (skipped,) = report["skipped"]
    assert skipped.startswith(reason)
    assert report["skippedExamples"] == [f"{path}:{line}: {skipped}"]
    kept = [i for i in range(ROWS) if i != position]
    assert [row.data for row in data.train] == [_good(fmt, i) for i in kept]


@pytest.mark.parametrize("position", POSITIONS)
def test_an_over_long_jsonl_line_is_skipped_alone(tmp_path, monkeypatch, position):
    monkeypatch.setattr(datarows, "MAX_ROW_BYTES", 200)
    bad = json.dumps({"text": "long " * 60})
    path, line = _write(tmp_path, "text", bad, position, ".jsonl")
    with pytest.raises(TrainerError, match=rf"^{path}:{line}: row longer than 200 bytes"):
        _prepare(path, "text", "fail")
    data = _prepare(path, "text", "skip")
    assert data.report.to_dict()["skippedTotal"] == 1
    assert len(data.train) == ROWS - 1


@pytest.mark.parametrize("position", POSITIONS)
def test_a_parquet_string_that_is_not_utf8_is_skipped_alone(tmp_path, position):
    """Parquet does not check its strings; the old reader converted the table whole and
    died of UnicodeDecodeError, with a traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"text {i}".encode() for i in range(ROWS)]
    texts[position] = b"\xffnot utf-8"
    column = pa.array(texts, type=pa.binary()).view(pa.string())  # unchecked, as a writer may
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": column}), path)
    with pytest.raises(TrainerError, match=rf"^{path}: row {position + 1}: not UTF-8 text"):
        _prepare(path, "text", "fail")
    data = _prepare(path, "text", "skip")
    assert data.report.to_dict()["skippedTotal"] == 1
    assert [row.data for row in data.train] == [_good("text", i) for i in range(ROWS)
                                                if i != position]
