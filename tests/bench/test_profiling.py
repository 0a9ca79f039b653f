"""bench/profiling.py: the profile summary and the thread it reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench import profiling

pytestmark = [pytest.mark.slow]


def test_profile_summary_splits_phases_and_kinds() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    a = torch.randn(64, 64, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        (a @ a).relu().sum().backward()
    summary = profiling.summarize(prof.events(), wall_seconds=1.0, steps=1)
    assert {"steps", "wall_seconds", "phases", "kinds", "top_ops"} <= set(summary)
    assert "GEMM (mm, addmm, bmm)" in summary["kinds"]
    assert "outside torch ops (Python, data, loop)" in summary["phases"]


def test_training_thread_is_the_one_with_the_phases_not_the_busiest() -> None:
    def event(name: str, thread: int, micros: float) -> SimpleNamespace:
        return SimpleNamespace(name=name, thread=thread, cpu_parent=None, cpu_time_total=micros)

    gloo, trainer = 7, 1
    events = [event("gloo:all_reduce", gloo, 9e6),
              event("DistributedDataParallel.forward", trainer, 2e6),
              event("autograd::engine::evaluate_function: MmBackward0", trainer, 3e6)]
    assert profiling.training_thread(events) == trainer
    # no known range at all: the busiest thread
    assert profiling.training_thread([event("aten::mm", 3, 1.0), event("aten::add", 4, 2.0)]) == 4
