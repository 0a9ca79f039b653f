"""What the lifecycle asks the shell to do, and the decision that carries it with the status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from finetune_contract.api import FineTuneJobStatus


@dataclass(frozen=True)
class Create:
    obj: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: Literal["ConfigMap", "Service", "Job", "Pod"]
    name: str


@dataclass(frozen=True)
class SetSuspend:
    job: str
    suspend: bool


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event to post on the FineTuneJob once its status is written."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = Create | Delete | SetSuspend | Emit


@dataclass
class Decision:
    actions: list[Action]
    status: FineTuneJobStatus
