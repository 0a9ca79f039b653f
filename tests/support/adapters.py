"""LoRA and QLoRA test ingredients: a tiny pretrained base on disk, specs that tune it, and
the eval loss of any model on a job's eval data, computed by the trainer's own evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

from finetune_contract.api import FineTuneJobSpec, ModelSpec

from tests.support.tiny import chat_rows, tiny_config, tiny_plan, tiny_spec, write_jsonl

EVAL_ROWS = 16


def write_data(root: Path) -> None:
    write_jsonl(root / "train.jsonl", chat_rows(64))
    write_jsonl(root / "eval.jsonl", chat_rows(EVAL_ROWS, seed=9))


def make_base(root: Path) -> Path:
    """A tiny random Llama and its tokenizer (trained on root/train.jsonl), saved like a hub
    model in root/base."""
    from finetune_trainer.data import prepare
    from finetune_trainer.model import build_model
    from finetune_trainer.tokenizer import load_tokenizer

    base = root / "base"
    config = tiny_config(root)
    data = prepare(config.spec.dataset, resolve=config.resolve, num_labels=None,
                   assistant_only_loss=True, seed=0)
    tokenizer = load_tokenizer(config, data.train)
    model = build_model(config, tokenizer)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base


def adapter_spec(tuning: str, *, steps: int, merge: bool = True, strategy: str = "ddp",
                 **method: Any) -> FineTuneJobSpec:
    spec = tiny_spec(dataset={"eval": {"path": "eval.jsonl"}},
                     method={"tuning": tuning, "lora": {"rank": 8, "alpha": 32, **method}},
                     training={"maxSteps": steps, "evalSteps": steps, "saveSteps": steps,
                               "learningRate": 1e-2, "loggingSteps": 1},
                     resources={"strategy": strategy},
                     output={"merge": merge})
    spec.model = ModelSpec(path="base")
    return spec


def eval_loss(root: Path, model: Any, micro_batch: int) -> float:
    """The eval loss of `model` on root/eval.jsonl, as the trainer evaluates it on one rank
    with `micro_batch` (the batches of micro_batch rows that the ranks of a run evaluate): a
    trainer built for full fine-tuning around `model` instead of the model it would load."""
    from finetune_trainer import build
    from finetune_trainer.data import prepare
    from finetune_trainer.training_run import Ranks

    spec = tiny_spec(dataset={"eval": {"path": "eval.jsonl"}}, training={"maxSteps": 1})
    spec.model = ModelSpec(path="base")
    config = tiny_config(root, spec=spec, plan=tiny_plan(micro_batch_size=micro_batch),
                         output_dir=str(root / "eval-out"))
    data = prepare(spec.dataset, resolve=config.resolve, num_labels=None,
                   assistant_only_loss=True, seed=0)
    from finetune_trainer import attention

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    attention.choose(inner, config.device, config.plan.precision)  # as build_model does
    with mock.patch.object(build, "build_model", lambda *_: model):
        trainer, _ = build.trainer_for(config, data, Ranks())
    return trainer.evaluate()["eval_loss"]


def load_base(root: Path, spec: FineTuneJobSpec) -> Any:
    """The base as the trainer loads it for `spec` (4-bit under qlora), without adapters."""
    import torch
    from finetune_trainer import adapters
    from transformers import AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if spec.method.tuning == "qlora":
        extra = {"quantization_config": adapters.quantization_config(spec.method),
                 "device_map": "cpu"}
    from finetune_trainer import attention

    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32, **extra)
    attention.choose(model, "cpu", "fp32")  # as build_model does
    return model
