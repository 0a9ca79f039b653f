"""Row checking, file:line errors, skip counts, dedupe, eval split and mixing (no torch)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from finetune_contract.api import DatasetSpec
from finetune_trainer.data import (
    DataReport,
    Row,
    check_row,
    dedupe,
    mix,
    mix_counts,
    prepare,
    split_eval,
)
from finetune_trainer.errors import TrainerError

from tests.support.tiny import chat_rows, write_jsonl


def _spec(**values) -> DatasetSpec:
    return DatasetSpec.model_validate({"train": {"path": "train.jsonl"}, **values})


def _prepare(tmp_path, spec, **kw):
    return prepare(spec, resolve=lambda p: tmp_path / p, num_labels=kw.get("num_labels"),
                   assistant_only_loss=kw.get("assistant_only_loss", True), seed=1)


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    good = json.dumps(chat_rows(1)[0])
    path.write_text(f"{good}\n\n{good}\n{{\"messages\": [}}\n{good}\n")
    with pytest.raises(TrainerError) as err:
        _prepare(tmp_path, _spec())
    assert str(err.value).startswith(f"{path}:4: invalid JSON")
    assert "onError: skip" in str(err.value)


def test_skip_counts_every_bad_row_with_its_reason(tmp_path):
    rows = chat_rows(3) + [
        {"messages": [{"role": "bot", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"text": "wrong format"},
        [1, 2],
    ]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with path.open("a") as f:
        f.write("not json\n")
    data = _prepare(tmp_path, _spec(onError="skip"))
    assert len(data.train) == 3
    report = data.report.to_dict()
    assert report["read"] == {"train.jsonl": 8}
    assert report["skippedTotal"] == 5
    assert report["skipped"]["messages[0].role must be one of system, user, assistant (got 'bot')"] == 1
    assert any(r.startswith("no non-empty assistant") for r in report["skipped"])
    assert any(r.startswith("missing field 'messages'") for r in report["skipped"])
    assert any(r.startswith("invalid JSON") for r in report["skipped"])
    assert report["skippedExamples"][0].startswith(f"{path}:4: ")
    assert report["skippedExamples"][-1].startswith(f"{path}:8: ")


def test_first_bad_row_fails_the_run_with_its_location(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", chat_rows(2) + [{"prompt": "x"}])
    with pytest.raises(TrainerError, match=rf"^{path}:3: missing field 'messages'"):
        _prepare(tmp_path, _spec())


@pytest.mark.parametrize("fmt,record,problem", [
    ("prompt-completion", {"prompt": "a", "completion": " "}, "completion is empty"),
    ("prompt-completion", {"prompt": 3, "completion": "b"}, "prompt must be a string"),
    ("text", {"text": ""}, "text must be a non-empty string"),
    ("classification", {"text": "a", "label": 5}, "label 5 is outside 0..2"),
    ("classification", {"text": "a", "label": "pos"}, "label must be an integer"),
    ("classification", {"text": "a", "label": True}, "label must be an integer"),
    ("messages", {"messages": []}, "messages must be a non-empty list"),
    ("messages", {"messages": [{"role": "user", "content": 1}]}, "messages[0].content must"),
])
def test_format_checks(fmt, record, problem):
    data, found = check_row(record, fmt, num_labels=3)
    assert data is None and found.startswith(problem)


def test_rows_are_reduced_to_their_columns():
    data, problem = check_row({"text": "hi", "label": 1, "id": 7}, "classification",
                              num_labels=2)
    assert problem is None and data == {"text": "hi", "label": 1}
    data, _ = check_row({"messages": [{"role": "user", "content": "q", "name": "x"},
                                      {"role": "assistant", "content": "a"}]}, "messages")
    assert data == {"messages": [{"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "a"}]}


def test_without_assistant_only_loss_a_row_needs_no_assistant():
    record = {"messages": [{"role": "user", "content": "just text"}]}
    assert check_row(record, "messages", assistant_only_loss=False)[1] is None


def test_json_array_rows_are_located_by_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": ""},\n  {"text": "c"}\n]\n')
    spec = DatasetSpec.model_validate({"format": "text", "train": {"path": "train.json"}})
    with pytest.raises(TrainerError, match=rf"^{path}:3: text must be"):
        _prepare(tmp_path, spec)


def test_parquet_rows_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"text": "a", "label": 0}, {"text": "b", "label": 1}]),
                   tmp_path / "train.parquet")
    spec = DatasetSpec.model_validate({"format": "classification",
                                       "train": {"path": "train.parquet"}})
    data = _prepare(tmp_path, spec, num_labels=2)
    assert [r.data["label"] for r in data.train] == [0, 1]
    assert data.train[1].origin.endswith("train.parquet: row 2")


def test_missing_file_and_unknown_type_are_clear(tmp_path):
    with pytest.raises(TrainerError, match="dataset file not found"):
        _prepare(tmp_path, _spec())
    (tmp_path / "train.csv").write_text("a,b\n")
    with pytest.raises(TrainerError, match="unsupported dataset file type '.csv'"):
        _prepare(tmp_path, DatasetSpec.model_validate({"train": {"path": "train.csv"}}))


def test_dedupe_keeps_first_occurrence_and_counts():
    rows = [Row({"text": t}, f"f:{i}") for i, t in enumerate(["a", "b", "a", "c", "b"], 1)]
    kept, dropped = dedupe(rows)
    assert [r.origin for r in kept] == ["f:1", "f:2", "f:4"] and dropped == 2


def test_dedupe_in_prepare_is_reported(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(4) + chat_rows(4))
    data = _prepare(tmp_path, _spec(dedupe=True))
    assert data.report.duplicates == 4 and len(data.train) == 4


def test_eval_split_is_deterministic_and_disjoint():
    rows = [Row({"text": str(i)}, str(i)) for i in range(50)]
    train, held = split_eval(rows, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40
    assert not {r.origin for r in train} & {r.origin for r in held}
    assert split_eval(rows, 0.2, seed=3) == (train, held)


def test_mix_counts_match_the_weights():
    assert mix_counts(80, [0.2]) == [20]  # 20 of 100 rows
    assert mix_counts(60, [0.25, 0.15]) == [25, 15]
    with pytest.raises(TrainerError, match="weights sum to 1"):
        mix_counts(10, [0.5, 0.5])


def test_mixed_training_set_has_the_requested_proportions():
    train = [Row({"text": f"t{i}"}, "train") for i in range(300)]
    general = [Row({"text": f"g{i}"}, "general") for i in range(40)]  # fewer than needed
    code = [Row({"text": f"c{i}"}, "code") for i in range(500)]
    report = DataReport()
    mixed = mix(train, [("general", general, 0.2), ("code", code, 0.1)], seed=0, report=report)
    share = Counter(r.origin for r in mixed)
    assert share == {"train": 300, "general": 86, "code": 43}
    assert abs(share["general"] / len(mixed) - 0.2) < 0.005
    assert abs(share["code"] / len(mixed) - 0.1) < 0.005
    assert report.mixed == {"general": 86, "code": 43}
    # a small source is repeated evenly: every general row appears 2 or 3 times
    assert set(Counter(r.data["text"] for r in mixed if r.origin == "general").values()) <= {2, 3}
    # shuffled together, not appended
    assert {r.origin for r in mixed[:60]} == {"train", "general", "code"}


def test_mix_sources_come_from_the_spec(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(30, seed=1))
    write_jsonl(tmp_path / "general.jsonl", chat_rows(30, seed=2))
    spec = _spec(mix=[{"path": "general.jsonl", "weight": 0.25}])
    data = _prepare(tmp_path, spec)
    assert len(data.train) == 40 and data.report.mixed == {"general.jsonl": 10}
    with pytest.raises(TrainerError, match=r"dataset.mix\[0\].weight: required"):
        _prepare(tmp_path, _spec(mix=[{"path": "general.jsonl"}]))
