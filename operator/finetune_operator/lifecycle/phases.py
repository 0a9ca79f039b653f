"""A started job: keep its children in place, read its attempt's Job and pods, and move it
through Pending, Running, Restarting and Suspended to Succeeded or Failed."""

from __future__ import annotations

from datetime import timedelta

from finetune_contract.api import FineTuneJobSpec, Plan

from finetune_operator import apicheck, names, render
from finetune_operator import conditions as cond
from finetune_operator.lifecycle import pods as pod_states
from finetune_operator.lifecycle import spec as specs
from finetune_operator.lifecycle.actions import Create, Delete, SetSuspend
from finetune_operator.lifecycle.observation import Attempt
from finetune_operator.lifecycle.replan import replan
from finetune_operator.lifecycle.shrink import shrink
from finetune_operator.lifecycle.start import PlanFn, current_spec
from finetune_operator.lifecycle.step import (
    Step,
    attempt_number,
    fail,
    fail_invalid,
    fail_rejected,
    planned_message,
    reject_change,
)


def follow(step: Step, plan_fn: PlanFn) -> None:
    """The job has a plan: keep its children in place and track its Job and pods."""
    try:
        spec, resized = effective_spec(step)
    except InvalidAfterStart as err:
        fail_invalid(step, f"the spec is invalid and its started copy is gone: {err}")
        return
    _adopt_recorded_restart(step)
    if resized is not None and replan(step, resized, plan_fn):
        return
    plan = step.status.plan
    assert plan is not None  # has_started
    if _children_refused(step, spec, plan):
        return
    _ensure_config_and_service(step, spec, plan)
    number = attempt_number(step.status)
    step.status.active_job = names.batch_job_name(step.name, number)
    attempt = step.observed.attempts.get(number)
    if attempt is None:
        _create_job(step, spec, plan)
        _mark_created(step, plan)
        return
    _mark_created(step, plan)
    if shrink(step, spec, plan, attempt, plan_fn):
        return
    _track(step, spec, plan, attempt)


def _track(step: Step, spec: FineTuneJobSpec, plan: Plan, attempt: Attempt) -> None:
    """The one transition the attempt's Job and pods call for."""
    if _deadline_passed(step, spec):
        step.actions.append(Delete("Job", attempt.name))
        fail(step, "DeadlineExceeded", f"ran longer than runPolicy.activeDeadlineSeconds "
             f"({spec.run_policy.active_deadline_seconds} s)")
    elif attempt.complete or attempt.succeeded_pods >= plan.nodes:
        _succeed(step)
    elif attempt.failed or pod_states.any_failed(attempt) or attempt.failed_pods \
            or pod_states.crash_looping(attempt.pods):
        _rank_failed(step, spec, plan, attempt)
    elif spec.run_policy.suspend:
        _suspend(step, spec, attempt)
    elif attempt.suspended:
        _unsuspended_or_queued(step, spec, attempt)
    else:
        running = pod_states.all_running(attempt.pods, plan.nodes)
        if running:
            _running(step)
        else:
            _waiting(step, attempt)
        _name_stuck_pods(step, attempt, waiting=not running)
        return
    # The attempt's pods are finished or on their way out: none of them is stuck any more.
    _clear_stuck(step, step.status.phase, "")


# --------------------------------------------------------------------------- the spec


class InvalidAfterStart(Exception):
    """The current spec is invalid and the copy the job started with is gone."""


def effective_spec(step: Step) -> tuple[FineTuneJobSpec, FineTuneJobSpec | None]:
    """The spec the run started with (from its ConfigMap) plus the current runPolicy; and
    the edited spec when spec.resources changed since, and nothing else did: the job is
    re-planned on it (lifecycle/replan.py).

    Other edits after the start are not applied: they get a SpecChangeRejected condition.
    """
    current, problems = current_spec(step)
    started = specs.started(step.observed.started_config, step.caches)
    if started is None:
        if current is None:  # no record of the start and an invalid spec: cannot continue
            raise InvalidAfterStart("; ".join(problems))
        return current, None
    if current is None:
        reject_change(step, "the edited spec is invalid: " + "; ".join(problems))
        return started, None
    kept = started.model_copy(update={"run_policy": current.run_policy})
    changed = specs.changed_fields(started, current)
    if changed and all(path.startswith(RESOURCES) for path in changed):
        return kept, current
    if changed:
        reject_change(step, f"{', '.join(changed)} changed after the job started; only "
                      "spec.runPolicy and spec.resources can change while a job runs (delete "
                      "and re-create the job to change the rest)")
    elif cond.find(step.status.conditions, cond.SPEC_CHANGE_REJECTED):
        step.condition(cond.SPEC_CHANGE_REJECTED, "False", "SpecMatches",
                       "the spec matches the one the job started with")
    return kept, None


# The fields whose edit re-plans a started job (a prefix of specs.changed_fields' paths).
RESOURCES = "spec.resources."


# --------------------------------------------------------------------------- the children


def _adopt_recorded_restart(step: Step) -> None:
    """Finish a restart that a crash interrupted, and clear out earlier attempts.

    The restart creates the next attempt's Job before deleting the failed one and recording
    it; a crash in between leaves the next Job behind: take it as the current attempt."""
    if attempt_number(step.status) + 1 in step.observed.attempts:
        step.status.restarts += 1
    for number in sorted(step.observed.attempts):
        if number < attempt_number(step.status):
            step.actions.append(Delete("Job", names.batch_job_name(step.name, number)))


def _children_refused(step: Step, spec: FineTuneJobSpec, plan: Plan) -> bool:
    """Whether a child about to be created is one the API server would refuse (apicheck.py:
    a ConfigMap over 1 MiB, a derived label): then the job fails before any is created,
    instead of some being created and the next refused with 422 at every resync."""
    observed = step.observed
    if (observed.started_config is not None and observed.has_service
            and attempt_number(step.status) in observed.attempts):
        return False  # nothing to create
    problems = apicheck.children_problems(render.children(
        observed.owner, spec, plan, step.settings, attempt_number(step.status)))
    if problems:
        fail_rejected(step, "the API server would refuse " + "; ".join(problems))
    return bool(problems)


def _ensure_config_and_service(step: Step, spec: FineTuneJobSpec, plan: Plan) -> None:
    owner = step.observed.owner
    if step.observed.started_config is None:
        config_map = render.config_map(owner, spec, plan)
        # The next reconcile reads this text back: it parses to `spec` (a lossless round
        # trip, tested), so the memo learns it now instead of parsing it then.
        step.caches.started.seed(config_map["data"][names.CONFIG_KEY], spec)
        step.actions.append(Create(config_map))
    if not step.observed.has_service:
        step.actions.append(Create(render.service(owner)))


def _mark_created(step: Step, plan: Plan) -> None:
    """The Created condition, set whenever the children exist or are being created (also
    after a crash lost the status write that first recorded it)."""
    job = step.status.active_job
    if not cond.is_true(step.status.conditions, cond.CREATED):
        step.emit("Normal", "Created", f"{planned_message(plan)}; created Job {job} "
                  f"({plan.nodes} pod(s) x {plan.gpus_per_node} rank(s)), ConfigMap and "
                  "Service")
    step.condition(cond.CREATED, "True", "ChildrenCreated",
                   f"ConfigMap {names.config_map_name(step.name)}, Service "
                   f"{names.service_name(step.name)}, Job {job}")


def _create_job(step: Step, spec: FineTuneJobSpec, plan: Plan) -> None:
    job = render.batch_job(step.observed.owner, spec, plan, step.settings,
                           attempt_number(step.status))
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


# --------------------------------------------------------------------------- transitions


def _deadline_passed(step: Step, spec: FineTuneJobSpec) -> bool:
    limit = spec.run_policy.active_deadline_seconds
    start = step.status.start_time
    return bool(limit and start and step.now - start >= timedelta(seconds=limit))


def _succeed(step: Step) -> None:
    step.phase("Succeeded", "training finished")
    step.status.completion_time = step.status.completion_time or step.now
    step.condition(cond.SUCCEEDED, "True", "Completed", "every node rank finished")
    step.condition(cond.RUNNING, "False", "Completed", "")
    if cond.is_true(step.status.conditions, cond.UNSCHEDULABLE):
        step.condition(cond.UNSCHEDULABLE, "False", "Completed", "")
    step.emit("Normal", "Succeeded", "training finished")


def _wait_for_stopping_ranks(step: Step, attempt: Attempt, why: str) -> bool:
    """Whether the restart waits: the failed attempt's other pods may still be writing the
    emergency checkpoint (a deleted or preempted pod's SIGTERM reaches the whole gang). The
    ones not told to stop yet are deleted, so they get SIGTERM and their grace period now."""
    stopping = pod_states.still_training(attempt.pods, step.now)
    if not stopping:
        return False
    step.actions.extend(Delete("Pod", p.name) for p in stopping if not p.deleting)
    pods = ", ".join(p.name for p in stopping)
    step.phase("Restarting", f"{why}; waiting for {pods} to stop (each writes its part of the "
               "emergency checkpoint within its grace period) before restarting the gang")
    return True


def _rank_failed(step: Step, spec: FineTuneJobSpec, plan: Plan, attempt: Attempt) -> None:
    why = pod_states.failure_summary(attempt, step.observed.owner.namespace)
    number = step.status.restarts  # re-plans are no failures: they do not count here
    limit = spec.run_policy.backoff_limit
    if number >= limit:
        stopped = ""
        if pod_states.crash_looping(attempt.pods):
            # Its pods would restart forever on the nodes they hold, as the Job controller's
            # own backoffLimit stops them.
            step.actions.append(Delete("Job", attempt.name))
            stopped = f"; Job {attempt.name} deleted to stop its pods"
        fail(step, "BackoffLimitExceeded", f"{why}; gave up after {number} restart(s) "
             f"(runPolicy.backoffLimit {limit}){stopped}")
        return
    if _wait_for_stopping_ranks(step, attempt, why):
        return
    following = attempt_number(step.status) + 1
    new = names.batch_job_name(step.name, following)
    # Create first: a crash before the delete leaves both, and the next reconcile adopts the
    # new attempt and deletes the old one (see _adopt_recorded_restart).
    step.actions.append(Create(render.batch_job(step.observed.owner, spec, plan, step.settings,
                                                following)))
    step.actions.append(Delete("Job", attempt.name))
    step.status.restarts = number + 1
    step.status.active_job = new
    message = (f"{why}; restarting the gang {_resumes_from(spec)} as Job {new} "
               f"(restart {number + 1} of {limit})")
    step.phase("Restarting", message)
    step.condition(cond.RUNNING, "False", "Restarting", message)
    step.emit("Warning", "Restarting", message)


def _suspend(step: Step, spec: FineTuneJobSpec, attempt: Attempt) -> None:
    name = attempt.name
    if not attempt.suspended:
        step.actions.append(SetSuspend(name, True))
    if step.status.phase != "Suspended":
        step.emit("Normal", "Suspended", f"Job {name} suspended: its pods are deleted; "
                  f"resuming continues {_resumes_from(spec)}")
    step.phase("Suspended", f"suspended (runPolicy.suspend); Job {name} has no pods")
    step.condition(cond.SUSPENDED, "True", "SuspendedByUser", step.status.message or "")
    step.condition(cond.RUNNING, "False", "Suspended", "")


def _resumes_from(spec: FineTuneJobSpec) -> str:
    """Where new pods pick up: an emptyDir output is deleted with the old ones."""
    if spec.output.pvc:
        return "from the latest checkpoint"
    return "from the start (no output.pvc: the checkpoints went with the pods)"


def _unsuspended_or_queued(step: Step, spec: FineTuneJobSpec, attempt: Attempt) -> None:
    name = attempt.name
    queue = spec.resources.queue_name
    if queue and step.status.phase != "Suspended":
        if step.status.phase == "Running":
            _suspended_by_kueue(step, spec, name, queue)
        elif not _held_by_kueue(step):
            step.phase("Pending", f"Job {name} waits for Kueue to admit the gang (queue {queue})")
        return
    # Resumed by the user. Under Kueue the Job is suspended again until it is re-admitted.
    step.actions.append(SetSuspend(name, False))
    step.phase("Pending", f"resumed: Job {name} starts its pods again")
    step.condition(cond.SUSPENDED, "False", "Resumed", step.status.message or "")
    step.emit("Normal", "Resumed", step.status.message or "")


SUSPENDED_BY_KUEUE = "SuspendedByKueue"


def _suspended_by_kueue(step: Step, spec: FineTuneJobSpec, name: str, queue: str) -> None:
    """Kueue suspended the running gang's Job (it preempted or evicted the workload): the
    Job controller deletes the pods, whose trainers checkpoint on the SIGTERM. Not a restart:
    the same Job runs again when Kueue admits it again."""
    message = (f"Job {name} suspended by Kueue (preempted or evicted): its pods are deleted; "
               f"it waits for Kueue to admit the gang again (queue {queue}) and resumes "
               f"{_resumes_from(spec)}")
    step.emit("Normal", SUSPENDED_BY_KUEUE, message)
    step.phase("Pending", message)
    step.condition(cond.SUSPENDED, "True", SUSPENDED_BY_KUEUE, message)
    step.condition(cond.RUNNING, "False", SUSPENDED_BY_KUEUE, "")


def _held_by_kueue(step: Step) -> bool:
    """Whether the job waits after Kueue suspended its running gang (_suspended_by_kueue)."""
    found = cond.find(step.status.conditions, cond.SUSPENDED)
    return found is not None and found.status == "True" and found.reason == SUSPENDED_BY_KUEUE


def _running(step: Step) -> None:
    if step.status.phase != "Running":
        step.emit("Normal", "Running", f"all pods of Job {step.status.active_job} are running")
    step.phase("Running", f"training: Job {step.status.active_job}")
    step.status.start_time = step.status.start_time or step.now
    step.condition(cond.RUNNING, "True", "AllPodsRunning", "")
    if cond.find(step.status.conditions, cond.SUSPENDED):
        step.condition(cond.SUSPENDED, "False", "Running", "")
    if cond.find(step.status.conditions, cond.UNSCHEDULABLE):
        step.condition(cond.UNSCHEDULABLE, "False", "Scheduled", "")


def _waiting(step: Step, attempt: Attempt) -> None:
    """Pods are not all running yet (or, late in a run, some ranks finished first)."""
    if step.status.phase == "Suspended":  # suspend lifted and the Job already resumed
        step.condition(cond.SUSPENDED, "False", "Resumed", "")
    elif _held_by_kueue(step):  # Kueue admitted the gang again
        step.condition(cond.SUSPENDED, "False", "AdmittedByKueue", "")
    if step.status.phase not in ("Running", "Restarting"):
        step.phase("Pending", _waiting_message(step.status.active_job or ""))
    stuck = pod_states.unschedulable_message(attempt.pods, step.now,
                                             step.settings.unschedulable_after)
    if stuck:
        if not cond.is_true(step.status.conditions, cond.UNSCHEDULABLE):
            step.emit("Warning", cond.UNSCHEDULABLE, stuck)
        step.condition(cond.UNSCHEDULABLE, "True", "PodsPending", stuck)
    elif cond.is_true(step.status.conditions, cond.UNSCHEDULABLE):
        step.condition(cond.UNSCHEDULABLE, "False", "Scheduled", "")


def _name_stuck_pods(step: Step, attempt: Attempt, *, waiting: bool) -> None:
    """The PodsStuck condition: a container waits on an image or config error (or a sidecar
    crash-loops). A Warning Event names each new problem once; the job waits, named in its
    message, and fails after FINETUNE_STUCK_PODS_FAIL_AFTER seconds when that is set."""
    found = pod_states.stuck(attempt.pods)
    if found is None:
        running = cond.find(step.status.conditions, cond.RUNNING)
        if step.status.phase == "Restarting" and running and running.reason == "Restarting" \
                and cond.is_true(step.status.conditions, cond.PODS_STUCK):
            step.status.message = running.message  # why it restarts, as before it got stuck
        _clear_stuck(step, "Recovered", f"no pod of Job {attempt.name} is stuck any more")
        return
    previous = cond.find(step.status.conditions, cond.PODS_STUCK)
    if previous is not None and previous.status != "True":
        previous = None
    message = found.message(step.observed.owner.namespace)
    if previous is None or not found.told_by(previous.reason, previous.message):
        step.emit("Warning", found.reason, message)
    step.condition(cond.PODS_STUCK, "True", found.reason, message)
    if not (waiting and found.blocking):
        return  # a sidecar: the trainer may run regardless
    if step.status.phase in ("Pending", "Restarting"):
        step.status.message = message
    grace = step.settings.stuck_pods_fail_after
    since = previous.last_transition_time if previous is not None else None
    stuck_for = (step.now - since).total_seconds() if since is not None else 0.0
    if grace and stuck_for >= grace:
        # Its pods hold their nodes while they wait: the Job goes, as after a deadline.
        step.actions.append(Delete("Job", attempt.name))
        fail(step, cond.PODS_STUCK, f"{message}; stuck for {int(stuck_for)} s, longer than "
             f"FINETUNE_STUCK_PODS_FAIL_AFTER ({grace:g} s): Job {attempt.name} deleted")
        _clear_stuck(step, "Failed", "")


def _clear_stuck(step: Step, reason: str, message: str) -> None:
    """PodsStuck=False once no pod is stuck; a Normal Event when they recovered."""
    if not cond.is_true(step.status.conditions, cond.PODS_STUCK):
        return
    if reason == "Recovered":
        step.emit("Normal", "Recovered", message)
    step.condition(cond.PODS_STUCK, "False", reason, message)


def _waiting_message(job: str) -> str:
    return f"waiting for the pods of Job {job}"
