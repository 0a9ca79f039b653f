"""The trained tokenizer and its chat template with generation markers."""

from __future__ import annotations

import pytest
from finetune_trainer.data import Row
from finetune_trainer.errors import TrainerError
from finetune_trainer.tokenizer import (
    CHATML_TEMPLATE,
    IM_END,
    assistant_mask,
    check_chat_template,
    resolve_chat_template,
    row_texts,
    train_tokenizer,
)

from tests.support.tiny import chat_rows

CHAT = [{"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "What is 2 plus 3?"},
        {"role": "assistant", "content": "2 plus 3 is five."},
        {"role": "user", "content": "And 1 plus 1?"},
        {"role": "assistant", "content": "two."}]


@pytest.fixture(scope="module")
def tokenizer():
    rows = [Row(r, "t") for r in chat_rows(100)]
    return train_tokenizer(row_texts(rows, "messages"), 300)


def test_training_is_deterministic(tokenizer):
    rows = [Row(r, "t") for r in chat_rows(100)]
    again = train_tokenizer(row_texts(rows, "messages"), 300)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert len(tokenizer) == 300


def test_special_tokens_and_round_trip(tokenizer):
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = "Unseen wörds ✓ still encode"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_assistant_mask_is_exactly_the_answers_and_their_end_of_turn(tokenizer):
    ids, mask = assistant_mask(tokenizer, CHAT)
    # Spans of consecutive marked tokens, decoded.
    spans, current = [], []
    for token, bit in zip(ids, mask, strict=True):
        if bit:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    assert spans == [f"2 plus 3 is five.{IM_END}", f"two.{IM_END}"]


def test_generation_prompt_opens_an_assistant_turn(tokenizer):
    text = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_builtin_template_by_name():
    assert resolve_chat_template("chatml") == CHATML_TEMPLATE
    assert resolve_chat_template("{{ x }}") == "{{ x }}"
    assert resolve_chat_template(None) is None


def test_template_without_markers_is_refused_for_assistant_only_loss(tokenizer):
    tokenizer_copy = train_tokenizer(["user\nhello", "assistant\nhi"], 280)
    tokenizer_copy.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
                                    "\n{% endfor %}")
    with pytest.raises(TrainerError, match=r"no \{% generation %\} markers"):
        check_chat_template(tokenizer_copy, "messages", assistant_only_loss=True)
    check_chat_template(tokenizer_copy, "messages", assistant_only_loss=False)
    check_chat_template(tokenizer_copy, "text", assistant_only_loss=True)
    tokenizer_copy.chat_template = None
    with pytest.raises(TrainerError, match="no chat template"):
        check_chat_template(tokenizer_copy, "messages", assistant_only_loss=False)
