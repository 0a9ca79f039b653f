"""A gang whose nodes are gone (runPolicy.shrinkAfterSeconds): some of its pods stay
unschedulable while the others were placed. Plan the job again on the nodes that were, and
move it there through the re-plan (lifecycle/replan.py): the emergency checkpoint, the next
attempt on the new layout, the global batch kept.

The new bound is kept in status.nodeLimit, which caps spec.resources.maxNodes for the rest of
the job (lifecycle/start.py current_spec), so that the spec the run restarts with and the
current one agree and the re-plan runs once. A shrink that cannot be planned (the job does
not fit on fewer nodes) is not made: the job keeps waiting for its nodes, and says why.
"""

from __future__ import annotations

from finetune_contract.api import FineTuneJobSpec, Plan

from finetune_operator.lifecycle.observation import Attempt, PodState
from finetune_operator.lifecycle.replan import replan
from finetune_operator.lifecycle.start import PlanFn, checked_plan
from finetune_operator.lifecycle.step import Step

SHRINKING = "Shrinking"


def shrink(step: Step, spec: FineTuneJobSpec, plan: Plan, attempt: Attempt,
           plan_fn: PlanFn) -> bool:
    """Shrink the job onto the nodes its pods were placed on, when that is due; True when
    this reconcile did (the re-plan has begun)."""
    placed, stranded = _placed_and_stranded(step, spec, plan, attempt)
    if not placed or not stranded:
        return False
    smaller = spec.model_copy(deep=True)
    smaller.resources.max_nodes = min(smaller.resources.max_nodes, len(placed))
    namespace = step.observed.owner.namespace
    new_plan, refusal = checked_plan(smaller, namespace, step.settings, plan_fn,
                                     step.status.sizing, step.observed.calibration)
    pods = ", ".join(p.name for p in stranded)
    if refusal is not None or new_plan is None:
        step.status.message = (f"{pods} cannot be scheduled; it does not fit on the "
                               f"{len(placed)} node(s) left either, so it waits for its nodes"
                               f" ({refusal.message if refusal else 'no plan'})")
        return False
    step.status.node_limit = len(placed)
    step.emit("Warning", SHRINKING, f"{pods} could not be scheduled for "
              f"{spec.run_policy.shrink_after_seconds} s: re-planning on the {len(placed)} "
              f"node(s) the gang was placed on (runPolicy.shrinkAfterSeconds)")
    return replan(step, smaller, plan_fn)


def _placed_and_stranded(step: Step, spec: FineTuneJobSpec, plan: Plan,
                         attempt: Attempt) -> tuple[list[PodState], list[PodState]]:
    """The attempt's pods the scheduler placed, and those it has not placed for longer than
    runPolicy.shrinkAfterSeconds; nothing when a shrink is off, or cannot help."""
    after = spec.run_policy.shrink_after_seconds
    if after is None or spec.resources.nodes is not None or plan.nodes <= 1:
        return [], []
    live = [p for p in attempt.pods if p.phase in ("Pending", "Running") and not p.deleting]
    placed = [p for p in live if p.scheduled or p.phase == "Running"]
    stranded = [p for p in live if p not in placed and p.waiting_since is not None
                and (step.now - p.waiting_since).total_seconds() >= after]
    return placed, stranded
