"""The FineTuneJob state machine: (what was observed, now, settings) -> (actions, new status).

A pure function of data, so every transition is unit-tested and a crash at any point is
harmless: the shell executes the actions (creates answer 409 when the object exists, deletes
404 when it is gone, both ignored) and only then writes the status, so the next reconcile
recomputes the same actions from the same observation.

Phases: Pending -> Running -> Succeeded | Failed, with Restarting (a rank failed; the gang
restarts from the latest checkpoint as the next attempt's Job) and Suspended on the way.
The attempt number is `status.restarts`; the Job of attempt k is `names.batch_job_name(job, k)`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from pydantic import ValidationError

from finetune_operator import conditions as cond
from finetune_operator import names, render
from finetune_contract.api import (
    TERMINAL_PHASES,
    FineTuneJobSpec,
    FineTuneJobStatus,
    Plan,
)
from finetune_operator.render import Owner
from finetune_operator.settings import Settings

PlanFn = Callable[[FineTuneJobSpec], Plan]
T = TypeVar("T")

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Observed:
    """One FineTuneJob and its children as the shell read them from the API server."""

    owner: Owner
    generation: int
    spec: dict[str, Any]  # as stored: unvalidated
    status: FineTuneJobStatus
    config_map: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    # Jobs of attempts status.restarts and status.restarts + 1 (the latter only exists when
    # the operator crashed between creating it and recording the restart).
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)  # of this FineTuneJob


@dataclass(frozen=True)
class Create:
    obj: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: Literal["ConfigMap", "Service", "Job"]
    name: str


@dataclass(frozen=True)
class SetSuspend:
    job: str
    suspend: bool


@dataclass(frozen=True)
class Emit:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = Create | Delete | SetSuspend | Emit


@dataclass
class Decision:
    actions: list[Action]
    status: FineTuneJobStatus


class ParseCache(Generic[T]):
    """A bounded memo of a pure parse, keyed by the exact text (or canonical JSON) parsed.

    Every reconcile needs the spec a job started with (the YAML in its ConfigMap) and the
    validated current spec; parsing them is most of a reconcile's CPU, and they rarely change.
    Keyed by content, not by resourceVersion: equal text parses to an equal result whatever
    the metadata says. The values are shared, so callers must not mutate them (the lifecycle
    only reads specs, and copies with `model_copy`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, parse: Callable[[str], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = parse(key)  # outside the lock: another job's parse need not wait
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def seed(self, key: str, value: T) -> None:
        """Remember what `key` parses to without parsing it (the caller made the text)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


# One entry per live job is enough (its started spec, its current spec); a few thousand
# parsed specs are a few MiB.
STARTED_SPECS: ParseCache[FineTuneJobSpec | None] = ParseCache(4096)
CURRENT_SPECS: ParseCache[tuple[FineTuneJobSpec | None, list[str]]] = ParseCache(4096)


# --------------------------------------------------------------------------- entry point


def reconcile(observed: Observed, now: datetime, settings: Settings,
              plan_fn: PlanFn | None = None) -> Decision:
    """What to do about one FineTuneJob now, and its status afterwards."""
    step = _Step(observed, now, settings, observed.status.model_copy(deep=True))
    if _is_finished(step):
        _finished(step)
    elif not _has_started(step.status):
        if _start(step, plan_fn or _default_planner()):
            _follow(step)
    else:
        _follow(step)
    step.status.observed_generation = observed.generation
    return Decision(step.actions, step.status)


def resync_due(spec: dict[str, Any], status: FineTuneJobStatus, generation: int, name: str,
               now: datetime, settings: Settings) -> bool:
    """Whether a periodic resync at `now` can change anything that `reconcile` would decide.

    Active jobs: always (pods are not watched; deadlines and Unschedulable are timed). A
    finished job: only once its TTL is due, since `_finished` does nothing before. A job
    rejected before it started: only an edit re-evaluates it, and an edit is an update."""
    if status.phase not in TERMINAL_PHASES or generation != status.observed_generation:
        return True
    if not _has_started(status):
        return False
    current, _ = _validated_spec(name, spec_with_defaults(spec, settings))
    if current is None:
        return True  # its TTL is in the started copy, which only a full reconcile reads
    ttl = current.run_policy.ttl_seconds_after_finished
    done = status.completion_time
    return ttl is not None and done is not None and now - done >= timedelta(seconds=ttl)


def _default_planner() -> PlanFn:
    from finetune_operator.planner import plan_job

    return plan_job


@dataclass
class _Step:
    observed: Observed
    now: datetime
    settings: Settings
    status: FineTuneJobStatus
    actions: list[Action] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.observed.owner.name

    def condition(self, type_: str, status: cond.Status, reason: str, message: str = "") -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, type_, status, reason, message,
            generation=self.observed.generation, now=self.now)

    def emit(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.actions.append(Emit(type_, reason, message))

    def phase(self, phase: str, message: str) -> None:
        self.status.phase = phase  # type: ignore[assignment]
        self.status.message = message


def _has_started(status: FineTuneJobStatus) -> bool:
    return status.plan is not None and status.plan.fits


def _is_finished(step: _Step) -> bool:
    if step.status.phase not in TERMINAL_PHASES:
        return False
    # A job rejected before it started may be fixed by editing it: evaluate it again.
    edited = step.observed.generation != step.status.observed_generation
    return _has_started(step.status) or not edited


# --------------------------------------------------------------------------- start


def _start(step: _Step, plan_fn: PlanFn) -> bool:
    """Validate and plan. False when the job failed here (invalid or does not fit)."""
    from finetune_operator.planner import PlanningError
    from finetune_operator.validation import layout_problems

    if step.status.phase in TERMINAL_PHASES:  # edited after a rejection: start afresh
        step.status = FineTuneJobStatus(conditions=step.status.conditions)
    spec, problems = _validated_current_spec(step)
    if spec is None:
        _fail_invalid(step, "; ".join(problems))
        return False
    step.condition(cond.VALID, "True", "SpecValid")
    try:
        plan = plan_fn(spec)
    except PlanningError as err:
        _fail_invalid(step, f"{err.field}: {err.message}")
        return False
    layout = layout_problems(spec, plan) if plan.fits else []
    if layout:  # the same rules as `finetune validate`, on the layout just chosen
        _fail_invalid(step, "; ".join(str(p) for p in layout))
        return False
    step.status.plan = plan
    if not plan.fits:
        hint = f" {plan.suggestion}" if plan.suggestion else ""
        message = f"does not fit: {plan.reason}.{hint}".replace("..", ".")
        step.condition(cond.PLANNED, "False", "DoesNotFit", message)
        _fail(step, "DoesNotFit", message)
        return False
    step.condition(cond.PLANNED, "True", "Planned", plan.reason)
    step.phase("Pending", _planned_message(plan))
    # No Event here: the same reconcile creates the children, and their Created Event
    # names the plan too (one Event per new job instead of two).
    return True


def _planned_message(plan: Plan) -> str:
    return f"planned {plan.strategy} on {plan.nodes} x {plan.gpus_per_node} {plan.gpu}"


def spec_with_defaults(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The stored spec with the operator's default GPU where the job names none."""
    if not settings.default_gpu or not isinstance(spec, dict):
        return spec
    resources = spec.get("resources")
    if resources is None:
        return {**spec, "resources": {"gpu": settings.default_gpu}}
    if isinstance(resources, dict) and "gpu" not in resources:
        return {**spec, "resources": {**resources, "gpu": settings.default_gpu}}
    return spec


def _fail_invalid(step: _Step, message: str) -> None:
    step.condition(cond.VALID, "False", "InvalidSpec", message)
    _fail(step, "InvalidSpec", message)


def _fail(step: _Step, reason: str, message: str) -> None:
    step.condition(cond.FAILED, "True", reason, message)
    step.condition(cond.RUNNING, "False", reason, message)
    step.phase("Failed", message)
    step.status.completion_time = step.status.completion_time or step.now
    step.emit("Warning", reason, message)


# --------------------------------------------------------------------------- follow


def _follow(step: _Step) -> None:
    """The job has a plan: keep its children in place and track its Job and pods."""
    try:
        spec = _effective_spec(step)
    except _InvalidAfterStart as err:
        _fail_invalid(step, f"the spec is invalid and its started copy is gone: {err}")
        return
    plan = step.status.plan
    assert plan is not None  # _has_started
    _adopt_recorded_restart(step)
    _ensure_config_and_service(step, spec, plan)
    attempt = step.status.restarts
    job_name = names.batch_job_name(step.name, attempt)
    step.status.active_job = job_name
    job = step.observed.jobs.get(attempt)
    if job is None:
        _create_job(step, spec, plan, attempt)
        _mark_created(step, plan)
        return
    _mark_created(step, plan)
    pods = [p for p in step.observed.pods if _label(p, names.JOB_NAME_LABEL) == job_name]
    if _deadline_passed(step, spec):
        step.actions.append(Delete("Job", job_name))
        _fail(step, "DeadlineExceeded", f"ran longer than runPolicy.activeDeadlineSeconds "
              f"({spec.run_policy.active_deadline_seconds} s)")
    elif _job_condition(job, "Complete") or _succeeded(job, plan):
        _succeed(step)
    elif _job_condition(job, "Failed") or _failed_pods(pods) or _count(job, "failed"):
        _rank_failed(step, spec, plan, job, pods)
    elif spec.run_policy.suspend:
        _suspend(step, job)
    elif job.get("spec", {}).get("suspend"):
        _unsuspended_or_queued(step, spec, job)
    elif _all_running(pods, plan):
        _running(step)
    else:
        _waiting(step, pods)


def _effective_spec(step: _Step) -> FineTuneJobSpec:
    """The spec the run started with (from its ConfigMap) plus the current runPolicy.

    Other edits after the start are not applied: they get a SpecChangeRejected condition.
    """
    current, problems = _validated_current_spec(step)
    started = _started_spec(step.observed.config_map)
    if started is None:
        if current is None:  # no record of the start and an invalid spec: cannot continue
            raise _InvalidAfterStart("; ".join(problems))
        return current
    if current is None:
        _reject_change(step, "the edited spec is invalid: " + "; ".join(problems))
        return started
    changed = changed_fields(started, current)
    if changed:
        _reject_change(step, f"{', '.join(changed)} changed after the job started; only "
                       "spec.runPolicy can change while a job runs (delete and re-create the "
                       "job to change the rest)")
    elif cond.find(step.status.conditions, cond.SPEC_CHANGE_REJECTED):
        step.condition(cond.SPEC_CHANGE_REJECTED, "False", "SpecMatches",
                       "the spec matches the one the job started with")
    return started.model_copy(update={"run_policy": current.run_policy})


class _InvalidAfterStart(Exception):
    pass


def _validated_current_spec(step: _Step) -> tuple[FineTuneJobSpec | None, list[str]]:
    return _validated_spec(step.name, spec_with_defaults(step.observed.spec, step.settings))


def _validated_spec(name: str, spec: Any) -> tuple[FineTuneJobSpec | None, list[str]]:
    """validate_spec without planning, memoized on the spec's canonical JSON."""
    try:
        key = json.dumps([name, spec], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON (only in hand-made tests): no caching
        return _validate_current(name, spec)
    return CURRENT_SPECS.get(key, lambda _: _validate_current(name, spec))


def _validate_current(name: str, spec: Any) -> tuple[FineTuneJobSpec | None, list[str]]:
    from finetune_operator.validation import validate_spec

    valid, problems = validate_spec(spec, name, plan=False)
    return valid, [str(p) for p in problems]


def _started_spec(config_map: dict[str, Any] | None) -> FineTuneJobSpec | None:
    if not config_map:
        return None
    text = (config_map.get("data") or {}).get(names.CONFIG_KEY)
    return STARTED_SPECS.get(text if isinstance(text, str) else "", _parse_started_spec)


def _parse_started_spec(text: str) -> FineTuneJobSpec | None:
    import yaml
    from finetune_contract.trainer_config import TrainerConfig

    try:
        return TrainerConfig.parse(text or "").spec
    except (ValidationError, yaml.YAMLError):
        return None  # a damaged ConfigMap: fall back to the current spec


def changed_fields(started: FineTuneJobSpec, current: FineTuneJobSpec) -> list[str]:
    """Field paths (spec.x.y) that differ, runPolicy excluded."""
    before = started.to_wire()
    after = current.to_wire()
    before.pop("runPolicy", None)
    after.pop("runPolicy", None)
    return _diff_paths(before, after, "spec")


def _diff_paths(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff_paths(a.get(key), b.get(key), f"{path}.{key}")
        return out
    return [] if a == b else [path]


def _reject_change(step: _Step, message: str) -> None:
    previous = cond.find(step.status.conditions, cond.SPEC_CHANGE_REJECTED)
    if previous is None or previous.status != "True" or previous.message != message:
        step.emit("Warning", cond.SPEC_CHANGE_REJECTED, message)
    step.condition(cond.SPEC_CHANGE_REJECTED, "True", "ImmutableFieldChanged", message)


def _adopt_recorded_restart(step: _Step) -> None:
    """Finish a restart that a crash interrupted, and clear out earlier attempts.

    The restart creates the next attempt's Job before deleting the failed one and recording
    it; a crash in between leaves the next Job behind: take it as the current attempt."""
    if step.status.restarts + 1 in step.observed.jobs:
        step.status.restarts += 1
    for attempt in sorted(step.observed.jobs):
        if attempt < step.status.restarts:
            step.actions.append(Delete("Job", names.batch_job_name(step.name, attempt)))


def _ensure_config_and_service(step: _Step, spec: FineTuneJobSpec, plan: Plan) -> None:
    owner = step.observed.owner
    if step.observed.config_map is None:
        config_map = render.config_map(owner, spec, plan)
        # The next reconcile reads this text back: it parses to `spec` (a lossless round
        # trip, tested), so the memo learns it now instead of parsing it then.
        STARTED_SPECS.seed(config_map["data"][names.CONFIG_KEY], spec)
        step.actions.append(Create(config_map))
    if step.observed.service is None:
        step.actions.append(Create(render.service(owner)))


def _mark_created(step: _Step, plan: Plan) -> None:
    """The Created condition, set whenever the children exist or are being created (also
    after a crash lost the status write that first recorded it)."""
    job = step.status.active_job
    if not cond.is_true(step.status.conditions, cond.CREATED):
        step.emit("Normal", "Created", f"{_planned_message(plan)}; created Job {job} "
                  f"({plan.nodes} pod(s) x {plan.gpus_per_node} rank(s)), ConfigMap and "
                  "Service")
    step.condition(cond.CREATED, "True", "ChildrenCreated",
                   f"ConfigMap {names.config_map_name(step.name)}, Service "
                   f"{names.service_name(step.name)}, Job {job}")


def _create_job(step: _Step, spec: FineTuneJobSpec, plan: Plan, attempt: int) -> None:
    job = render.batch_job(step.observed.owner, spec, plan, step.settings, attempt)
    step.actions.append(Create(job))
    name = job["metadata"]["name"]
    recreated = cond.is_true(step.status.conditions, cond.CREATED)
    if spec.run_policy.suspend:
        step.phase("Suspended", f"Job {name} created suspended (runPolicy.suspend)")
        step.condition(cond.SUSPENDED, "True", "SuspendedByUser", step.status.message or "")
    elif spec.resources.queue_name:
        step.phase("Pending", f"Job {name} waits for Kueue to admit the gang "
                   f"(queue {spec.resources.queue_name})")
    elif step.status.phase != "Restarting":
        step.phase("Pending", _waiting_message(name))
    if recreated and step.status.phase != "Restarting":
        step.emit("Warning", "JobRecreated", f"Job {name} was missing; created it again")


def _deadline_passed(step: _Step, spec: FineTuneJobSpec) -> bool:
    limit = spec.run_policy.active_deadline_seconds
    start = step.status.start_time
    return bool(limit and start and step.now - start >= timedelta(seconds=limit))


def _succeed(step: _Step) -> None:
    step.phase("Succeeded", "training finished")
    step.status.completion_time = step.status.completion_time or step.now
    step.condition(cond.SUCCEEDED, "True", "Completed", "every node rank finished")
    step.condition(cond.RUNNING, "False", "Completed", "")
    if cond.is_true(step.status.conditions, cond.UNSCHEDULABLE):
        step.condition(cond.UNSCHEDULABLE, "False", "Completed", "")
    step.emit("Normal", "Succeeded", "training finished")


def _rank_failed(step: _Step, spec: FineTuneJobSpec, plan: Plan, job: dict[str, Any],
                 pods: list[dict[str, Any]]) -> None:
    why = failure_summary(job, pods)
    attempt = step.status.restarts
    limit = spec.run_policy.backoff_limit
    if attempt >= limit:
        _fail(step, "BackoffLimitExceeded", f"{why}; gave up after {attempt} restart(s) "
              f"(runPolicy.backoffLimit {limit})")
        return
    old, new = names.batch_job_name(step.name, attempt), names.batch_job_name(step.name,
                                                                               attempt + 1)
    # Create first: a crash before the delete leaves both, and the next reconcile adopts the
    # new attempt and deletes the old one (see _adopt_recorded_restart).
    step.actions.append(Create(render.batch_job(step.observed.owner, spec, plan, step.settings,
                                                attempt + 1)))
    step.actions.append(Delete("Job", old))
    step.status.restarts = attempt + 1
    step.status.active_job = new
    message = (f"{why}; restarting the gang from the latest checkpoint as Job {new} "
               f"(restart {attempt + 1} of {limit})")
    step.phase("Restarting", message)
    step.condition(cond.RUNNING, "False", "Restarting", message)
    step.emit("Warning", "Restarting", message)


def failure_summary(job: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """The last failed pod's rank, reason and exit code; else the Job's failure reason."""
    failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
    if failed:
        pod = max(failed, key=_finished_at)
        reason, code = _termination(pod)
        rank = (pod.get("metadata", {}).get("annotations") or {}).get(
            names.COMPLETION_INDEX_ANNOTATION, "?")
        return (f"node rank {rank} (pod {pod['metadata']['name']}) failed: {reason}, "
                f"exit code {code}")
    for c in job.get("status", {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return f"Job failed: {c.get('reason', 'Failed')}: {c.get('message', '')}".rstrip(": ")
    return "a node rank failed"


def _termination(pod: dict[str, Any]) -> tuple[str, Any]:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        if cs.get("name") == names.TRAINER_CONTAINER:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term:
                return term.get("reason", "Error"), term.get("exitCode", "?")
    return pod.get("status", {}).get("reason") or "Failed", "?"


def _finished_at(pod: dict[str, Any]) -> str:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        finished = ((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if finished:
            return str(finished)
    return ""


def _suspend(step: _Step, job: dict[str, Any]) -> None:
    name = job["metadata"]["name"]
    if not job.get("spec", {}).get("suspend"):
        step.actions.append(SetSuspend(name, True))
    if step.status.phase != "Suspended":
        step.emit("Normal", "Suspended", f"Job {name} suspended: its pods are deleted; "
                  "resuming continues from the latest checkpoint")
    step.phase("Suspended", f"suspended (runPolicy.suspend); Job {name} has no pods")
    step.condition(cond.SUSPENDED, "True", "SuspendedByUser", step.status.message or "")
    step.condition(cond.RUNNING, "False", "Suspended", "")


def _unsuspended_or_queued(step: _Step, spec: FineTuneJobSpec, job: dict[str, Any]) -> None:
    name = job["metadata"]["name"]
    queue = spec.resources.queue_name
    if queue and step.status.phase != "Suspended":
        step.phase("Pending", f"Job {name} waits for Kueue to admit the gang (queue {queue})")
        return
    # Resumed by the user. Under Kueue the Job is suspended again until it is re-admitted.
    step.actions.append(SetSuspend(name, False))
    step.phase("Pending", f"resumed: Job {name} starts its pods again")
    step.condition(cond.SUSPENDED, "False", "Resumed", step.status.message or "")
    step.emit("Normal", "Resumed", step.status.message or "")


def _running(step: _Step) -> None:
    if step.status.phase != "Running":
        step.emit("Normal", "Running", f"all pods of Job {step.status.active_job} are running")
    step.phase("Running", f"training: Job {step.status.active_job}")
    step.status.start_time = step.status.start_time or step.now
    step.condition(cond.RUNNING, "True", "AllPodsRunning", "")
    if cond.find(step.status.conditions, cond.SUSPENDED):
        step.condition(cond.SUSPENDED, "False", "Running", "")
    if cond.find(step.status.conditions, cond.UNSCHEDULABLE):
        step.condition(cond.UNSCHEDULABLE, "False", "Scheduled", "")


def _waiting(step: _Step, pods: list[dict[str, Any]]) -> None:
    """Pods are not all running yet (or, late in a run, some ranks finished first)."""
    if step.status.phase == "Suspended":  # suspend lifted and the Job already resumed
        step.condition(cond.SUSPENDED, "False", "Resumed", "")
    if step.status.phase not in ("Running", "Restarting"):
        step.phase("Pending", _waiting_message(step.status.active_job or ""))
    stuck = unschedulable_message(pods, step.now, step.settings.unschedulable_after)
    if stuck:
        if not cond.is_true(step.status.conditions, cond.UNSCHEDULABLE):
            step.emit("Warning", cond.UNSCHEDULABLE, stuck)
        step.condition(cond.UNSCHEDULABLE, "True", "PodsPending", stuck)
    elif cond.is_true(step.status.conditions, cond.UNSCHEDULABLE):
        step.condition(cond.UNSCHEDULABLE, "False", "Scheduled", "")


def _waiting_message(job: str) -> str:
    return f"waiting for the pods of Job {job}"


def unschedulable_message(pods: list[dict[str, Any]], now: datetime,
                          after_seconds: float) -> str | None:
    """The scheduler's message for a pod Pending longer than `after_seconds`, if any."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase", "Pending") != "Pending":
            continue
        scheduled = next((c for c in status.get("conditions") or []
                          if c.get("type") == "PodScheduled"), None)
        if scheduled and scheduled.get("status") == "True":
            continue  # scheduled; pulling the image or starting
        since = _timestamp((scheduled or {}).get("lastTransitionTime")
                           or pod.get("metadata", {}).get("creationTimestamp"))
        if since is None or (now - since).total_seconds() < after_seconds:
            continue
        detail = (scheduled or {}).get("message") or "not scheduled"
        return f"pod {pod['metadata']['name']} pending for {int((now - since).total_seconds())} " \
               f"s: {detail}"
    return None


# --------------------------------------------------------------------------- finished


def _finished(step: _Step) -> None:
    """Succeeded or Failed: only TTL cleanup is left. The output volume is never touched."""
    current, _ = _validated_current_spec(step)
    started = _started_spec(step.observed.config_map)
    spec = current or started
    ttl = spec.run_policy.ttl_seconds_after_finished if spec else None
    done = step.status.completion_time
    if ttl is None or done is None or step.now - done < timedelta(seconds=ttl):
        return
    deletes: list[Action] = []
    if step.observed.config_map is not None:
        deletes.append(Delete("ConfigMap", names.config_map_name(step.name)))
    if step.observed.service is not None:
        deletes.append(Delete("Service", names.service_name(step.name)))
    for attempt in sorted(step.observed.jobs):
        deletes.append(Delete("Job", names.batch_job_name(step.name, attempt)))
    if deletes:
        step.actions += deletes
        step.emit("Normal", "CleanedUp", f"deleted the children {ttl} s after the job "
                  "finished (runPolicy.ttlSecondsAfterFinished); the output stays")


# --------------------------------------------------------------------------- helpers


def _label(obj: dict[str, Any], key: str) -> str | None:
    return (obj.get("metadata", {}).get("labels") or {}).get(key)


def _job_condition(job: dict[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in job.get("status", {}).get("conditions") or [])


def _count(job: dict[str, Any], key: str) -> int:
    return int(job.get("status", {}).get(key) or 0)


def _succeeded(job: dict[str, Any], plan: Plan) -> bool:
    return _count(job, "succeeded") >= plan.nodes


def _failed_pods(pods: list[dict[str, Any]]) -> bool:
    return any(p.get("status", {}).get("phase") == "Failed" for p in pods)


def _all_running(pods: list[dict[str, Any]], plan: Plan) -> bool:
    running = {
        (p.get("metadata", {}).get("annotations") or {}).get(names.COMPLETION_INDEX_ANNOTATION)
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p.get("metadata", {}).get("deletionTimestamp")
    }
    return len(running - {None}) >= plan.nodes


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)  # Python 3.11 reads the trailing Z
    except ValueError:
        return None
