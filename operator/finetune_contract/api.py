"""The FineTuneJob API, `finetune.dev/v1alpha1`.

These pydantic models are the single source of truth for the custom resource: the CRD in
`crds/finetunejob.yaml` is generated from them (`finetune crd`), `finetune validate` and the
operator validate with them, and the trainer reads its configuration through them.

Every field carries a description: it becomes the text `kubectl explain` shows. Field names
are camelCase on the wire (Kubernetes convention) and snake_case in Python. Models built in
Python may use either; what a user or the API server gives is parsed by the wire names only
(finetune_operator.validation.parse_user_job), since the API server drops any other key. A rule between
fields of one object is written once, in rules.py, and reaches the CRD from there.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel

from finetune_contract import rules, strategies
from finetune_contract.layout import TENSORBOARD_DIR

GROUP = "finetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]
CATEGORIES = ["finetune"]

Strategy = strategies.StrategyName
Precision = Literal["bf16", "fp16", "fp32"]
Phase = Literal["Pending", "Running", "Restarting", "Suspended", "Succeeded", "Failed"]
PHASES: tuple[str, ...] = ("Pending", "Running", "Restarting", "Suspended", "Succeeded", "Failed")
TERMINAL_PHASES: tuple[str, ...] = ("Succeeded", "Failed")
# A Hugging Face repository id, [owner/]name, as huggingface_hub's validate_repo_id accepts
# it: letters, digits, '_', '-' and '.', a word character at both ends of each part, and no
# '--' or '..' (the Hub refuses them). RE2 (the API server's regexp) has no lookahead, so a
# part is runs of word characters joined by alternating '-' and '.' ('-', '.', '-.', '.-.').
# Two of the Hub's rules have no regular form here and are checked in Python only (hub_id):
# at most HF_PART_MAX characters a part, and no '.git' at the end. ASCII only, where the
# library's \w would take any letter: the Hub's names are ASCII.
# The anchors are the whole text's in RE2 and in pydantic's (Rust) regex; Python's re would
# let '$' match before a final newline, so Python code uses fullmatch (hub_id).
_WORD = "[A-Za-z0-9_]"
_JOIN = r"(-(\.-)*\.?|\.(-\.)*-?)"
_HF_PART = f"{_WORD}+({_JOIN}{_WORD}+)*"
HF_ID_PATTERN = rf"^({_HF_PART}/)?{_HF_PART}$"
HF_PART_MAX = 96
HF_ID_RULE = "must be a Hugging Face id, [owner/]name of letters, digits, '-', '_' and '.'"
HF_ID_HINT = "each part starts and ends with a letter, digit or '_', without '--' or '..'"
_HF_ID = re.compile(HF_ID_PATTERN.removeprefix("^").removesuffix("$"))


def hub_id(value: str | None) -> str | None:
    """A Hub id as the Hub takes it (the pattern, and the rules it cannot say)."""
    if value is None:
        return None
    if not _HF_ID.fullmatch(value):
        raise ValueError(f"{HF_ID_RULE}: {HF_ID_HINT}")
    if any(len(part) > HF_PART_MAX for part in value.split("/")):
        raise ValueError(f"must have at most {HF_PART_MAX} characters in the owner and in "
                         "the name (the Hub's limit)")
    if value.endswith(".git"):
        raise ValueError("must not end with '.git' (the Hub refuses it)")
    return value


HubId = Annotated[str | None, AfterValidator(hub_id)]
# The same two rules for the API server, which takes a CEL rule where a pattern cannot say
# them (RE2 matches() in CEL, as the pattern).
HF_ID_CEL = (f"self.matches('^([^/]{{1,{HF_PART_MAX}}}/)?[^/]{{1,{HF_PART_MAX}}}$') && "
             "!self.endsWith('.git')")
_HUB_ID_SCHEMA: dict[str, Any] = {"x-kubernetes-validations": [{
    "rule": HF_ID_CEL,
    "message": f"at most {HF_PART_MAX} characters in the owner and in the name, and no "
    "'.git' at the end (the Hub's limits)",
}]}


def _auto_or_bool(value: Any) -> Any:
    """Accept true, false or auto, as the CRD's enum does: a YAML boolean, or the string
    auto ("true" in quotes is a string, which the API server refuses)."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, bool):
        return value
    # The value is not quoted: the message's renderer (validation) shows what was given.
    raise ValueError("must be true, false or auto")


AutoBool = Annotated[Literal["auto"] | bool, BeforeValidator(_auto_or_bool)]


# The status types' config (see ApiModel).
STATUS_CONFIG = ConfigDict(strict=False, allow_inf_nan=True)

# The types transformers expects of the model.config keys the planner and the trainer read
# (PretrainedConfig's attributes): a key of another type would fail deep in a pod, or size
# the model wrong. Other keys pass as given (each architecture has its own).
_CONFIG_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim",
                "max_position_embeddings", "num_local_experts", "num_experts_per_tok",
                "n_embd", "n_head", "n_inner", "n_layer", "n_positions")
CONFIG_VALUE_TYPES: dict[str, tuple[type, str]] = {
    "model_type": (str, "a string (e.g. llama)"),
    "tie_word_embeddings": (bool, "true or false"),
    **{key: (int, "an integer") for key in _CONFIG_INTS},
}


def config_type_problem(key: str, value: Any) -> str | None:
    """What is wrong with the type of model.config's `key`, or None (validation reports
    it at spec.model.config.KEY; the planner refuses it too, in a status's sizing)."""
    expected = CONFIG_VALUE_TYPES.get(key)
    if expected is None or value is None:
        return None
    kind, words = expected
    # bool is an int in Python; not in JSON, nor to transformers.
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return None
    return f"must be {words}, not {_json_type(value)}"


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                       (str, "a string"), (list, "a list"), (dict, "a mapping")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "a value"


# Marks a field whose default the CRD must not declare: the API server would store it in
# every object, hiding that the user left the field out (see crd.py).
NO_SERVER_DEFAULT: dict[str, Any] = {"x-finetune-no-server-default": True}


class ApiModel(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields are errors, and the
    types are the CRD's, exactly: strict, so that "3", "yes" or 1 are not taken for 3,
    true or a string where the API server would refuse them (no coercion), and no inf or
    NaN, which JSON cannot carry. The status types, written by the operator and read back,
    are lax (STATUS_CONFIG): their timestamps arrive as strings."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
        strict=True,
        allow_inf_nan=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, no nulls."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- model


class TokenizerTraining(ApiModel):
    """How to train a byte-level BPE tokenizer on the training data (tiny CPU runs)."""

    vocab_size: int = Field(
        1024, ge=260, le=262144,
        description="Vocabulary size of the byte-level BPE tokenizer trained on the dataset.",
    )


class TokenizerSpec(ApiModel):
    """Where the tokenizer comes from when it is not the model's own."""

    path: str | None = Field(
        None, description="Directory with a saved tokenizer (tokenizer.json and its config)."
    )
    train: TokenizerTraining | None = Field(
        None,
        description="Train a byte-level BPE tokenizer with a chat template on the training "
        "data instead of loading one. Meant for `init: random` models on CPU.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerSpec:
        if self.path and self.train:
            raise ValueError("set either tokenizer.path or tokenizer.train, not both")
        return self


class ModelSpec(ApiModel):
    """The base model to fine-tune."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.MODEL))

    name: HubId = Field(
        None,
        max_length=256,
        pattern=HF_ID_PATTERN,
        json_schema_extra=_HUB_ID_SCHEMA,
        description="Hugging Face model id, e.g. meta-llama/Llama-3.1-8B. With init: random "
        "it is only a label.",
    )
    path: str | None = Field(
        None,
        max_length=4096,
        description="Directory holding config.json (and weights and tokenizer) of the base "
        "model. Relative paths resolve against the data root.",
    )
    parameters: str | int | None = Field(
        None,
        description="Size hint used by the planner when no config can be read: 125M, 7.5B, "
        "70B or a plain integer.",
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="pretrained loads the weights; random builds the model from `config` "
        "with random weights (tiny CPU runs and tests, no download).",
    )
    config: dict[str, Any] | None = Field(
        None,
        description="Hugging Face config keys (model_type, hidden_size, num_hidden_layers, "
        "...). Required for init: random; for pretrained models it overrides what the "
        "planner reads.",
    )
    tokenizer: TokenizerSpec | None = Field(
        None, description="Tokenizer override: a path, or train one on the dataset."
    )
    chat_template: str | None = Field(
        None,
        max_length=65536,
        description="Chat template override: a built-in name (chatml) or Jinja text. The "
        "template must mark assistant turns with {% generation %} for assistant-only loss.",
    )
    cache_pvc: str | None = Field(
        None,
        max_length=253,
        description="PersistentVolumeClaim for the Hugging Face cache of a model downloaded "
        "by name: each pod's init container downloads the weights into it unless they are "
        "there already, and the ranks load them from it without the network; jobs sharing "
        "the claim share the download. Without one the cache is on the output volume "
        "(output.path/.cache/huggingface).",
    )


# --------------------------------------------------------------------------- dataset


class DataSource(ApiModel):
    """One dataset: a local file or a Hugging Face dataset."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.DATA_SOURCE))

    path: str | None = Field(
        None,
        max_length=4096,
        description="JSONL, JSON or Parquet file. Relative paths resolve against the data "
        "root (the YAML file's folder for local runs, /data in the cluster).",
    )
    hf: HubId = Field(
        None,
        max_length=256,
        pattern=HF_ID_PATTERN,
        json_schema_extra=_HUB_ID_SCHEMA,
        description="Hugging Face dataset id, e.g. HuggingFaceH4/ultrachat_200k (needs "
        "network access).",
    )
    split: str = Field("train", max_length=128, description="Split to read from an hf dataset.")
    weight: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Only in dataset.mix: the fraction of the training rows drawn from this "
        "source.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        # Checked here, not in validation.py: a source appears in three places (train, eval,
        # mix) and its error belongs at each one's path.
        broken = rules.broken(self, rules.DATA_SOURCE)
        if broken:
            raise ValueError(broken[0].message_for(self))
        return self


class DatasetSpec(ApiModel):
    """Training data, evaluation data and how rows are checked."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.DATASET))

    format: Literal["messages", "prompt-completion", "text", "classification"] = Field(
        "messages",
        description="Row format: messages ({messages: [{role, content}]}), "
        "prompt-completion ({prompt, completion}), text ({text}) or classification "
        "({text, label}).",
    )
    train: DataSource = Field(description="The training data.")
    eval: DataSource | None = Field(None, description="Held-out evaluation data.")
    eval_split_ratio: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="Hold out this fraction of the training rows for evaluation instead of "
        "a separate eval source.",
    )
    mix: list[DataSource] = Field(
        default_factory=list,
        max_length=16,
        description="General data mixed into training at each source's weight, against "
        "catastrophic forgetting.",
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail",
        description="fail stops at the first bad row with file:line and the problem; skip "
        "skips bad rows, counts them and reports them in the summary.",
    )
    dedupe: bool = Field(False, description="Drop exact duplicate rows before training.")
    pvc: str | None = Field(
        None,
        max_length=253,
        description="PersistentVolumeClaim holding the data, mounted read-only at /data on "
        "every pod (relative paths resolve there). Without one, /data is what the trainer "
        "image ships.",
    )


# --------------------------------------------------------------------------- method


class LoraSpec(ApiModel):
    """The low-rank adapters of tuning: lora and qlora (peft's LoraConfig)."""

    rank: int = Field(16, ge=1, le=4096, description="Rank r of each adapter: W + (alpha / r) "
                      "B A with A r x in and B out x r.")
    alpha: float = Field(32, gt=0, le=100000, description="Scaling numerator: the adapter's "
                         "update is multiplied by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on each adapter's input "
                           "(0 turns it off and saves its activations).")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        None, min_length=1, max_length=64,
        description="Names (or name suffixes) of the linear layers that get adapters; empty: "
        "every linear layer of the transformer blocks (peft's all-linear, the LM head "
        "excluded).")
    modules_to_save: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        None, max_length=64,
        description="Modules trained in full beside the adapters and saved with them (e.g. "
        "lm_head, embed_tokens).")
    use_dora: bool = Field(False, description="Weight-decomposed adapters (DoRA): a trained "
                           "magnitude per output feature besides the low-rank direction.")


class QloraSpec(ApiModel):
    """How tuning: qlora quantizes the frozen base (bitsandbytes' BitsAndBytesConfig)."""

    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="4-bit data type of the frozen linear weights: nf4 (NormalFloat, "
        "the QLoRA paper's) or fp4.")
    double_quant: bool = Field(
        True, description="Quantize the per-block scales too (about 0.37 bits per parameter "
        "saved).")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="dtype the 4-bit weights are dequantized to for each matmul.")


class MethodSpec(ApiModel):
    """What is trained and how the weights are updated."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.METHOD))

    task: Literal["sft", "classification"] = Field(
        "sft",
        description="sft trains the causal LM on the data; classification adds a sequence "
        "classification head.",
    )
    tuning: Literal["full", "freeze", "gradual-unfreeze", "lora", "qlora", "auto"] = Field(
        "full",
        description="full trains every weight; freeze trains the head and the top "
        "trainableLayers blocks (feature extraction when 0); gradual-unfreeze unfreezes one "
        "more block from the top each epoch; lora trains low-rank adapters (method.lora) on "
        "the frozen base in the working precision; qlora the same on a base quantized to 4 "
        "bits (method.qlora); auto: full if it fits the job's bounds, else lora, else qlora "
        "(status.plan.tuning says which, status.plan.reason why).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec,
                           description="Adapters, with tuning: lora or qlora.")
    qlora: QloraSpec = Field(default_factory=QloraSpec,
                             description="Quantization of the frozen base, with tuning: qlora.")
    trainable_layers: int = Field(
        0, ge=0, le=1024, description="With freeze: how many top transformer blocks train."
    )
    layerwise_lr_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Discriminative learning rates: block i from the top trains at "
        "lr * decay^i, embeddings lowest, the head at lr. 1.0 turns it off.",
    )
    l2_to_pretrained: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Lambda of the penalty lambda * ||theta - theta0||^2 pulling trainable "
        "weights toward their pre-trained values.",
    )
    assistant_only_loss: bool = Field(
        True, description="messages format: compute the loss on assistant tokens only."
    )
    num_labels: int | None = Field(
        None, ge=2, le=100000, description="classification: number of classes."
    )


# --------------------------------------------------------------------------- training


class MlflowTracking(ApiModel):
    """An MLflow tracking server. Rank 0 logs the training arguments, the model config and
    every logged step's metrics to one run per job: a restarted or re-planned job goes on in
    the run its first attempt opened (tagged finetune.dev/run with the job's uid)."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.MLFLOW))

    tracking_uri: str = Field(
        max_length=2048, pattern=r"^https?://[^\s/]+\S*$",
        description="The tracking server's URL (MLFLOW_TRACKING_URI), http:// or https://.",
    )
    experiment: str | None = Field(
        None, min_length=1, max_length=500,
        description="Experiment the run goes into, created when missing. Unset: the job's "
        "namespace.",
    )
    token: SecretKeyRef | None = Field(
        None, description="Secret key holding a bearer token (MLFLOW_TRACKING_TOKEN)."
    )
    username: SecretKeyRef | None = Field(
        None, description="Secret key holding the basic-auth user (MLFLOW_TRACKING_USERNAME)."
    )
    password: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the basic-auth password (MLFLOW_TRACKING_PASSWORD).",
    )


class WandbTracking(ApiModel):
    """A Weights & Biases project. Rank 0 logs to one run per job, whose id is the job's uid:
    a restarted or re-planned job resumes it."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.WANDB))

    project: str | None = Field(
        None, min_length=1, max_length=128,
        description="W&B project (WANDB_PROJECT). Unset: the job's namespace.",
    )
    entity: str | None = Field(
        None, min_length=1, max_length=128, description="W&B team or user (WANDB_ENTITY)."
    )
    base_url: str | None = Field(
        None, max_length=2048, pattern=r"^https?://[^\s/]+\S*$",
        description="A self-hosted W&B server (WANDB_BASE_URL). Unset: W&B's cloud.",
    )
    api_key: SecretKeyRef | None = Field(
        None, description="Secret key holding the API key (WANDB_API_KEY); needed online."
    )
    mode: Literal["online", "offline"] = Field(
        "online",
        description="online: log to the server as the run goes. offline: write the run under "
        "the output path's wandb/ only, for `wandb sync` later (no network, no key).",
    )


class TrainingSpec(ApiModel):
    """Hyperparameters. The planner fills in what is left on auto."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.TRAINING))

    epochs: float = Field(3, gt=0, le=1000, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, le=100_000_000, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(2.0e-5, gt=0, le=1, description="Peak learning rate.")
    scheduler: Literal["cosine", "linear", "constant", "wsd"] = Field(
        "cosine",
        description="Decay after linear warmup: cosine, linear, constant, or wsd "
        "(warmup-stable-decay: constant, then a final decay of decayRatio of the steps).",
    )
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Fraction of the steps spent in linear warmup."
    )
    decay_ratio: float = Field(
        0.1, gt=0, le=1, description="wsd only: fraction of the steps spent in the final decay."
    )
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW decoupled weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    global_batch_size: int = Field(
        16,
        ge=1,
        le=1048576,
        description="Sequences per optimizer step across all ranks (micro-batch x ranks x "
        "accumulation). Omitted: 16, rounded up to a multiple of the ranks of the fastest "
        "layout that fits (status.plan.globalBatchSize says which).",
        # The API server must leave it absent: the planner may round only a batch the user
        # did not write.
        json_schema_extra=NO_SERVER_DEFAULT,
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="Force the per-rank micro-batch (the planner picks otherwise)."
    )
    max_seq_length: int = Field(
        4096, ge=16, le=1048576, description="Longest sequence in tokens; longer rows are "
        "truncated (or rejected, see dataset.onError)."
    )
    packing: Literal["auto", "packed", "padding-free", "none"] = Field(
        "auto",
        description="How sequences share a batch: packed, padding-free (no pad tokens, "
        "fastest measured on CPU), none (padded), or auto (the planner decides).",
    )
    gradient_checkpointing: AutoBool = Field(
        "auto",
        description="Recompute activations in backward: true, false, or auto (on only when "
        "needed to fit).",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="auto: bf16 where the GPU supports it, fp16 on V100/T4, fp32 on CPU.",
    )
    eval_steps: int = Field(200, ge=1, le=100_000_000, description="Evaluate every N optimizer steps.")
    save_steps: int = Field(200, ge=1, le=100_000_000, description="Checkpoint every N optimizer steps.")
    save_total_limit: int = Field(
        3, ge=1, le=100, description="Keep at most this many complete checkpoints."
    )
    logging_steps: int = Field(
        1, ge=1, le=100_000_000, description="Report loss and throughput every N optimizer steps."
    )
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Experiment trackers rank 0 logs to, through transformers' own "
        "integrations: tensorboard writes its event files under the output path's "
        f"{TENSORBOARD_DIR}/ (on output.pvc they outlive the pods; `tensorboard --logdir` "
        "reads them); mlflow logs to the server of training.mlflow, wandb to the W&B of "
        "training.wandb. Empty: none."
    )
    mlflow: MlflowTracking | None = Field(
        None, description="The MLflow tracking server; needs mlflow in reportTo."
    )
    wandb: WandbTracking | None = Field(
        None, description="The Weights & Biases project; needs wandb in reportTo."
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Stop when the eval loss has not improved for this many evaluations; the "
        "best model is kept.",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed for data order and initialization.")


# --------------------------------------------------------------------------- resources


class Toleration(ApiModel):
    """A Kubernetes toleration copied to every training pod."""

    key: str | None = Field(None, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value (with operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, le=10**9, description="How long a NoExecute taint is tolerated."
    )


class ResourcesSpec(ApiModel):
    """Hardware for the run. The planner picks the layout within these bounds."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.RESOURCES))

    gpu: str = Field(
        "H100-80GB",
        max_length=64,
        description="GPU type from the catalog (H100-80GB, H200-141GB, A100-80GB, A100-40GB, "
        "L40S-48GB, L4-24GB, A10G-24GB, V100-32GB, T4-16GB), GPU Feature Discovery's "
        "product name of one (NVIDIA-H100-80GB-HBM3), or cpu. Omitted: the operator's "
        "default GPU (the chart's trainer.defaultGpu), else H100-80GB.",
        # The API server must leave it absent, or the operator's default could never apply.
        json_schema_extra=NO_SERVER_DEFAULT,
    )
    gpu_memory_gib: float | None = Field(
        None,
        alias="gpuMemoryGiB",
        gt=0,
        le=4096,
        description="Custom memory per GPU in GiB, for a GPU the catalog lacks.",
    )
    gpus_per_node: int = Field(
        8, ge=1, le=64, description="GPUs per node (with gpu: cpu, CPU ranks per pod)."
    )
    max_nodes: int = Field(4, ge=1, le=512, description="Upper bound for the node count.")
    nodes: int | None = Field(None, ge=1, le=512, description="Force this many nodes.")
    strategy: strategies.RequestedStrategy = Field(
        strategies.AUTO,
        description="Sharding strategy; auto picks the fastest predicted one that fits.",
    )
    cpu: str | None = Field(
        None,
        max_length=32,
        description="CPU request per pod, a Kubernetes quantity (8, 500m); defaults from the "
        "plan.",
    )
    memory: str | None = Field(
        None,
        max_length=32,
        description="Memory request per pod, a Kubernetes quantity (64Gi); defaults from the "
        "plan, in Gi.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels every training pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations for every training pod."
    )
    priority_class_name: str | None = Field(
        None, max_length=253, description="PriorityClass of the training pods."
    )
    queue_name: str | None = Field(
        None,
        max_length=63,
        description="Kueue LocalQueue: the Job is created suspended and admitted as a gang.",
    )


# --------------------------------------------------------------------------- misc


class OutputSpec(ApiModel):
    """Where checkpoints and the final model go."""

    pvc: str | None = Field(
        None,
        max_length=253,
        description="PersistentVolumeClaim mounted on every pod; checkpoints survive "
        "restarts only with one (or a shared filesystem).",
    )
    path: str = Field(
        "/output",
        max_length=4096,
        description="Directory inside the pod (or, for local runs, on disk) for checkpoints "
        "and the final model.",
    )
    merge: bool = Field(
        False,
        description="tuning: lora or qlora: also save the base with the adapters merged in "
        "(final/merged: loads without peft, in the dtype the base trained in, 4-bit weights "
        "dequantized); the adapter is always saved (final/). Refused under zero3 and fsdp.",
    )


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace."""

    name: str = Field(max_length=253, description="Secret name.")
    key: str = Field(max_length=253, description="Key inside the Secret.")


class SecretsSpec(ApiModel):
    """Credentials, always by reference to a Secret, never literal."""

    hf_token: SecretKeyRef | None = Field(
        None, description="Secret key holding a Hugging Face token (HF_TOKEN in the pods)."
    )


class RunPolicy(ApiModel):
    """How the operator restarts, suspends and cleans up. May change while running."""

    backoff_limit: int = Field(
        3,
        ge=0,
        le=100,
        description="Whole-gang restarts from the latest checkpoint before the job fails.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, le=10**9, description="Fail the job (DeadlineExceeded) after this long running."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        le=10**9,
        description="Delete the children this long after the job ends; the output stays.",
    )
    suspend: bool = Field(
        False, description="Suspend: pods are deleted; unsuspending resumes from checkpoint."
    )
    shrink_after_seconds: int | None = Field(
        None, ge=30, le=86_400,
        description="When some of the gang's pods cannot be scheduled for this long while "
        "the others are (their nodes are gone: reclaimed, drained, failed), plan the job "
        "again on the nodes that were scheduled, within spec.resources and with the global "
        "batch kept, and resume from the latest checkpoint there. Unset: wait for the nodes."
    )


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on what data, how, and on which hardware."""

    model: ModelSpec = Field(description="The base model.")
    dataset: DatasetSpec = Field(description="Training and evaluation data.")
    method: MethodSpec = Field(default_factory=MethodSpec, description="Task and tuning method.")
    training: TrainingSpec = Field(
        default_factory=TrainingSpec, description="Hyperparameters."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Hardware bounds for the planner."
    )
    image: str | None = Field(
        None,
        max_length=512,
        description="Trainer image; the operator's configured default when empty.",
    )
    output: OutputSpec = Field(default_factory=OutputSpec, description="Output location.")
    secrets: SecretsSpec = Field(default_factory=SecretsSpec, description="Credentials.")
    run_policy: RunPolicy = Field(
        default_factory=RunPolicy, description="Restart, deadline, cleanup and suspension."
    )


# --------------------------------------------------------------------------- status


class MemoryBreakdown(ApiModel):
    """Bytes per GPU (or per CPU rank), itemized."""

    model_config = STATUS_CONFIG

    weights: int = Field(0, description="Model weights held by one rank.")
    gradients: int = Field(0, description="Gradients held by one rank.")
    optimizer: int = Field(
        0, description="Optimizer states (and fp32 master weights) held by one rank."
    )
    activations: int = Field(
        0, description="Tensors autograd saves for the backward of one micro-batch (all "
        "accumulated micro-batches' gradients are counted with them)."
    )
    logits: int = Field(
        0, description="Working set of the language-model head's loss (TRL's fused head: "
        "its tiles and fp32 gradients), or the classifier's logits."
    )
    overhead: int = Field(
        0, description="Runtime (CUDA context or CPU process), communication buckets, "
        "parameters ZeRO-3 or FSDP keep gathered."
    )
    total: int = Field(
        0, description="Peak per rank: the larger of the forward/backward phase and the "
        "optimizer step (items not live at the same time are not added), plus the runtime."
    )


class PlanAlternative(ApiModel):
    """Another layout the planner evaluated."""

    model_config = STATUS_CONFIG

    strategy: Strategy = Field(description="Sharding strategy.")
    nodes: int = Field(description="Nodes.")
    gpus_per_node: int = Field(description="GPUs per node.")
    memory_per_gpu: int = Field(description="Total bytes per GPU.")
    fits: bool = Field(description="Whether it fits with the required headroom.")
    micro_batch_size: int | None = Field(None, description="Micro-batch it was evaluated at.")
    gradient_checkpointing: bool | None = Field(
        None, description="Whether it was evaluated with gradient checkpointing."
    )
    tokens_per_second: float | None = Field(
        None, description="Predicted training tokens per second of the whole layout "
        "(compute, communication and offloading; docs/planner.md)."
    )
    step_seconds: float | None = Field(
        None, description="Predicted seconds of one optimizer step on this layout."
    )


class CostRange(ApiModel):
    """A price range in USD."""

    model_config = STATUS_CONFIG

    low: float = Field(description="At the low end of the GPU's hourly price range.")
    high: float = Field(description="At the high end of the GPU's hourly price range.")


class Estimate(ApiModel):
    """Expected size and cost of the run."""

    model_config = STATUS_CONFIG

    tokens: int = Field(0, description="Training tokens processed (all epochs).")
    flops: float = Field(0, description="6 x trainable-aware parameters x tokens.")
    mfu: float = Field(
        0, description="Model FLOPs utilization assumed for the compute of a step.")
    gpu_hours: float = Field(0, description="GPU-hours: wallHours x the planned GPUs.")
    wall_hours: float = Field(
        0, description="Wall-clock hours on the planned GPUs: tokens over tokensPerSecond.")
    step_seconds: float = Field(
        0, description="Predicted wall-clock seconds of one optimizer step of full-length "
        "sequences (compute, communication, offloading): what the termination grace period "
        "allows for the step in flight."
    )
    tokens_per_second: float = Field(
        0, description="Predicted training tokens per second of the chosen layout: compute at "
        "that utilization plus attention, gradient and weight communication, and offloading "
        "(docs/planner.md, the throughput model)."
    )
    cost_usd: CostRange = Field(
        default_factory=lambda: CostRange(low=0, high=0), description="Cost range in USD."
    )
    basis: str = Field(
        "", description="How the token count was obtained (steps, measured rows, or assumed)."
    )


class PlanCalibration(ApiModel):
    """The memory calibration a plan was made with: the planner's estimate per rank scaled by
    what recent finished runs of the same model family, strategy and GPU type measured
    against theirs (the operator's calibration ConfigMap; finetune_operator/calibration.py)."""

    model_config = STATUS_CONFIG

    key: str = Field(description="The calibration entry looked up: "
                     "<modelFamily>.<strategy>.<gpu>, the key of the ConfigMap's data.")
    model_family: str = Field(description="The model's model_type (llama, qwen2, ...), or its "
                              "name when only a size hint (model.parameters) sizes it.")
    factor: float = Field(description="memoryPerGpu.total is the planner's estimate times "
                          "this: the largest ratio of the recent runs, within the operator's "
                          "bounds; 1 when no run is recorded under the key.")
    runs: int = Field(0, ge=0, description="Recent finished runs the factor comes from; 0: "
                      "none is recorded under the key yet, the plan is the planner's own.")
    largest_ratio: float | None = Field(
        None, description="The largest measured/estimated peak ratio of those runs, before "
        "the factor's bounds.")
    estimated_bytes: int = Field(ge=0, description="The planner's own peak per rank before "
                                 "the factor: what this job's measured peak is recorded "
                                 "against once it Succeeded.")


class Plan(ApiModel):
    """What the planner chose and why. Written to status.plan."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    parameters: int = Field(description="Total parameter count.")
    trainable_parameters: int = Field(description="Parameters that receive gradients.")
    parameter_source: Literal["safetensors", "config", "catalog", "estimate", "hint"] = Field(
        "config",
        description="Where the count came from: exact from the model's safetensors headers "
        "(read from the Hugging Face Hub or the model's folder), exact from a config, the "
        "built-in catalog, an estimate from the config's sizes, or the user's size hint.",
    )
    tuning: Literal["full", "freeze", "gradual-unfreeze", "lora", "qlora"] | None = Field(
        None, description="The tuning the run trains with: spec.method.tuning, or what "
        "tuning: auto chose.")
    strategy: Strategy = Field(description="Chosen sharding strategy.")
    nodes: int = Field(description="Nodes (pods).")
    gpus_per_node: int = Field(description="GPUs (or CPU ranks) per node.")
    world_size: int = Field(description="Total ranks: nodes x gpusPerNode.")
    gpu: str = Field(description="GPU type, or cpu.")
    gpu_memory: int = Field(description="Memory per GPU in bytes.")
    precision: Precision = Field(description="Training precision.")
    micro_batch_size: int = Field(description="Sequences per rank per forward pass.")
    gradient_accumulation: int = Field(description="Micro-batches per optimizer step.")
    global_batch_size: int = Field(
        description="Sequences per optimizer step (microBatch x worldSize x accumulation)."
    )
    gradient_checkpointing: bool = Field(description="Whether activations are recomputed.")
    packing: Literal["packed", "padding-free", "none"] = Field(
        "padding-free", description="How sequences share a batch."
    )
    seq_length: int = Field(0, description="Sequence length planned for.")
    fits: bool = Field(description="Whether the plan fits in memory with headroom.")
    reason: str = Field(description="One line explaining the choice.")
    suggestion: str | None = Field(
        None, description="When nothing fits: the smallest configuration that would."
    )
    memory_per_gpu: MemoryBreakdown = Field(description="Bytes per GPU, itemized.")
    host_memory_per_node: int = Field(
        0, description="Host RAM needed per node (offloaded states, loading buffers)."
    )
    host_memory_available_per_node: int = Field(
        0, description="Host RAM per node the plan was checked against: resources.memory, or "
        "for zero3-offload the catalog's node shape with gpusPerNode GPUs; 0: not checked."
    )
    host_memory_source: str = Field(
        "", description="Where hostMemoryAvailablePerNode comes from: spec.resources.memory "
        "or the cloud instances of the node shape."
    )
    cpu_per_node: int = Field(
        0, description="CPU cores per pod, requested unless resources.cpu says: one per CPU "
        "rank, or for zero3-offload enough for DeepSpeed's CPU Adam; 0: none requested."
    )
    termination_grace_seconds: int = Field(
        0, description="The pods' terminationGracePeriodSeconds: time on SIGTERM to finish "
        "the step in flight and write the emergency checkpoint; 0: Kubernetes' default."
    )
    termination_grace_reason: str = Field(
        "", description="How terminationGraceSeconds was reached, and whether the emergency "
        "checkpoint fits inside it."
    )
    alternatives: list[PlanAlternative] = Field(
        default_factory=list, description="Every strategy evaluated."
    )
    estimate: Estimate = Field(default_factory=Estimate, description="Tokens, FLOPs, time, cost.")
    calibration: PlanCalibration | None = Field(
        None, description="The memory calibration of the chosen layout's key, applied to "
        "memoryPerGpu (each alternative is scaled by its own strategy's entry); empty: planned "
        "without calibration (the operator's is off, or `finetune plan` without --calibration).")

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    type: str = Field(description="Valid, Planned, Created, Running, Succeeded, Failed, ...")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase machine-readable reason.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: datetime | None = Field(
        None, description="When status last changed."
    )
    observed_generation: int | None = Field(
        None, description="metadata.generation this condition was computed from."
    )


class Progress(ApiModel):
    """Training progress copied from rank 0's metrics."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    step: int | None = Field(None, description="Optimizer steps done.")
    total_steps: int | None = Field(None, description="Optimizer steps planned.")
    percent: float | None = Field(None, description="step / totalSteps in percent.")
    epoch: float | None = Field(None, description="Fractional epoch.")
    loss: float | None = Field(None, description="Latest training loss.")
    eval_loss: float | None = Field(None, description="Latest evaluation loss.")
    tokens_per_second: float | None = Field(None, description="Training throughput.")
    eta_seconds: float | None = Field(None, description="Estimated seconds to completion.")
    resumed_from_step: int | None = Field(
        None, description="The optimizer step this attempt resumed from (its checkpoint's "
        "step; 0 when it started fresh)."
    )
    updated_at: datetime | None = Field(None, description="When progress was last read.")
    stale: bool | None = Field(
        None, description="True when rank 0's metrics could not be read at the last attempt."
    )
    run_seconds: float | None = Field(
        None, description="Seconds since this attempt's trainer process started."
    )
    startup_seconds: float | None = Field(
        None, description="Seconds it took to its first optimizer step (imports, model, data, "
        "resume)."
    )
    step_seconds: float | None = Field(
        None, description="Seconds this attempt spent inside optimizer steps."
    )
    eval_seconds: float | None = Field(None, description="Seconds this attempt evaluated.")
    checkpoint_seconds: float | None = Field(
        None, description="Seconds this attempt spent writing checkpoints."
    )
    peak_memory_bytes: int | None = Field(
        None, description="Rank 0's peak memory: CUDA memory allocated, the process's peak "
        "resident set on CPU."
    )


class ModelSizing(ApiModel):
    """What reading the model itself gave the planner (its config.json and the headers of its
    safetensors files): a model the built-in catalog lacks. Kept in status.sizing so that the
    model is read once, not at every reconcile."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    model: str = Field(description="What was sized: spec.model.name, or spec.model.path.")
    revision: str | None = Field(
        None, description="The Hub revision asked for (main unless given)."
    )
    commit: str | None = Field(None, description="The commit the revision resolved to.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="The keys of the model's config.json that size it (model_type, "
        "hidden_size, num_hidden_layers, ...).",
    )
    parameters: int | None = Field(
        None, ge=0, description="Exact parameter count from the safetensors headers; empty "
        "when the weights are not in safetensors (the config's arithmetic counts them)."
    )
    safetensors_files: int = Field(0, ge=0, description="Safetensors files whose header was read.")
    key: str = Field("", description="What the sizing depends on (model, revision, token "
                     "Secret): a different key sizes again.")


class Resumption(ApiModel):
    """One run that stopped (a failed rank, a deleted or preempted pod, a suspension) and the
    next one that resumed from a checkpoint: the optimizer steps trained twice."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    at: datetime | None = Field(None, description="When the resumed run's progress was first "
                                "read.")
    reached_step: int = Field(ge=0, description="The last optimizer step read from the run "
                              "that stopped. Progress is read every progress interval, so that "
                              "run may have got up to one interval further.")
    resumed_from_step: int = Field(ge=0, description="The checkpoint's step the next run "
                                   "resumed from (0: from the start).")
    steps_redone: int = Field(ge=0, description="reachedStep - resumedFromStep, at least 0: "
                              "steps lost and trained again.")


class LostWork(ApiModel):
    """Work lost to interruptions, from rank 0's progress: what each resumed run had to train
    again. The figures are lower bounds by up to one progress interval per interruption."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    steps_redone: int = Field(0, ge=0, description="Optimizer steps trained again, in total.")
    resumptions: int = Field(0, ge=0, description="Runs that resumed after an interruption.")
    recent: list[Resumption] = Field(
        default_factory=list, description="The latest resumptions, oldest first (at most 10)."
    )
    run_step: int | None = Field(None, ge=0, description="The highest step read from the "
                                 "current run.")
    run_resumed_from_step: int | None = Field(
        None, ge=0, description="The step the current run resumed from."
    )


class RunSeconds(ApiModel):
    """Seconds of trainer runs (one per attempt or resumption), added up."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    wall: float = Field(0.0, ge=0, description="Seconds the trainer processes ran.")
    startup: float = Field(0.0, ge=0, description="Of which before the first optimizer step.")
    steps: float = Field(0.0, ge=0, description="Of which inside optimizer steps.")
    eval: float = Field(0.0, ge=0, description="Of which in evaluations.")
    checkpoint: float = Field(0.0, ge=0, description="Of which writing checkpoints.")
    steps_done: int = Field(0, ge=0, description="Optimizer steps the runs trained.")
    gpu_seconds: float = Field(0.0, ge=0, description="Seconds the runs ran, times their "
                               "ranks: the GPU time (rank time on CPU) they held.")


class LostTime(ApiModel):
    """Seconds since the job first ran that trained nothing new, by cause."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    startup: float = Field(0.0, ge=0, description="Trainer start-up: imports, model, data, "
                           "resuming a checkpoint.")
    checkpoints: float = Field(0.0, ge=0, description="Writing checkpoints.")
    evaluation: float = Field(0.0, ge=0, description="Evaluations.")
    redone_steps: float = Field(0.0, ge=0, description="Steps trained again after an "
                                "interruption.")
    restarts: float = Field(0.0, ge=0, description="No trainer running: between an "
                            "interruption and the next run (rescheduling, image pulls, "
                            "waiting for the gang).")
    other: float = Field(0.0, ge=0, description="The rest: logging, data waits, and what "
                         "the progress reads could not attribute.")


class Goodput(ApiModel):
    """How much of the job's time trained, from rank 0's progress (controller/progress.py,
    goodput.py). Lower bounds by up to one progress interval per interruption."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    ratio: float | None = Field(None, description="Productive step time over the wall time "
                                "since the job's pods first ran (0..1).")
    wall_seconds: float = Field(0.0, ge=0, description="Seconds since the pods first ran.")
    productive_seconds: float = Field(0.0, ge=0, description="Seconds in optimizer steps "
                                      "that were not trained again later.")
    lost_seconds: LostTime = Field(default_factory=LostTime, description="The rest, by cause.")
    tokens_per_second_per_gpu: float | None = Field(
        None, description="Training throughput per rank (per GPU; per CPU rank on cpu).")
    mfu: float | None = Field(None, description="Model FLOPs utilization: 6 x parameters x "
                              "tokens/s over the ranks' dense peak from the GPU catalog.")
    gpu_hours: float = Field(0.0, ge=0, description="GPU-hours (rank-hours on cpu) the runs "
                             "held so far.")
    cost_usd: CostRange | None = Field(None, description="Their cost so far, from the "
                                       "catalog's price range.")
    finished_runs: RunSeconds = Field(default_factory=RunSeconds,
                                      description="Runs that ended, added up.")
    current_run: RunSeconds = Field(default_factory=RunSeconds,
                                    description="The run training now, as last read.")


class MemoryCheck(ApiModel):
    """The plan's memory per rank against the peak the ranks measured (memory_drift.py)."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    planned_bytes: int = Field(ge=0, description="The plan's total per rank (memoryPerGpu).")
    measured_bytes: int = Field(ge=0, description="The largest peak a rank reported so far "
                                "(under this plan).")
    largest_rank: int = Field(ge=0, description="The rank that reported it.")
    ratio: float = Field(ge=0, description="measuredBytes / plannedBytes.")
    ranks_read: int = Field(ge=0, description="The most ranks one read of the metrics reached.")
    recorded: bool | None = Field(
        None, description="True once the operator recorded this reading in its calibration "
        "ConfigMap (when the job Succeeded; each job's reading once), for later plans of the "
        "same model family, strategy and GPU type.")


class FineTuneJobStatus(ApiModel):
    """Observed state, written by the operator only."""

    model_config = ConfigDict(**STATUS_CONFIG, extra="ignore")

    phase: Phase = Field("Pending", description="Pending, Running, Restarting, Suspended, "
                         "Succeeded or Failed.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions.")
    plan: Plan | None = Field(None, description="What the planner chose and why.")
    sizing: ModelSizing | None = Field(
        None, description="The model as a sizing pod read it, for a model the catalog lacks."
    )
    progress: Progress | None = Field(None, description="Training progress.")
    lost_work: LostWork | None = Field(
        None, description="Steps trained again after restarts, preemptions and suspensions."
    )
    goodput: Goodput | None = Field(
        None, description="How much of the job's time trained, and at what speed and cost."
    )
    memory: MemoryCheck | None = Field(
        None, description="Planned against measured peak memory of the largest rank."
    )
    restarts: int = Field(0, description="Whole-gang restarts so far.")
    replans: int = Field(
        0, description="Re-plans after an edit of spec.resources or a shrink: each moved the "
        "gang to a new Job on the new layout, resuming from the emergency checkpoint. "
        "Attempt restarts + replans is the current Job's."
    )
    node_limit: int | None = Field(
        None, ge=1, description="The nodes the operator shrank the job to when the others "
        "could not be scheduled (runPolicy.shrinkAfterSeconds): spec.resources.maxNodes "
        "counts as at most this for the rest of the job."
    )
    start_time: datetime | None = Field(None, description="When the first pods ran.")
    completion_time: datetime | None = Field(None, description="When the job ended.")
    last_checkpoint: str | None = Field(None, description="Latest complete checkpoint.")
    active_job: str | None = Field(None, description="Name of the current batch/v1 Job.")
    observed_generation: int | None = Field(
        None, description="metadata.generation last acted upon."
    )
    message: str | None = Field(None, description="Human-readable summary of the state.")


class ObjectMeta(BaseModel):
    """The part of metadata this project reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(description="Object name.")
    namespace: str | None = Field(None, description="Namespace.")


class FineTuneJob(ApiModel):
    """A fine-tuning run of a language model."""

    model_config = ConfigDict(extra="forbid")

    api_version: Literal["finetune.dev/v1alpha1"] = Field(
        alias="apiVersion", description="finetune.dev/v1alpha1"
    )
    kind: Literal["FineTuneJob"] = Field(description="FineTuneJob")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: FineTuneJobSpec = Field(description="What to fine-tune and how.")
    status: FineTuneJobStatus | None = Field(
        None, description="Observed state, written by the operator."
    )
