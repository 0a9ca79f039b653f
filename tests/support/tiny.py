"""Tiny, deterministic ingredients for trainer tests: data files, a 2-layer Llama config,
plans built directly (the planner is not needed to test the trainer)."""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobSpec, MemoryBreakdown, Plan
from finetune_contract.trainer_config import TrainerConfig

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
           "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
           "seventeen", "eighteen"]


def chat_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic chats: learnable, so the loss falls within a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randrange(10), rng.randrange(10)
        rows.append({"messages": [
            {"role": "system", "content": "You add numbers."},
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {NUMBERS[a + b]}."},
        ]})
    return rows


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_plan(**overrides: Any) -> Plan:
    values: dict[str, Any] = {
        "parameters": 200_000, "trainable_parameters": 200_000, "strategy": "ddp", "nodes": 1,
        "gpus_per_node": 1, "world_size": 1, "gpu": "cpu", "gpu_memory": 0, "precision": "fp32",
        "micro_batch_size": 8, "gradient_accumulation": 1, "global_batch_size": 8,
        "gradient_checkpointing": False, "packing": "padding-free", "seq_length": 128, "fits": True,
        "reason": "built by the test", "memory_per_gpu": MemoryBreakdown(),
    }
    values.update(overrides)
    values["global_batch_size"] = (values["micro_batch_size"] * values["world_size"]
                                   * values["gradient_accumulation"])
    return Plan(**values)


def tiny_spec(train: str = "train.jsonl", **sections: dict[str, Any]) -> FineTuneJobSpec:
    """A spec for a random 2-layer Llama with a tokenizer trained on the data."""
    spec: dict[str, Any] = {
        "model": {"name": "tiny", "init": "random", "config": TINY_LLAMA,
                  "tokenizer": {"train": {"vocabSize": 300}}},
        "dataset": {"format": "messages", "train": {"path": train}},
        "training": {"maxSteps": 20, "learningRate": 3e-3, "warmupRatio": 0.1,
                     "saveSteps": 1000, "evalSteps": 1000, "loggingSteps": 1,
                     "maxSeqLength": 128},
        "resources": {"gpu": "cpu", "gpusPerNode": 1, "maxNodes": 1},
    }
    for name, values in sections.items():
        spec[name] = {**spec.get(name, {}), **values}
    return FineTuneJobSpec.model_validate(spec)


def save_tiny_model(folder: Path, config: dict[str, Any] | None = None, *,
                    vocab_size: int = 4096, max_shard_size: str | None = None) -> int:
    """A random-weight model saved with transformers' save_pretrained (config.json and
    safetensors; sharded with an index when `max_shard_size` is given, e.g. "500KB").
    Returns its num_parameters(), the count a sizer must find."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {**(config or TINY_LLAMA)}
    values.setdefault("vocab_size", vocab_size)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**values))
    extra = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    return model.num_parameters()


def tiny_config(tmp_path: Path, spec: FineTuneJobSpec | None = None, plan: Plan | None = None,
                **fields: Any) -> TrainerConfig:
    values: dict[str, Any] = {
        "name": "tiny", "namespace": "test", "spec": spec or tiny_spec(), "plan": plan or tiny_plan(),
        "data_root": str(tmp_path), "output_dir": str(tmp_path / "out"), "metrics_port": 0,
        "metrics_host": "127.0.0.1",
    }
    return TrainerConfig(**{**values, **fields})


def free_port(count: int = 1) -> int:
    """A port p such that p .. p+count-1 were free a moment ago."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65535 and all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def trainer_env() -> dict[str, str]:
    """Environment for trainer subprocesses: one thread per rank, caches in the project."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DS_ACCELERATOR="cpu",
               PYTHONUNBUFFERED="1")
    return env


def torchrun_command(config_path: Path, ranks: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", "-m", "finetune_trainer", "--config", str(config_path)]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process training shares 2 cores with other jobs: one intra-op thread. Autouse
    wherever it is imported (the trainer's conftest, the measured-memory tests)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def save_chat_model(folder: Path, *, steps: int = 8, seed: int = 0) -> int:
    """A pretrained-like chat model: a tiny Llama with a tokenizer trained on the arithmetic
    chats (ChatML template, its tokens in the vocabulary), trained `steps` steps on them and
    saved with save_pretrained beside its tokenizer. Returns the vocabulary size."""
    import torch
    from finetune_trainer.tokenizer import train_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    rows = chat_rows(64, seed=seed)
    tokenizer = train_tokenizer([f"{m['role']}\n{m['content']}" for r in rows
                                 for m in r["messages"]], 300)
    rows = rows[:16]  # a short training: enough to move the weights away from random
    keys = {k: v for k, v in TINY_LLAMA.items() if k != "model_type"}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "llama", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, **keys))
    batch = tokenizer.apply_chat_template([r["messages"] for r in rows], tokenize=True,
                                          padding=True, return_dict=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):  # full batch: a few seconds on one CPU thread
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


def grow_chat_template(source: Path, folder: Path, added: list[str]) -> None:
    """A copy of the chat model of `source` whose tokenizer adds `added` as special tokens
    and whose chat template uses them: more tokens than the model's embeddings hold, as
    when a repository's chat template brings tokens of its own."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(source, folder)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_special_tokens({"additional_special_tokens": added})
    marks = "".join(added)
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{{- '<|im_start|>assistant\\n' -}}", "{{- '<|im_start|>assistant\\n" + marks + "' -}}", 1)
    assert marks in tokenizer.chat_template
    tokenizer.save_pretrained(folder)
