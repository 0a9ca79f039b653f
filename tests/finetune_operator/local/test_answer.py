"""Choosing the sample prompt from the eval data."""

from __future__ import annotations

import json

from finetune_contract import datarows
from finetune_contract.api import DatasetSpec
from finetune_operator.local.answer import prompt_from_row, sample_prompt

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


def test_messages_row_gives_everything_before_the_last_assistant_turn():
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"}]}
    prompt = prompt_from_row(json.dumps(row), "messages", "f:1")
    assert prompt.messages == row["messages"][:2]
    assert prompt.question == "q" and prompt.expected == "a" and prompt.source == "f:1"


def test_prompt_completion_row():
    prompt = prompt_from_row('{"prompt": "2+2?", "completion": "4"}', "prompt-completion", "f:2")
    assert prompt.messages == [{"role": "user", "content": "2+2?"}]
    assert prompt.expected == "4"


def test_unusable_rows_give_nothing():
    assert prompt_from_row("not json", "messages", "f:1") is None
    assert prompt_from_row("[1, 2]", "messages", "f:1") is None
    assert prompt_from_row('{"messages": []}', "messages", "f:1") is None
    only_assistant = {"messages": [{"role": "assistant", "content": "a"}]}
    assert prompt_from_row(json.dumps(only_assistant), "messages", "f:1") is None


def test_sample_prompt_reads_the_eval_file_of_the_example():
    spec = DatasetSpec.model_validate({"train": {"path": "data/train.jsonl"},
                                       "eval": {"path": "data/eval.jsonl"}})
    prompt = sample_prompt(spec, EXAMPLES)
    first = json.loads((EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()[0])
    assert prompt.source == f"{EXAMPLES / 'data' / 'eval.jsonl'}:1"
    assert prompt.expected == first["messages"][-1]["content"]


def test_sample_prompt_skips_the_first_bad_row(tmp_path):
    (tmp_path / "eval.jsonl").write_text('garbage\n{"prompt": "hi", "completion": "yo"}\n')
    spec = DatasetSpec.model_validate({"format": "prompt-completion",
                                       "train": {"path": "eval.jsonl"}})
    prompt = sample_prompt(spec, tmp_path)
    assert prompt.source.endswith("eval.jsonl:2") and prompt.question == "hi"


def test_no_sample_for_text_or_hub_data():
    text = DatasetSpec.model_validate({"format": "text", "train": {"path": "t.jsonl"}})
    hub = DatasetSpec.model_validate({"train": {"hf": "org/data"}})
    assert sample_prompt(text, EXAMPLES) is None
    assert sample_prompt(hub, EXAMPLES) is None


def test_sample_prompt_passes_over_rows_the_trainer_refuses(tmp_path, monkeypatch):
    """A deep row raised RecursionError here, taking `finetune run --local` down before
    training; a surrogate would have reached the generating child's tokenizer."""
    monkeypatch.setattr(datarows, "MAX_ROW_BYTES", 4096)
    good = '{"prompt": "hi", "completion": "yo"}'
    hostile = ['{"prompt": "a", "d": ' + "[" * 100_000 + "]" * 100_000 + "}",
               '{"prompt": "a\\ud800", "completion": "b"}',
               '{"prompt": "' + "x" * 5000 + '", "completion": "b"}',
               '{"prompt": "a", "completion": NaN}']
    (tmp_path / "eval.jsonl").write_text("\n".join(hostile + [good]) + "\n")
    spec = DatasetSpec.model_validate({"format": "prompt-completion",
                                       "train": {"path": "eval.jsonl"}})
    prompt = sample_prompt(spec, tmp_path)
    assert prompt.source.endswith(f"eval.jsonl:{len(hostile) + 1}") and prompt.question == "hi"
