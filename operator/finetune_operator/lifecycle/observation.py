"""What the shell read from the API server about one FineTuneJob, typed.

controller/observe.py builds it from the raw FineTuneJob, its ConfigMap, Service, Jobs and
pods; the lifecycle never parses an API object itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from finetune_contract.api import FineTuneJobStatus

from finetune_operator.calibration import Table
from finetune_operator.render import Owner


@dataclass(frozen=True)
class ContainerState:
    """One container of a pod (an init container too), as its status says."""

    name: str
    init: bool = False  # an init container (or a sidecar declared as one)
    image: str = ""
    running: bool = False
    # Why it is not running yet, as the kubelet says ("ImagePullBackOff",
    # "CreateContainerConfigError", "CrashLoopBackOff", ...); "" when it is not waiting.
    waiting_reason: str = ""
    waiting_message: str = ""
    # How its previous run ended (lastState.terminated), for a container that restarts.
    last_exit_reason: str = ""
    last_exit_code: int | str = "?"


@dataclass(frozen=True)
class PodState:
    """One pod of an attempt's Job."""

    name: str
    phase: str = "Pending"
    index: str | None = None  # the completion index: the node rank
    deleting: bool = False
    # metadata.deletionTimestamp: when its grace period ends and the kubelet kills it.
    deletion_deadline: datetime | None = None
    scheduled: bool = False  # the scheduler placed it (PodScheduled)
    # Since when it waits to be scheduled (PodScheduled's transition, else its creation).
    waiting_since: datetime | None = None
    scheduler_message: str = "not scheduled"
    # How it ended: the trainer container's termination, else the pod's own reason.
    exit_reason: str = "Failed"
    exit_code: int | str = "?"
    finished_at: str = ""  # when a container terminated ("" when none has)
    # Its init containers, then its containers.
    containers: tuple[ContainerState, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """The batch Job of one attempt and its pods."""

    name: str
    suspended: bool = False
    complete: bool = False  # the Job's Complete condition
    failed: bool = False  # the Job's Failed condition
    failure_reason: str = "Failed"  # of the Failed condition
    failure_message: str = ""
    failed_pods: int = 0  # status.failed
    succeeded_pods: int = 0  # status.succeeded
    pods: tuple[PodState, ...] = ()


@dataclass(frozen=True)
class SizingPod:
    """The pod that reads a model the catalog lacks (finetune_operator.sizing)."""

    name: str
    key: str = ""  # the sizing key it was made for (names.SIZING_KEY_ANNOTATION)
    phase: str = "Pending"
    deleting: bool = False
    # Its container's termination message: the result, or the error, as JSON.
    message: str = ""
    waiting_reason: str = ""  # why its container does not run yet (ErrImagePull, ...)


@dataclass(frozen=True)
class Observed:
    """One FineTuneJob and its children as the shell read them."""

    owner: Owner
    generation: int
    spec: dict[str, Any]  # as stored: unvalidated
    status: FineTuneJobStatus
    # The trainer config the ConfigMap holds (the spec the job started with), as text.
    # None: there is no ConfigMap; "": there is one, without a config.
    started_config: str | None = None
    has_service: bool = False
    # Attempts status.restarts and status.restarts + 1 (the latter only exists when the
    # operator crashed between creating its Job and recording the restart), and around them.
    attempts: dict[int, Attempt] = field(default_factory=dict)
    # The sizing pod, read while the job waits for it (condition Sized=Unknown).
    sizing_pod: SizingPod | None = None
    # The operator's memory calibration table (its ConfigMap, as the shell last read it),
    # which plans are made with; None: calibration is off.
    calibration: Table | None = None
