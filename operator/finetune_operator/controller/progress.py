"""The progress timer: copy rank 0's training metrics into status.progress.

An unreachable endpoint never fails the job: the last progress stays, marked stale, and the
ProgressAvailable condition says why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finetune_contract.api import FineTuneJobStatus, Progress
from finetune_contract.layout import METRICS_PORT

from finetune_operator import conditions as cond
from finetune_operator import goodput, lost_work, memory_drift, names
from finetune_operator.controller.kube import parse_status
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.lifecycle.actions import Emit
from finetune_operator.memory_drift import MAX_RANKS_READ
from finetune_operator.scrape import ProgressUnavailable, fetch_progress
from finetune_operator.sizes import format_bytes


def _reachable_pods(pods: list[dict[str, Any]],
                    job_name: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(node rank, pod IP, pod) of every pod of `job_name` that has an IP and is not being
    deleted: the pods whose metrics can be read."""
    found = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        index = str((meta.get("annotations") or {}).get(names.COMPLETION_INDEX_ANNOTATION))
        ip = (pod.get("status") or {}).get("podIP")
        if ((meta.get("labels") or {}).get(names.JOB_NAME_LABEL) == job_name and ip
                and not meta.get("deletionTimestamp") and index.isdigit()):
            found.append((int(index), ip, pod))
    return found


def rank0_metrics_url(pods: list[dict[str, Any]], job_name: str) -> str | None:
    """http://<pod IP>:<metrics port>/metrics of node rank 0 of `job_name`, once it has an IP."""
    for index, ip, pod in _reachable_pods(pods, job_name):
        if index == 0:
            return f"http://{ip}:{_metrics_port(pod)}/metrics"
    return None


def rank_metrics_urls(pods: list[dict[str, Any]], job_name: str,
                      gpus_per_node: int) -> dict[int, str]:
    """Global rank -> metrics URL of every rank of `job_name` whose pod has an IP, the
    lowest MAX_RANKS_READ ranks: node rank x gpusPerNode + local rank, on each port named
    metrics, metrics-1, ..."""
    urls: dict[int, str] = {}
    for index, ip, pod in _reachable_pods(pods, job_name):
        ports = {p.get("name"): p.get("containerPort")
                 for c in (pod.get("spec") or {}).get("containers") or []
                 for p in c.get("ports") or []}
        for local in range(gpus_per_node):
            port = ports.get(names.metrics_port_name(local))
            if port:
                urls[index * gpus_per_node + local] = f"http://{ip}:{port}/metrics"
    return dict(sorted(urls.items())[:MAX_RANKS_READ])


def _metrics_port(pod: dict[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == names.METRICS_PORT_NAME:  # local rank 0
                return int(port["containerPort"])
    return METRICS_PORT


def with_progress(status: FineTuneJobStatus, progress: Progress | None, error: str | None,
                  *, now: datetime, generation: int | None,
                  peaks: dict[int, int] | None = None) -> FineTuneJobStatus:
    """The status after one read of rank 0 (and of the peak memory of the ranks in
    `peaks`): fresh progress, or the old one marked stale."""
    new = status.model_copy(deep=True)
    if progress is not None:
        new.progress = progress
        new.lost_work, new_run = lost_work.observe(status.lost_work, progress, now)
        new.goodput = goodput.observe(status.goodput, progress, new_run, status.plan,
                                      status.start_time, now)
        new.conditions = cond.set_condition(new.conditions, cond.PROGRESS_AVAILABLE, "True",
                                            "MetricsRead", "", generation=generation, now=now)
        _check_memory(new, peaks or {}, progress, now=now, generation=generation)
    else:
        stale = (status.progress or Progress()).model_copy(update={"stale": True})
        new.progress = stale
        new.conditions = cond.set_condition(
            new.conditions, cond.PROGRESS_AVAILABLE, "False", "MetricsUnreachable",
            f"{error}; progress is from {_when(stale.updated_at)}",
            generation=generation, now=now)
    return new


def _check_memory(status: FineTuneJobStatus, peaks: dict[int, int], progress: Progress, *,
                  now: datetime, generation: int | None) -> None:
    """status.memory and PlanDrift from the peaks read (rank 0's from its progress)."""
    if status.plan is None:
        return
    if progress.peak_memory_bytes is not None:
        peaks = {**peaks, 0: progress.peak_memory_bytes}
    read = memory_drift.check(status.plan, peaks, progress.step)
    if read is None:
        return
    status.memory = memory = memory_drift.largest(status.memory, read)
    why = memory_drift.drift(memory)
    if why is None and not cond.find(status.conditions, cond.PLAN_DRIFT):
        return
    message = (f"rank {memory.largest_rank} peaked at {format_bytes(memory.measured_bytes)}, "
               f"{memory.ratio:.0%} of the planned {format_bytes(memory.planned_bytes)} per "
               f"rank ({memory.ranks_read} rank(s) read)")
    status.conditions = cond.set_condition(
        status.conditions, cond.PLAN_DRIFT, "True" if why else "False", why or "WithinThePlan",
        message, generation=generation, now=now)


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"


def refresh_progress(reconciler: Reconciler, namespace: str, name: str,
                     timeout: float = 2.0) -> None:
    """One read of rank 0's metrics for a Running job; a no-op in any other phase.

    The HTTP read happens outside the job's lock (a slow endpoint must not hold up the
    lifecycle); the status is then read again (the watch's body when it is current) and
    written under the lock."""
    cluster = reconciler.cluster
    body = cluster.current_finetunejob(namespace, name)
    status = parse_status((body or {}).get("status"))
    if body is None or status.phase != "Running" or not status.active_job:
        return
    pods = cluster.list_pods(namespace, name)
    url = rank0_metrics_url(pods, status.active_job)
    progress, error, peaks = None, None, {}
    if url is None:
        error = f"node rank 0 of Job {status.active_job} has no pod IP"
    else:
        try:
            progress = fetch_progress(url, timeout=timeout)
        except ProgressUnavailable as err:
            error = str(err)
    if progress is not None and status.plan is not None:
        peaks = _other_ranks_peaks(pods, status.active_job, status.plan.gpus_per_node, timeout)
    with reconciler.locks(namespace, name):
        body = cluster.current_finetunejob(namespace, name)
        current = parse_status((body or {}).get("status"))
        if body is None or current.phase != "Running" or current.active_job != status.active_job:
            return  # the job moved on while we were reading
        new = with_progress(current, progress, error, now=reconciler.clock(),
                            generation=body["metadata"].get("generation"), peaks=peaks)
        cluster.write_status(namespace, name, body.get("status"), new, keep=())
        _warn_of_drift(reconciler, body, current, new)
    if progress is not None:
        reconciler.metrics.observe_progress(namespace, name, progress)
        if new.goodput is not None:
            reconciler.metrics.observe_goodput(namespace, name, new.goodput)
        redone = (new.lost_work.steps_redone if new.lost_work else 0) - (
            current.lost_work.steps_redone if current.lost_work else 0)
        reconciler.metrics.observe_steps_redone(namespace, name, redone)


def _other_ranks_peaks(pods: list[dict[str, Any]], job: str, gpus_per_node: int,
                       timeout: float) -> dict[int, int]:
    """The peak memory of every rank but 0 that answers (rank 0's comes with its progress)."""
    peaks = {}
    for rank, url in rank_metrics_urls(pods, job, gpus_per_node).items():
        if rank == 0:
            continue
        try:
            peak = fetch_progress(url, timeout=timeout).peak_memory_bytes
        except ProgressUnavailable:
            continue
        if peak is not None:
            peaks[rank] = peak
    return peaks


def _warn_of_drift(reconciler: Reconciler, body: dict[str, Any], old: FineTuneJobStatus,
                   new: FineTuneJobStatus) -> None:
    """One Warning Event when PlanDrift turns True, or True for another reason."""
    before = cond.find(old.conditions, cond.PLAN_DRIFT)
    after = cond.find(new.conditions, cond.PLAN_DRIFT)
    if after is None or after.status != "True":
        return
    if before is not None and before.status == "True" and before.reason == after.reason:
        return
    reconciler.cluster.post_event(body, Emit("Warning", cond.PLAN_DRIFT,
                                             f"{after.reason}: {after.message}"),
                                  reconciler.clock())
