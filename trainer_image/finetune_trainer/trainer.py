"""The transformers/TRL trainer classes with this project's additions.

One mixin adds, on top of TRL's SFTTrainer (causal LM) and transformers' Trainer
(classification): per-layer learning-rate groups, the warmup-stable-decay schedule sized from
the real step count, gradual unfreezing and the L2 pull toward the pre-trained weights (both
applied to the gradients right before clipping), and checkpoints that only count once they
are complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from trl import SFTTrainer

from finetune_trainer import checkpoints, tuning
from finetune_trainer.balance import BalancedSampler


@dataclass
class Additions:
    """What the mixin needs to know beyond the TrainingArguments."""

    layerwise_lr_decay: float = 1.0
    scheduler: str = "cosine"
    decay_ratio: float = 0.1
    gradual_unfreeze: bool = False
    anchor: tuning.L2Anchor | None = None
    save_total_limit: int = 3


class FineTuneMixin:
    """Overrides shared by both trainer classes (see the module docstring)."""

    def __init__(self, *args: Any, additions: Additions, **kwargs: Any) -> None:
        self.additions = additions
        super().__init__(*args, **kwargs)
        self._depths = tuning.parameter_depths(self.model)
        handler = getattr(self.accelerator, "ddp_handler", None)
        if handler is not None:
            # Gradients live in DDP's all-reduce buckets instead of being copied out of them
            # after every reduction: one gradient-sized copy (and its memory) less per step.
            handler.gradient_as_bucket_view = True

    # -- optimizer and schedule ----------------------------------------------------------

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is not None or self.additions.layerwise_lr_decay == 1.0:
            return super().create_optimizer(model)
        decay_names = set(self.get_decay_parameter_names(self.model))
        groups = tuning.param_groups(
            self.model, lr=self.args.learning_rate, decay=self.additions.layerwise_lr_decay,
            weight_decay=self.args.weight_decay, decay_names=decay_names,
        )
        # DeepSpeed copies param groups; keep only the keys every optimizer understands.
        groups = [{k: g[k] for k in ("params", "lr", "weight_decay")} for g in groups]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None and self.additions.scheduler == "wsd":
            from transformers.optimization import get_wsd_schedule

            warmup = self.args.get_warmup_steps(num_training_steps)
            decay = max(1, round(num_training_steps * self.additions.decay_ratio))
            decay = min(decay, max(1, num_training_steps - warmup))
            self.lr_scheduler = get_wsd_schedule(
                optimizer or self.optimizer, num_warmup_steps=warmup, num_decay_steps=decay,
                num_training_steps=num_training_steps, decay_type="linear",
            )
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # -- gradient edits before clipping ---------------------------------------------------

    def _clip_grad_norm(self, model: Any) -> Any:
        if self.additions.gradual_unfreeze:
            tuning.drop_frozen_gradients(self.model, self._depths,
                                         tuning.unfrozen_depth(self.state.epoch or 0.0))
        if self.additions.anchor is not None:
            self.additions.anchor.add_gradient(self.model)
        return super()._clip_grad_norm(model)

    # -- resuming -------------------------------------------------------------------------

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        # transformers reloads a peft model's adapters with peft's load_adapter, which
        # upcasts 16-bit adapters to fp32 (autocast_adapter_dtype). QLoRA trains bf16
        # adapters: a resumed run would step fp32 copies with fp32 Adam states, diverge from
        # the run it continues and hold more than planned. The loaded values are kept, in
        # the dtype each trainable parameter had before the load.
        target = model if model is not None else self.model
        dtypes = {name: p.dtype for name, p in target.named_parameters() if p.requires_grad}
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        with torch.no_grad():
            for name, param in target.named_parameters():
                if name in dtypes and param.dtype != dtypes[name]:
                    param.data = param.data.to(dtypes[name])

    # -- complete checkpoints only ------------------------------------------------------------

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's shards are on disk
        if self.args.should_save:
            output_dir = Path(self.args.output_dir)
            path = checkpoints.checkpoint_path(output_dir, self.state.global_step)
            checkpoints.mark_complete(path, self.state.global_step, self.args.world_size)
            best = self.state.best_model_checkpoint
            checkpoints.rotate(output_dir, self.additions.save_total_limit,
                               protect=Path(best) if best else None)


class FineTuneSFTTrainer(FineTuneMixin, SFTTrainer):
    """TRL's SFTTrainer for messages, prompt-completion and text."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        # Padding-free micro-batches cost what their tokens cost: balance them over the ranks
        # (finetune_trainer/balance.py). Padded and packed batches are left to the default.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        if (args.world_size < 2 or not getattr(args, "padding_free", False)
                or args.train_sampling_strategy != "random" or dataset is None
                or "input_ids" not in getattr(dataset, "column_names", ())):
            return super()._get_train_sampler(train_dataset)
        seed = args.data_seed if args.data_seed is not None else args.seed
        return BalancedSampler([len(ids) for ids in dataset["input_ids"]],
                               ranks=args.world_size, micro_batch=args.per_device_train_batch_size,
                               seed=seed)


class FineTuneClassifierTrainer(FineTuneMixin, Trainer):
    """transformers' Trainer with a sequence-classification model."""
