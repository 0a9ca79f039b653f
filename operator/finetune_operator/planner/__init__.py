"""The planner: size a fine-tuning run from the model and pick its layout.

    plan = plan_job(spec, data_root=None, dataset_stats=None)

returns a `finetune_contract.api.Plan` (with `fits=False`, a reason and a suggestion when
nothing fits) and raises `PlanningError(field, message)` for a spec that cannot be planned at
all. Pure Python without torch: the operator image runs it. The modules:

- `parameters`: exact parameter counts from Hugging Face configs,
- `models`: the built-in catalog of popular models, `gpus`: the accelerator catalog,
- `memory`: bytes per rank, itemized (the only place that knows this arithmetic),
- `choose`: the search over strategies, nodes, micro-batch and checkpointing,
- `estimate`: tokens, FLOPs, GPU-hours and cost,
- `throughput`: predicted step time and tokens per second of a layout (compute,
  communication, offloading), which the search ranks layouts by,
- `storage`: bytes on disk (checkpoints, the final model), the pods' volume sizes and their
  termination grace period.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from finetune_contract import rules, strategies
from finetune_contract.api import (
    FineTuneJobSpec,
    MemoryBreakdown,
    ModelSizing,
    Plan,
    PlanAlternative,
    PlanCalibration,
)

from finetune_operator import calibration as cal
from finetune_operator.planner.choose import (
    Bounds,
    Candidate,
    Layout,
    Sizing,
    Unreachable,
    calibration_key,
    calibration_of,
    choose,
    host_bound,
)
from finetune_operator.planner.estimate import (
    DatasetStats,
    estimate,
    training_flops,
    training_tokens,
)
from finetune_operator.planner.gpus import Links
from finetune_operator.planner.inputs import (
    NeedsSizing,
    PlanningError,
    model_count,
    needs_sizing,
    pod_memory,
    resolve_gpu,
    resolve_packing,
    resolve_precision,
)
from finetune_operator.planner.memory import Adapters, cpus_per_node
from finetune_operator.planner.parameters import (
    ConfigError,
    ParameterCount,
    adapted_linears,
    adapter_parameters,
    block_linears,
    quantized_parameters,
)
from finetune_operator.planner.storage import termination_grace
from finetune_operator.sizes import format_bytes

__all__ = ["DatasetStats", "NeedsSizing", "PlanningError", "needs_sizing", "plan_job"]


def plan_job(
    spec: FineTuneJobSpec, *, data_root: Path | None = None,
    dataset_stats: DatasetStats | None = None, sizing: ModelSizing | None = None,
    links: Links | None = None, calibration: cal.Table | None = None,
) -> Plan:
    """Plan a FineTuneJob: what to run, on how much hardware, and what it costs.

    `sizing`: what reading the model gave (finetune_operator.hub, or the operator's sizing
    pod), for a model the spec alone cannot size (`needs_sizing`); without it such a
    model raises NeedsSizing. `links`: the bandwidths the throughput model assumes, instead
    of the catalog's for the GPU (gpus.LINKS). `calibration`: the measured runs
    (finetune_operator/calibration.py) whose factor scales each layout's memory per rank
    when its (model family, strategy, GPU) has some; the plan's `calibration` says what the
    chosen layout got. None: the planner's own estimate, and no `calibration` in the plan."""
    if spec.method.tuning == "auto":
        return _plan_auto(spec, data_root=data_root, dataset_stats=dataset_stats,
                          sizing=sizing, links=links, calibration=calibration)
    model_read = sizing  # `sizing` names the planner's own Sizing below
    count, source = model_count(spec, data_root, model_read)
    sizing = replace(_sizing(spec, count), links=links, calibration=calibration,
                     family=_family(spec, count, source))
    r = spec.resources
    bounds = Bounds(
        gpus_per_node=r.gpus_per_node,
        max_nodes=max(r.max_nodes, r.nodes or 0),
        nodes=r.nodes,
        strategy=None if r.strategy == "auto" else r.strategy,
    )
    try:
        choice = choose(sizing, bounds)
    except Unreachable as err:
        raise PlanningError(err.field, err.message) from None
    chosen = choice.chosen
    sizing = replace(sizing, global_batch=chosen.global_batch)  # rounded when unset
    tokens, basis = training_tokens(
        seq_len=sizing.seq_len, global_batch=sizing.global_batch, epochs=spec.training.epochs,
        max_steps=spec.training.max_steps, stats=dataset_stats,
    )
    per_token = {"active": count.active, "trainable": sizing.trainable,
                 "backward_through": _backward_through(spec, count)}
    step_tokens = sizing.global_batch * sizing.seq_len
    layout = chosen.layout
    plan = Plan(
        parameters=count.total,
        trainable_parameters=sizing.trainable,
        parameter_source=source,
        tuning=spec.method.tuning,
        strategy=layout.strategy,
        nodes=layout.nodes,
        gpus_per_node=layout.gpus_per_node,
        world_size=layout.world,
        gpu=sizing.gpu.name,
        gpu_memory=sizing.gpu.memory,
        precision=sizing.precision,
        micro_batch_size=chosen.micro_batch,
        gradient_accumulation=chosen.accumulation,
        global_batch_size=sizing.global_batch,
        gradient_checkpointing=chosen.checkpointing,
        packing=resolve_packing(spec),
        seq_length=sizing.seq_len,
        fits=chosen.fits,
        reason=choice.reason + _calibration_note(sizing, chosen),
        suggestion=_with_adapters(spec, choice.suggestion, chosen.fits,
                                  data_root=data_root, dataset_stats=dataset_stats,
                                  model_read=model_read, calibration=calibration),
        memory_per_gpu=_breakdown(chosen),
        host_memory_per_node=chosen.memory.host_per_node,
        **_host_bound(sizing, layout),
        cpu_per_node=cpus_per_node(layout.strategy, layout.gpus_per_node, sizing.gpu.is_cpu),
        alternatives=[_alternative(c) for c in choice.alternatives],
        estimate=estimate(tokens=tokens, flops=training_flops(tokens, **per_token),
                          step_flops=training_flops(step_tokens, **per_token),
                          gpu=sizing.gpu, precision=sizing.precision, world=layout.world,
                          checkpointing=chosen.checkpointing, basis=basis,
                          predicted_step=chosen.step.seconds if chosen.step else 0.0,
                          tokens_per_second=(chosen.step.tokens_per_second if chosen.step
                                             else 0.0)),
        calibration=_calibration(sizing, chosen),
    )
    grace = termination_grace(spec, plan)
    return plan.model_copy(update={"termination_grace_seconds": grace.seconds,
                                   "termination_grace_reason": grace.reason})


def _plan_auto(spec: FineTuneJobSpec, *, data_root: Path | None,
               dataset_stats: DatasetStats | None, sizing: ModelSizing | None,
               links: Links | None, calibration: cal.Table | None) -> Plan:
    """tuning: auto: full fine-tuning if it fits the job's bounds, else lora, else qlora
    (pretrained weights only); the reason says what did not fit. Nothing fits: the last
    plan tried, with every reason."""
    tried: list[str] = []
    plan = None
    for tuning in rules.AUTO_CHOICES:
        if tuning == "qlora" and spec.model.init == "random":
            continue
        concrete = spec.model_copy(deep=True)
        concrete.method.tuning = tuning
        plan = plan_job(concrete, data_root=data_root, dataset_stats=dataset_stats,
                        sizing=sizing, links=links, calibration=calibration)
        if plan.fits:
            break
        tried.append(f"{tuning} does not fit: {plan.reason.split('smallest footprint: ')[-1]}")
    assert plan is not None
    if plan.fits:
        why = f"tuning auto chose {plan.tuning}"
        why += f" ({'; '.join(tried)})" if tried else " (it fits)"
        return plan.model_copy(update={"reason": f"{why}: {plan.reason}"})
    return plan.model_copy(update={"reason": f"tuning auto: nothing fits ({'; '.join(tried)})"})


def _with_adapters(spec: FineTuneJobSpec, suggestion: str | None, fits: bool, *,
                   data_root: Path | None, dataset_stats: DatasetStats | None,
                   model_read: ModelSizing | None,
                   calibration: cal.Table | None) -> str | None:
    """When full (or freeze) fine-tuning does not fit: the suggestion, followed by what
    tuning lora and qlora would need on the same bounds."""
    if fits or spec.method.tuning in rules.MAY_USE_ADAPTERS or spec.method.task != "sft":
        return suggestion
    notes = []
    for tuning in rules.ADAPTER_TUNINGS:
        if tuning == "qlora" and spec.model.init == "random":
            continue  # qlora quantizes pretrained weights only
        other = spec.model_copy(deep=True)
        other.method.tuning = tuning
        other.method.trainable_layers = 0
        other.method.layerwise_lr_decay, other.method.l2_to_pretrained = 1.0, 0.0
        try:
            plan = plan_job(other, data_root=data_root, dataset_stats=dataset_stats,
                            sizing=model_read, calibration=calibration)
            fewest = _fewest_nodes(other, plan, data_root=data_root,
                                   dataset_stats=dataset_stats, model_read=model_read,
                                   calibration=calibration)
        except PlanningError:
            continue
        notes.append(_adapter_note(tuning, plan, fewest))
    return "; ".join([*([suggestion] if suggestion else []), *notes]) or None


def _fewest_nodes(spec: FineTuneJobSpec, fastest: Plan, *, data_root: Path | None,
                  dataset_stats: DatasetStats | None, model_read: ModelSizing | None,
                  calibration: cal.Table | None) -> Plan | None:
    """The plan on the fewest nodes that fits, when that is fewer than the fastest plan's
    (adapters often fit on one GPU, where the fastest layout spreads over every node the
    bounds allow); None when the fastest is the smallest, or the node count is forced."""
    if not fastest.fits or spec.resources.nodes is not None:
        return None
    for nodes in range(1, fastest.nodes):
        fewer = spec.model_copy(deep=True)
        fewer.resources.nodes = fewer.resources.max_nodes = nodes
        plan = plan_job(fewer, data_root=data_root, dataset_stats=dataset_stats,
                        sizing=model_read, calibration=calibration)
        if plan.fits:
            return plan
    return None


def _adapter_note(tuning: str, plan: Plan, fewest: Plan | None) -> str:
    need = format_bytes(plan.memory_per_gpu.total)
    where = f"{plan.nodes} x {plan.gpus_per_node} {plan.gpu}"
    if not plan.fits:
        return f"tuning: {tuning} needs {need}/GPU ({plan.strategy} on {where})"
    if fewest is None:
        return f"tuning: {tuning} would fit ({plan.strategy} on {where}, {need}/GPU)"
    return (f"tuning: {tuning} would fit on {fewest.nodes} x {fewest.gpus_per_node} "
            f"{fewest.gpu} ({fewest.strategy}, {format_bytes(fewest.memory_per_gpu.total)}"
            f"/GPU), fastest as {plan.strategy} on {plan.nodes} x {plan.gpus_per_node}")


def _sizing(spec: FineTuneJobSpec, count: ParameterCount) -> Sizing:
    method, training = spec.method, spec.training
    gpu = resolve_gpu(spec)
    checkpointing = training.gradient_checkpointing
    adapters = _adapters(spec, count)
    return Sizing(
        count=count,
        trainable=(adapters.trainable if adapters
                   else count.trainable(method.tuning, method.trainable_layers)),
        adapters=adapters,
        refused=_refused_strategies(spec, gpu.is_cpu),
        layers_with_grad=_layers_with_grad(spec, count),
        gpu=gpu,
        precision=resolve_precision(spec, gpu),
        seq_len=training.max_seq_length,
        global_batch=training.global_batch_size,
        batch_set="global_batch_size" in training.model_fields_set,
        backward_through=_backward_through(spec, count),
        micro_batch=training.micro_batch_size,
        checkpointing=None if checkpointing == "auto" else bool(checkpointing),
        num_labels=method.num_labels if method.task == "classification" else None,
        packing=resolve_packing(spec),
        host_limit=None if gpu.is_cpu else pod_memory(spec),
    )


def _adapters(spec: FineTuneJobSpec, count: ParameterCount) -> Adapters | None:
    """What tuning lora or qlora trains and freezes, for the memory sums; None otherwise."""
    method = spec.method
    if method.tuning not in rules.ADAPTER_TUNINGS:
        return None
    lora = method.lora
    targets = list(lora.target_modules) if lora.target_modules else None
    try:
        trainable = adapter_parameters(count, lora.rank, targets, dora=lora.use_dora,
                                       modules_to_save=lora.modules_to_save)
        linears = adapted_linears(count.shape, targets)
    except ConfigError as err:
        raise PlanningError("spec.method.lora.targetModules", err.message) from None
    saved = lora.modules_to_save or []
    return Adapters(
        tuning=method.tuning,
        trainable=trainable,
        rank=lora.rank,
        dropout=lora.dropout > 0,
        adapted=len(linears),
        inputs_per_token=sum(layer.inputs for layer in linears.values()),
        largest_linear=max(layer.inputs * layer.outputs
                           for layer in block_linears(count.shape).values()),
        quantized=quantized_parameters(count) if method.tuning == "qlora" else 0,
        double_quant=method.qlora.double_quant,
        trainable_head="lm_head" in saved or (count.shape.tied_embeddings
                                              and "embed_tokens" in saved),
    )


def _refused_strategies(spec: FineTuneJobSpec, on_cpu: bool) -> tuple[str, ...]:
    """Strategies the search skips for lora and qlora, which train under a few only
    (rules.strategy_refusals); other methods keep the search as it was, and are told after
    planning when the chosen strategy cannot train them (validation.layout_problems)."""
    if spec.method.tuning not in rules.ADAPTER_TUNINGS:
        return ()
    device = "cpu" if on_cpu else "cuda"
    return tuple(row.name for row in strategies.TABLE if rules.strategy_refusals(
        row.name, device, tuning=spec.method.tuning, l2_to_pretrained=0,
        merge=spec.output.merge))


def _layers_with_grad(spec: FineTuneJobSpec, count: ParameterCount) -> int:
    """Blocks that save activations: all, or only the trainable top ones under freeze."""
    if spec.method.tuning == "freeze":
        return min(spec.method.trainable_layers, count.shape.num_layers)
    return count.shape.num_layers


def _backward_through(spec: FineTuneJobSpec, count: ParameterCount) -> int:
    """Parameters the backward pass propagates input gradients through."""
    if spec.method.tuning != "freeze":
        return count.active
    per_layer = count.per_layer_active or count.per_layer
    return _layers_with_grad(spec, count) * per_layer + count.final_norm + count.head


def _host_bound(sizing: Sizing, layout: Layout) -> dict[str, int | str]:
    bound = host_bound(sizing, layout)
    if bound is None:
        return {}
    memory, source = bound
    return {"host_memory_available_per_node": memory, "host_memory_source": source}


def _family(spec: FineTuneJobSpec, count: ParameterCount, source: str) -> str:
    """The model family calibration keeps runs of: the config's model_type. A model sized
    from a bare size hint borrows the shape of another, so its own name stands for it."""
    if source == "hint":
        return spec.model.name or spec.model.path or "unknown"
    return count.shape.model_type or "unknown"


def _calibration(sizing: Sizing, chosen: Candidate) -> PlanCalibration | None:
    """What calibration made of the chosen layout's memory; None when planned without."""
    if sizing.calibration is None:
        return None
    key = calibration_key(sizing, chosen.layout.strategy)
    found = calibration_of(sizing, chosen.layout.strategy)
    return PlanCalibration(key=key.name, model_family=key.family,
                           factor=found.value if found else 1.0,
                           runs=found.runs if found else 0,
                           largest_ratio=found.largest_ratio if found else None,
                           estimated_bytes=chosen.memory.estimate)


def _calibration_note(sizing: Sizing, chosen: Candidate) -> str:
    """The end of the plan's reason when its memory was scaled: by how much, from what."""
    found = calibration_of(sizing, chosen.layout.strategy)
    if found is None:
        return ""
    return (f"; memory calibrated x{found.value:g} from {found.runs} recent run(s) of "
            f"{found.key.describe()} (planner's estimate "
            f"{format_bytes(chosen.memory.estimate)})")


def _breakdown(c: Candidate) -> MemoryBreakdown:
    m = c.memory
    return MemoryBreakdown(weights=m.weights, gradients=m.gradients, optimizer=m.optimizer,
                           activations=m.activations, logits=m.logits, overhead=m.overhead,
                           total=m.total)


def _alternative(c: Candidate) -> PlanAlternative:
    return PlanAlternative(strategy=c.layout.strategy, nodes=c.layout.nodes,
                           gpus_per_node=c.layout.gpus_per_node,
                           memory_per_gpu=c.memory.total, fits=c.fits,
                           micro_batch_size=c.micro_batch,
                           gradient_checkpointing=c.checkpointing,
                           tokens_per_second=c.step.tokens_per_second if c.step else None,
                           step_seconds=c.step.seconds if c.step else None)
