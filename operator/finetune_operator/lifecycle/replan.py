"""A started job whose spec.resources was edited: plan it again, stop its gang, and resume
from the emergency checkpoint on the new layout (issue 21's elastic resume).

The hyperparameters are the started ones, so the new plan keeps the global batch (its
micro-batch and accumulation follow the new world size), and the trainer re-partitions a
checkpoint written by another number of ranks as it loads it (trainer_image reshard.py).

Each step is recomputed from what is observed, so a crash between any two is harmless:

1. the attempt's pods still train: suspend its Job; the Job controller deletes the pods,
   whose ranks write the emergency checkpoint on the SIGTERM;
2. they are gone: delete that Job, record the new plan and move to the next attempt;
3. the next attempt has no Job yet: replace the ConfigMap (the spec the run started with)
   with the edited spec and the new plan, and create the Job.

Step 2 writes the status without creating anything, so step 3 finds the new plan recorded.
An edit that cannot be planned (it does not fit, the policy refuses it) is rejected: the job
goes on as it was, and SpecChangeRejected says why. A re-plan is no failure: it does not
count against runPolicy.backoffLimit.
"""

from __future__ import annotations

from finetune_contract.api import FineTuneJobSpec, Plan

from finetune_operator import conditions as cond
from finetune_operator import names, policy, render
from finetune_operator.lifecycle import pods as pod_states
from finetune_operator.lifecycle.actions import Create, Delete, SetSuspend
from finetune_operator.lifecycle.start import PlanFn, checked_plan
from finetune_operator.lifecycle.step import (
    Step,
    attempt_number,
    planned_message,
    reject_change,
)
from finetune_operator.planner import needs_sizing
from finetune_operator.sizing import sizing_key

# The SpecChangeRejected reason of a resources edit the operator cannot run.
REPLAN_REFUSED = "ReplanRefused"
# The reason (condition Running, Events) while the gang moves to its new layout.
REPLANNING = "Replanning"


def replan(step: Step, edited: FineTuneJobSpec, plan_fn: PlanFn) -> bool:
    """Move the job onto the plan for `edited` (its resources changed since the start).
    True when this reconcile is the re-plan's; False when the edit was rejected and the job
    goes on as it started."""
    plan = _new_plan(step, edited, plan_fn)
    if plan is None:
        return False
    number = attempt_number(step.status)
    attempt = step.observed.attempts.get(number)
    if attempt is not None:
        stopping = pod_states.still_training(attempt.pods, step.now)
        if stopping:
            _stop(step, plan, attempt.name, attempt.suspended, stopping)
        else:
            _next_attempt(step, plan, attempt.name)
    elif not _recorded(step.status.plan, plan):
        # Step 2's Job deletion landed, its status did not: record it now.
        _next_attempt(step, plan, names.batch_job_name(step.name, number))
    else:
        _start_on_new_plan(step, edited, plan)
    return True


def _new_plan(step: Step, edited: FineTuneJobSpec, plan_fn: PlanFn) -> Plan | None:
    """The plan for the edited spec, or None after rejecting the edit with the reason."""
    namespace = step.observed.owner.namespace
    refused = [str(p) for p in policy.violations(edited, namespace, step.settings.policy)]
    sizing = step.status.sizing
    if needs_sizing(edited) and (sizing is None or sizing.key != sizing_key(edited)):
        refused.append("the model's sizing does not match the edited spec")
    plan = None
    if not refused:
        plan, refusal = checked_plan(edited, namespace, step.settings, plan_fn,
                                     sizing if needs_sizing(edited) else None,
                                     step.observed.calibration)
        if refusal is not None:
            refused.append(refusal.message)
    if refused:
        reject_change(step, "spec.resources changed, but the job cannot run on them: "
                      f"{'; '.join(refused)}; it goes on as planned before (edit "
                      "spec.resources back, or to what fits)", REPLAN_REFUSED)
        return None
    if cond.is_true(step.status.conditions, cond.SPEC_CHANGE_REJECTED):
        step.condition(cond.SPEC_CHANGE_REJECTED, "False", REPLANNING,
                       "spec.resources changed: the job is re-planned")
    return plan


# What a new run in the calibration table changes in a plan between two reconciles: its memory
# figures, and the words that quote them.
_CALIBRATED = {"memory_per_gpu", "host_memory_per_node", "alternatives", "reason", "suggestion",
               "calibration"}


def _recorded(recorded: Plan | None, plan: Plan) -> bool:
    """Whether `plan` is the one step 2 recorded (and not the plan the job started with):
    the same but for what calibration scales, since the table may have changed since."""
    return recorded is not None and (recorded.model_dump(exclude=_CALIBRATED)
                                     == plan.model_dump(exclude=_CALIBRATED))


def _stop(step: Step, plan: Plan, job: str, suspended: bool,
          stopping: tuple[pod_states.PodState, ...]) -> None:
    if not suspended:
        step.actions.append(SetSuspend(job, True))
        step.emit("Normal", REPLANNING, f"spec.resources changed: re-planned as "
                  f"{_layout(plan)}; stopping Job {job} so that its ranks write an emergency "
                  "checkpoint")
    pods = ", ".join(p.name for p in stopping)
    _restarting(step, f"spec.resources changed: re-planned as {_layout(plan)}; waiting for "
                f"{pods} of Job {job} to write the emergency checkpoint and stop")


def _next_attempt(step: Step, plan: Plan, old_job: str) -> None:
    step.actions.append(Delete("Job", old_job))
    step.status.plan = plan
    step.status.replans += 1
    new_job = names.batch_job_name(step.name, attempt_number(step.status))
    step.status.active_job = new_job
    _restarting(step, f"spec.resources changed: re-planned as {_layout(plan)}; Job "
                f"{old_job} stopped, resuming from its checkpoint as Job {new_job}")


def _start_on_new_plan(step: Step, edited: FineTuneJobSpec, plan: Plan) -> None:
    """The ConfigMap, replaced (deleted, then created; it has no finalizers), and the Job."""
    owner, number = step.observed.owner, attempt_number(step.status)
    step.status.plan = plan  # what the children are made from (its memory may be newer)
    config_map = render.config_map(owner, edited, plan)
    step.caches.started.seed(config_map["data"][names.CONFIG_KEY], edited)
    step.actions.append(Delete("ConfigMap", names.config_map_name(step.name)))
    step.actions.append(Create(config_map))
    job = render.batch_job(owner, edited, plan, step.settings, number)
    step.actions.append(Create(job))
    message = (f"re-planned as {_layout(plan)}: Job {job['metadata']['name']} resumes from "
               "the latest checkpoint")
    step.emit("Normal", "Replanned", message)
    _restarting(step, message)


def _restarting(step: Step, message: str) -> None:
    step.phase("Restarting", message)
    step.condition(cond.RUNNING, "False", REPLANNING, message)


def _layout(plan: Plan) -> str:
    return (f"{planned_message(plan).removeprefix('planned ')} (micro-batch "
            f"{plan.micro_batch_size}, accumulation {plan.gradient_accumulation}, global batch "
            f"{plan.global_batch_size})")
