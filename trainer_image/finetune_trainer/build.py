"""Assembling the trainer from a TrainerConfig, the checked rows and the plan.

The plan decides micro-batch, accumulation, precision, gradient checkpointing, packing and
strategy; the spec decides the method and the hyperparameters. This module only maps them
onto TRL's SFTConfig / transformers' TrainingArguments and the trainer classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from finetune_contract.trainer_config import TrainerConfig
from transformers import TrainerCallback, TrainingArguments

from finetune_trainer import PROCESS_STARTED, adapters, callbacks, strategy, tracking, tuning
from finetune_trainer.config import assistant_only
from finetune_trainer.data import PreparedData, Row
from finetune_trainer.errors import TrainerError
from finetune_trainer.metrics import (
    RankMetrics,
    measure_cpu_peak_flops,
    training_flops_per_token,
)
from finetune_trainer.model import build_model
from finetune_trainer.tokenizer import check_chat_template, load_tokenizer
from finetune_trainer.trainer import Additions, FineTuneClassifierTrainer, FineTuneSFTTrainer

NO_LOSS = -100  # the label value cross-entropy ignores
SCHEDULERS = {  # spec name -> transformers scheduler type (wsd is built by the trainer)
    "cosine": "cosine",
    "linear": "linear",
    "constant": "constant_with_warmup",
    "wsd": "constant",
}
# transformers 5 renamed gradient_checkpointing; the old name warns until it is removed.
_CHECKPOINTING = ("activation_checkpointing"
                  if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                  else "gradient_checkpointing")


class RunClock(TrainerCallback):
    """Wall time and tokens of this train() call (a resumed run counts only its own part)."""

    def __init__(self) -> None:
        self.begin = self.end = 0.0
        self.tokens_at_begin = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.begin = time.monotonic()
        self.tokens_at_begin = int(state.num_input_tokens_seen or 0)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.end = time.monotonic()


@dataclass
class Parts:
    """The pieces of a built run that the summary reads back."""

    metrics: RankMetrics
    wrapper_check: callbacks.WrapperCheckCallback
    clock: RunClock
    parameters: int
    trainable_parameters: int
    unfreeze: callbacks.UnfreezeRecorder | None = None
    anchor: tuning.L2Anchor | None = None
    times: callbacks.TimeAccounting | None = None
    throughput: callbacks.MetricsCallback | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def tokens_at_start(self, trainer: Any) -> int:
        return self.clock.tokens_at_begin

    def train_seconds(self, trainer: Any) -> float:
        return max(0.0, self.clock.end - self.clock.begin)


def trainer_for(config: TrainerConfig, data: PreparedData, ranks: Any, *,
                load_universal: bool = False) -> tuple[Any, Parts]:
    """The trainer and the parts the summary reads; `load_universal`: DeepSpeed resumes from a
    universal checkpoint (a ZeRO checkpoint written by another number of ranks, reshard.py)."""
    spec, plan = config.spec, config.plan
    tracking.point_trackers_at(config, rank=ranks.rank)
    tokenizer = load_tokenizer(config, data.train)
    check_chat_template(tokenizer, spec.dataset.format, assistant_only(config))
    model = build_model(config, tokenizer)
    method = spec.method
    if method.tuning == "freeze":
        tuning.set_trainable_depth(model, method.trainable_layers)
    if plan.gradient_checkpointing:
        model.config.use_cache = False
    # num_parameters counts a 4-bit weight's elements, not its packed bytes.
    parameters = model.num_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if method.tuning == "gradual-unfreeze":
        trainable = parameters  # every block trains by the last epoch

    metrics = RankMetrics(config.namespace, config.name, ranks.rank)
    peak = config.peak_flops_per_rank
    if peak is None and config.device == "cpu":
        peak = measure_cpu_peak_flops("bfloat16" if plan.precision == "bf16" else "float32")
    mfu_peak = peak * plan.world_size if peak else None
    flops_per_token = training_flops_per_token(parameters, trainable)
    metrics_cb = callbacks.MetricsCallback(metrics, flops_per_token=flops_per_token,
                                           peak_flops_all_ranks=mfu_peak)
    clock = RunClock()
    times = callbacks.TimeAccounting(metrics, started=PROCESS_STARTED)
    anchor = (tuning.L2Anchor.capture(model, method.l2_to_pretrained)
              if method.l2_to_pretrained > 0 else None)
    unfreeze = (callbacks.UnfreezeRecorder(model)
                if method.tuning == "gradual-unfreeze" else None)
    additions = Additions(
        layerwise_lr_decay=method.layerwise_lr_decay,
        scheduler=spec.training.scheduler,
        decay_ratio=spec.training.decay_ratio,
        gradual_unfreeze=method.tuning == "gradual-unfreeze",
        anchor=anchor,
        save_total_limit=spec.training.save_total_limit,
    )
    holder: dict[str, Any] = {}
    wrapper_cb = callbacks.WrapperCheckCallback(lambda: holder["trainer"].model_wrapped,
                                                plan.strategy, plan.world_size)
    trainer_callbacks: list[Any] = [clock, wrapper_cb, metrics_cb, times]
    if unfreeze:
        trainer_callbacks.append(unfreeze)
    if spec.training.early_stopping_patience is not None:
        from transformers import EarlyStoppingCallback

        trainer_callbacks.append(EarlyStoppingCallback(spec.training.early_stopping_patience))

    common = training_arguments(config, has_eval=bool(data.eval),
                                find_unused_parameters=routes_to_experts(model),
                                load_universal=load_universal)
    if method.task == "classification":
        trainer = _classifier_trainer(config, model, tokenizer, data, common, additions,
                                      trainer_callbacks)
    else:
        trainer = _sft_trainer(config, model, tokenizer, data, common, additions,
                               trainer_callbacks)
    holder["trainer"] = trainer
    if adapters.uses_adapters(method.tuning):  # TRL froze the base and added the adapters
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    parts = Parts(metrics=metrics, wrapper_check=wrapper_cb, clock=clock,
                  parameters=parameters, trainable_parameters=trainable,
                  unfreeze=unfreeze, anchor=anchor, times=times, throughput=metrics_cb)
    return trainer, parts


# Config keys by which mixture-of-experts models announce their experts.
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def routes_to_experts(model: Any) -> bool:
    """True when some parameters may get no gradient in a step (unrouted experts), which is
    when DDP has to search for unused parameters."""
    config = getattr(model, "config", None)
    configs = [config, getattr(config, "text_config", None)]
    return any((getattr(c, key, None) or 0) > 1 for c in configs if c for key in _EXPERT_KEYS)


def training_arguments(config: TrainerConfig, *, has_eval: bool,
                       find_unused_parameters: bool = False,
                       load_universal: bool = False) -> dict[str, Any]:
    """Keyword arguments shared by SFTConfig and TrainingArguments."""
    plan, training = config.plan, config.spec.training
    cpu = config.device == "cpu"
    early = training.early_stopping_patience is not None
    return {
        "output_dir": config.output_dir,
        "per_device_train_batch_size": plan.micro_batch_size,
        "per_device_eval_batch_size": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation,
        "learning_rate": training.learning_rate,
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps or -1,
        "lr_scheduler_type": SCHEDULERS[training.scheduler],
        "warmup_steps": training.warmup_ratio,  # a value below 1 is a ratio of the steps
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        # The fused kernel (CPU and CUDA) does AdamW's update in one pass instead of a Python
        # loop over parameters; same update as adamw_torch
        # (tests/finetune_trainer/test_training_run.py).
        "optim": "adamw_torch_fused",
        "logging_steps": training.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": None,  # rotation counts complete checkpoints only (checkpoints.py)
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": training.eval_steps if has_eval else None,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if early else None,
        "greater_is_better": False if early else None,
        "seed": training.seed,
        "data_seed": training.seed,
        "bf16": plan.precision == "bf16",
        "fp16": plan.precision == "fp16",
        _CHECKPOINTING: plan.gradient_checkpointing,
        "use_cpu": cpu,
        "ddp_backend": "gloo" if cpu and plan.world_size > 1 else None,
        # transformers defaults to True without gradient checkpointing: an extra autograd
        # graph walk every step. Only routed experts (MoE) leave parameters without a gradient;
        # frozen ones have requires_grad=False (DDP ignores them) and gradual-unfreeze drops
        # gradients after backward, so every reduced parameter gets one.
        "ddp_find_unused_parameters": find_unused_parameters,
        "deepspeed": strategy.deepspeed_config(plan.strategy, config.device,
                                               load_universal=load_universal),
        **_fsdp_arguments(plan.strategy),
        "include_num_input_tokens_seen": "non_padding",
        "report_to": list(training.report_to) or "none",
        "run_name": config.name,  # the trackers' name for the run
        "disable_tqdm": True,
        "log_level": "warning",
        "dataloader_num_workers": 0,
    }


def _fsdp_arguments(planned: str) -> dict[str, Any]:
    if planned != "fsdp":
        return {}
    # FSDP2 full sharding, one unit per transformer block (the model's _no_split_modules).
    return {"fsdp": "full_shard auto_wrap", "fsdp_config": {"version": 2}}


# --------------------------------------------------------------------------- SFT


def _sft_trainer(config: TrainerConfig, model: Any, tokenizer: Any, data: PreparedData,
                 common: dict[str, Any], additions: Additions, trainer_callbacks: list) -> Any:
    from datasets import Dataset
    from trl import SFTConfig

    plan = config.plan
    packed = plan.packing == "packed"
    args = SFTConfig(
        **common,
        # Padding-free and padded batches are truncated below, where the rows it costs
        # are counted; packing cuts sequences to its block length itself.
        max_length=seq_length(config) if packed else None,
        packing=packed,
        padding_free=plan.packing == "padding-free",
        assistant_only_loss=assistant_only(config),
        dataset_num_proc=None,
    )
    train = Dataset.from_list([r.data for r in data.train])
    evaluation = Dataset.from_list([r.data for r in data.eval]) if data.eval else None
    method = config.spec.method
    peft = ({"peft_config": adapters.lora_config(method)}
            if adapters.uses_adapters(method.tuning) else {})
    trainer = FineTuneSFTTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer, callbacks=trainer_callbacks, additions=additions, **peft,
    )
    if not packed:
        limit = seq_length(config)
        # A row dropped here is counted as skipped, so it no longer counts as a training row.
        before = len(trainer.train_dataset)
        trainer.train_dataset = truncate(trainer.train_dataset, limit, data.train, data.report)
        data.report.train_rows -= before - len(trainer.train_dataset)
        if trainer.eval_dataset is not None:
            before = len(trainer.eval_dataset)
            trainer.eval_dataset = truncate(trainer.eval_dataset, limit, data.eval, data.report)
            data.report.eval_rows -= before - len(trainer.eval_dataset)
    return trainer


def seq_length(config: TrainerConfig) -> int:
    return config.plan.seq_length or config.spec.training.max_seq_length


def truncate(dataset: Any, limit: int, rows: list[Row], report: Any) -> Any:
    """Cut tokenized rows to `limit` tokens; a row left without any trained token is
    dropped and counted (with its origin) instead of silently vanishing."""
    keep: list[int] = []
    for index, labels in enumerate(dataset["labels"]):
        if any(label != NO_LOSS for label in labels[:limit]):
            keep.append(index)
        else:
            report.skip(rows[index].origin if index < len(rows) else f"row {index + 1}",
                        f"no trained token within the first {limit} tokens (maxSeqLength)")
    if len(keep) < len(dataset):
        dataset = dataset.select(keep)
    if not len(dataset):
        raise TrainerError("dataset: no row has a trained token within maxSeqLength "
                           f"({limit} tokens); raise training.maxSeqLength")
    if max(len(ids) for ids in dataset["input_ids"]) <= limit:
        return dataset
    return dataset.map(lambda row: {"input_ids": row["input_ids"][:limit],
                                    "labels": row["labels"][:limit]})


# --------------------------------------------------------------------------- classification


def _classifier_trainer(config: TrainerConfig, model: Any, tokenizer: Any, data: PreparedData,
                        common: dict[str, Any], additions: Additions,
                        trainer_callbacks: list) -> Any:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    limit = seq_length(config)

    def encode(rows: list[Row]) -> Any:
        dataset = Dataset.from_list([r.data for r in rows])
        return dataset.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=limit),
            batched=True, remove_columns=["text"],
        ).rename_column("label", "labels")

    args = TrainingArguments(**common)
    return FineTuneClassifierTrainer(
        model=model, args=args, train_dataset=encode(data.train),
        eval_dataset=encode(data.eval) if data.eval else None,
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        callbacks=trainer_callbacks, additions=additions,
    )
