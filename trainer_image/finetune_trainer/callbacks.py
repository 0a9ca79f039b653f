"""Trainer callbacks: metrics, the wrapper check, and the gradual-unfreeze record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from finetune_trainer import strategy, tuning
from finetune_trainer.metrics import RankMetrics, ThroughputWindow, peak_memory_bytes


class MetricsCallback(TrainerCallback):
    """Copies the trainer's state and logs into this rank's Prometheus gauges."""

    def __init__(self, metrics: RankMetrics, *, flops_per_token: float,
                 peak_flops_all_ranks: float | None) -> None:
        self.metrics = metrics
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops_all_ranks
        self.window = ThroughputWindow()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.window.begin(state.global_step, state.num_input_tokens_seen or 0)
        self.metrics.set("finetune_train_total_steps", state.max_steps)
        self._progress(state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._progress(state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.metrics.set("finetune_train_loss", logs["loss"])
            self.metrics.set("finetune_train_grad_norm", logs.get("grad_norm"))
            self.metrics.set("finetune_train_learning_rate", logs.get("learning_rate"))
            rate = self.window.tokens_per_second(state.num_input_tokens_seen or 0)
            self.metrics.set("finetune_train_tokens_per_second", rate)
            if rate is not None and self.peak_flops:
                self.metrics.set("finetune_train_mfu", rate * self.flops_per_token / self.peak_flops)
        if "eval_loss" in logs:
            self.metrics.set("finetune_eval_loss", logs["eval_loss"])
        self.metrics.set("finetune_train_peak_memory_bytes", peak_memory_bytes())

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    **kwargs: Any) -> None:
        if metrics and "eval_loss" in metrics:
            self.metrics.set("finetune_eval_loss", metrics["eval_loss"])

    def _progress(self, state: Any) -> None:
        self.metrics.set("finetune_train_step", state.global_step)
        self.metrics.set("finetune_train_epoch", state.epoch or 0.0)
        self.metrics.set("finetune_train_tokens_total", state.num_input_tokens_seen or 0)
        self.metrics.set("finetune_train_eta_seconds",
                         self.window.eta_seconds(state.global_step, state.max_steps))


class WrapperCheckCallback(TrainerCallback):
    """After setup, before the first step: is the model under the planned wrapper?"""

    def __init__(self, wrapped_model: Callable[[], Any], planned: str, world_size: int) -> None:
        self.wrapped_model = wrapped_model
        self.planned = planned
        self.world_size = world_size
        self.found: str | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.found = strategy.check_wrapper(self.wrapped_model(), self.planned, self.world_size)


class UnfreezeRecorder(TrainerCallback):
    """Records, for gradual unfreezing, which depth trains in each epoch."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.schedule: list[dict[str, Any]] = []

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        depth = tuning.unfrozen_depth(state.epoch or 0.0)
        depths = tuning.parameter_depths(self.model)
        trainable = sum(p.numel() for n, p in self.model.named_parameters() if depths[n] <= depth)
        self.schedule.append({"epoch": round(state.epoch or 0.0), "trainableDepth": depth,
                              "trainableParameters": trainable})
