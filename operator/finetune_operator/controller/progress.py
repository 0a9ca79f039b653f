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
from finetune_operator import goodput, lost_work, names
from finetune_operator.controller.kube import parse_status
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.scrape import ProgressUnavailable, fetch_progress


def rank0_metrics_url(pods: list[dict[str, Any]], job_name: str) -> str | None:
    """http://<pod IP>:<metrics port>/metrics of node rank 0 of `job_name`, once it has an IP."""
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(names.JOB_NAME_LABEL) != job_name:
            continue
        if (meta.get("annotations") or {}).get(names.COMPLETION_INDEX_ANNOTATION) != "0":
            continue
        ip = (pod.get("status") or {}).get("podIP")
        if ip and not meta.get("deletionTimestamp"):
            return f"http://{ip}:{_metrics_port(pod)}/metrics"
    return None


def _metrics_port(pod: dict[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == names.METRICS_PORT_NAME:  # local rank 0
                return int(port["containerPort"])
    return METRICS_PORT


def with_progress(status: FineTuneJobStatus, progress: Progress | None, error: str | None,
                  *, now: datetime, generation: int | None) -> FineTuneJobStatus:
    """The status after one read of rank 0: fresh progress, or the old one marked stale."""
    new = status.model_copy(deep=True)
    if progress is not None:
        new.progress = progress
        new.lost_work, new_run = lost_work.observe(status.lost_work, progress, now)
        new.goodput = goodput.observe(status.goodput, progress, new_run, status.plan,
                                      status.start_time, now)
        new.conditions = cond.set_condition(new.conditions, cond.PROGRESS_AVAILABLE, "True",
                                            "MetricsRead", "", generation=generation, now=now)
    else:
        stale = (status.progress or Progress()).model_copy(update={"stale": True})
        new.progress = stale
        new.conditions = cond.set_condition(
            new.conditions, cond.PROGRESS_AVAILABLE, "False", "MetricsUnreachable",
            f"{error}; progress is from {_when(stale.updated_at)}",
            generation=generation, now=now)
    return new


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
    url = rank0_metrics_url(cluster.list_pods(namespace, name), status.active_job)
    progress, error = None, None
    if url is None:
        error = f"node rank 0 of Job {status.active_job} has no pod IP"
    else:
        try:
            progress = fetch_progress(url, timeout=timeout)
        except ProgressUnavailable as err:
            error = str(err)
    with reconciler.locks(namespace, name):
        body = cluster.current_finetunejob(namespace, name)
        current = parse_status((body or {}).get("status"))
        if body is None or current.phase != "Running" or current.active_job != status.active_job:
            return  # the job moved on while we were reading
        new = with_progress(current, progress, error, now=reconciler.clock(),
                            generation=body["metadata"].get("generation"))
        cluster.write_status(namespace, name, body.get("status"), new, keep=())
    if progress is not None:
        reconciler.metrics.observe_progress(namespace, name, progress)
        if new.goodput is not None:
            reconciler.metrics.observe_goodput(namespace, name, new.goodput)
        redone = (new.lost_work.steps_redone if new.lost_work else 0) - (
            current.lost_work.steps_redone if current.lost_work else 0)
        reconciler.metrics.observe_steps_redone(namespace, name, redone)
