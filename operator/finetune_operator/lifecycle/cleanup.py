"""A finished job (Succeeded or Failed): its children go once its TTL is due. The output
volume is never touched. The TTL rule is written once, here, for the reconcile and for the
resync that decides whether a reconcile is worth it."""

from __future__ import annotations

from datetime import datetime, timedelta

from finetune_contract.api import FineTuneJobSpec

from finetune_operator import names
from finetune_operator.lifecycle import spec as specs
from finetune_operator.lifecycle.actions import Action, Delete
from finetune_operator.lifecycle.start import current_spec
from finetune_operator.lifecycle.step import Step


def ttl_due(spec: FineTuneJobSpec | None, completed: datetime | None, now: datetime) -> bool:
    """Whether runPolicy.ttlSecondsAfterFinished of `spec` has passed since `completed`."""
    ttl = spec.run_policy.ttl_seconds_after_finished if spec else None
    return ttl is not None and completed is not None and now - completed >= timedelta(
        seconds=ttl)


def clean_up(step: Step) -> None:
    """Delete the children once the TTL is due (the current spec's, else the started one's)."""
    current, _ = current_spec(step)
    spec = current or specs.started(step.observed.started_config, step.caches)
    if not ttl_due(spec, step.status.completion_time, step.now):
        return
    deletes: list[Action] = []
    if step.observed.started_config is not None:
        deletes.append(Delete("ConfigMap", names.config_map_name(step.name)))
    if step.observed.has_service:
        deletes.append(Delete("Service", names.service_name(step.name)))
    for number in sorted(step.observed.attempts):
        deletes.append(Delete("Job", names.batch_job_name(step.name, number)))
    if deletes:
        assert spec is not None  # ttl_due
        step.actions += deletes
        step.emit("Normal", "CleanedUp", f"deleted the children "
                  f"{spec.run_policy.ttl_seconds_after_finished} s after the job finished "
                  "(runPolicy.ttlSecondsAfterFinished); the output stays")
