"""What one training rank really holds: model-state tensor bytes and peak memory.

Peak memory is read by meters: `RssMeter` (resident memory: VmRSS and the kernel's peak mark
VmHWM, reset by writing 5 to /proc/self/clear_refs) on every rank, and `CudaMeter` (torch's
CUDA allocator: memory_allocated and its peak mark) on a rank that computes on a GPU. Each
meter's readings carry its name: `peak_rss`, `rss_at_train_begin`, ..., `peak_cuda`.

`begin()` runs before the model exists: it imports the training stack, resets every meter's
peak mark and records each one's baseline, so the growth measured later is what training
itself added.

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
When training begins it notes each peak so far (model build and wrapper setup) and resets the
marks; at the end of the last step (before any checkpoint is written) it reads the training
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


class RssMeter:
    """Host memory: the process's resident set and the kernel's peak mark of it."""

    name = "rss"

    def current(self) -> int:
        return read_status("VmRSS")

    def peak(self) -> int:
        return read_status("VmHWM")

    def reset(self) -> None:
        reset_peak_rss()

    def notes(self) -> dict[str, int]:
        return {}


class CudaMeter:
    """GPU memory: what torch's caching allocator has handed out to tensors on this rank's
    device (`torch.cuda.memory_allocated` and its peak mark). The CUDA context, library
    workspaces and the blocks the allocator keeps cached are not in it: the planner counts
    those in its runtime term, so they are compared apart (`notes`)."""

    name = "cuda"

    def current(self) -> int:
        import torch

        return torch.cuda.memory_allocated()  # 0 before CUDA is initialized

    def peak(self) -> int:
        import torch

        return torch.cuda.max_memory_allocated()

    def reset(self) -> None:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def notes(self) -> dict[str, int]:
        """What the allocator reserved from the driver over the last step: it keeps freed
        blocks, so this is its steady footprint (tensors, cached blocks, fragmentation)."""
        import torch

        return {"reserved_peak_cuda": torch.cuda.max_memory_reserved()}


def default_meters() -> list[Any]:
    """RSS always; the GPU's allocator too when this rank computes on CUDA."""
    import torch

    return [RssMeter()] + ([CudaMeter()] if torch.cuda.is_available() else [])


def begin(meters: list[Any] | None = None) -> dict[str, int]:
    """Import what training imports, reset the peaks, return each meter's baseline in bytes
    (by meter name: "rss", and "cuda" on a GPU)."""
    import datasets  # noqa: F401
    import deepspeed  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    gc.collect()
    baselines = {}
    for meter in meters if meters is not None else default_meters():
        meter.reset()
        baselines[meter.name] = meter.current()
    return baselines


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
    def __init__(self, result_path: str | Path, baselines: dict[str, int] | None = None,
                 meters: list[Any] | None = None) -> None:
        self.result_path = Path(result_path)
        self.meters = meters if meters is not None else default_meters()
        self.baselines = baselines or {}
        self.trainer: Any = None
        self.result: dict[str, Any] = {}
        self._hook: Any = None
        self._phase_hook: Any = None
        self.phases: list[dict[str, Any]] = []

    def attach(self, trainer: Any) -> None:
        self.trainer = trainer

    def _reset_peaks(self) -> None:
        for meter in self.meters:
            meter.reset()

    def _peaks(self, key: str) -> dict[str, int]:
        return {f"{key}_{meter.name}": meter.peak() for meter in self.meters}

    def _currents(self, key: str) -> dict[str, int]:
        return {f"{meter.name}_{key}": meter.current() for meter in self.meters}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = base_optimizer(self.trainer)
        self._hook = optimizer.register_step_post_hook(self._after_step)
        self._phase_hook = optimizer.register_step_pre_hook(self._before_step)
        # Split the peak: model build and wrapper setup so far, training steps from here.
        self.result.update(**self._peaks("setup_peak"), **self._currents("at_train_begin"),
                           tensor_bytes_at_train_begin=live_tensor_bytes(
                               self.trainer.model_wrapped),
                           shmem_at_train_begin=read_status("RssShmem"))
        self._reset_peaks()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.phases:  # the first step's peak mark was reset at train begin
            self._reset_peaks()
        self.phases.append({"step": state.global_step + 1})

    def _before_step(self, optimizer: Any, *_: Any) -> None:
        if self.phases and not any(k.startswith("backward_peak") for k in self.phases[-1]):
            self.phases[-1].update(self._peaks("backward_peak"))
            self._reset_peaks()

    def _after_step(self, optimizer: Any, *_: Any) -> None:
        self._hook.remove()
        self.result.update(model_state_bytes(self.trainer.model_wrapped, optimizer))
        self.result.update(self._currents("after_first_step"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.phases:
            self.phases[-1].update(**self._peaks("step_peak"), shmem=read_status("RssShmem"))
        if state.global_step < state.max_steps:
            return
        rank = int(os.environ.get("RANK", "0"))
        for meter in self.meters:
            self.result.update(self._totals(meter))
        self.result.update(rank=rank, **self._currents("at_end"),
                           wrapper=type(self.trainer.model_wrapped).__name__,
                           phases=self.phases)
        path = self.result_path.with_name(f"{self.result_path.name}.rank{rank}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.result, indent=1))

    def _totals(self, meter: Any) -> dict[str, Any]:
        """One meter's baseline and peaks over the training steps and over the whole run."""
        name = meter.name
        training_peak = max([meter.peak()] + [v for p in self.phases for k, v in p.items()
                                              if k.endswith(f"peak_{name}")])
        return {f"baseline_{name}": self.baselines.get(name),
                f"training_peak_{name}": training_peak,
                f"peak_{name}": max(training_peak, self.result[f"setup_peak_{name}"]),
                **meter.notes()}
