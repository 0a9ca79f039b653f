"""Where a training step's time goes: torch.profiler over a few steady optimizer steps.

A trainer callback starts the profiler at the beginning of step `first` and stops it at the
end of step `last` (1-based, so the warm-up step 1 stays out), then rank 0 writes:
- `phases`: wall seconds of the profiled steps split by the top-level range each operator ran
  under on the training thread: forward, backward (autograd engine), optimizer step,
  zero_grad, other torch work (loss metrics, DDP bookkeeping), and what no torch operator
  covers (Python, data collation, the trainer's loop, waiting);
- `kinds`: operator self time by kind (GEMM, attention, loss/softmax, elementwise and norms,
  communication, memory copies);
- `top_ops`: the operators with the most self time.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

PHASES = (
    ("forward", ("DistributedDataParallel.forward", "DeepSpeedEngine.forward", "## forward")),
    ("backward", ("autograd::engine::evaluate_function", "autograd::engine")),
    ("optimizer step", ("Optimizer.step",)),
    ("zero_grad", ("Optimizer.zero_grad",)),
)
KINDS = (
    ("GEMM (mm, addmm, bmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention kernels", ("scaled_dot_product", "flash_attention", "efficient_attention")),
    ("loss, softmax, entropy", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),
    ("communication (gloo)", ("gloo", "c10d", "all_reduce", "allreduce", "broadcast",
                              "reduce_scatter", "all_gather")),
    ("copies and allocation", ("aten::copy_", "aten::empty", "aten::zero_", "aten::fill_",
                               "aten::to", "aten::_to_copy", "aten::cat", "aten::clone",
                               "aten::contiguous", "aten::index", "aten::resize_")),
)
ELEMENTWISE = "elementwise, norms, other ops"


def phase_of(name: str) -> str:
    for phase, prefixes in PHASES:
        if name.startswith(prefixes):
            return phase
    return "other torch ops"


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, needles in KINDS:
        if any(n.lower() in lowered for n in needles):
            return kind
    return ELEMENTWISE


def training_thread(events: list[Any]) -> int:
    """The thread that ran the forward, backward and optimizer ranges; without any, the one
    with the most top-level time. Not simply the busiest: gloo's communication thread can
    spend more time in all_reduce than the training thread spends in all its work."""
    in_phases: dict[int, float] = defaultdict(float)
    busy: dict[int, float] = defaultdict(float)
    for e in events:
        if e.cpu_parent is None:
            busy[e.thread] += e.cpu_time_total
            if phase_of(e.name) != "other torch ops":
                in_phases[e.thread] += e.cpu_time_total
    chosen = in_phases or busy
    return max(chosen, key=chosen.get)


def summarize(events: Any, wall_seconds: float, steps: int, main_thread: int | None = None
              ) -> dict[str, Any]:
    """Phases, kinds and top operators from a profiler's FunctionEvents."""
    events = [e for e in events if e.device_type.name == "CPU"]
    if main_thread is None and events:
        main_thread = training_thread(events)
    phases: dict[str, float] = defaultdict(float)
    top_level: dict[str, float] = defaultdict(float)
    for e in events:
        if e.cpu_parent is None and e.thread == main_thread:
            phases[phase_of(e.name)] += e.cpu_time_total / 1e6
            top_level[e.name] += e.cpu_time_total / 1e6
    covered = sum(phases.values())
    phases["outside torch ops (Python, data, loop)"] = max(0.0, wall_seconds - covered)
    kinds: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for e in events:
        if e.name.startswith(("autograd::engine", "Optimizer.", "DistributedDataParallel",
                              "DeepSpeedEngine", "## ", "ProfilerStep")):
            continue  # ranges, not operators: their time belongs to the operators inside
        ops[e.name] += e.self_cpu_time_total / 1e6
        kinds[kind_of(e.name)] += e.self_cpu_time_total / 1e6
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:12]
    return {
        "steps": steps,
        "wall_seconds": wall_seconds,
        "phases": dict(sorted(phases.items(), key=lambda kv: -kv[1])),
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "top_ops": [{"op": name, "seconds": seconds} for name, seconds in top],
        # What the phases were classified from: when a phase split looks wrong, look here.
        "top_level": dict(sorted(top_level.items(), key=lambda kv: -kv[1])[:8]),
    }


class ProfileSteps(TrainerCallback):
    def __init__(self, result_path: str | Path, first: int, last: int) -> None:
        self.result_path = Path(result_path)
        self.first, self.last = first, last
        self.profiler: Any = None
        self.started = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step + 1 == self.first and self.profiler is None:
            from torch.profiler import ProfilerActivity, profile

            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()
            self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.profiler is None or state.global_step != self.last:
            return
        wall = time.perf_counter() - self.started
        self.profiler.__exit__(None, None, None)
        if int(os.environ.get("RANK", "0")) == 0:
            summary = summarize(self.profiler.events(), wall, self.last - self.first + 1)
            self.result_path.parent.mkdir(parents=True, exist_ok=True)
            self.result_path.write_text(json.dumps(summary, indent=1))
        self.profiler = None
