"""The inputs both throughput recipes share, built once per bench run into one directory.

- `data.jsonl`: long-tailed multi-turn chats (bench/chat_data.py),
- `tokenizer/`: a byte-level BPE tokenizer trained on those chats, with the ChatML template
  whose assistant turns carry `{% generation %}` markers (the trainer's own), saved so both
  recipes load the very same files,
- `model/`: a Llama built from a config with random weights (seeded) and saved, so both
  recipes start from identical weights without any download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import chat_data

# ~20M parameters with the 1024-token vocabulary: 6 blocks of (4 x 512^2 attention +
# 3 x 512 x 1376 MLP) = 19.0M, plus untied embedding and head 2 x 1024 x 512 = 1.0M.
MODEL_20M: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
}
VOCAB_SIZE = 1024
CONVERSATIONS = 1200
SEED = 7


@dataclass(frozen=True)
class Workspace:
    root: Path
    data: Path
    tokenizer: Path
    model: Path
    parameters: int
    real_tokens_per_row: float  # mean tokens of a row as the chat template renders it


def prepare(root: Path, *, model_config: dict[str, Any] | None = None,
            conversations: int = CONVERSATIONS, seed: int = SEED) -> Workspace:
    """Write data, tokenizer and model under `root` (overwriting) and describe them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    root.mkdir(parents=True, exist_ok=True)
    rows = chat_data.conversations(conversations, seed=seed)
    data = chat_data.write_jsonl(rows, root / "data.jsonl")
    tokenizer_dir = root / "tokenizer"
    tokenizer = save_tokenizer(rows, tokenizer_dir)
    lengths = [len(tokenizer.apply_chat_template(r["messages"], tokenize=True,
                                                 return_dict=True)["input_ids"]) for r in rows]

    keys = dict(model_config or MODEL_20M)
    model_type = keys.pop("model_type")
    config = AutoConfig.for_model(
        model_type, **keys, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)  # a model directory that loads on its own
    return Workspace(root=root, data=data, tokenizer=tokenizer_dir, model=model_dir,
                     parameters=sum(p.numel() for p in model.parameters()),
                     real_tokens_per_row=sum(lengths) / len(lengths))


def save_tokenizer(rows: list[dict[str, Any]], out: Path) -> Any:
    """The trainer's own byte-level BPE tokenizer (VOCAB_SIZE tokens, ChatML template) trained
    on the messages of `rows`, saved to `out`; returns it."""
    from finetune_trainer.tokenizer import train_tokenizer

    texts = (f"{m['role']}\n{m['content']}" for row in rows for m in row["messages"])
    tokenizer = train_tokenizer(texts, VOCAB_SIZE)
    tokenizer.save_pretrained(out)
    return tokenizer
