"""Cross-field rules of the FineTuneJob API, each written once, with its one message.

Two kinds:

- An `ObjectRule` holds between fields of one API object. It carries the rule twice, in the
  two languages that must enforce it: CEL, which api.py puts into the object's schema so that
  the API server refuses a bad object, and Python, which `finetune validate` and the operator
  evaluate (finetune_operator/validation.py). A test evaluates both on the same cases, rule by
  rule, so the two cannot drift (tests/finetune_contract/test_rules.py).
- The refusals that depend on where a job runs: its strategy, device and precision, which are
  only known for certain once it is planned. Validation checks them on the spec and on the
  plan; the trainer checks them again on its config before it reads any data.

A message names no path of its own: validation prefixes the field's full path
(spec.method.numLabels), the API server the same path from the rule's fieldPath, the trainer
the field in its config (plan.strategy).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetune_contract import strategies


@dataclass(frozen=True)
class ObjectRule:
    """A rule between the fields of one API object.

    `message` may end with the values involved, in parentheses, naming fields of the object
    in braces by their wire (camelCase) names: validation fills them in from the object. The
    CRD carries the message without that part: a real API server refuses the whole CRD when
    a messageExpression formats numbers (its cost estimate exceeds the budget), so the server
    says the same words without the values.
    """

    cel: str  # true for a valid object; `self` is the object as stored
    holds: Callable[[Any], bool]  # the same on the validated pydantic object
    message: str
    field: str = ""  # the field the message is about; "" for the object itself

    def message_for(self, obj: Any) -> str:
        """The message for a pydantic object that breaks the rule."""
        if not _placeholders(self.message):
            return self.message
        return self.message.format_map(obj.model_dump(by_alias=True))

    def path_in(self, object_path: str) -> str:
        """The full path of the field the message is about."""
        return f"{object_path}.{self.field}" if self.field else object_path

    def cel_validation(self) -> dict[str, str]:
        """The rule as one entry of the CRD's x-kubernetes-validations: the API server reports
        a broken rule at its fieldPath, with the message validation gives."""
        entry = {"rule": self.cel, "message": self.server_message()}
        if self.field:
            entry["fieldPath"] = f".{self.field}"
        return entry


    def server_message(self) -> str:
        """The message without the values part, which only validation can fill in."""
        message = _VALUES_PART.sub("", self.message)
        if _placeholders(message):
            raise ValueError(f"only a trailing (...) may name values: {self.message!r}")
        return message


# The values a message ends with: " ({microBatchSize} > {globalBatchSize})".
_VALUES_PART = re.compile(r"\s*\([^()]*\{[^()]*\)$")


def schema_extra(rules: tuple[ObjectRule, ...]) -> dict[str, Any]:
    """What a pydantic model's json_schema_extra needs to carry `rules` into the CRD."""
    return {"x-kubernetes-validations": [rule.cel_validation() for rule in rules]}


def broken(obj: Any, rules: tuple[ObjectRule, ...]) -> list[ObjectRule]:
    """The rules `obj` does not satisfy, in table order."""
    return [rule for rule in rules if not rule.holds(obj)]


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


# The tunings that train peft adapters on a frozen base, and the strategies each runs under.
# LoRA's frozen base may be sharded like any weight (TRL builds the adapters before DeepSpeed
# or FSDP wraps the model). QLoRA's 4-bit weights are bitsandbytes tensors that ZeRO and FSDP
# would have to partition as flat storage (bnb_4bit_quant_storage), which this trainer does
# not set up: DDP only, each rank holding the whole quantized base.
ADAPTER_STRATEGIES: dict[str, tuple[str, ...]] = {
    "lora": ("ddp", "zero2", "zero3", "fsdp"),
    "qlora": ("ddp",),
}
ADAPTER_TUNINGS = tuple(ADAPTER_STRATEGIES)
# tuning: auto picks full, lora or qlora when it is planned (the planner's plan.tuning).
AUTO_CHOICES = ("full", *ADAPTER_TUNINGS)
MAY_USE_ADAPTERS = (*ADAPTER_TUNINGS, "auto")
_ADAPTER_REASONS = {
    "lora": "zero1 and zero3-offload are not run with peft adapters here",
    "qlora": "bitsandbytes' 4-bit weights are not partitioned by DeepSpeed ZeRO or FSDP in "
             "this trainer; every rank holds the whole quantized base",
}


# --------------------------------------------------------------------------- the objects

MODEL: tuple[ObjectRule, ...] = (
    ObjectRule(
        cel="has(self.name) || has(self.path) || (has(self.init) && self.init == 'random')",
        holds=lambda m: bool(m.name or m.path) or m.init == "random",
        message="set name (a Hugging Face id), path (a directory with config.json), or "
        "init: random with config",
    ),
    ObjectRule(
        cel="!has(self.init) || self.init != 'random' || has(self.config)",
        holds=lambda m: m.init != "random" or bool(m.config),
        field="config",
        message="init: random needs the model's config (model_type, hidden_size, "
        "num_hidden_layers, ...)",
    ),
    ObjectRule(
        cel="!has(self.cachePvc) || (has(self.name) && !has(self.path) "
        "&& (!has(self.init) || self.init == 'pretrained'))",
        holds=lambda m: m.cache_pvc is None or downloads_weights(m),
        field="cachePvc",
        message="caches a model downloaded by name: it needs model.name with init: "
        "pretrained and no model.path",
    ),
)

DATA_SOURCE: tuple[ObjectRule, ...] = (
    ObjectRule(
        cel="has(self.path) != has(self.hf)",
        holds=lambda s: bool(s.path) != bool(s.hf),
        message="set exactly one of path or hf",
    ),
)

DATASET: tuple[ObjectRule, ...] = (
    ObjectRule(
        cel="!(has(self.eval) && has(self.evalSplitRatio))",
        holds=lambda d: d.eval is None or d.eval_split_ratio is None,
        field="evalSplitRatio",
        message="set dataset.eval or dataset.evalSplitRatio, not both",
    ),
)

METHOD: tuple[ObjectRule, ...] = (
    ObjectRule(
        cel="self.task != 'classification' || has(self.numLabels)",
        holds=lambda m: m.task != "classification" or m.num_labels is not None,
        field="numLabels",
        message="is required for task: classification (the number of classes)",
    ),
    ObjectRule(
        cel="self.tuning != 'freeze' || self.task == 'classification' "
        "|| self.trainableLayers > 0",
        holds=lambda m: m.tuning != "freeze" or m.task == "classification"
        or m.trainable_layers > 0,
        field="trainableLayers",
        message="tuning: freeze with task: sft trains nothing; set trainableLayers > 0 or "
        "use task: classification (feature extraction)",
    ),
    ObjectRule(
        cel="!(self.tuning in ['lora', 'qlora', 'auto']) || !has(self.layerwiseLrDecay) "
        "|| self.layerwiseLrDecay == 1.0",
        holds=lambda m: m.tuning not in MAY_USE_ADAPTERS or m.layerwise_lr_decay == 1.0,
        field="layerwiseLrDecay",
        message="must be 1 with tuning: lora, qlora or auto: the adapters are not trained "
        "layer by layer, so there is no depth to decay the learning rate over",
    ),
    ObjectRule(
        cel="!(self.tuning in ['lora', 'qlora', 'auto']) || !has(self.l2ToPretrained) "
        "|| self.l2ToPretrained == 0.0",
        holds=lambda m: m.tuning not in MAY_USE_ADAPTERS or m.l2_to_pretrained == 0,
        field="l2ToPretrained",
        message="must be 0 with tuning: lora, qlora or auto: the pre-trained weights are "
        "frozen and the adapters start from their own initialization, not from pre-trained "
        "values",
    ),
    ObjectRule(
        cel="!(self.tuning in ['lora', 'qlora', 'auto']) || self.task == 'sft'",
        holds=lambda m: m.tuning not in MAY_USE_ADAPTERS or m.task == "sft",
        field="tuning",
        message="lora, qlora and auto train task: sft only (TRL's SFTTrainer builds the "
        "adapters); use tuning: full or freeze for classification",
    ),
)

TRAINING: tuple[ObjectRule, ...] = (
    ObjectRule(
        # An omitted globalBatchSize is rounded up by the planner to what the ranks and the
        # micro-batch need (the API server leaves it absent: no default in the schema).
        cel="!has(self.microBatchSize) || !has(self.globalBatchSize) || "
        "self.microBatchSize <= self.globalBatchSize",
        holds=lambda t: t.micro_batch_size is None
        or "global_batch_size" not in t.model_fields_set
        or t.micro_batch_size <= t.global_batch_size,
        field="microBatchSize",
        message="must not exceed globalBatchSize ({microBatchSize} > {globalBatchSize})",
    ),
)

TRAINING += tuple(
    rule for tracker in ("mlflow", "wandb") for rule in (
        ObjectRule(
            cel=f"!has(self.reportTo) || !('{tracker}' in self.reportTo) || has(self.{tracker})",
            holds=lambda t, tracker=tracker: tracker not in t.report_to
            or getattr(t, tracker) is not None,
            field="reportTo",
            message=f"lists {tracker}: say where it logs in training.{tracker}",
        ),
        ObjectRule(
            cel=f"!has(self.{tracker}) || (has(self.reportTo) && '{tracker}' in self.reportTo)",
            holds=lambda t, tracker=tracker: getattr(t, tracker) is None
            or tracker in t.report_to,
            field=tracker,
            message=f"is set but reportTo does not list {tracker}: add it there, or remove "
            "this block",
        ),
    )
)

MLFLOW: tuple[ObjectRule, ...] = (
    ObjectRule(
        cel="has(self.username) == has(self.password)",
        holds=lambda m: (m.username is None) == (m.password is None),
        field="username",
        message="and password go together (basic auth): set both, or neither",
    ),
    ObjectRule(
        cel="!has(self.token) || !has(self.username)",
        holds=lambda m: m.token is None or m.username is None,
        field="token",
        message="or username and password, not both: MLflow sends one kind of credential",
    ),
)

WANDB: tuple[ObjectRule, ...] = (
    ObjectRule(
        cel="(has(self.mode) && self.mode == 'offline') || has(self.apiKey)",
        holds=lambda w: w.mode == "offline" or w.api_key is not None,
        field="apiKey",
        message="is needed online: a secretKeyRef to the W&B API key, or mode: offline",
    ),
)

RESOURCES: tuple[ObjectRule, ...] = (
    ObjectRule(
        cel="!has(self.nodes) || self.nodes <= self.maxNodes",
        holds=lambda r: r.nodes is None or r.nodes <= r.max_nodes,
        field="nodes",
        message="must not exceed resources.maxNodes ({nodes} > {maxNodes})",
    ),
)


# --------------------------------------------------------------------------- where it runs


def ddp_only_methods(tuning: str, l2_to_pretrained: float) -> str:
    """The methods (of spec.method) that need whole parameters on every rank: they change
    which weights train, or read every weight, each step. "" when none."""
    names = []
    if tuning == "gradual-unfreeze":
        names.append("tuning: gradual-unfreeze")
    if l2_to_pretrained > 0:
        names.append("l2ToPretrained")
    return " and ".join(names)


def strategy_refusals(name: str, device: str, *, tuning: str,
                      l2_to_pretrained: float, merge: bool = False) -> list[str]:
    """Why strategy `name` cannot train this method on `device` (cpu or cuda), with
    output.merge when `merge`; [] when it can."""
    row = strategies.strategy(name)
    refusals = []
    if device == "cpu" and row.cpu_refusal:
        refusals.append(f"{name} is not supported on CPU ({row.cpu_refusal}); use ddp, "
                        "zero2 or zero3")
    methods = ddp_only_methods(tuning, l2_to_pretrained)
    if row.sharded and methods:
        refusals.append(f"{methods} needs strategy ddp (got {name})")
    allowed = ADAPTER_STRATEGIES.get(tuning)
    if allowed is not None and name not in allowed:
        refusals.append(f"tuning: {tuning} runs under {', '.join(allowed)} ("
                        f"{_ADAPTER_REASONS[tuning]}; got {name})")
    if merge and row.zero_stage != 2 and row.sharded and tuning in ADAPTER_TUNINGS:
        refusals.append(f"output.merge merges the adapters on rank 0, which needs the whole "
                        f"model there: ddp or zero2 (got {name})")
    return refusals


def trained_tuning(spec_tuning: str, plan_tuning: str | None) -> str:
    """The tuning a run trains with: the spec's, or under auto the one its plan chose."""
    if spec_tuning != "auto":
        return spec_tuning
    if plan_tuning is None:
        raise ValueError("plan.tuning: required with method.tuning auto (plan the job again)")
    return plan_tuning


def merge_problem(tuning: str, merge: bool) -> str | None:
    """Why output.merge cannot apply to `tuning`, or None."""
    if merge and tuning not in MAY_USE_ADAPTERS:
        return (f"merges adapters into the base, so it needs tuning: lora, qlora or auto (got "
                f"tuning: {tuning}, which saves the whole model already)")
    return None


def precision_refusal(precision: str, device: str) -> str | None:
    """Why `precision` cannot train on `device`, or None."""
    if precision == "fp16" and device == "cpu":
        return "fp16 needs a GPU; use fp32 or bf16 on cpu"
    return None


def downloads_weights(model: Any) -> bool:
    """Whether an api.ModelSpec's weights come from the Hugging Face Hub: pretrained, by
    name, without a local path (random weights and model.path download nothing)."""
    return model.init == "pretrained" and bool(model.name) and not model.path


def has_evaluation(dataset: Any) -> bool:
    """Whether an api.DatasetSpec gives evaluation data."""
    return dataset.eval is not None or dataset.eval_split_ratio is not None


def early_stopping_problems(training: Any, has_eval: bool) -> list[tuple[str, str]]:
    """(field under spec, message) of what earlyStoppingPatience needs and `training` (an
    api.TrainingSpec) lacks."""
    if training.early_stopping_patience is None:
        return []
    problems = []
    if not has_eval:
        problems.append(("training.earlyStoppingPatience",
                         "needs evaluation data: set dataset.eval or dataset.evalSplitRatio"))
    if training.save_steps % training.eval_steps:
        message = (f"must be a multiple of evalSteps ({training.eval_steps}) with "
                   "earlyStoppingPatience, so the best model is always checkpointed "
                   f"(got {training.save_steps})")
        problems.append(("training.saveSteps", message))
    return problems
