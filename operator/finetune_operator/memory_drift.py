"""Planned against measured memory: the largest peak the ranks report (their
finetune_train_peak_memory_bytes) against the plan's total per rank, and whether it strays
far enough to say so (the PlanDrift condition and a Warning Event).

Above the plan by more than 10%: the job runs closer to out-of-memory than planned, and a
bigger micro-batch or another model may not fit where the planner says it does. Below by more
than 30%: the plan asks for more than it uses (fewer or smaller GPUs would do). Judged once a
step has been logged: before, the peak has not yet seen a backward pass and an optimizer step.

Pure: the plan, the peaks read and the step in, the check out.
"""

from __future__ import annotations

from finetune_contract.api import MemoryCheck, Plan

ABOVE = 1.10  # measured over planned, beyond which the plan is too low
BELOW = 0.70  # and under which it is too high
# The most ranks whose peak memory one progress read asks for (the lowest ranks): a read of
# every rank of a very large job would cost more than its answer is worth.
MAX_RANKS_READ = 64


def check(plan: Plan, peaks: dict[int, int], step: int | None) -> MemoryCheck | None:
    """The memory check from `peaks` (global rank -> peak bytes); None before a logged
    step, or when no rank reported a peak, or the plan names no memory per rank."""
    planned = plan.memory_per_gpu.total
    if not peaks or not step or planned <= 0:
        return None
    rank, measured = max(peaks.items(), key=lambda item: (item[1], -item[0]))
    return MemoryCheck(planned_bytes=planned, measured_bytes=measured, largest_rank=rank,
                       ratio=round(measured / planned, 3), ranks_read=len(peaks))


def largest(previous: MemoryCheck | None, memory: MemoryCheck) -> MemoryCheck:
    """The check with the larger peak of the two: a rank that finished, or a run that
    ended, still reached what it reached."""
    if previous is None or previous.planned_bytes != memory.planned_bytes:
        return memory  # a first check, or a re-planned job: its own plan only
    top = max(previous, memory, key=lambda m: m.measured_bytes)
    return top.model_copy(update={"ranks_read": max(previous.ranks_read, memory.ranks_read)})


def drift(memory: MemoryCheck) -> str | None:
    """Why the measured peak strays from the plan ("AboveThePlan", "BelowThePlan"), or None."""
    ratio = memory.measured_bytes / memory.planned_bytes  # exact: `ratio` is rounded
    if ratio > ABOVE:
        return "AboveThePlan"
    if ratio < BELOW:
        return "BelowThePlan"
    return None
