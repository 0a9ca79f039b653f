"""What the pods of an attempt say: all running, a failed rank and why, one that is stuck."""

from __future__ import annotations

from datetime import datetime

from finetune_operator.lifecycle.observation import Attempt, PodState


def any_failed(pods: tuple[PodState, ...]) -> bool:
    return any(p.phase == "Failed" for p in pods)


def all_running(pods: tuple[PodState, ...], nodes: int) -> bool:
    """Every node rank has a running pod that is not being deleted."""
    running = {p.index for p in pods if p.phase == "Running" and not p.deleting}
    return len(running - {None}) >= nodes


def failure_summary(attempt: Attempt) -> str:
    """The last failed pod's rank, reason and exit code; else the Job's failure reason."""
    failed = [p for p in attempt.pods if p.phase == "Failed"]
    if failed:
        pod = max(failed, key=lambda p: p.finished_at)
        rank = pod.index if pod.index is not None else "?"
        return (f"node rank {rank} (pod {pod.name}) failed: {pod.exit_reason}, "
                f"exit code {pod.exit_code}")
    if attempt.failed:
        return (f"Job failed: {attempt.failure_reason}: {attempt.failure_message}"
                .rstrip(": "))
    return "a node rank failed"


def unschedulable_message(pods: tuple[PodState, ...], now: datetime,
                          after_seconds: float) -> str | None:
    """The scheduler's message for a pod Pending longer than `after_seconds`, if any."""
    for pod in pods:
        if pod.phase != "Pending" or pod.scheduled:
            continue  # scheduled: pulling the image or starting
        since = pod.waiting_since
        if since is None or (now - since).total_seconds() < after_seconds:
            continue
        return (f"pod {pod.name} pending for {int((now - since).total_seconds())} s: "
                f"{pod.scheduler_message}")
    return None
