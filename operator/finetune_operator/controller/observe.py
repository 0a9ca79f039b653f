"""The lifecycle's input, built from what the API server returned: the raw Job and Pod dicts
become the typed attempts of lifecycle/observation.py. The only place that reads their fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finetune_operator import names
from finetune_operator.lifecycle.observation import (
    Attempt,
    ContainerState,
    Observed,
    PodState,
    SizingPod,
)
from finetune_operator.render import Owner

Obj = dict[str, Any]


def observation(body: Obj, status: Any, *, config_map: Obj | None = None,
                service: Obj | None = None, jobs: dict[int, Obj] | None = None,
                pods: list[Obj] | None = None, sizing_pod: Obj | None = None) -> Observed:
    """A FineTuneJob `body` (its status already parsed) and the children read for it."""
    meta = body["metadata"]
    return Observed(
        owner=Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]),
        generation=int(meta.get("generation") or 1),
        spec=body.get("spec") or {},
        status=status,
        started_config=None if config_map is None else _config_text(config_map),
        has_service=service is not None,
        attempts={number: attempt(job, pods or []) for number, job in (jobs or {}).items()},
        sizing_pod=None if sizing_pod is None else sizing_pod_state(sizing_pod),
    )


def sizing_pod_state(pod: Obj) -> SizingPod:
    """The sizing pod: its phase and its container's termination message."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    message, waiting = "", ""
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        message = message or str((state.get("terminated") or {}).get("message") or "")
        waiting = waiting or str((state.get("waiting") or {}).get("reason") or "")
    return SizingPod(
        name=meta.get("name", ""),
        key=(meta.get("annotations") or {}).get(names.SIZING_KEY_ANNOTATION, ""),
        phase=status.get("phase", "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        message=message or str(status.get("message") or ""),
        waiting_reason=waiting,
    )


def _config_text(config_map: Obj) -> str:
    text = (config_map.get("data") or {}).get(names.CONFIG_KEY)
    return text if isinstance(text, str) else ""


def attempt(job: Obj, pods: list[Obj]) -> Attempt:
    """A batch Job with those of `pods` the Job controller made for it."""
    name = job["metadata"]["name"]
    status = job.get("status") or {}
    failed = _true_condition(status, "Failed")
    return Attempt(
        name=name,
        suspended=bool((job.get("spec") or {}).get("suspend")),
        complete=_true_condition(status, "Complete") is not None,
        failed=failed is not None,
        failure_reason=(failed or {}).get("reason", "Failed"),
        failure_message=(failed or {}).get("message", ""),
        failed_pods=int(status.get("failed") or 0),
        succeeded_pods=int(status.get("succeeded") or 0),
        pods=tuple(pod_state(p) for p in pods
                   if _labels(p).get(names.JOB_NAME_LABEL) == name),
    )


def pod_state(pod: Obj) -> PodState:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    scheduled = next((c for c in status.get("conditions") or []
                      if c.get("type") == "PodScheduled"), None) or {}
    reason, code = _termination(status)
    return PodState(
        name=meta.get("name", ""),
        phase=status.get("phase", "Pending"),
        index=(meta.get("annotations") or {}).get(names.COMPLETION_INDEX_ANNOTATION),
        deleting=bool(meta.get("deletionTimestamp")),
        deletion_deadline=timestamp(meta.get("deletionTimestamp")),
        scheduled=scheduled.get("status") == "True",
        waiting_since=timestamp(scheduled.get("lastTransitionTime")
                                or meta.get("creationTimestamp")),
        scheduler_message=scheduled.get("message") or "not scheduled",
        exit_reason=reason,
        exit_code=code,
        finished_at=_finished_at(status),
        containers=tuple(
            [container_state(cs, init=True) for cs in status.get("initContainerStatuses") or []]
            + [container_state(cs) for cs in status.get("containerStatuses") or []]),
    )


def container_state(status: Obj, *, init: bool = False) -> ContainerState:
    """One entry of a pod's containerStatuses (or initContainerStatuses)."""
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    return ContainerState(
        name=str(status.get("name") or "?"),
        init=init,
        image=str(status.get("image") or ""),
        running="running" in state,
        waiting_reason=str(waiting.get("reason") or ""),
        waiting_message=str(waiting.get("message") or ""),
        last_exit_reason=str(last.get("reason") or ""),
        last_exit_code=last.get("exitCode", "?"),
    )


def _termination(status: Obj) -> tuple[str, Any]:
    """The trainer container's termination reason and exit code; else the model download's,
    when that init container failed (the trainer never ran); else the pod's reason."""
    trainer = _terminated(status.get("containerStatuses"), names.TRAINER_CONTAINER)
    if trainer:
        return trainer.get("reason", "Error"), trainer.get("exitCode", "?")
    download = _terminated(status.get("initContainerStatuses"), names.MODEL_CACHE_CONTAINER)
    if download and download.get("exitCode"):
        reason = download.get("reason", "Error")
        where = f"init container {names.MODEL_CACHE_CONTAINER} (downloading the model)"
        return f"{reason} in {where}", download["exitCode"]
    return status.get("reason") or "Failed", "?"


def _terminated(statuses: list[Obj] | None, name: str) -> Obj:
    """How container `name` terminated; {} while it has not."""
    for cs in statuses or []:
        if cs.get("name") == name:
            return (cs.get("state") or {}).get("terminated") or {}
    return {}


def _finished_at(status: Obj) -> str:
    for cs in status.get("containerStatuses") or []:
        finished = ((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if finished:
            return str(finished)
    return ""


def _true_condition(status: Obj, type_: str) -> Obj | None:
    return next((c for c in status.get("conditions") or []
                 if c.get("type") == type_ and c.get("status") == "True"), None)


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)  # Python 3.11 reads the trailing Z
    except ValueError:
        return None
