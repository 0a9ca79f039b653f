"""Kubernetes-style conditions: set one, keeping lastTransitionTime when the status holds.

Pure functions over lists of `api.Condition`; the lifecycle and the progress timer use them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from finetune_contract.api import Condition

from finetune_operator.caps import shorten

VALID = "Valid"
PLANNED = "Planned"
CREATED = "Created"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
UNSCHEDULABLE = "Unschedulable"
PODS_STUCK = "PodsStuck"
SPEC_CHANGE_REJECTED = "SpecChangeRejected"
PROGRESS_AVAILABLE = "ProgressAvailable"
OUTPUT_PERSISTED = "OutputPersisted"
SIZED = "Sized"  # a model the catalog lacks, read by a sizing pod
PLAN_DRIFT = "PlanDrift"  # the ranks' measured peak memory strays from the plan

Status = Literal["True", "False", "Unknown"]


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == "True"


def set_condition(conditions: list[Condition], type_: str, status: Status, reason: str,
                  message: str, *, generation: int | None, now: datetime) -> list[Condition]:
    """A new list with `type_` set. lastTransitionTime moves only when the status changes.
    The message is shortened to caps.MAX_MESSAGE (it may quote a user's value)."""
    message = shorten(message)
    old = find(conditions, type_)
    since = old.last_transition_time if old and old.status == status else now
    new = Condition(type=type_, status=status, reason=reason, message=message,
                    last_transition_time=since, observed_generation=generation)
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def remove(conditions: list[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]
