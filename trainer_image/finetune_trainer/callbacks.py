"""Trainer callbacks: metrics, the wrapper check, and the gradual-unfreeze record."""

from __future__ import annotations

import time
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
        # (step, tokens/s of all ranks) at each log: the summary's throughputCurve.
        self.throughput: list[dict[str, float]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.metrics.set("finetune_train_total_steps", state.max_steps)
        self._progress(state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.window.begun:  # see ThroughputWindow: the ranks are in step here
            self.window.begin(state.global_step, state.num_input_tokens_seen or 0)
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
            if rate is not None:
                self.throughput.append({"step": state.global_step, "tokensPerSecond": rate})
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


class TimeAccounting(TrainerCallback):
    """Where this run's wall time goes: before its first optimizer step (startup), inside
    steps, in evaluations and in checkpoint saves; the rest is logging and data waits.

    transformers calls on_step_end, then evaluates (on_evaluate) and saves (on_save) at the
    same step, so each of those lasts from the previous mark to its own call."""

    def __init__(self, metrics: RankMetrics, started: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics, self.started, self.clock = metrics, started, clock
        self.seconds = {"startup": 0.0, "steps": 0.0, "eval": 0.0, "checkpoint": 0.0}
        self._step_began: float | None = None
        self._mark = started
        self._first = True

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_began = now = self.clock()
        if self._first:
            self._first = False
            self.seconds["startup"] = now - self.started
            self._publish(now)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        if self._step_began is not None:
            self.seconds["steps"] += now - self._step_began
        self._mark = now
        self._publish(now)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._add("eval")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._add("checkpoint")

    def report(self) -> dict[str, float]:
        """Seconds since the process started (wall), each part's, and goodput: the share
        of the wall time spent in optimizer steps."""
        wall = self.clock() - self.started
        return {"wallSeconds": wall, **{f"{k}Seconds": v for k, v in self.seconds.items()},
                "goodput": self.seconds["steps"] / wall if wall > 0 else 0.0}

    def _add(self, part: str) -> None:
        now = self.clock()
        self.seconds[part] += now - self._mark
        self._mark = now
        self._publish(now)

    def _publish(self, now: float) -> None:
        self.metrics.set("finetune_train_run_seconds", now - self.started)
        self.metrics.set("finetune_train_startup_seconds", self.seconds["startup"])
        for part in ("steps", "eval", "checkpoint"):
            name = "step" if part == "steps" else part
            self.metrics.set(f"finetune_train_{name}_seconds_total", self.seconds[part])


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
