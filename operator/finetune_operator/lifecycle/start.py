"""A job without a plan: validate it and plan it, or fail it saying why."""

from __future__ import annotations

from collections.abc import Callable

from finetune_contract.api import TERMINAL_PHASES, FineTuneJobSpec, FineTuneJobStatus, Plan

from finetune_operator import conditions as cond
from finetune_operator import policy
from finetune_operator.lifecycle import spec as specs
from finetune_operator.lifecycle.sizing import sized
from finetune_operator.lifecycle.step import (
    Step,
    fail,
    fail_invalid,
    fail_policy,
    planned_message,
)
from finetune_operator.planner import PlanningError, needs_sizing
from finetune_operator.validation import layout_problems, output_warning

# plan_job, or a test's stand-in; called with `sizing=` only for a model that needed one.
PlanFn = Callable[..., Plan]
# The OutputPersisted reason (and Event reason) of a job without output.pvc.
EPHEMERAL_OUTPUT = "EphemeralOutput"


def current_spec(step: Step) -> specs.Validated:
    """The stored spec with the operator's defaults, validated (memoized)."""
    return specs.validated(step.name, specs.with_defaults(step.observed.spec, step.settings),
                           step.caches)


def start(step: Step, plan_fn: PlanFn) -> bool:
    """Validate, size a model the catalog lacks (lifecycle/sizing.py), and plan. False when
    the job failed here (invalid, cannot be sized, does not fit) or waits for its sizing."""
    if step.status.phase in TERMINAL_PHASES:  # edited after a rejection: start afresh
        step.status = FineTuneJobStatus(conditions=step.status.conditions,
                                        sizing=step.status.sizing)
    spec, problems = current_spec(step)
    if spec is None:
        fail_invalid(step, "; ".join(problems))
        return False
    namespace = step.observed.owner.namespace
    refused = policy.violations(spec, namespace, step.settings.policy)
    if refused:  # before a sizing pod: it could run the refused image
        fail_policy(step, "; ".join(str(p) for p in refused))
        return False
    step.condition(cond.VALID, "True", "SpecValid")
    sizing = sized(step, spec) if needs_sizing(spec) else None
    if needs_sizing(spec) and sizing is None:
        return False
    try:
        kwargs = {"sizing": sizing} if sizing is not None else {}
        plan = policy.plan_within_limits(plan_fn, spec, namespace, step.settings.policy,
                                         **kwargs)
    except PlanningError as err:
        fail_invalid(step, f"{err.field}: {err.message}")
        return False
    layout = layout_problems(spec, plan) if plan.fits else []
    if layout:  # the same rules as `finetune validate`, on the layout just chosen
        fail_invalid(step, "; ".join(str(p) for p in layout))
        return False
    too_big = policy.plan_violations(plan, namespace, step.settings.policy) if plan.fits else []
    if too_big:
        fail_policy(step, "; ".join(str(p) for p in too_big))
        return False
    step.status.plan = plan
    if not plan.fits:
        hint = f" {plan.suggestion}" if plan.suggestion else ""
        message = f"does not fit: {plan.reason}.{hint}".replace("..", ".")
        step.condition(cond.PLANNED, "False", "DoesNotFit", message)
        fail(step, "DoesNotFit", message)
        return False
    step.condition(cond.PLANNED, "True", "Planned", plan.reason)
    _mark_output(step, spec)
    step.phase("Pending", planned_message(plan))
    # No Event here: the same reconcile creates the children, and their Created Event
    # names the plan too (one Event per new job instead of two).
    return True


def _mark_output(step: Step, spec: FineTuneJobSpec) -> None:
    """Whether the result outlives the pods. An ephemeral one is a Warning Event too, once:
    only when the stored condition does not say so already (its edits and resyncs don't)."""
    warning = output_warning(spec)
    if warning is None:
        step.condition(cond.OUTPUT_PERSISTED, "True", "PersistentVolumeClaim",
                       f"checkpoints and the final model go to PVC {spec.output.pvc}")
        return
    previous = cond.find(step.status.conditions, cond.OUTPUT_PERSISTED)
    if previous is None or previous.status != "False":
        step.emit("Warning", EPHEMERAL_OUTPUT, str(warning))
    step.condition(cond.OUTPUT_PERSISTED, "False", EPHEMERAL_OUTPUT, str(warning))
