"""Tokenizers: loaded from a model or path, or trained on the training data.

`train_tokenizer` builds a byte-level BPE tokenizer with the `tokenizers` library, wraps it
as a `PreTrainedTokenizerFast` and gives it a ChatML chat template whose assistant turns are
wrapped in `{% generation %}` markers, so TRL can train on assistant tokens only. The
end-of-turn token sits inside the marked span: the model learns to stop. It is deterministic
(same texts, same vocabulary), so every rank and every restart gets the same tokenizer.
The local runner may call it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from finetune_trainer.errors import TrainerError
from finetune_trainer.hub_errors import hub_error
from finetune_trainer.model_cache import load_options

if TYPE_CHECKING:
    from finetune_contract.trainer_config import TrainerConfig
    from transformers import PreTrainedTokenizerBase

    from finetune_trainer.data import Row

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # end of turn, also the eos token: generation stops on it
PAD = "<|pad|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]

# ChatML with generation markers. The marked span is the assistant's content plus its
# end-of-turn token; the newline after it belongs to the layout, not to the answer.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
BUILTIN_TEMPLATES = {"chatml": CHATML_TEMPLATE}
GENERATION_MARKER = "generation"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with the ChatML template above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=bpe)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=IM_END, pad_token=PAD,
        extra_special_tokens=[IM_START],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def row_texts(rows: Iterable[Row], fmt: str) -> Iterator[str]:
    """The text a tokenizer should learn from, per row, as the model will see it."""
    for row in rows:
        data = row.data
        if fmt == "messages":
            for message in data["messages"]:
                yield f"{message['role']}\n{message['content']}"
        elif fmt == "prompt-completion":
            yield data["prompt"] + data["completion"]
        else:
            yield data["text"]


def resolve_chat_template(value: str | None) -> str | None:
    """A built-in template name or Jinja text from model.chatTemplate."""
    if value is None:
        return None
    return BUILTIN_TEMPLATES.get(value.strip().lower(), value)


def load_tokenizer(config: TrainerConfig, rows: list[Row]) -> PreTrainedTokenizerBase:
    """The tokenizer the spec asks for, with the chat template that training will use."""
    model = config.spec.model
    spec = model.tokenizer
    if spec is not None and spec.train is not None:
        tokenizer = train_tokenizer(row_texts(rows, config.spec.dataset.format),
                                    spec.train.vocab_size)
    else:
        source = (spec.path if spec and spec.path else None) or model.path or model.name
        if source is None:
            raise TrainerError("model.tokenizer: init: random needs tokenizer.path or "
                               "tokenizer.train (there is no model to take one from)")
        field = ("model.tokenizer.path" if spec and spec.path else
                 "model.path" if model.path else "model.name")
        tokenizer = _from_pretrained(config, source, field=field)
    template = resolve_chat_template(model.chat_template)
    if template is not None:
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        # Padding is masked out of the loss, so reusing eos as the pad token is harmless.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(config: TrainerConfig, source: str, field: str) -> Any:
    from transformers import AutoTokenizer

    local = config.resolve(source)
    target = str(local) if local.exists() else source
    try:
        # HF_TOKEN is read from the environment. The tokenizer of a model named by its hub
        # id comes from the job's model cache when it has one (model_cache.py).
        return AutoTokenizer.from_pretrained(target, **load_options(config, target))
    except (OSError, ValueError) as err:
        raise hub_error(err, field=field, kind="model", repo=source,
                        doing=f"load a tokenizer from {source!r}") from None


def check_chat_template(tokenizer: Any, fmt: str, assistant_only_loss: bool) -> None:
    """Fail before training when the loss mask could not mark the assistant's tokens."""
    if fmt != "messages":
        return
    template = tokenizer.chat_template
    if not template:
        raise TrainerError("model.chatTemplate: the tokenizer has no chat template; set "
                           "model.chatTemplate: chatml (or your own Jinja template)")
    if not assistant_only_loss or GENERATION_MARKER in template:
        return
    from trl.chat_template_utils import get_training_chat_template

    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:  # TRL raises it for templates it cannot patch
        patched = None
    if not patched:
        raise TrainerError(
            "model.chatTemplate: the chat template has no {% generation %} markers, so the "
            "assistant tokens cannot be found for method.assistantOnlyLoss; use "
            "model.chatTemplate: chatml, a template with the markers, or set "
            "method.assistantOnlyLoss: false"
        )


def assistant_mask(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) as the chat template marks them; used to check the loss mask."""
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(encoded["input_ids"]), list(encoded["assistant_masks"])


if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast
