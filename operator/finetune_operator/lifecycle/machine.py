"""The entry points of the state machine: `decide` what to do about one FineTuneJob now, and
whether a periodic resync could decide anything new (`resync_due`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finetune_contract.api import TERMINAL_PHASES, FineTuneJobStatus

from finetune_operator.lifecycle import spec as specs
from finetune_operator.lifecycle.actions import Create, Decision, Delete
from finetune_operator.lifecycle.calibrate import record_memory
from finetune_operator.lifecycle.cleanup import clean_up, ttl_due
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.lifecycle.phases import follow
from finetune_operator.lifecycle.start import PlanFn, start
from finetune_operator.lifecycle.step import Step, fail_internal, fail_rejected, has_started
from finetune_operator.planner import plan_job
from finetune_operator.settings import Settings


def decide(observed: Observed, now: datetime, settings: Settings,
           plan_fn: PlanFn | None = None, caches: specs.SpecCaches | None = None) -> Decision:
    """What to do about one FineTuneJob now, and its status afterwards."""
    step = Step(observed, now, settings, observed.status.model_copy(deep=True),
                caches or specs.SpecCaches())
    if _is_finished(step):
        clean_up(step)
    elif not has_started(step.status):
        if start(step, plan_fn or plan_job):
            follow(step, plan_fn or plan_job)
    else:
        follow(step, plan_fn or plan_job)
    record_memory(step)  # the reconcile it Succeeded in, or any later one
    step.status.observed_generation = observed.generation
    return Decision(step.actions, step.status)


def internal_error(observed: Observed, now: datetime, settings: Settings,
                   error: BaseException) -> Decision:
    """What to do when `decide` raised `error` about this job: fail it (reason
    InternalError), recorded for its generation so that neither a resync nor a restart of
    the operator decides about it again until it is edited."""
    step = Step(observed, now, settings, observed.status.model_copy(deep=True),
                specs.SpecCaches())
    fail_internal(step, error)
    step.status.observed_generation = observed.generation
    return Decision(step.actions, step.status)


def child_rejected(observed: Observed, decision: Decision, now: datetime, settings: Settings,
                   refused: Create, reason: str, created: list[Create]) -> Decision:
    """The decision that replaces `decision` once the API server refused to create `refused`
    for `reason`, which no retry changes (a 422, say): the job Failed with the reason in its
    status and one Warning Event, and the children `decision` created before it deleted (a
    job never keeps part of its children). The rest of `decision`'s actions are dropped."""
    step = Step(observed, now, settings, decision.status.model_copy(deep=True),
                specs.SpecCaches())
    meta = refused.obj["metadata"]
    fail_rejected(step, f"the API server refused {refused.obj['kind']} {meta['name']}: "
                  f"{reason}")
    step.status.active_job = None  # no Job of this attempt exists
    deletes = [Delete(c.obj["kind"], c.obj["metadata"]["name"]) for c in reversed(created)]
    return Decision([*deletes, *step.actions], step.status)


def resync_due(spec: dict[str, Any], status: FineTuneJobStatus, generation: int, name: str,
               now: datetime, settings: Settings,
               caches: specs.SpecCaches | None = None) -> bool:
    """Whether a periodic resync at `now` can change anything that `decide` would decide.

    Active jobs: always (pods are not watched; deadlines and Unschedulable are timed). A
    finished job: only once its TTL is due, since `clean_up` does nothing before. A job
    rejected before it started: only an edit re-evaluates it, and an edit is an update."""
    if status.phase not in TERMINAL_PHASES or generation != status.observed_generation:
        return True
    if not has_started(status):
        return False
    current, _ = specs.validated(name, specs.with_defaults(spec, settings),
                                 caches or specs.SpecCaches())
    if current is None:
        return True  # its TTL is in the started copy, which only a full reconcile reads
    return ttl_due(current, status.completion_time, now)


def _is_finished(step: Step) -> bool:
    if step.status.phase not in TERMINAL_PHASES:
        return False
    # A job rejected before it started may be fixed by editing it: evaluate it again.
    edited = step.observed.generation != step.status.observed_generation
    return has_started(step.status) or not edited
