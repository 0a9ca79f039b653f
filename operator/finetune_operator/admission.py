"""The fit check at admission: what the validating webhook says about a FineTuneJob that is
being created or edited, before the API server stores it.

The same checks, in the same order, as the start of a job (lifecycle/start.py): the spec
with the operator's defaults, validated; the tenant policy; and, for a model the catalog
knows or the job describes, the plan: it must fit within the job's bounds, or the refusal
carries the planner's reason and suggestion. A model that only a sizing pod can read is let
through: the operator sizes it after it is stored, and its status says the rest.

Pure: the object, its namespace and the settings in, the reasons to refuse out.
"""

from __future__ import annotations

from typing import Any

from finetune_operator import policy
from finetune_operator.calibration import Table
from finetune_operator.lifecycle import spec as specs
from finetune_operator.lifecycle.start import DOES_NOT_FIT, PlanFn, checked_plan
from finetune_operator.planner import needs_sizing, plan_job
from finetune_operator.settings import Settings


def refusals(obj: dict[str, Any], namespace: str, settings: Settings,
             plan_fn: PlanFn = plan_job, caches: specs.SpecCaches | None = None,
             calibration: Table | None = None) -> list[str]:
    """Why `obj` may not be stored: one line per problem, each naming its field; [] when
    the job may go ahead. `calibration`: the operator's table, which the job's start will
    plan with (None: calibration is off)."""
    name = str((obj.get("metadata") or {}).get("name") or "")
    spec, problems = specs.validated(name, specs.with_defaults(obj.get("spec"), settings),
                                     caches or specs.SpecCaches())
    if spec is None:
        return list(problems)
    refused = [str(p) for p in policy.violations(spec, namespace, settings.policy)]
    if refused or needs_sizing(spec):
        return refused
    _, refusal = checked_plan(spec, namespace, settings, plan_fn, None, calibration)
    if refusal is None:
        return []
    # The bounds that it does not fit within are the job's resources.
    where = "spec.resources: " if refusal.reason == DOES_NOT_FIT else ""
    return [where + refusal.message]


def spec_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether a create or update is checked: a new job, or an edit of the spec beyond its
    runPolicy. A job stored before a rule existed (or a policy tightened) must still take a
    label, lose a finalizer while it is deleted, and be suspended or resumed: the operator
    applies runPolicy edits to a running job whatever else it would say of its spec."""
    if old is None:
        return True
    return _without_run_policy(old) != _without_run_policy(new)


def _without_run_policy(obj: dict[str, Any]) -> Any:
    spec = obj.get("spec")
    return {k: v for k, v in spec.items() if k != "runPolicy"} if isinstance(spec, dict) \
        else spec
