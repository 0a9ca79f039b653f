"""What the pods of an attempt say: all running, a failed rank and why, one that is stuck."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from finetune_contract.layout import EXIT_STOPPED

from finetune_operator import names
from finetune_operator.lifecycle.observation import Attempt, ContainerState, PodState

# The kubelet's waiting reasons that keep a container from starting until someone fixes
# something outside the pod (the image, a pull secret, a Secret or ConfigMap): restarting
# the gang would meet them again, so the job waits, named.
IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull")
CONFIG_ERROR = "CreateContainerConfigError"
BLOCKED = (*IMAGE_PULL, "InvalidImageName", CONFIG_ERROR, "CreateContainerError")
CRASH_LOOP = "CrashLoopBackOff"
# How long past its grace period a deleted pod still counts as stopping: the kubelet kills it
# at the deadline and reports within seconds; one still there later is on a lost node.
STOP_MARGIN = timedelta(seconds=30)


def failed(attempt: Attempt) -> list[PodState]:
    """The attempt's failed ranks: its Failed pods, except those a suspension deleted.

    Suspending a Job (Kueue's preemption, runPolicy.suspend) makes the Job controller delete
    its pods; each trainer stops on that SIGTERM with a checkpoint and exits 143, so the pod
    ends Failed while it is being deleted. That is no rank failure, and the Job controller
    does not count it either (it removes the pod's tracking finalizer before deleting it, so
    status.failed stays and the Job does not fail). A pod that failed by itself is not
    deleted by the suspension: it still counts."""
    return [p for p in attempt.pods
            if p.phase == "Failed" and not (attempt.suspended and p.deleting)]


def any_failed(attempt: Attempt) -> bool:
    return bool(failed(attempt))


def still_training(pods: tuple[PodState, ...], now: datetime) -> tuple[PodState, ...]:
    """The pods of a failed attempt whose trainer may still write: running, and not past
    their grace period by more than STOP_MARGIN (a pod that outlives it sits on a node that
    is gone, and will never report). On SIGTERM they write the emergency checkpoint; a next
    attempt started meanwhile would resume from an older one and delete the one in writing
    as incomplete."""
    return tuple(p for p in pods if p.phase == "Running" and _crash_loop(p) is None and not (
        p.deleting and p.deletion_deadline and now > p.deletion_deadline + STOP_MARGIN))


def all_running(pods: tuple[PodState, ...], nodes: int) -> bool:
    """Every node rank has a running pod that is not being deleted."""
    running = {p.index for p in pods if p.phase == "Running" and not p.deleting}
    return len(running - {None}) >= nodes


@dataclass(frozen=True)
class StuckContainer:
    """A container of a live pod that waits on something the kubelet cannot fix alone."""

    pod: PodState
    container: ContainerState
    others: int = 0  # how many more pods have one

    @property
    def reason(self) -> str:
        return self.container.waiting_reason

    @property
    def blocking(self) -> bool:
        """It keeps its rank from starting (an image or config error); otherwise it is a
        container crash-looping beside a trainer that runs."""
        return self.reason in BLOCKED

    def message(self, namespace: str) -> str:
        """The reason, which pod and container, what the kubelet says, what to do."""
        more = f" (and {self.others} more pod(s))" if self.others else ""
        return (f"{_said(self.pod, self.container, more)}; "
                f"{_what_to_do(self.pod, self.container, namespace)}")

    def told_by(self, reason: str, message: str) -> bool:
        """Whether a condition with this reason and message names the same problem already:
        the kubelet alternates ErrImagePull and ImagePullBackOff for one image, while a
        config error's message names the Secret or key that is missing."""
        if self.reason in IMAGE_PULL:
            return reason in IMAGE_PULL
        if self.reason == CONFIG_ERROR:
            return reason == CONFIG_ERROR and self.container.waiting_message in message
        return reason == self.reason


def stuck(pods: tuple[PodState, ...]) -> StuckContainer | None:
    """The first container (by node rank, init containers first) that waits on an image or
    config error, else one that crash-loops without keeping its rank from training (a
    sidecar); None when none does.

    A crash loop that keeps a rank from training is a rank failure instead (crash_looping)."""
    found = [(pod, c) for pod in _live(pods) for c in pod.containers
             if c.waiting_reason in BLOCKED
             or (c.waiting_reason == CRASH_LOOP and _crash_loop(pod) is None)]
    if not found:
        return None
    # What blocks a rank first: a crash-looping sidecar only when nothing else is wrong.
    pod, container = min(found, key=lambda pc: pc[1].waiting_reason not in BLOCKED)
    return StuckContainer(pod, container, others=len({p.name for p, _ in found} - {pod.name}))


def crash_looping(pods: tuple[PodState, ...]) -> tuple[PodState, ContainerState] | None:
    """A rank that cannot train because a container crash-loops: the trainer itself (the
    pod template says restartPolicy Never, but a webhook or policy may change it), or an
    init container (a restartable sidecar) before the trainer ever ran."""
    for pod in _live(pods):
        container = _crash_loop(pod)
        if container is not None:
            return pod, container
    return None


def failure_summary(attempt: Attempt, namespace: str = "") -> str:
    """The cause of a failed attempt: the first pod that failed by itself (not stopped by
    SIGTERM after its emergency checkpoint, as the rest of a broken gang is); else a
    crash-looping rank; else the first stopped pod (a deleted or preempted one); else the
    Job's failure reason."""
    ranks = failed(attempt)
    broke = [p for p in ranks if p.exit_code != EXIT_STOPPED]
    if broke:
        return _failed(_first(broke))
    looping = crash_looping(attempt.pods)
    if looping is not None:
        pod, container = looping
        return (f"{_said(pod, container)}; read its logs: "
                f"{logs_command(pod, container, namespace)}")
    if ranks:
        return _failed(_first(ranks))
    if attempt.failed:
        return (f"Job failed: {attempt.failure_reason}: {attempt.failure_message}"
                .rstrip(": "))
    return "a node rank failed"


def _first(pods: list[PodState]) -> PodState:
    """The one that finished first; one without a finish time only when none has one."""
    return min(pods, key=lambda p: (not p.finished_at, p.finished_at))


OOM_KILLED = "OOMKilled"
# The operator sets no memory limit (it requests the planned host memory), so a trainer
# killed for memory met a limit a LimitRange or policy set, or the node itself ran out.
OOM_ADVICE = ("the trainer went over its memory limit (set by a LimitRange or policy, or "
              "the node ran out): raise spec.resources.memory and that limit, or give each "
              "rank less to hold (more ranks, a sharded strategy, tuning: lora)")


def _failed(pod: PodState) -> str:
    rank = pod.index if pod.index is not None else "?"
    said = (f"node rank {rank} (pod {pod.name}) failed: {pod.exit_reason}, exit code "
            f"{pod.exit_code}")
    return f"{said}; {OOM_ADVICE}" if pod.exit_reason == OOM_KILLED else said


def logs_command(pod: PodState, container: ContainerState, namespace: str) -> str:
    """kubectl's command for the logs of the container's last (crashed) run."""
    scope = f" -n {namespace}" if namespace else ""
    return f"kubectl logs{scope} {pod.name} -c {container.name} --previous"


def unschedulable_message(pods: tuple[PodState, ...], now: datetime,
                          after_seconds: float) -> str | None:
    """The scheduler's message for a pod Pending longer than `after_seconds`, if any."""
    for pod in pods:
        if pod.phase != "Pending" or pod.scheduled:
            continue  # scheduled: pulling the image or starting
        since = pod.waiting_since
        if since is None or (now - since).total_seconds() < after_seconds:
            continue
        return (f"pod {pod.name} pending for {int((now - since).total_seconds())} s: "
                f"{pod.scheduler_message}")
    return None


# --------------------------------------------------------------------------- helpers


def _live(pods: tuple[PodState, ...]) -> list[PodState]:
    """The pods that may still start or run, by node rank."""
    alive = [p for p in pods if p.phase in ("Pending", "Running") and not p.deleting]
    return sorted(alive, key=lambda p: (_rank_order(p.index), p.name))


def _rank_order(index: str | None) -> int:
    return int(index) if index is not None and index.isdigit() else 1 << 30


def _crash_loop(pod: PodState) -> ContainerState | None:
    trainer = next((c for c in pod.containers
                    if c.name == names.TRAINER_CONTAINER and not c.init), None)
    for container in pod.containers:
        if container.waiting_reason != CRASH_LOOP:
            continue
        if container is trainer or (container.init and not (trainer and trainer.running)):
            return container
    return None


def _said(pod: PodState, container: ContainerState, more: str = "") -> str:
    """The kubelet's reason, where, its message, and how a crash-looping container last
    ended: `ImagePullBackOff in node rank 1 (pod P) container trainer: Back-off pulling..."""
    rank = pod.index if pod.index is not None else "?"
    kind = "init container" if container.init else "container"
    said = (f"{container.waiting_reason} in node rank {rank} (pod {pod.name}) {kind} "
            f"{container.name}{more}")
    if container.waiting_message:
        said += f": {container.waiting_message}"
    if container.waiting_reason == CRASH_LOOP and container.last_exit_reason:
        said += (f" (last run: {container.last_exit_reason}, exit code "
                 f"{container.last_exit_code})")
    return said


def _what_to_do(pod: PodState, container: ContainerState, namespace: str) -> str:
    reason = container.waiting_reason
    scope = f" -n {namespace}" if namespace else ""
    image = f"image {container.image}" if container.image else "the image"
    if reason in IMAGE_PULL:
        return (f"check that {image} exists (spec.image, else the operator's default image; "
                "it cannot change after the start: delete the job and create it again with "
                "the right one) and that the node may pull it (a private registry needs a "
                "pull secret in the imagePullSecrets of the namespace's default "
                f"ServiceAccount); kubectl describe pod{scope} {pod.name} shows the pull errors")
    if reason == "InvalidImageName":
        return (f"{image} is not a valid image reference: fix spec.image (else the "
                "operator's default image) and create the job again; the image cannot change "
                "after the start")
    if reason == CONFIG_ERROR:
        return (f"create the Secret or ConfigMap it names, with that key, in namespace "
                f"{namespace or 'of the job'} (spec.secrets.hfToken names the token's Secret); "
                "the kubelet retries and the pod starts by itself")
    if reason == CRASH_LOOP:
        return f"read its logs: {logs_command(pod, container, namespace)}"
    return f"kubectl describe pod{scope} {pod.name} tells more"
