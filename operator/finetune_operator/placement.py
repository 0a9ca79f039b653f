"""Which nodes a job's pods may run on: the planned GPU type as node labels.

A plan holds for the GPU type it was made for. A pod that only requests `nvidia.com/gpu` can
land on any GPU node, and on a mixed cluster a plan for H100-80GB would run out of memory on
an L4. So the pods of a GPU plan also require a node label of the type: by default GPU Feature
Discovery's `nvidia.com/gpu.product` with GFD's product names of the type (the table in
planner/gpus.py). The chart's `trainer.gpuNodeLabels` (FINETUNE_GPU_NODE_LABELS, read in
settings.py) names another label key, other values per type, or turns this off.

One value becomes a nodeSelector entry, several a required nodeAffinity term (`key In
values`). The job's own spec.resources.nodeSelector always applies; when it names the same
label key, its value replaces the operator's (both must hold on a node, so two different
values could never schedule, and the user knows their nodes). cpu plans get no GPU label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune_operator.apirules import label_key_errors, label_value_errors
from finetune_operator.planner import gpus

_FIELDS = ("enabled", "key", "values")


class LabelsError(ValueError):
    """A GPU node label setting the operator cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class GpuNodeLabels:
    """The node label that carries the GPU type, and its values for each catalog type."""

    key: str = gpus.GFD_PRODUCT_LABEL
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def of(self, gpu: str) -> tuple[str, ...]:
        """The label values a node with this GPU type has; () when unconstrained."""
        if gpu == gpus.CPU:
            return ()
        if gpu in self.values:
            return self.values[gpu]
        return gpus.gfd_products(gpu) if self.key == gpus.GFD_PRODUCT_LABEL else ()


def parse(text: str) -> GpuNodeLabels | None:
    """The setting's JSON (what the chart writes of trainer.gpuNodeLabels): an object with
    `enabled` (false: None, no constraint), `key` and `values` (GPU type -> label values).
    Empty text: GFD's label and product names. LabelsError says what is wrong."""
    if not text.strip():
        return GpuNodeLabels()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise LabelsError(f"is not JSON ({err.msg})") from None
    if not isinstance(raw, dict):
        raise LabelsError(f"must be an object with {', '.join(_FIELDS)}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise LabelsError(f"has unknown field {unknown[0]!r}; known: {', '.join(_FIELDS)}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise LabelsError(f"enabled must be true or false (got {enabled!r})")
    if not enabled:
        return None
    key = _key(raw.get("key", gpus.GFD_PRODUCT_LABEL))
    values = _values(raw.get("values") or {})
    if not values and key != gpus.GFD_PRODUCT_LABEL:
        raise LabelsError(f"key {key!r} has no values, so it would constrain nothing: give "
                         "values for each GPU type, or set enabled to false")
    return GpuNodeLabels(key, values)


def _key(key: Any) -> str:
    if not isinstance(key, str) or label_key_errors(key):
        raise LabelsError(f"key must be a node label key such as {gpus.GFD_PRODUCT_LABEL} "
                         f"(got {key!r})")
    return key


def _values(values: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(values, dict):
        raise LabelsError("values must map GPU types to lists of label values")
    out: dict[str, tuple[str, ...]] = {}
    for name, labels in values.items():
        gpu = _gpu_type(name)
        if gpu in out:
            raise LabelsError(f"values: {name!r} is {gpu}, which is listed twice")
        out[gpu] = _label_values(name, labels)
    return out


def _gpu_type(name: str) -> str:
    """The catalog name of a GPU type, given as resources.gpu takes it (any case, or GFD's
    product name)."""
    gpu = gpus.find_gpu(name)
    if gpu is not None and not gpu.is_cpu:
        return gpu.name
    close = gpus.suggest_gpu(name)
    hint = f" (did you mean {close}?)" if close and close != gpus.CPU else ""
    known = ", ".join(n for n in gpus.CATALOG if n != gpus.CPU)
    raise LabelsError(f"values: {name!r} is not a GPU type of the catalog{hint}; known: {known}")


def _label_values(name: str, labels: Any) -> tuple[str, ...]:
    ok = (isinstance(labels, list) and labels
          and all(isinstance(v, str) and v and not label_value_errors(v) for v in labels))
    if not ok:
        raise LabelsError(f"values.{name} must be a non-empty list of node label values "
                         f"(got {labels!r})")
    return tuple(dict.fromkeys(labels))


def node_constraints(labels: GpuNodeLabels | None, gpu: str,
                     node_selector: Mapping[str, str]) -> dict[str, Any]:
    """The pod spec's nodeSelector and affinity: the job's nodeSelector, plus the GPU type's
    label unless that nodeSelector already names the label key."""
    selector = dict(node_selector)
    values = labels.of(gpu) if labels else ()
    out: dict[str, Any] = {}
    if labels and values and labels.key not in selector:
        if len(values) == 1:
            selector[labels.key] = values[0]
        else:
            term = {"matchExpressions": [
                {"key": labels.key, "operator": "In", "values": list(values)}]}
            out["affinity"] = {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    if selector:
        out["nodeSelector"] = selector
    return out
