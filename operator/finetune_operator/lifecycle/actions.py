"""What the lifecycle asks the shell to do, and the decision that carries it with the status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from finetune_contract.api import FineTuneJobStatus

from finetune_operator.calibration import Key, Run


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


@dataclass(frozen=True)
class RecordMemory:
    """A finished job's memory reading for the operator's calibration table: the shell adds
    it to the ConfigMap (controller/calibration.py) before it writes the status."""

    key: Key
    run: Run


Action = Create | Delete | SetSuspend | Emit | RecordMemory


@dataclass
class Decision:
    actions: list[Action]
    status: FineTuneJobStatus
