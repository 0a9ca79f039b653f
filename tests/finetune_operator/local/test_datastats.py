"""The cheap measurement of local data that feeds the planner's estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_contract import datarows
from finetune_contract.api import DatasetSpec
from finetune_operator.local.datastats import CHARS_PER_TOKEN, measure, row_tokens


def _spec(**fields) -> DatasetSpec:
    return DatasetSpec.model_validate({"train": {"path": "train.jsonl"}, **fields})


def test_counts_rows_and_estimates_tokens(tmp_path: Path):
    row = {"messages": [{"role": "user", "content": "a" * 40},
                        {"role": "assistant", "content": "b" * 40}]}
    (tmp_path / "train.jsonl").write_text((json.dumps(row) + "\n\n") * 10)
    stats = measure(_spec(), tmp_path)
    assert stats.rows == 10  # blank lines are not rows
    assert stats.mean_tokens_per_row == 80 / CHARS_PER_TOKEN + 2 * 4


def test_eval_split_ratio_leaves_fewer_training_rows(tmp_path: Path):
    (tmp_path / "train.jsonl").write_text('{"text": "hello"}\n' * 100)
    stats = measure(_spec(format="text", evalSplitRatio=0.1), tmp_path)
    assert stats.rows == 90


def test_no_stats_for_missing_or_non_jsonl_data(tmp_path: Path):
    assert measure(_spec(), tmp_path) is None  # missing: the trainer reports it
    parquet = DatasetSpec.model_validate({"train": {"path": "t.parquet"}})
    assert measure(parquet, tmp_path) is None


def test_row_tokens_per_format():
    assert row_tokens('{"prompt": "abcd", "completion": "efgh"}', "prompt-completion") == 2
    assert row_tokens('{"text": "abcdabcd"}', "text") == 2
    assert row_tokens("not json", "text") is None
    assert row_tokens('{"messages": 3}', "messages") is None


HOSTILE = {  # rows the old scan raised on (RecursionError, ValueError) or mis-sampled
    "deep": '{"text": "abcd", "d": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "huge integer": '{"text": "abcd", "id": ' + "7" * 5000 + "}",
    "lone surrogate": '{"text": "ab\\ud800cd"}',
    "key twice": '{"text": "abcd", "text": "abcdabcdabcd"}',
}


@pytest.mark.parametrize("position", [0, 2, 4])
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_row_is_counted_but_not_sampled(tmp_path: Path, kind, position):
    lines = ['{"text": "abcdabcd"}'] * 5
    lines[position] = HOSTILE[kind]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    stats = measure(_spec(format="text"), tmp_path)
    assert stats.rows == 5  # as the trainer counts them: it reads and skips the bad one
    assert stats.mean_tokens_per_row == 8 / CHARS_PER_TOKEN


def test_an_over_long_line_is_counted_without_being_held(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(datarows, "MAX_ROW_BYTES", 100)
    row = '{"text": "abcdabcd"}'
    (tmp_path / "train.jsonl").write_text(f'{row}\n{{"text": "{"x" * 500}"}}\n{row}\n')
    stats = measure(_spec(format="text"), tmp_path)
    assert stats.rows == 3 and stats.mean_tokens_per_row == 2
