"""A job whose model the catalog lacks: size it with a sizing pod before planning.

The pod (finetune_operator.sizing) runs in the job's namespace with the job's token; its
result is kept in status.sizing, keyed by what it depends on, so it runs once. Meanwhile the
job is Pending with the condition Sized=Unknown (reason Sizing), which also tells the
controller to read the pod. A failure fails the job with reason SizingFailed, in the pod's
words (missing repo, gated without a token, refused token); an edit sizes it again.
"""

from __future__ import annotations

from finetune_contract.api import FineTuneJobSpec, ModelSizing

from finetune_operator import conditions as cond
from finetune_operator import names
from finetune_operator.caps import echo
from finetune_operator.lifecycle.actions import Create, Delete
from finetune_operator.lifecycle.step import Step, fail
from finetune_operator.sizes import format_size
from finetune_operator.sizing import SizingFailed, parse_result, sizing_key, sizing_pod

FINISHED = ("Succeeded", "Failed")


def sized(step: Step, spec: FineTuneJobSpec) -> ModelSizing | None:
    """What the sizing pod read about the job's model, or None while it runs (or after it
    failed the job). Acts: creates the pod, deletes it once read (or when it is stale)."""
    key = sizing_key(spec)
    what = spec.model.name or spec.model.path or "the model"
    pod_name = names.sizing_pod_name(step.name)
    pod = step.observed.sizing_pod
    cached = step.status.sizing
    if cached is not None and cached.key == key:
        if pod is not None and not pod.deleting:
            step.actions.append(Delete("Pod", pod_name))
        return cached
    if pod is not None and not pod.deleting and pod.key != key:
        step.actions.append(Delete("Pod", pod_name))  # made for an earlier spec
        return _waiting(step, what, f"replacing sizing pod {pod_name} of an earlier spec")
    if pod is None or pod.deleting:
        if pod is None:
            step.actions.append(Create(sizing_pod(
                step.observed.owner, spec, operator_image=step.settings.sizing_image,
                trainer_image=step.settings.default_image,
                hf_endpoint=step.settings.hf_endpoint, policy=step.settings.policy)))
        return _waiting(step, what, f"sizing pod {pod_name} reads its config.json and "
                        "safetensors headers")
    if pod.phase not in FINISHED:
        detail = f" ({pod.waiting_reason})" if pod.waiting_reason else ""
        return _waiting(step, what, f"sizing pod {pod_name} is {pod.phase}{detail}")
    step.actions.append(Delete("Pod", pod_name))
    try:
        result = parse_result(pod.message)
    except SizingFailed as err:
        message = f"cannot size {echo(what)}: {err.message}"
        step.condition(cond.SIZED, "False", "SizingFailed", message)
        fail(step, "SizingFailed", message)
        return None
    result = result.model_copy(update={"key": key})
    step.status.sizing = result
    count = (f"{format_size(result.parameters)} parameters (safetensors headers)"
             if result.parameters else "config.json")
    at = f" at {result.commit[:12]}" if result.commit else ""
    step.condition(cond.SIZED, "True", "Sized", f"{what}{at}: {count}")
    return result


def _waiting(step: Step, what: str, message: str) -> None:
    """Pending while the pod runs; an Event when the waiting starts."""
    current = cond.find(step.status.conditions, cond.SIZED)
    if current is None or current.status != "Unknown":
        step.emit("Normal", "Sizing", f"sizing {what}: {message}")
    step.condition(cond.SIZED, "Unknown", "Sizing", message)
    step.phase("Pending", f"sizing {what}")
