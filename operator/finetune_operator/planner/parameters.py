"""Exact parameter counts from a Hugging Face config, without torch.

Each supported family is described by the few facts that change the count (biases, norms
per layer, fused or gated MLP, tied embeddings, mixture of experts) plus the defaults its
transformers config class uses for keys a config leaves out, so a partial config (a tiny
`init: random` model) counts the same as the model transformers would build. The unit tests
check every family and every catalog entry against `sum(p.numel())` of the real model built
on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from finetune_operator.bounds import PARAMETERS, config_value_problem
from finetune_operator.caps import echo
from finetune_operator.sizes import format_size


class ConfigError(ValueError):
    """A config that cannot be sized: which key (None for the whole config) and why."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Family:
    """What distinguishes one decoder family's parameter count."""

    defaults: dict[str, Any]
    qkv_bias: bool = False  # qwen2: biases on q, k and v (not o)
    norms_per_layer: int = 2  # gemma2/gemma3: four RMSNorms per block
    qk_norm: bool = False  # qwen3/gemma3: RMSNorm over each head's q and k
    moe: bool = False  # mixtral: router plus num_local_experts gated MLPs


_LLAMA = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
          "num_hidden_layers": 32, "num_attention_heads": 32, "tie_word_embeddings": False}

FAMILIES: dict[str, Family] = {
    "llama": Family(_LLAMA),
    "mistral": Family({**_LLAMA, "intermediate_size": 14336, "num_key_value_heads": 8}),
    "mixtral": Family({**_LLAMA, "intermediate_size": 14336, "num_key_value_heads": 8,
                       "num_local_experts": 8, "num_experts_per_tok": 2}, moe=True),
    "qwen2": Family({**_LLAMA, "vocab_size": 151936, "intermediate_size": 22016},
                    qkv_bias=True),
    "qwen3": Family({**_LLAMA, "vocab_size": 151936, "intermediate_size": 22016,
                     "head_dim": 128}, qk_norm=True),
    "gemma": Family({"vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
                     "num_hidden_layers": 28, "num_attention_heads": 16, "head_dim": 256,
                     "tie_word_embeddings": True}),
    "gemma2": Family({"vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
                      "num_hidden_layers": 26, "num_attention_heads": 8,
                      "num_key_value_heads": 4, "head_dim": 256,
                      "tie_word_embeddings": True}, norms_per_layer=4),
    # phi3 fuses q/k/v and gate/up into single matrices: same count as separate ones.
    "phi3": Family({**_LLAMA, "vocab_size": 32064, "hidden_size": 3072,
                    "intermediate_size": 8192}),
}
GPT2_DEFAULTS = {"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12,
                 "n_positions": 1024, "n_inner": None, "tie_word_embeddings": True}
SUPPORTED = (*FAMILIES, "gpt2")


@dataclass(frozen=True)
class Shape:
    """The sizes the memory arithmetic needs, whatever the family."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # per expert for mixture of experts
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool
    gated_mlp: bool = True
    experts: int = 1
    experts_per_token: int = 1


@dataclass(frozen=True)
class ParameterCount:
    """A model's parameters, split the way training needs them."""

    shape: Shape
    embedding: int  # token (and position) embeddings
    per_layer: int  # one transformer block
    final_norm: int
    head: int  # lm_head or classification score; 0 when tied to the embedding
    exact: bool = True
    per_layer_active: int = field(default=0)  # mixture of experts: used per token

    @property
    def total(self) -> int:
        return self.embedding + self.shape.num_layers * self.per_layer + self.final_norm + self.head

    @property
    def active(self) -> int:
        """Parameters one token passes through (differs from total only for MoE)."""
        per_layer = self.per_layer_active or self.per_layer
        return self.embedding + self.shape.num_layers * per_layer + self.final_norm + self.head

    @property
    def largest_module(self) -> int:
        """Largest unit gathered at once under parameter sharding (ZeRO-3, FSDP)."""
        return max(self.shape.vocab_size * self.shape.hidden_size, self.per_layer, self.head)

    def trainable(self, tuning: str, trainable_layers: int) -> int:
        """Parameters that receive gradients.

        freeze trains the top `trainable_layers` blocks, the final norm and the head (with
        tied embeddings the head is the embedding matrix, so it trains too).
        """
        if tuning != "freeze":
            return self.total
        layers = min(trainable_layers, self.shape.num_layers)
        head = self.head or self.shape.vocab_size * self.shape.hidden_size
        return layers * self.per_layer + self.final_norm + head


def count_parameters(
    config: dict[str, Any], *, num_labels: int | None = None, vocab_size: int | None = None
) -> ParameterCount:
    """Exact count for a supported family, else a labelled estimate from the config's sizes.

    `num_labels` counts a sequence-classification head instead of the LM head; `vocab_size`
    fills in a vocabulary the config leaves out (a tokenizer trained on the data).
    """
    model_type = str(config.get("model_type") or "")
    merged = dict(config)
    if vocab_size is not None and "vocab_size" not in merged:
        merged["vocab_size"] = vocab_size
    if model_type == "gpt2":
        count = _gpt2(merged)
    elif model_type in FAMILIES:
        count = _decoder(model_type, FAMILIES[model_type], merged)
    else:
        count = _estimate(model_type or "unknown", merged)
    count = _with_classifier(count, num_labels) if num_labels else count
    problem = PARAMETERS.problem(count.total, format_size)
    if problem:  # each size within its bound, and yet too many together
        raise ConfigError(None, f"counts {problem.removeprefix('is ')}")
    return count


def _decoder(model_type: str, family: Family, config: dict[str, Any]) -> ParameterCount:
    c = {**family.defaults, **{k: v for k, v in config.items() if v is not None}}
    h = _int(c, "hidden_size")
    heads = _int(c, "num_attention_heads")
    kv_heads = _int(c, "num_key_value_heads") if "num_key_value_heads" in c else heads
    head_dim = _int(c, "head_dim") if "head_dim" in c else h // heads
    inter = _int(c, "intermediate_size")
    vocab = _int(c, "vocab_size")
    tied = bool(c.get("tie_word_embeddings"))
    experts = _int(c, "num_local_experts") if family.moe else 1
    shape = Shape(model_type, vocab, h, inter, _int(c, "num_hidden_layers"), heads, kv_heads,
                  head_dim, tied, True, experts,
                  _int(c, "num_experts_per_tok") if family.moe else 1)

    q, kv = heads * head_dim, kv_heads * head_dim
    attention = h * q + 2 * h * kv + q * h
    if family.qkv_bias:
        attention += q + 2 * kv
    if c.get("attention_bias"):  # llama-style: every attention projection has a bias
        attention += q + 2 * kv + h
    if family.qk_norm:
        attention += 2 * head_dim
    mlp = 3 * h * inter + ((2 * inter + h) if c.get("mlp_bias") else 0)
    norms = family.norms_per_layer * h
    if family.moe:
        router = h * experts
        per_layer = attention + norms + router + experts * mlp
        active = attention + norms + router + shape.experts_per_token * mlp
    else:
        per_layer, active = attention + norms + mlp, 0
    return ParameterCount(shape, vocab * h, per_layer, h, 0 if tied else vocab * h,
                          per_layer_active=active)


def _gpt2(config: dict[str, Any]) -> ParameterCount:
    c = {**GPT2_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    # GPT2Config also accepts the generic names as aliases.
    h = _int(c, "hidden_size") if "hidden_size" in config else _int(c, "n_embd")
    layers = _int(c, "num_hidden_layers") if "num_hidden_layers" in config else _int(c, "n_layer")
    heads = _int(c, "num_attention_heads") if "num_attention_heads" in config else _int(c, "n_head")
    inner = _int(c, "n_inner") if c.get("n_inner") else 4 * h
    vocab, positions = _int(c, "vocab_size"), _int(c, "n_positions")
    tied = bool(c.get("tie_word_embeddings"))
    shape = Shape("gpt2", vocab, h, inner, layers, heads, heads, h // heads, tied,
                  gated_mlp=False)
    # LayerNorms carry weight and bias; every Conv1D projection has a bias.
    per_layer = 2 * 2 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * inner + inner) + (inner * h + h)
    return ParameterCount(shape, (vocab + positions) * h, per_layer, 2 * h,
                          0 if tied else vocab * h)


def _estimate(model_type: str, config: dict[str, Any]) -> ParameterCount:
    """Llama-shaped estimate for a family this module does not know."""
    missing = [k for k in ("hidden_size", "num_hidden_layers", "vocab_size") if k not in config]
    if missing:
        raise ConfigError(
            None,
            f"model_type {echo(model_type)} is not one of {', '.join(SUPPORTED)} and the config "
            f"lacks {', '.join(missing)} to estimate its size"
        )
    h = _int(config, "hidden_size")
    heads = _int(config, "num_attention_heads") if "num_attention_heads" in config else max(1, h // 128)
    kv_heads = _int(config, "num_key_value_heads") if "num_key_value_heads" in config else heads
    head_dim = _int(config, "head_dim") if "head_dim" in config else h // heads
    inter = _int(config, "intermediate_size") if "intermediate_size" in config else 4 * h
    vocab = _int(config, "vocab_size")
    tied = bool(config.get("tie_word_embeddings", False))
    shape = Shape(model_type, vocab, h, inter, _int(config, "num_hidden_layers"), heads,
                  kv_heads, head_dim, tied)
    q, kv = heads * head_dim, kv_heads * head_dim
    per_layer = 2 * h * q + 2 * h * kv + 3 * h * inter + 2 * h
    return ParameterCount(shape, vocab * h, per_layer, h, 0 if tied else vocab * h, exact=False)


def _with_classifier(count: ParameterCount, num_labels: int) -> ParameterCount:
    """AutoModelForSequenceClassification: a bias-free score layer replaces the LM head."""
    shape = count.shape
    return ParameterCount(shape, count.embedding, count.per_layer, count.final_norm,
                          num_labels * shape.hidden_size, count.exact, count.per_layer_active)


def shape_for_size(parameters: int, reference: ParameterCount) -> ParameterCount:
    """A stand-in architecture for a bare size hint: the reference's widths and vocabulary,
    with as many blocks as make up the hinted total (which it keeps exactly).

    Activations need layers, widths and vocabulary, which a size alone does not give; the
    caller picks the catalog model nearest in size as the reference.
    """
    shape = reference.shape
    final_norm, head = reference.final_norm, reference.head
    budget = parameters - reference.embedding - final_norm - head
    if budget >= reference.per_layer:
        layers = max(1, round(budget / reference.per_layer))
        per_layer = budget // layers
    else:  # smaller than the reference's embeddings: one block, the rest embeddings
        layers, per_layer, final_norm, head = 1, max(1, parameters // 2), 0, 0
    embedding = parameters - layers * per_layer - final_norm - head
    scaled = Shape(shape.model_type, shape.vocab_size, shape.hidden_size,
                   shape.intermediate_size, layers, shape.num_heads, shape.num_kv_heads,
                   shape.head_dim, shape.tied_embeddings or head == 0, shape.gated_mlp)
    return ParameterCount(scaled, embedding, per_layer, final_norm, head, exact=False)


def _int(config: dict[str, Any], key: str) -> int:
    """A size of the config: a positive integer within its bound (bounds.CONFIG_BOUNDS), for
    a config from a file or a sizing pod as for model.config."""
    value = config.get(key)
    problem = config_value_problem(key, value)
    if problem:
        raise ConfigError(key, problem)
    return value


# --------------------------------------------------------------------------- adapters

# The layers of one block that peft's "all-linear" gives adapters (every linear layer but
# the LM head), by the names transformers gives them, as (in, out, adapter copies, whether
# bitsandbytes stores the weight in 4 bits under qlora). gpt2's Conv1D layers count like
# linear ones. transformers 5 keeps a mixture of experts' MLPs as two 3-D parameters
# (gate_up_proj, down_proj of `experts`), not linear layers: bitsandbytes leaves them in 16
# bits and peft adapts each with rank r x experts (gate_up twice that).
class BlockLinear(NamedTuple):
    inputs: int
    outputs: int
    copies: int = 1
    quantized: bool = True


LinearShapes = dict[str, BlockLinear]


def block_linears(shape: Shape) -> LinearShapes:
    """The adaptable layers of one transformer block."""
    h, inter = shape.hidden_size, shape.intermediate_size
    L = BlockLinear
    if shape.model_type == "gpt2":
        return {"attn.c_attn": L(h, 3 * h), "attn.c_proj": L(h, h), "mlp.c_fc": L(h, inter),
                "mlp.c_proj": L(inter, h)}
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    if shape.model_type == "phi3":  # fused q/k/v and gate/up
        return {"qkv_proj": L(h, q + 2 * kv), "o_proj": L(q, h),
                "gate_up_proj": L(h, 2 * inter), "down_proj": L(inter, h)}
    linears = {"q_proj": L(h, q), "k_proj": L(h, kv), "v_proj": L(h, kv), "o_proj": L(q, h)}
    experts = shape.experts
    if experts > 1:
        return linears | {"gate": L(h, experts, 1, False),  # a router, not nn.Linear
                          "experts.gate_up_proj": L(h, 2 * inter, 2 * experts, False),
                          "experts.down_proj": L(inter, h, experts, False)}
    if shape.gated_mlp:
        linears |= {"gate_proj": L(h, inter), "up_proj": L(h, inter)}
    else:
        linears["up_proj"] = L(h, inter)
    linears["down_proj"] = L(inter, h)
    return linears


def _matches(name: str, target: str) -> bool:
    """peft matches a target against the end of a module's name."""
    return target in name.split(".")


def adapted_linears(shape: Shape, targets: list[str] | None) -> LinearShapes:
    """The block's layers that get adapters: all of them without `targets`, else those a
    target names."""
    linears = block_linears(shape)
    if not targets:
        return linears
    unknown = [t for t in targets if not any(_matches(name, t) for name in linears)]
    if unknown:
        raise ConfigError(None, f"targetModules {unknown} name no linear layer of a "
                          f"{shape.model_type} block the planner knows ({', '.join(linears)})")
    return {name: dims for name, dims in linears.items()
            if any(_matches(name, t) for t in targets)}


def adapter_parameters(count: ParameterCount, rank: int, targets: list[str] | None,
                       *, dora: bool = False, modules_to_save: list[str] | None = None) -> int:
    """What LoRA trains: r x (in + out) per adapted layer of every block (DoRA adds one
    magnitude per output feature), plus full copies of the modules_to_save the planner
    knows (lm_head, embed_tokens; other modules, norms say, are small and left out)."""
    linears = adapted_linears(count.shape, targets)
    per_layer = sum(layer.copies * rank * (layer.inputs + layer.outputs)
                    + (layer.outputs if dora else 0) for layer in linears.values())
    saved = 0
    for name in modules_to_save or ():
        if name == "lm_head":
            saved += count.head or count.shape.vocab_size * count.shape.hidden_size
        elif name in ("embed_tokens", "wte"):
            saved += count.embedding
    return count.shape.num_layers * per_layer + saved


def quantized_parameters(count: ParameterCount) -> int:
    """The weights bitsandbytes stores in 4 bits under qlora: every linear layer of the
    blocks (embeddings, norms, biases and the LM head keep the load dtype)."""
    per_layer = sum(layer.inputs * layer.outputs
                    for layer in block_linears(count.shape).values() if layer.quantized)
    if not count.exact:  # a stand-in shape (shape_for_size): its blocks' share of linears
        norms = 2 * count.shape.hidden_size
        return count.shape.num_layers * (count.per_layer * per_layer // (per_layer + norms))
    return count.shape.num_layers * min(per_layer, count.per_layer)
