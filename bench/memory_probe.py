"""What one training rank really holds: model-state tensor bytes and peak resident memory.

`begin()` runs before the model exists: it imports the training stack, resets the kernel's
peak-RSS mark (writing 5 to /proc/self/clear_refs) and records the baseline RSS, so the
growth measured later is what training itself added.

`MemoryProbe` is a trainer callback. Right after the first optimizer step (a post-step hook
on the torch optimizer that really steps: under DeepSpeed the one inside the ZeRO
optimizer) it counts the bytes of every tensor storage the rank holds, each storage once:
- optimizer: the optimizer's state tensors (Adam's step, exp_avg, exp_avg_sq) and the
  parameters it steps when they are not the model's own (DeepSpeed's fp32 master partitions);
- gradients: .grad of those and of the model's parameters, DeepSpeed's gradient buffers
  (attributes of the ZeRO optimizer holding tensors), and DDP's all-reduce buckets (C++
  memory, read from DDP's logging data);
- weights: the model's parameters (ZeRO-3: each parameter's partition `ds_tensor`);
- other: any other tensor still alive (found with the garbage collector).
When training begins it notes the peak so far (model build and wrapper setup) and resets the
mark; at the end of the last step (before any checkpoint is written) it reads the training
peak. Each training step is also split in two phases, each with its own peak (`phases`):
`backward` from the step's start until the torch optimizer's step begins (forward, backward
and, under DeepSpeed, the gradient reduction and partition copies), and `step` from there to
the end of the step (the optimizer update, where Adam's states are created on the first step).
Each rank writes `<out>.rank<N>.json`.
"""

from __future__ import annotations

import gc
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def read_status(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def begin() -> int:
    """Import what training imports, reset the peak, return the baseline RSS in bytes."""
    import datasets  # noqa: F401
    import deepspeed  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    gc.collect()
    reset_peak_rss()
    return read_status("VmRSS")


class StateLedger:
    """Counts each tensor storage once, in the first category that claims it."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.bytes: dict[str, int] = defaultdict(int)
        self.detail: dict[str, int] = defaultdict(int)

    def add(self, category: str, tensor: Any, detail: str | None = None) -> None:
        import torch

        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self.seen:
            return
        self.seen.add(key)
        self.bytes[category] += size
        if detail:
            self.detail[detail] += size

    def add_nested(self, category: str, value: Any, detail: str, depth: int = 3) -> None:
        """Tensors inside lists, tuples and dicts (DeepSpeed keeps buffers that way)."""
        if depth < 0:
            return
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list | tuple):
            for item in value:
                self.add_nested(category, item, detail, depth - 1)
        else:
            self.add(category, value, detail)


def model_state_bytes(model_wrapped: Any, base_optimizer: Any) -> dict[str, Any]:
    """Bytes per category this rank holds right now (see the module docstring)."""
    import torch

    ledger = StateLedger()
    module = getattr(model_wrapped, "module", model_wrapped)
    model_params = {id(p) for p in module.parameters()}
    for state in base_optimizer.state.values():
        for name, value in state.items():
            ledger.add("optimizer", value, f"optimizer state {name}")
    for group in base_optimizer.param_groups:
        for p in group["params"]:
            ledger.add("gradients", p.grad, "grad of the stepped parameters")
            if id(p) not in model_params:
                ledger.add("optimizer", p, "fp32 master partition")
    for p in module.parameters():
        ledger.add("gradients", p.grad, "grad of model parameters")
    zero = getattr(model_wrapped, "optimizer", None) if _is_deepspeed(model_wrapped) else None
    if zero is not None:
        for name, value in vars(zero).items():
            if "grad" in name or "ipg" in name:
                ledger.add_nested("gradients", value, f"deepspeed {name}")
    for p in module.parameters():
        ledger.add("weights", getattr(p, "ds_tensor", None), "ZeRO-3 parameter partition")
        ledger.add("weights", p.data, "model parameters")
    if zero is not None:
        for name, value in vars(zero).items():
            ledger.add_nested("other", value, f"deepspeed {name}")
    buckets = ddp_bucket_bytes(model_wrapped)
    if buckets:
        ledger.bytes["gradients"] += buckets
        ledger.detail["DDP all-reduce buckets"] += buckets
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            ledger.add("other", obj, "other live tensors")
    states = {k: ledger.bytes.get(k, 0) for k in ("weights", "gradients", "optimizer")}
    return {"states": states, "model_states": sum(states.values()),
            "other": ledger.bytes.get("other", 0), "detail": dict(ledger.detail)}


def live_tensor_bytes(model_wrapped: Any) -> int:
    """Bytes of every tensor storage reachable from Python (each once), plus DDP's buckets:
    what RSS growth would be if the process held nothing but tensors."""
    import torch

    ledger = StateLedger()
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            ledger.add("tensors", obj)
    return ledger.bytes.get("tensors", 0) + ddp_bucket_bytes(model_wrapped)


def ddp_bucket_bytes(model_wrapped: Any) -> int:
    """DDP's all-reduce buckets: separate from .grad unless gradient_as_bucket_view."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model_wrapped, DistributedDataParallel):
        return 0
    data = model_wrapped._get_ddp_logging_data()
    if data.get("gradient_as_bucket_view"):
        return 0
    return sum(int(s) for s in str(data.get("bucket_sizes", "")).split(",") if s.strip())


def _is_deepspeed(model: Any) -> bool:
    try:
        import deepspeed
    except ImportError:
        return False
    return isinstance(model, deepspeed.DeepSpeedEngine)


def base_optimizer(trainer: Any) -> Any:
    """The torch optimizer that really steps."""
    wrapped = trainer.model_wrapped
    if _is_deepspeed(wrapped):
        return wrapped.optimizer.optimizer
    optimizer = trainer.optimizer
    while hasattr(optimizer, "optimizer"):  # accelerate's AcceleratedOptimizer
        optimizer = optimizer.optimizer
    return optimizer


class MemoryProbe(TrainerCallback):
    def __init__(self, result_path: str | Path, baseline_rss: int | None = None) -> None:
        self.result_path = Path(result_path)
        self.baseline_rss = baseline_rss
        self.trainer: Any = None
        self.result: dict[str, Any] = {}
        self._hook: Any = None
        self._phase_hook: Any = None
        self.phases: list[dict[str, Any]] = []

    def attach(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = base_optimizer(self.trainer)
        self._hook = optimizer.register_step_post_hook(self._after_step)
        self._phase_hook = optimizer.register_step_pre_hook(self._before_step)
        # Split the peak: model build and wrapper setup so far, training steps from here.
        self.result.update(setup_peak_rss=read_status("VmHWM"),
                           rss_at_train_begin=read_status("VmRSS"),
                           tensor_bytes_at_train_begin=live_tensor_bytes(
                               self.trainer.model_wrapped),
                           shmem_at_train_begin=read_status("RssShmem"))
        reset_peak_rss()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.phases:  # the first step's peak mark was reset at train begin
            reset_peak_rss()
        self.phases.append({"step": state.global_step + 1})

    def _before_step(self, optimizer: Any, *_: Any) -> None:
        if self.phases and "backward_peak_rss" not in self.phases[-1]:
            self.phases[-1]["backward_peak_rss"] = read_status("VmHWM")
            reset_peak_rss()

    def _after_step(self, optimizer: Any, *_: Any) -> None:
        self._hook.remove()
        self.result.update(model_state_bytes(self.trainer.model_wrapped, optimizer))
        self.result["rss_after_first_step"] = read_status("VmRSS")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.phases:
            self.phases[-1].update(step_peak_rss=read_status("VmHWM"),
                                   shmem=read_status("RssShmem"))
        if state.global_step < state.max_steps:
            return
        rank = int(os.environ.get("RANK", "0"))
        training_peak = max([read_status("VmHWM")]
                            + [v for p in self.phases for k, v in p.items() if "peak" in k])
        self.result.update(rank=rank, baseline_rss=self.baseline_rss,
                           training_peak_rss=training_peak,
                           peak_rss=max(training_peak, self.result["setup_peak_rss"]),
                           rss_at_end=read_status("VmRSS"),
                           wrapper=type(self.trainer.model_wrapped).__name__,
                           phases=self.phases)
        path = self.result_path.with_name(f"{self.result_path.name}.rank{rank}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.result, indent=1))
