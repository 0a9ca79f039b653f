"""A job without a plan: validate it and plan it, or fail it saying why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from finetune_contract.api import (
    TERMINAL_PHASES,
    FineTuneJobSpec,
    FineTuneJobStatus,
    ModelSizing,
    Plan,
)

from finetune_operator import conditions as cond
from finetune_operator import policy
from finetune_operator.calibration import Table
from finetune_operator.lifecycle import spec as specs
from finetune_operator.lifecycle.sizing import sized
from finetune_operator.lifecycle.step import (
    POLICY_VIOLATION,
    Step,
    fail,
    fail_invalid,
    fail_policy,
    planned_message,
)
from finetune_operator.planner import PlanningError, needs_sizing
from finetune_operator.settings import Settings
from finetune_operator.validation import layout_problems, output_warning

# plan_job, or a test's stand-in; called with `sizing=` only for a model that needed one,
# and with `calibration=` only when the operator calibrates.
PlanFn = Callable[..., Plan]
# The OutputPersisted reason (and Event reason) of a job without output.pvc.
EPHEMERAL_OUTPUT = "EphemeralOutput"


def current_spec(step: Step) -> specs.Validated:
    """The stored spec with the operator's defaults, validated (memoized)."""
    spec = specs.with_node_limit(specs.with_defaults(step.observed.spec, step.settings),
                                 step.status.node_limit)
    return specs.validated(step.name, spec, step.caches)


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
    refused = policy.violations(spec, step.observed.owner.namespace, step.settings.policy)
    if refused:  # before a sizing pod: it could run the refused image
        fail_policy(step, "; ".join(str(p) for p in refused))
        return False
    step.condition(cond.VALID, "True", "SpecValid")
    sizing = sized(step, spec) if needs_sizing(spec) else None
    if needs_sizing(spec) and sizing is None:
        return False
    plan, refusal = checked_plan(spec, step.observed.owner.namespace, step.settings, plan_fn,
                                 sizing, step.observed.calibration)
    if plan is not None:
        step.status.plan = plan
    if refusal is not None:
        if refusal.reason == DOES_NOT_FIT:
            step.condition(cond.PLANNED, "False", DOES_NOT_FIT, refusal.message)
            fail(step, DOES_NOT_FIT, refusal.message)
        elif refusal.reason == POLICY_VIOLATION:
            fail_policy(step, refusal.message)
        else:
            fail_invalid(step, refusal.message)
        return False
    assert plan is not None
    step.condition(cond.PLANNED, "True", "Planned", plan.reason)
    _mark_output(step, spec)
    step.phase("Pending", planned_message(plan))
    # No Event here: the same reconcile creates the children, and their Created Event
    # names the plan too (one Event per new job instead of two).
    return True


DOES_NOT_FIT = "DoesNotFit"


@dataclass(frozen=True)
class Refusal:
    """Why a spec gets no plan to run: the Failed reason and its message."""

    reason: str  # InvalidSpec, PolicyViolation or DoesNotFit
    message: str


def checked_plan(spec: FineTuneJobSpec, namespace: str, settings: Settings, plan_fn: PlanFn,
                 sizing: ModelSizing | None, calibration: Table | None = None,
                 ) -> tuple[Plan | None, Refusal | None]:
    """The plan for `spec` and, when it cannot run, why: the planner refuses it, the layout
    breaks a rule `finetune validate` checks, the policy caps it, or it does not fit (then
    the plan comes too: its itemized memory says by how much). Shared by the start of a
    job, its re-plan and the admission webhook, so that all three refuse the same; each
    plans with the operator's calibration table when it has one."""
    kwargs: dict[str, object] = {}
    if sizing is not None:
        kwargs["sizing"] = sizing
    if calibration is not None:
        kwargs["calibration"] = calibration
    try:
        plan = policy.plan_within_limits(plan_fn, spec, namespace, settings.policy,
                                         **kwargs)
    except PlanningError as err:
        return None, Refusal("InvalidSpec", f"{err.field}: {err.message}")
    if not plan.fits:
        hint = f" {plan.suggestion}" if plan.suggestion else ""
        message = f"does not fit: {plan.reason}.{hint}".replace("..", ".")
        return plan, Refusal(DOES_NOT_FIT, message)
    layout = layout_problems(spec, plan)
    if layout:  # the same rules as `finetune validate`, on the layout just chosen
        return None, Refusal("InvalidSpec", "; ".join(str(p) for p in layout))
    too_big = policy.plan_violations(plan, namespace, settings.policy)
    if too_big:
        return None, Refusal(POLICY_VIOLATION, "; ".join(str(p) for p in too_big))
    return plan, None


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
