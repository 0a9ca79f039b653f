"""One decision in the making: the status being built, the actions so far, and the moves
every phase shares (set a condition, post an Event, enter a phase, fail)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from finetune_contract.api import FineTuneJobStatus, Plan

from finetune_operator import conditions as cond
from finetune_operator.caps import MAX_ECHO, shorten
from finetune_operator.lifecycle.actions import Action, Emit
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.lifecycle.spec import SpecCaches
from finetune_operator.settings import Settings

# The Failed reason of a job the operator could not decide about.
INTERNAL_ERROR = "InternalError"


@dataclass
class Step:
    observed: Observed
    now: datetime
    settings: Settings
    status: FineTuneJobStatus
    caches: SpecCaches
    actions: list[Action] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.observed.owner.name

    def condition(self, type_: str, status: cond.Status, reason: str, message: str = "") -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, type_, status, reason, message,
            generation=self.observed.generation, now=self.now)

    def emit(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.actions.append(Emit(type_, reason, shorten(message)))

    def phase(self, phase: str, message: str) -> None:
        self.status.phase = phase  # type: ignore[assignment]
        self.status.message = shorten(message)


def has_started(status: FineTuneJobStatus) -> bool:
    return status.plan is not None and status.plan.fits


def attempt_number(status: FineTuneJobStatus) -> int:
    """The current attempt: one more after each gang restart and each re-plan. Its Job is
    `names.batch_job_name(job, attempt_number(status))`."""
    return status.restarts + status.replans


# The SpecChangeRejected reason of an edit to a field that cannot change while a job runs.
IMMUTABLE_FIELD_CHANGED = "ImmutableFieldChanged"


def reject_change(step: Step, message: str, reason: str = IMMUTABLE_FIELD_CHANGED) -> None:
    """SpecChangeRejected: the edit is not applied, the job goes on as it was. One Warning
    Event per new message."""
    previous = cond.find(step.status.conditions, cond.SPEC_CHANGE_REJECTED)
    if previous is None or previous.status != "True" or previous.message != message:
        step.emit("Warning", cond.SPEC_CHANGE_REJECTED, message)
    step.condition(cond.SPEC_CHANGE_REJECTED, "True", reason, message)


def planned_message(plan: Plan) -> str:
    return f"planned {plan.strategy} on {plan.nodes} x {plan.gpus_per_node} {plan.gpu}"


def fail(step: Step, reason: str, message: str) -> None:
    step.condition(cond.FAILED, "True", reason, message)
    step.condition(cond.RUNNING, "False", reason, message)
    step.phase("Failed", message)
    step.status.completion_time = step.status.completion_time or step.now
    step.emit("Warning", reason, message)


def fail_internal(step: Step, error: BaseException) -> None:
    """The operator itself failed on this job (a bug, or an input nothing else refused):
    the job fails, not the operator, and stays failed until it is edited."""
    owner = step.observed.owner
    fail(step, INTERNAL_ERROR, f"the operator failed on FineTuneJob {owner.namespace}/"
         f"{owner.name} ({type(error).__name__}: {shorten(str(error), MAX_ECHO)}); its log "
         "has the traceback: edit the job to try again, and report it if it persists")


# A child the API server refuses, or would (apicheck.py): no retry can create it.
CHILD_REJECTED = "ChildRejected"
# How much of the API server's reasons a status message and its Event repeat.
REJECTION_MESSAGE_MAX = 900


def fail_rejected(step: Step, message: str) -> None:
    """Failed because a child cannot be created: the spec must change, and a started job's
    spec cannot (it is deleted and created again). The failure is the one Event: those the
    decision meant to post on the way (EphemeralOutput, ...) are dropped."""
    step.actions = [a for a in step.actions if not isinstance(a, Emit)]
    message = shorten(message, REJECTION_MESSAGE_MAX)
    message += "; fix the spec, then delete and re-create the job"
    step.condition(cond.CREATED, "False", CHILD_REJECTED, message)
    fail(step, CHILD_REJECTED, message)


def fail_invalid(step: Step, message: str) -> None:
    step.condition(cond.VALID, "False", "InvalidSpec", message)
    fail(step, "InvalidSpec", message)


# The reason of a job the operator's policy (the chart's `policy`, policy.py) refuses.
POLICY_VIOLATION = "PolicyViolation"


def fail_policy(step: Step, message: str) -> None:
    step.condition(cond.VALID, "False", POLICY_VIOLATION, message)
    fail(step, POLICY_VIOLATION, message)
