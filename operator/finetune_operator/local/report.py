"""What `finetune run --local` prints before and after training: the plan in a few lines,
the reason a run failed (from its log), and the final summary. Pure functions of data.
"""

from __future__ import annotations

import re

from finetune_contract.api import Plan
from finetune_contract.layout import TRAINER_ERROR_PREFIX, TRAINER_STOPPED_PREFIX
from finetune_operator.local.display import format_duration, format_rate
from finetune_operator.sizes import format_bytes, format_size

LOG_TAIL_LINES = 15

# torchrun's own failure report, which names no cause: skipped when looking for the reason.
_LAUNCHER_NOISE = re.compile(
    r"^(\s*$|=+|-+|\[.*\]:?$|Failures:|Root Cause|  (time|host|rank|exitcode|error_file|"
    r"traceback|local_rank)\s*:|To enable traceback|.*torch\.distributed\.elastic|"
    r".*ChildFailedError|\S+ FAILED$|W\d{4} |I\d{4} |E\d{4} |.*warnings\.warn|.*Warning:|Traceback)"
)
_ERROR_LINE = re.compile(r"(Error|error:|Exception|failed|Killed|out of memory)", re.IGNORECASE)


def plan_lines(plan: Plan, device_label: str) -> list[str]:
    """The plan in three lines: layout, batch, memory; then the planner's reason."""
    ranks = f"{plan.world_size} x {device_label} rank{'s' if plan.world_size > 1 else ''}"
    size = format_size(plan.parameters)
    if plan.trainable_parameters != plan.parameters:
        size += f" ({format_size(plan.trainable_parameters)} trainable)"
    batch = (f"batch {plan.micro_batch_size} per rank x {plan.world_size} ranks x "
             f"{plan.gradient_accumulation} accumulation = {plan.global_batch_size} "
             f"sequences/step, {plan.packing}")
    if plan.gradient_checkpointing:
        batch += ", gradient checkpointing"
    memory = f"memory {format_bytes(plan.memory_per_gpu.total)} per rank"
    if plan.estimate.tokens:
        memory += f", ~{format_size(plan.estimate.tokens)} training tokens"
    lines = [f"plan: {ranks}, {plan.strategy}, {plan.precision}, {size} parameters",
             f"      {batch}", f"      {memory}"]
    if plan.reason:
        lines.append(f"      why: {plan.reason}")
    return lines


def failure_reason(log_text: str) -> str | None:
    """The most telling line of a failed run's log: the trainer's one-line error for a user
    mistake, else the last error a rank printed, skipping torchrun's generic report."""
    lines = [_without_rank_prefix(line) for line in log_text.splitlines()]
    for line in reversed(lines):
        if line.startswith(TRAINER_ERROR_PREFIX):
            return line.removeprefix(TRAINER_ERROR_PREFIX).strip()
    for line in reversed(lines):
        if line and not _LAUNCHER_NOISE.match(line) and _ERROR_LINE.search(line):
            return line
    return None


def stop_report(log_text: str) -> str | None:
    """What rank 0 said of its emergency checkpoint when a signal stopped the run (the step
    and the checkpoint it resumes from), or None when it said nothing: stopped before
    training began, or killed before it could write."""
    for line in reversed(log_text.splitlines()):
        line = _without_rank_prefix(line)
        if line.startswith(TRAINER_STOPPED_PREFIX):
            return line.removeprefix(TRAINER_STOPPED_PREFIX).strip()
    return None


def log_tail(log_text: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    return [line for line in log_text.splitlines() if line.strip()][-lines:]


def _without_rank_prefix(line: str) -> str:
    # torchrun's --tee style prefixes like "[default0]:" add nothing for the user
    return re.sub(r"^\[[^\]]*\]:", "", line.strip()).strip()


def summary_lines(summary: dict, wall_seconds: float) -> list[str]:
    """The end of a run, from the trainer's training_summary.json: losses, steps,
    throughput, time, skipped rows, where the model is."""
    first, last = _number(summary, "firstLoss"), _number(summary, "lastLoss")
    lines = []
    if first is not None and last is not None:
        lines.append(f"loss:       {first:.4f} -> {last:.4f} ({_change(first, last)})")
    eval_loss = _number(summary, "evalLoss")
    if eval_loss is not None:
        lines.append(f"eval loss:  {eval_loss:.4f}")
    steps, total = _number(summary, "steps"), _number(summary, "totalSteps")
    if steps is not None:
        of = f"/{int(total)}" if total else ""
        tokens = _number(summary, "tokens")
        lines.append(f"steps:      {int(steps)}{of}"
                     + (f", {format_size(int(tokens))} tokens" if tokens else "")
                     + (" (stopped early)" if summary.get("earlyStopped") else ""))
    tps = _number(summary, "tokensPerSecond")
    if tps:  # a resumed run that had nothing left to do processed no tokens
        lines.append(f"throughput: {format_rate(tps)} tokens/s")
    lines.append(f"wall time:  {format_duration(wall_seconds)}"
                 + (f" (resumed from {summary['resumedFrom']})"
                    if summary.get("resumedFrom") else ""))
    time = summary.get("time") or {}
    if isinstance(time.get("goodput"), int | float) and time.get("wallSeconds"):
        lines.append(f"goodput:    {100 * time['goodput']:.0f}% of rank 0's "
                     f"{format_duration(time['wallSeconds'])} in optimizer steps ("
                     + ", ".join(f"{format_duration(time.get(f'{part}Seconds') or 0)} {part}"
                                 for part in ("startup", "eval", "checkpoint")) + ")")
    skipped = (summary.get("data") or {}).get("skippedTotal")
    if skipped:
        lines.append(f"skipped:    {skipped} bad rows (dataset.onError: skip)")
    if summary.get("finalModel"):
        lines.append(f"model:      {summary['finalModel']}")
    if summary.get("plot"):
        lines.append(f"curves:     {summary['plot']}")
    return lines


def _number(summary: dict, key: str) -> float | None:
    value = summary.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _change(first: float, last: float) -> str:
    if first <= 0:
        return "n/a"
    return f"{100 * (last - first) / first:+.0f}%"
