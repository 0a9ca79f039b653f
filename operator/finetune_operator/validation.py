"""Validation of FineTuneJobs: schema, cross-field rules, and whether a plan exists.

One function, `validate_job`, is used by `finetune validate`, `finetune run` and the operator,
so a user sees the same message wherever a mistake is caught. Messages name the field path in
the camelCase the user wrote, say what is wrong and what was given.

`spec_warnings` says what a valid job may lose or miss in a cluster (an output that dies with
the pods, data paths that point into the trainer image): told, never refused.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from finetune_contract import rules
from finetune_contract.api import (
    API_VERSION,
    KIND,
    FineTuneJob,
    FineTuneJobSpec,
    ModelSizing,
    Plan,
    config_type_problem,
)
from finetune_contract.layout import DATA_ROOT
from pydantic import ValidationError

from finetune_operator import apicheck, apirules, bounds, names, redact
from finetune_operator.caps import echo
from finetune_operator.documents import DocumentError, one_job
from finetune_operator.errors import UserError
from finetune_operator.problem import Problem, dedupe, kind_of, pydantic_problems, show_value


def validate_job(obj: Any, *, plan: bool = True) -> tuple[FineTuneJob | None, list[Problem]]:
    """Validate a decoded FineTuneJob document. Returns the model when it is valid.

    Every problem found without a parsed model is reported in one pass (the header, literal
    tokens, the schema, the GPU name); the cross-field rules and the plan need the model.
    """
    if not isinstance(obj, dict):
        return None, [Problem("", f"expected a mapping (a FineTuneJob), got {kind_of(obj)}")]
    problems = _header_problems(obj)
    problems += _secret_literal_problems(obj)
    problems += _gpu_name_problems(obj)
    try:
        job = parse_user_job(obj)
    except ValidationError as err:
        return None, dedupe(problems + pydantic_problems(err))
    if problems:
        return None, problems
    problems = semantic_problems(job)
    if not problems and plan:
        problems = plan_problems(job.spec)
    return (None, problems) if problems else (job, [])


def parse_user_job(obj: dict[str, Any]) -> FineTuneJob:
    """A FineTuneJob from what a user or the API server gave: only the wire (camelCase)
    names. The models also take Python names, for code that builds them; a user's
    `learning_rate` must not be read, because the API server would drop it."""
    return FineTuneJob.model_validate(wire_form(obj), by_alias=True, by_name=False)


def parse_user_spec(raw: dict[str, Any]) -> FineTuneJobSpec:
    """A spec from user input, with the wire names only (see parse_user_job)."""
    return FineTuneJobSpec.model_validate(wire_form(raw), by_alias=True, by_name=False)


def wire_form(value: Any) -> Any:
    """`value` as the API server receives it from kubectl: YAML goes through JSON, where
    3.0 is the number 3 (so an integer field takes it), and a null is pruned, the field
    then absent (the CRD has no nullable field). The models are strict (api.ApiModel): this
    is the only conversion, the one the wire makes."""
    if isinstance(value, dict):
        return {k: wire_form(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [wire_form(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def validate_spec(spec: dict[str, Any], name: str, *, plan: bool = True) -> tuple[
    FineTuneJobSpec | None, list[Problem]
]:
    """Validate a spec as the operator sees it (metadata from the live object)."""
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
    job, problems = validate_job(doc, plan=plan)
    return (job.spec if job else None), problems


# --------------------------------------------------------------------------- schema


def _header_problems(obj: dict[str, Any]) -> list[Problem]:
    problems = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(
            Problem("apiVersion", f"must be {API_VERSION} (got {show_value(obj.get('apiVersion'))})")
        )
    if obj.get("kind") != KIND:
        problems.append(Problem("kind", f"must be {KIND} (got {show_value(obj.get('kind'))})"))
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        problems.append(Problem("metadata.name", "is required: give the job a name"))
    if "spec" not in obj:
        problems.append(Problem("spec", "is required"))
    return problems


def _secret_literal_problems(obj: dict[str, Any]) -> list[Problem]:
    """A token pasted where a Secret reference belongs: never echo its value back."""
    secrets = (obj.get("spec") or {}).get("secrets") if isinstance(obj.get("spec"), dict) else None
    if not isinstance(secrets, dict):
        return []
    return [
        Problem(
            f"spec.secrets.{redact.key(key)}",
            "must reference a Secret as {name: SECRET, key: KEY}; a literal token is not "
            "allowed (create it with kubectl create secret generic)",
        )
        for key, value in secrets.items()
        if isinstance(value, str)
    ]


def _gpu_name_problems(obj: dict[str, Any]) -> list[Problem]:
    """An unknown GPU type, checked on the raw document so that it is reported together
    with the schema's problems (the planner would find it only once those are fixed)."""
    from finetune_operator.planner import gpus  # the catalog only, no heavy imports

    spec = obj.get("spec")
    resources = spec.get("resources") if isinstance(spec, dict) else None
    name = resources.get("gpu") if isinstance(resources, dict) else None
    if not isinstance(name, str) or gpus.find_gpu(name) or "gpuMemoryGiB" in resources:
        return []
    return [Problem("spec.resources.gpu", gpus.unknown_gpu_message(name))]


def semantic_problems(job: FineTuneJob) -> list[Problem]:
    """Cross-field rules: those of finetune_contract/rules.py (the CRD enforces its object
    rules as well), then the ones only Python can check."""
    spec = job.spec
    problems = _name_problems(job.metadata.name, spec)
    problems += _model_problems(spec)
    problems += _dataset_problems(spec)
    problems += _method_problems(spec)
    problems += _resources_problems(spec)
    problems += _quantity_problems(spec)
    problems += _output_problems(spec)
    # What the children carry as given, as the API server checks it (nodeSelector, ...).
    problems += [Problem(path, message) for path, message in apicheck.spec_problems(spec)]
    return problems


def _rule_problems(path: str, obj: object, object_rules: tuple[rules.ObjectRule, ...]
                   ) -> list[Problem]:
    """The rules of the contract that `obj`, found at `path`, breaks."""
    return [Problem(rule.path_in(path), rule.message_for(obj))
            for rule in rules.broken(obj, object_rules)]


def _name_problems(name: str, spec: FineTuneJobSpec) -> list[Problem]:
    # The length first: a long, well-formed name must be told it is long, not that its
    # characters are wrong.
    limit = names.max_job_name_length(spec.run_policy.backoff_limit, spec.resources.max_nodes)
    problems = []
    if len(name) > limit:
        longest = names.longest_derived_name(
            name, spec.run_policy.backoff_limit, spec.resources.max_nodes
        )
        problems.append(Problem("metadata.name", f"is {len(name)} characters, too long: at "
                                f"most {limit} fit the pod hostnames derived from it "
                                f"({echo(longest)} would exceed {apirules.DNS_LABEL_MAX})"))
    if not apirules.has_dns_1035_characters(name):
        problems.append(Problem("metadata.name", "must be lower case letters, digits and '-', "
                                f"start with a letter and end with a letter or digit (got "
                                f"{show_value(name)})"))
    return problems


def _model_problems(spec: FineTuneJobSpec) -> list[Problem]:
    m = spec.model
    problems = _rule_problems("spec.model", m, rules.MODEL)
    if m.init == "random" and m.path:
        problems.append(Problem("spec.model.path", "init: random builds the model from "
                                "config; remove path or use init: pretrained"))
    if m.name and m.path and m.init == "pretrained":
        problems.append(Problem("spec.model.path", "set either name or path, not both"))
    if m.config is not None and m.init == "random" and "model_type" not in m.config:
        problems.append(Problem("spec.model.config.model_type", "is required (e.g. llama)"))
    # The sizes are bounds.py's (a positive integer under its bound, the value shown); the
    # other typed keys (model_type, ...) the contract's table.
    problems += [Problem(f"spec.model.config.{redact.key(key)}", wrong)
                 for key, value in (m.config or {}).items()
                 if key not in bounds.CONFIG_BOUNDS
                 and (wrong := config_type_problem(key, value))]
    if m.parameters is not None:
        problems += _size_problems(m.parameters)
    if m.config is not None:  # bounded before anything is planned
        problems += [Problem(f"spec.model.config.{key}", message)
                     for key, message in bounds.config_problems(m.config)]
    for field, value in (("spec.model.path", m.path),
                         ("spec.model.tokenizer.path", m.tokenizer and m.tokenizer.path)):
        problems += _path_problems(field, value)
    return problems


def _size_problems(value: str | int) -> list[Problem]:
    from finetune_operator.sizes import parse_size  # small, no heavy imports

    try:
        parse_size(value)
    except ValueError as err:
        return [Problem("spec.model.parameters", str(err))]
    return []


def _dataset_problems(spec: FineTuneJobSpec) -> list[Problem]:
    d = spec.dataset
    problems = _rule_problems("spec.dataset", d, rules.DATASET)
    problems += _path_problems("spec.dataset.train.path", d.train.path)
    if d.train.weight is not None:
        problems.append(Problem("spec.dataset.train.weight", "weight belongs only to "
                                "dataset.mix entries"))
    if d.eval is not None:
        problems += _path_problems("spec.dataset.eval.path", d.eval.path)
    for i, source in enumerate(d.mix):
        problems += _path_problems(f"spec.dataset.mix[{i}].path", source.path)
        if source.weight is None:
            problems.append(Problem(f"spec.dataset.mix[{i}].weight",
                                    "is required: the fraction of rows from this source"))
    total = sum(s.weight or 0 for s in d.mix)
    if total >= 1:
        problems.append(Problem("spec.dataset.mix", f"weights add up to {total:g}; they must "
                                "leave room for the training data (sum < 1)"))
    if d.format == "classification" and spec.method.task != "classification":
        problems.append(Problem("spec.method.task", "format: classification needs "
                                "task: classification"))
    if spec.method.task == "classification" and d.format != "classification":
        problems.append(Problem("spec.dataset.format", "task: classification needs "
                                "format: classification ({text, label} rows)"))
    return problems


def _method_problems(spec: FineTuneJobSpec) -> list[Problem]:
    m = spec.method
    problems = _rule_problems("spec.method", m, rules.METHOD)
    if m.task != "classification" and m.num_labels is not None:
        problems.append(Problem("spec.method.numLabels", "only applies to task: classification"))
    if m.tuning != "freeze" and m.trainable_layers:
        problems.append(Problem("spec.method.trainableLayers", "only applies to tuning: freeze"))
    if m.tuning == "qlora" and spec.model.init == "random":
        problems.append(Problem("spec.method.tuning", "qlora quantizes pretrained weights; "
                                "set model.path or model.name with init: pretrained"))
    layers = (spec.model.config or {}).get("num_hidden_layers")
    if isinstance(layers, int) and m.trainable_layers > layers:
        problems.append(Problem("spec.method.trainableLayers", f"is {m.trainable_layers} but "
                                f"the model has {layers} layers"))
    return problems


def _resources_problems(spec: FineTuneJobSpec) -> list[Problem]:
    r, t = spec.resources, spec.training
    problems = _rule_problems("spec.resources", r, rules.RESOURCES)
    problems += _rule_problems("spec.training", t, rules.TRAINING)
    if t.mlflow:
        problems += _rule_problems("spec.training.mlflow", t.mlflow, rules.MLFLOW)
    if t.wandb:
        problems += _rule_problems("spec.training.wandb", t.wandb, rules.WANDB)
    device = _device(spec)
    if r.strategy != "auto":
        problems += [Problem("spec.resources.strategy", refusal)
                     for refusal in _strategy_refusals(r.strategy, spec)]
    refusal = rules.precision_refusal(t.precision, device)
    if refusal:
        problems.append(Problem("spec.training.precision", refusal))
    problems += [Problem(f"spec.{field}", message) for field, message
                 in rules.early_stopping_problems(t, rules.has_evaluation(spec.dataset))]
    return problems


def _quantity_problems(spec: FineTuneJobSpec) -> list[Problem]:
    """cpu and memory as the API server reads quantities: "96 cores" would be refused
    there, after the job looked valid here."""
    from finetune_operator.sizes import parse_quantity

    problems = []
    for field in ("cpu", "memory"):
        value = getattr(spec.resources, field)
        if value is None:
            continue
        try:
            parse_quantity(value, field)
        except ValueError as err:
            problems.append(Problem(f"spec.resources.{field}", str(err)))
    return problems


def _device(spec: FineTuneJobSpec) -> str:
    return "cpu" if spec.resources.gpu == "cpu" else "cuda"


def _strategy_refusals(strategy: str, spec: FineTuneJobSpec,
                       tuning: str | None = None) -> list[str]:
    """`tuning`: the one the plan trains (tuning: auto resolved), else the spec's."""
    return rules.strategy_refusals(strategy, _device(spec), tuning=tuning or spec.method.tuning,
                                   l2_to_pretrained=spec.method.l2_to_pretrained,
                                   merge=spec.output.merge)


def _output_problems(spec: FineTuneJobSpec) -> list[Problem]:
    path = spec.output.path
    problems = _path_problems("spec.output.path", path)
    merge = rules.merge_problem(spec.method.tuning, spec.output.merge)
    if merge:
        problems.append(Problem("spec.output.merge", merge))
    if spec.output.pvc and not PurePosixPath(path).is_absolute():
        problems.append(Problem("spec.output.path", "must be an absolute path inside the pod "
                                f"when output.pvc is set (got {show_value(path)})"))
    return problems


def _path_problems(field: str, path: str | None) -> list[Problem]:
    if not path:
        return []
    if "\x00" in path:
        return [Problem(field, "must not contain NUL characters")]
    if ".." in PurePosixPath(path).parts:
        return [Problem(field, f"must not contain '..' (got {show_value(path)}): paths may not "
                        "escape their volume or data folder")]
    return []


# --------------------------------------------------------------------------- warnings


def spec_warnings(spec: FineTuneJobSpec) -> list[Problem]:
    """What a valid job may lose or not find once it runs in a cluster. Not errors: a local
    run writes to disk and reads paths next to its YAML, and an image may ship its data."""
    ephemeral = output_warning(spec)
    return ([ephemeral] if ephemeral else []) + _image_path_warnings(spec)


def output_warning(spec: FineTuneJobSpec) -> Problem | None:
    """Without output.pvc the pods write the model to an emptyDir, deleted with them (the
    operator says so too: its OutputPersisted condition and a Warning Event)."""
    if spec.output.pvc:
        return None
    return Problem("spec.output.pvc", "is not set: in a cluster the checkpoints and the "
                   "final model go to an emptyDir and are deleted with the pods (a restarted "
                   "gang starts over); set output.pvc to a PersistentVolumeClaim to keep them")


def _image_path_warnings(spec: FineTuneJobSpec) -> list[Problem]:
    """Without dataset.pvc the pods' data root is the trainer image's own /data."""
    if spec.dataset.pvc:
        return []
    d = spec.dataset
    sources = [("train", d.train), ("eval", d.eval)]
    sources += [(f"mix[{i}]", source) for i, source in enumerate(d.mix)]
    return [Problem(f"spec.dataset.{where}.path", f"{show_value(source.path)} is read from inside "
                    "the trainer image in a cluster (dataset.pvc is not set); set dataset.pvc "
                    f"to the claim that holds it, use dataset.{where}.hf instead, or, if the "
                    f"data is meant to ship in the image, build one with it under {DATA_ROOT} "
                    "and set spec.image")
            for where, source in sources if source is not None and source.path]


# --------------------------------------------------------------------------- planning


def plan_problems(spec: FineTuneJobSpec, sizing: ModelSizing | None = None) -> list[Problem]:
    """A job the planner cannot place is invalid: say why and what would fit.

    A model that only reading it can size (not in the catalog, no model.config) is not
    checked without `sizing` (what reading it gave: finetune_operator.hub): `finetune
    validate` reads it where it can, the operator through its sizing pod."""
    from finetune_operator.planner import NeedsSizing, PlanningError, plan_job

    try:
        plan = plan_job(spec, sizing=sizing)
    except NeedsSizing:
        return []
    except PlanningError as err:
        return [Problem(err.field, err.message)]
    if not plan.fits:
        hint = f"; {plan.suggestion}" if plan.suggestion else ""
        return [Problem("spec.resources", f"does not fit: {plan.reason}{hint}")]
    return layout_problems(spec, plan)


def layout_problems(spec: FineTuneJobSpec, plan: Plan) -> list[Problem]:
    """Rules that depend on the layout the planner chose (the operator checks them too)."""
    if plan.nodes > 1 and plan.strategy != "ddp" and not spec.output.pvc:
        return [Problem("spec.output.pvc", f"is required: {plan.strategy} on {plan.nodes} "
                        "nodes writes checkpoint shards on every node, so all pods need one "
                        "shared ReadWriteMany claim to save and resume")]
    refusals = _strategy_refusals(plan.strategy, spec, plan.tuning)
    if refusals:
        return [Problem("spec.method", f"{refusals[0]}, which the model needs to fit "
                        f"({plan.reason})")]
    return []


def read_checked_job(source: str) -> dict[str, Any]:
    """The one FineTuneJob of a file, checked against the schema and the rules (not
    planned); a UserError naming the file and line otherwise."""
    try:
        doc = one_job(source)
    except DocumentError as err:
        raise UserError(str(err)) from None
    _, problems = validate_job(doc.body, plan=False)
    if problems:
        raise UserError("; ".join(f"{source}:{doc.line}: {p}" for p in problems))
    return doc.body
