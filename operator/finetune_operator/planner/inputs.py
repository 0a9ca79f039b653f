"""From a FineTuneJob spec to the planner's inputs: the model's size, the GPU, the precision.

Every way a spec can be impossible to plan ends here as a PlanningError naming the field.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from finetune_contract.api import FineTuneJobSpec, ModelSizing

from finetune_operator.planner import gpus, models
from finetune_operator.planner.parameters import (
    ConfigError,
    ParameterCount,
    count_parameters,
    shape_for_size,
)
from finetune_operator.sizes import format_size, parse_quantity, parse_size


class PlanningError(Exception):
    """A spec the planner cannot plan at all (not: one that does not fit)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NeedsSizing(PlanningError):
    """The model can only be sized by reading it (its config.json and safetensors headers
    on the Hub or in its folder), and no sizing was given: `finetune plan` reads it through
    huggingface_hub, the operator through a sizing pod (finetune_operator.sizing)."""


def needs_sizing(spec: FineTuneJobSpec) -> bool:
    """Whether the spec alone cannot size the model: a pretrained model the catalog lacks,
    without model.config (with its model_type) or a model.parameters hint."""
    m = spec.model
    if m.init != "pretrained" or m.parameters is not None:
        return False
    if m.config and "model_type" in m.config:
        return False
    return not (m.name and models.find_model(m.name))


# --------------------------------------------------------------------------- model size


def model_count(spec: FineTuneJobSpec, data_root: Path | None,
                sizing: ModelSizing | None = None) -> tuple[ParameterCount, str]:
    """The parameter count and where it came from (Plan.parameter_source).

    Sources, in order: model.config (merged over the catalog entry or config.json it
    overrides), the built-in catalog by model.name, config.json under model.path (readable
    only where the data is, i.e. locally), what reading the model gave (`sizing`: its
    config.json, and the exact count of its safetensors headers, which wins over the
    config's arithmetic), then the model.parameters size hint.
    """
    m = spec.model
    labels = spec.method.num_labels if spec.method.task == "classification" else None
    vocab = m.tokenizer.train.vocab_size if m.tokenizer and m.tokenizer.train else None
    base, base_source = _base_config(spec, data_root)
    if base is None and sizing is not None and needs_sizing(spec):
        base, base_source = dict(sizing.config), "config"
    config = {**(base or {}), **(m.config or {})}
    if config:
        if "model_type" not in config:
            raise PlanningError("spec.model.config.model_type",
                                "is required to size the model (e.g. llama)")
        try:
            count = count_parameters(config, num_labels=labels, vocab_size=vocab)
        except ConfigError as err:
            field = "spec.model.config" + (f".{err.key}" if err.key else "")
            raise PlanningError(field, err.message) from None
        exact = sizing.parameters if sizing is not None and base_source == "config" else None
        if exact and not m.config and needs_sizing(spec):
            # The checkpoint's own count: what the config's arithmetic cannot know (an
            # architecture it does not cover, extra modules) is in the tensors.
            return with_exact_total(count, exact, config, labels, vocab), "safetensors"
        if not count.exact:
            return count, "estimate"
        return count, "config" if m.config or base_source == "config" else "catalog"
    if m.parameters is not None:
        try:
            size = parse_size(m.parameters)
        except ValueError as err:
            raise PlanningError("spec.model.parameters", str(err)) from None
        return _count_from_hint(size, labels), "hint"
    what = repr(m.name or m.path)
    raise NeedsSizing(
        "spec.model",
        f"cannot size model {what}: it is not in the built-in catalog and no config.json "
        "is readable here; give model.parameters (e.g. 7B) or model.config (model_type, "
        "hidden_size, num_hidden_layers, ...)",
    )


def with_exact_total(count: ParameterCount, total: int, config: dict[str, Any],
                     num_labels: int | None, vocab: int | None) -> ParameterCount:
    """`count` (from the config: the shape, embeddings, head) holding `total` parameters
    exactly, the difference spread over the blocks. `total` is the checkpoint's: a
    classification head replaces the LM head it counts."""
    if num_labels:
        lm = count_parameters(config, vocab_size=vocab)
        total = total - lm.head + num_labels * lm.shape.hidden_size
    if total == count.total:
        return replace(count, exact=True)
    layers = max(1, count.shape.num_layers)
    rest = total - count.embedding - count.final_norm - count.head
    if rest < layers:  # the config's embeddings alone exceed the checkpoint: keep its total
        return replace(shape_for_size(total, count), exact=True)
    per_layer, extra = divmod(rest, layers)
    active = min(count.per_layer_active, per_layer) if count.per_layer_active else 0
    return ParameterCount(count.shape, count.embedding + extra, per_layer, count.final_norm,
                          count.head, exact=True, per_layer_active=active)


def _base_config(spec: FineTuneJobSpec, data_root: Path | None) -> tuple[dict | None, str]:
    m = spec.model
    if m.name and (entry := models.find_model(m.name)):
        return entry, "catalog"
    if m.path and data_root is not None:
        path = Path(m.path)
        config_file = (path if path.is_absolute() else data_root / path) / "config.json"
        if config_file.is_file():
            return _read_config(config_file), "config"
    return None, ""


def _read_config(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PlanningError("spec.model.path",
                            f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PlanningError("spec.model.path", f"{path}: cannot read: {err}") from None
    if not isinstance(value, dict):
        raise PlanningError("spec.model.path", f"{path}: expected a JSON object")
    return value


def _count_from_hint(size: int, num_labels: int | None) -> ParameterCount:
    """A bare size: borrow the shape of the catalog model nearest in size."""
    counts = [count_parameters(config) for config in models.CATALOG.values()]
    nearest = min(counts, key=lambda c: abs(c.total - size))
    count = shape_for_size(size, nearest)
    if num_labels:
        # Replace the LM head by a classifier, keeping the hinted size for the rest.
        return ParameterCount(count.shape, count.embedding, count.per_layer, count.final_norm,
                              num_labels * count.shape.hidden_size, exact=False)
    return count


def describe_hint(count: ParameterCount) -> str:
    return f"{format_size(count.total)} (shape borrowed from a {count.shape.model_type} model)"


# --------------------------------------------------------------------------- hardware


def resolve_gpu(spec: FineTuneJobSpec) -> gpus.Gpu:
    """The catalog GPU with the memory a rank really gets.

    On cpu a rank's "GPU memory" is host RAM: resources.memory split over the ranks of a pod,
    else resources.gpuMemoryGiB, else DEFAULT_CPU_RANK_MEMORY.
    """
    r = spec.resources
    gpu = gpus.find_gpu(r.gpu)
    custom = int(r.gpu_memory_gib * gpus.GIB) if r.gpu_memory_gib else None
    if gpu is None:
        if custom is None:
            raise PlanningError("spec.resources.gpu", gpus.unknown_gpu_message(r.gpu))
        # Unknown throughput and price: memory planning works, the time estimate is 0.
        return gpus.Gpu(r.gpu, custom, 0.0, 0.0, True, 0.0, 0.0)
    if gpu.is_cpu and r.memory:
        return gpus.with_memory(gpu, pod_memory(spec) // r.gpus_per_node)
    return gpus.with_memory(gpu, custom) if custom else gpu


def pod_memory(spec: FineTuneJobSpec) -> int | None:
    """resources.memory in bytes, or None when not given."""
    if not spec.resources.memory:
        return None
    try:
        value = int(parse_quantity(spec.resources.memory, "memory"))
    except ValueError as err:
        raise PlanningError("spec.resources.memory", str(err)) from None
    return value


def resolve_precision(spec: FineTuneJobSpec, gpu: gpus.Gpu) -> str:
    """auto: fp32 on cpu, bf16 where the GPU has it, fp16 on V100/T4."""
    asked = spec.training.precision
    if asked == "auto":
        if gpu.is_cpu:
            return "fp32"
        return "bf16" if gpu.bf16 else "fp16"
    if asked == "bf16" and not gpu.bf16:
        raise PlanningError("spec.training.precision",
                            f"bf16 is not supported on {gpu.name}; use fp16, fp32 or auto")
    if asked == "fp16" and gpu.is_cpu:
        raise PlanningError("spec.training.precision", "fp16 needs a GPU; use fp32 or bf16 "
                            "on cpu")
    return asked


def resolve_packing(spec: FineTuneJobSpec) -> str:
    """auto: padding-free everywhere. No pad tokens and no cross-row attention; on the CPU it
    measured fastest (1.16-1.23x padded batches), on GPUs it needs flash/SDPA varlen kernels
    that current transformers use by default."""
    packing = spec.training.packing
    return "padding-free" if packing == "auto" else packing
