"""`finetune plan`: what a job needs (strategy, GPUs, nodes, memory per GPU, cost) and why.

    finetune plan JOB.yaml [flags]
    finetune plan --model NAME|PATH [--parameters 7.5B] [--gpu H100-80GB] [--gpus-per-node 8]
                  [--max-nodes 4] [--gpus N] [--strategy S] [--seq-len 4096]
                  [--global-batch 16] [--tuning full|freeze|lora|qlora|auto] [--lora-rank 16]
                  [--calibration FILE] [--json]

Flags given with a YAML file override what the file says. `--gpus N` fixes the layout (N
GPUs, N <= gpusPerNode on one node, else whole nodes); with `--strategy` it evaluates exactly
that layout. `--calibration FILE` plans as the operator does with its measured memory: FILE
is the ConfigMap as `kubectl get configmap finetune-calibration -o yaml` prints it, or just
its data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from finetune_contract import strategies
from finetune_contract.api import (
    FineTuneJobSpec,
    MemoryBreakdown,
    ModelSizing,
    Plan,
    PlanAlternative,
    TrainingSpec,
)
from pydantic import ValidationError

from finetune_operator import calibration as cal
from finetune_operator import names
from finetune_operator.documents import DocumentError, read_documents
from finetune_operator.errors import UserError
from finetune_operator.planner import DatasetStats, PlanningError, plan_job
from finetune_operator.sizes import format_bytes, format_size
from finetune_operator.sizing import SizingFailed
from finetune_operator.validation import (
    parse_user_spec,
    pydantic_problems,
    read_checked_job,
)

# Stands in for the dataset the flags-only form does not name: planning never reads it.
_PLACEHOLDER_DATASET = {"train": {"path": "train.jsonl"}}
# The spec field each flag writes, so that a problem with it names the flag the user typed
# and not a spec path they never wrote.
_FLAG_FIELDS = {
    "spec.model.parameters": ("parameters", "--parameters"),
    "spec.resources.gpu": ("gpu", "--gpu"),
    "spec.resources.gpuMemoryGiB": ("gpu_memory_gib", "--gpu-memory-gib"),
    "spec.resources.gpusPerNode": ("gpus_per_node", "--gpus-per-node"),
    "spec.resources.maxNodes": ("max_nodes", "--max-nodes"),
    "spec.resources.strategy": ("strategy", "--strategy"),
    "spec.training.maxSeqLength": ("seq_len", "--seq-len"),
    "spec.training.globalBatchSize": ("global_batch", "--global-batch"),
    "spec.training.microBatchSize": ("micro_batch", "--micro-batch"),
    "spec.training.precision": ("precision", "--precision"),
    "spec.training.maxSteps": ("max_steps", "--max-steps"),
    "spec.training.epochs": ("epochs", "--epochs"),
    "spec.method.trainableLayers": ("trainable_layers", "--trainable-layers"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="size a job: strategy, GPUs, memory per GPU, cost",
        description="Plan a fine-tuning job from a FineTuneJob YAML file or from flags: "
        "the sharding strategy, nodes, micro-batch and checkpointing, the memory each GPU "
        "needs (itemized), and the estimated GPU-hours and cost.",
    )
    p.add_argument("file", nargs="?", metavar="JOB.yaml", help="a FineTuneJob ('-' for stdin)")
    p.add_argument("--model", help="Hugging Face id (the built-in catalog, else read from "
                   "the Hub: HF_TOKEN, HF_ENDPOINT) or a local directory with config.json")
    p.add_argument("--parameters", help="size when the model cannot be read: 125M, 7.5B, 70B")
    p.add_argument("--gpu", help="GPU type (H100-80GB, A100-40GB, ..., cpu)")
    p.add_argument("--gpu-memory-gib", type=float, help="custom memory per GPU in GiB")
    p.add_argument("--gpus-per-node", type=int, help="GPUs (CPU ranks) per node")
    p.add_argument("--max-nodes", type=int, help="most nodes the plan may use")
    p.add_argument("--gpus", type=int, help="use exactly this many GPUs")
    p.add_argument("--strategy", choices=[strategies.AUTO, *strategies.NAMES])
    p.add_argument("--seq-len", type=int, help="maximum sequence length in tokens")
    p.add_argument("--global-batch", type=int, help="sequences per optimizer step")
    p.add_argument("--micro-batch", type=int, help="force the per-rank micro-batch")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--tuning", choices=["full", "freeze", "lora", "qlora", "auto"])
    p.add_argument("--lora-rank", type=int, help="with --tuning lora or qlora: adapter rank "
                   "(default 16)")
    p.add_argument("--trainable-layers", type=int,
                   help="with --tuning freeze: top blocks that train (default 2)")
    p.add_argument("--max-steps", type=int, help="optimizer steps, for the estimate")
    p.add_argument("--epochs", type=float, help="passes over the data, for the estimate")
    p.add_argument("--rows", type=int, help="training rows, for the estimate")
    p.add_argument("--tokens-per-row", type=float,
                   help="mean tokens per row (default: full-length rows)")
    p.add_argument("--calibration", metavar="FILE",
                   help="plan with the operator's measured memory: the ConfigMap "
                   f"{names.CALIBRATION_CONFIG_MAP} as `kubectl get configmap -o yaml` prints "
                   "it, or its data ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    calibration = _read_calibration(args.calibration) if args.calibration else None
    spec, data_root, label = _spec_from_args(args)
    stats = _stats(args)
    sizing = _read_model(spec, data_root, label)
    try:
        plan = plan_job(spec, data_root=data_root, dataset_stats=stats, sizing=sizing,
                        calibration=calibration)
    except PlanningError as err:
        raise UserError(f"{label}: {_where(err.field, args)}: {err.message}") from None
    if args.json:
        print(json.dumps(plan.to_wire(), indent=2))
    else:
        print(render(plan, label, sizing))
    return 0 if plan.fits else 2


def _read_model(spec: FineTuneJobSpec, data_root: Path, label: str) -> ModelSizing | None:
    """A model the catalog lacks, read from the Hub (or its folder): config.json and the
    exact count of its safetensors headers. None when the spec sizes it alone."""
    from finetune_operator import hub

    try:
        return hub.size_if_needed(spec, data_root)
    except SizingFailed as err:
        if not err.here_only:
            field = "spec.model.path" if spec.model.path else "spec.model.name"
            raise UserError(f"{label}: {field}: {err.message}") from None
        what = spec.model.name or spec.model.path
        raise UserError(
            f"{label}: spec.model: cannot size {what!r} here: {err.message}. It is not in the "
            "built-in catalog, so planning needs network access to the Hugging Face Hub "
            "(HF_ENDPOINT for a mirror, a token in HF_TOKEN for a gated model), or its size: "
            "--parameters (e.g. 70B) or model.config (model_type, hidden_size, ...)"
        ) from None


# --------------------------------------------------------------------------- input


def _spec_from_args(args: argparse.Namespace) -> tuple[FineTuneJobSpec, Path, str]:
    if args.file:
        doc, label = _read_job(args.file)
        data_root = Path.cwd() if args.file == "-" else Path(args.file).resolve().parent
        raw = doc["spec"]
    else:
        if not args.model and not args.parameters:
            raise UserError("give a FineTuneJob file, or --model NAME|PATH (and --parameters "
                            "for a model the catalog lacks)")
        label = args.model or args.parameters
        data_root = Path.cwd()
        raw = {"dataset": _PLACEHOLDER_DATASET}
    raw = _apply_flags(raw, args)
    try:
        return parse_user_spec(raw), data_root, label
    except ValidationError as err:
        problems = "; ".join(f"{_where(p.path, args)}: {p.message}"
                             for p in pydantic_problems(err, FineTuneJobSpec))
        raise UserError(f"{label}: {problems}") from None


def _where(field: str, args: argparse.Namespace) -> str:
    """The flag that set a field (`--global-batch 12 (spec.training.globalBatchSize)`), else
    the field. pydantic's paths start below the spec: they get the prefix first."""
    path = field if field.startswith("spec") else f"spec.{field}"
    attr, flag = _FLAG_FIELDS.get(path, (None, None))
    value = getattr(args, attr) if attr else None
    return f"{flag} {value} ({path})" if value is not None else path


def _read_job(source: str) -> tuple[dict[str, Any], str]:
    return read_checked_job(source), source


def _apply_flags(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A copy of the spec with every given flag written over it."""
    spec = json.loads(json.dumps(raw))
    model = spec.setdefault("model", {})
    if args.model:
        local = Path(args.model)
        model.pop("name", None)
        model.pop("path", None)
        if (local / "config.json").is_file():
            model["path"] = str(local.resolve())
        else:
            model["name"] = args.model
    if args.parameters:
        model["parameters"] = args.parameters
    resources = spec.setdefault("resources", {})
    _set(resources, "gpu", args.gpu)
    _set(resources, "gpuMemoryGiB", args.gpu_memory_gib)
    _set(resources, "gpusPerNode", args.gpus_per_node)
    _set(resources, "maxNodes", args.max_nodes)
    _set(resources, "strategy", args.strategy)
    if args.gpus is not None:
        _fix_layout(resources, args.gpus)
    training = spec.setdefault("training", {})
    _set(training, "maxSeqLength", args.seq_len)
    _set(training, "globalBatchSize", args.global_batch)
    if args.gpus is not None and "globalBatchSize" not in training:
        training["globalBatchSize"] = _divisible_global_batch(args.gpus)
    _set(training, "microBatchSize", args.micro_batch)
    _set(training, "precision", args.precision)
    _set(training, "maxSteps", args.max_steps)
    _set(training, "epochs", args.epochs)
    if args.tuning:
        method = spec.setdefault("method", {})
        method["tuning"] = args.tuning
        if args.tuning == "freeze":
            method.setdefault("trainableLayers", args.trainable_layers or 2)
        else:
            method.pop("trainableLayers", None)
    if args.trainable_layers is not None:
        spec.setdefault("method", {})["trainableLayers"] = args.trainable_layers
    if args.lora_rank is not None:
        spec.setdefault("method", {}).setdefault("lora", {})["rank"] = args.lora_rank
    return spec


def _fix_layout(resources: dict[str, Any], gpus: int) -> None:
    """--gpus N: N GPUs on one node when they fit on one, else whole nodes."""
    per_node = resources.get("gpusPerNode", 8)
    if gpus < 1:
        raise UserError(f"--gpus must be at least 1 (got {gpus})")
    if gpus <= per_node:
        resources["gpusPerNode"], resources["nodes"] = gpus, 1
    elif gpus % per_node:
        raise UserError(f"--gpus {gpus} is not a whole number of nodes of {per_node} GPUs; "
                        f"use a multiple of {per_node} or set --gpus-per-node")
    else:
        resources["nodes"] = gpus // per_node
    resources["maxNodes"] = max(resources.get("maxNodes", 4), resources["nodes"])


def _divisible_global_batch(ranks: int) -> int:
    """--gpus N without a batch: the API's default rounded up to a multiple of the N ranks,
    as every rank takes the same whole number of sequences per step (16 on 64 GPUs
    would be refused for a value the user never wrote)."""
    default = TrainingSpec.model_fields["global_batch_size"].default
    return -(-default // ranks) * ranks


def _set(section: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        section[key] = value


def _stats(args: argparse.Namespace) -> DatasetStats | None:
    if args.rows is None:
        if args.tokens_per_row is not None:
            raise UserError("--tokens-per-row needs --rows")
        return None
    if args.rows < 1:
        raise UserError(f"--rows must be at least 1 (got {args.rows})")
    return DatasetStats(rows=args.rows, mean_tokens_per_row=args.tokens_per_row)


def _read_calibration(source: str) -> cal.Table:
    """The calibration table of FILE: a ConfigMap manifest, or the mapping of its data; a
    UserError naming the file, and each bad entry, otherwise."""
    try:
        docs = read_documents(source)
    except DocumentError as err:
        raise UserError(f"--calibration {err}") from None
    if len(docs) != 1:
        raise UserError(f"--calibration {source}: expected one document (the ConfigMap "
                        f"{names.CALIBRATION_CONFIG_MAP}, or its data), found {len(docs)}")
    body, data = docs[0].body, docs[0].body
    if isinstance(body, dict) and "apiVersion" in body and "kind" in body:  # a manifest
        if body["kind"] != "ConfigMap":
            raise UserError(f"--calibration {source}: is a {str(body['kind'])[:40]}, expected "
                            f"the ConfigMap {names.CALIBRATION_CONFIG_MAP} or its data")
        data = body.get("data") or {}  # without data: nothing recorded yet
    if not isinstance(data, dict):
        raise UserError(f"--calibration {source}: expected the ConfigMap "
                        f"{names.CALIBRATION_CONFIG_MAP} (kubectl get configmap "
                        f"{names.CALIBRATION_CONFIG_MAP} -o yaml) or the mapping of its data")
    table, problems = cal.parse(data)
    if problems:
        raise UserError(f"--calibration {source}: " + "; ".join(problems))
    return table


# --------------------------------------------------------------------------- output


def render(plan: Plan, label: str, sizing: ModelSizing | None = None) -> str:
    """The plan as a short human table."""
    m = plan.memory_per_gpu
    per = "rank" if plan.gpu == "cpu" else "GPU"
    checkpointing = "on" if plan.gradient_checkpointing else "off"
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    e = plan.estimate
    lines = [
        (f"{label}: {format_size(plan.parameters)} parameters "
        f"({source_text(plan, sizing)}), {format_size(plan.trainable_parameters)} trainable"),
        "",
        (f"  plan        {plan.strategy} on {plan.nodes} node(s) x {plan.gpus_per_node} "
        f"{plan.gpu} = {plan.world_size} ranks, {plan.precision}, {plan.packing}: {verdict}"),
        (f"  batch       global {plan.global_batch_size} = micro {plan.micro_batch_size} x "
        f"{plan.world_size} ranks x accumulation {plan.gradient_accumulation}; "
        f"seq {plan.seq_length}; gradient checkpointing {checkpointing}"),
        (f"  memory/{per:<4} {format_bytes(m.total)} of {format_bytes(plan.gpu_memory)}: "
        f"weights {format_bytes(m.weights)}, gradients {format_bytes(m.gradients)}, "
        f"optimizer {format_bytes(m.optimizer)}, activations {format_bytes(m.activations)}, "
        f"logits {format_bytes(m.logits)}, overhead {format_bytes(m.overhead)}"
        f"{_peak_note(m)}"),
        f"  host/node   {_host(plan)}",
    ]
    if e.tokens:
        lines.append(
            f"  estimate    {format_size(e.tokens)} tokens, {e.flops:.3g} FLOPs, "
            f"{e.gpu_hours:.4g} {per}-hours ({e.wall_hours:.3g} h wall; compute at "
            f"{e.mfu:.0%} MFU), "
            f"${e.cost_usd.low:,.2f}-${e.cost_usd.high:,.2f} ({e.basis})"
        )
    else:
        lines.append(f"  estimate    {e.basis}")
    if e.tokens_per_second:
        lines.append(f"  speed       {e.tokens_per_second:,.0f} tokens/s predicted "
                     f"(docs/planner.md, the throughput model)")
    if plan.termination_grace_reason:
        lines.append(f"  grace       {plan.termination_grace_reason}")
    if plan.calibration is not None:
        lines.append(f"  calibration {_calibration(plan)}")
    lines.append(f"  why         {plan.reason}")
    if plan.suggestion:
        lines.append(f"  suggestion  {plan.suggestion}")
    header = (f"  {'strategy':<14} {'layout':<10} {'memory/' + per:>12}  fits "
              f"{'tokens/s':>10} {'s/step':>8}")
    lines += ["", header]
    for alt in plan.alternatives:
        chosen = (alt.strategy, alt.nodes) == (plan.strategy, plan.nodes)
        lines.append(
            f"  {alt.strategy:<14} {f'{alt.nodes} x {alt.gpus_per_node}':<10} "
            f"{format_bytes(alt.memory_per_gpu):>12}  {'yes' if alt.fits else 'no ':<4}"
            f"{_speed(alt)}{'  <- chosen' if chosen else ''}"
        )
    return "\n".join(lines)


def _calibration(plan: Plan) -> str:
    """What --calibration applied to the chosen layout's memory, or that nothing matched."""
    c = plan.calibration
    assert c is not None
    if not c.runs:
        return f"none recorded for {c.key}: memory is the planner's own estimate"
    bounded = "" if c.largest_ratio == c.factor else f" (largest ratio {c.largest_ratio:g})"
    return (f"x{c.factor:g} from {c.runs} recent run(s) of {c.key}{bounded}; the planner's "
            f"estimate was {format_bytes(c.estimated_bytes)}/"
            f"{'rank' if plan.gpu == 'cpu' else 'GPU'}")


def _speed(alt: PlanAlternative) -> str:
    """Predicted tokens/s and seconds per step; a layout that does not fit shows what it
    would do if it did, in parentheses."""
    if alt.tokens_per_second is None or alt.step_seconds is None:
        return f"{'-':>10} {'-':>8}"
    tps, step = f"{alt.tokens_per_second:,.0f}", f"{alt.step_seconds:.3g}"
    if not alt.fits:
        tps, step = f"({tps})", f"({step})"
    return f"{tps:>10} {step:>8}"


def _host(plan: Plan) -> str:
    """Host RAM per node, of what bounded it (resources.memory or the node shape), and the
    CPUs the plan requests."""
    text = format_bytes(plan.host_memory_per_node)
    if plan.host_memory_available_per_node:
        text += (f" of {format_bytes(plan.host_memory_available_per_node)} "
                 f"({plan.host_memory_source})")
    if plan.cpu_per_node:
        text += f"; {plan.cpu_per_node} CPUs"
    return text


def source_text(plan: Plan, sizing: ModelSizing | None) -> str:
    """Where the count came from: `safetensors: acme/model@1a2b3c4d5e6f` when the model was
    read (which files, at which commit), else the source's name."""
    if sizing is None or plan.parameter_source not in ("safetensors", "config", "estimate"):
        return plan.parameter_source
    where = sizing.model + (f"@{sizing.commit[:12]}" if sizing.commit else "")
    if plan.parameter_source == "safetensors":
        files = f", {sizing.safetensors_files} header(s)" if sizing.safetensors_files else ""
        return f"safetensors: {where}{files}"
    return f"{plan.parameter_source}: {where} config.json"


def _peak_note(m: MemoryBreakdown) -> str:
    """The total is a peak, not a sum: say so when the items add up to more."""
    items = m.weights + m.gradients + m.optimizer + m.activations + m.logits + m.overhead
    if items <= m.total:
        return ""
    return (" (the peak of forward/backward and the optimizer step: not all of these are "
            "held at once)")
