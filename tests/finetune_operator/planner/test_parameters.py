"""Parameter counts: the planner (no torch) against the real transformers models.

Every family and every catalog entry is built with transformers on the meta device (no
memory, no weights) and its `sum(p.numel())` must equal the planner's count exactly.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from finetune_operator.planner import models
from finetune_operator.planner.parameters import (
    SUPPORTED,
    ConfigError,
    adapter_parameters,
    count_parameters,
    quantized_parameters,
    shape_for_size,
)

TINY = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}

# Every family, with the variations that change the count.
FAMILY_CONFIGS = {
    "llama": {"model_type": "llama", **TINY},
    "llama-tied": {"model_type": "llama", **TINY, "tie_word_embeddings": True},
    "llama-mha-default-kv": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                             "num_hidden_layers": 2, "num_attention_heads": 4,
                             "vocab_size": 1024},
    "llama-biases": {"model_type": "llama", **TINY, "attention_bias": True, "mlp_bias": True},
    "llama-head-dim": {"model_type": "llama", **TINY, "head_dim": 32},
    "mistral": {"model_type": "mistral", **TINY},
    "qwen2": {"model_type": "qwen2", **TINY},
    "qwen2-tied": {"model_type": "qwen2", **TINY, "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", **TINY},
    "gemma": {"model_type": "gemma", **TINY},
    "gemma-head-dim": {"model_type": "gemma", **TINY, "head_dim": 16},
    "gemma2": {"model_type": "gemma2", **TINY},
    "phi3": {"model_type": "phi3", **TINY, "pad_token_id": None},
    "mixtral": {"model_type": "mixtral", **TINY, "num_local_experts": 4,
                "num_experts_per_tok": 2},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4, "vocab_size": 128,
             "n_positions": 64},
    "gpt2-inner-untied": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                          "vocab_size": 128, "n_positions": 32, "n_inner": 100,
                          "tie_word_embeddings": False},
}

# The counts the model cards publish; they pin the catalog's config values.
PUBLISHED = {
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Llama-3.1-8B": 8_030_261_248,
    "meta-llama/Llama-3.1-70B": 70_553_706_496,
    "meta-llama/Llama-3.2-1B": 1_235_814_400,
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,
    "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704,
    "Qwen/Qwen2.5-7B": 7_615_616_512,
    "google/gemma-2b": 2_506_172_416,
    "google/gemma-2-9b": 9_241_705_984,
    "microsoft/Phi-3-mini-4k-instruct": 3_821_079_552,
    "openai-community/gpt2": 124_439_808,
}


def meta_model(config: dict, *, num_labels: int | None = None):
    """The transformers model for `config`, on the meta device (no memory)."""
    values = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = transformers.AutoConfig.for_model(config["model_type"], **values)
    if "pad_token_id" not in config and getattr(hf_config, "pad_token_id", None) is not None \
            and hf_config.pad_token_id >= hf_config.vocab_size:
        hf_config.pad_token_id = None  # family defaults assume the full vocabulary
    with torch.device("meta"):
        if num_labels:
            hf_config.num_labels = num_labels
            return transformers.AutoModelForSequenceClassification.from_config(hf_config)
        return transformers.AutoModelForCausalLM.from_config(hf_config)


def numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_family_count_equals_transformers(name):
    config = FAMILY_CONFIGS[name]
    count = count_parameters(config)
    assert count.exact
    assert count.total == numel(meta_model(config))


def test_every_supported_family_is_covered():
    assert {c["model_type"] for c in FAMILY_CONFIGS.values()} == set(SUPPORTED)


@pytest.mark.parametrize("name", sorted(models.CATALOG))
def test_catalog_count_equals_transformers(name):
    config = models.CATALOG[name]
    assert count_parameters(config).total == numel(meta_model(config))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_catalog_matches_published_count(name):
    assert count_parameters(models.find_model(name)).total == PUBLISHED[name]


def test_mixtral_active_parameters_count_only_routed_experts():
    config = FAMILY_CONFIGS["mixtral"]
    model = meta_model(config)
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    idle = experts * (4 - 2) // 4  # 2 of 4 experts per token
    count = count_parameters(config)
    assert count.active == numel(model) - idle
    assert count.active < count.total


def test_mixtral_8x7b_active_is_about_13b():
    count = count_parameters(models.find_model("mistralai/Mixtral-8x7B-v0.1"))
    assert 12.8e9 < count.active < 13.0e9  # the model card's "12.9B active"


@pytest.mark.parametrize("name", ["llama", "llama-tied", "gpt2"])
def test_classification_head_equals_transformers(name):
    config = FAMILY_CONFIGS[name]
    count = count_parameters(config, num_labels=5)
    assert count.total == numel(meta_model(config, num_labels=5))


@pytest.mark.parametrize("name", ["llama", "llama-tied", "qwen2"])
def test_freeze_trains_top_blocks_norm_and_head(name):
    config = FAMILY_CONFIGS[name]
    model = meta_model(config)
    layers = config["num_hidden_layers"]
    top = {f"model.layers.{i}." for i in range(layers - 2, layers)}
    trainable = sum(
        p.numel() for n, p in model.named_parameters()
        if any(n.startswith(t) for t in top) or n.startswith(("model.norm", "lm_head"))
        or (config.get("tie_word_embeddings") and n.startswith("model.embed_tokens"))
    )
    count = count_parameters(config)
    assert count.trainable("freeze", 2) == trainable
    assert count.trainable("full", 0) == count.total


def test_vocab_comes_from_trained_tokenizer_when_config_lacks_it():
    config = {k: v for k, v in FAMILY_CONFIGS["llama"].items() if k != "vocab_size"}
    count = count_parameters(config, vocab_size=300)
    assert count.shape.vocab_size == 300
    assert count.total == numel(meta_model({**config, "vocab_size": 300}))


def test_config_vocab_wins_over_tokenizer_vocab():
    assert count_parameters(FAMILY_CONFIGS["llama"], vocab_size=300).shape.vocab_size == 128


def test_unknown_family_is_a_labelled_estimate():
    config = {"model_type": "falcon-ish", "hidden_size": 64, "num_hidden_layers": 2,
              "vocab_size": 128, "intermediate_size": 96, "num_attention_heads": 4}
    count = count_parameters(config)
    assert not count.exact
    # Llama-shaped: matches a llama with the same sizes.
    assert count.total == count_parameters({**config, "model_type": "llama"}).total


def test_unknown_family_without_sizes_says_what_is_missing():
    with pytest.raises(ConfigError, match="hidden_size, num_hidden_layers"):
        count_parameters({"model_type": "mystery", "vocab_size": 10})


@pytest.mark.parametrize("value", [0, -3, "64", 1.5, True])
def test_bad_config_value_names_the_key(value):
    with pytest.raises(ConfigError) as err:
        count_parameters({**FAMILY_CONFIGS["llama"], "hidden_size": value})
    assert err.value.key == "hidden_size"


def test_largest_module_is_embedding_or_block():
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-70B"))
    assert count.largest_module == 128256 * 8192  # the embedding beats one block
    small_vocab = count_parameters({**FAMILY_CONFIGS["llama"], "vocab_size": 8})
    assert small_vocab.largest_module == small_vocab.per_layer


@pytest.mark.parametrize("size", [125_000_000, 7_500_000_000, 70_000_000_000])
def test_size_hint_keeps_the_exact_total(size):
    reference = count_parameters(models.find_model("meta-llama/Llama-2-7b-hf"))
    count = shape_for_size(size, reference)
    assert count.total == size
    assert not count.exact
    assert count.shape.num_layers >= 1


def test_find_model_accepts_instruct_variants_and_aliases():
    base = models.find_model("meta-llama/Llama-3.1-8B")
    assert models.find_model("meta-llama/Llama-3.1-8B-Instruct") == base
    assert models.find_model("META-LLAMA/llama-3.1-8b") == base
    assert models.find_model("meta-llama/Llama-2-7b-chat-hf") == models.find_model(
        "meta-llama/Llama-2-7b-hf")
    assert models.find_model("gpt2") == models.CATALOG["openai-community/gpt2"]
    assert models.find_model("nobody/nothing") is None


# --------------------------------------------------------------------------- adapters


def _peft_trainable(config: dict, **lora: object) -> int:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(meta_model(config), LoraConfig(task_type="CAUSAL_LM", **lora))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _block_linear_weights(config: dict) -> int:
    """What bitsandbytes quantizes: the weights of every linear layer but the LM head."""
    from transformers.pytorch_utils import Conv1D

    model = meta_model(config)
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear | Conv1D) and m is not head)


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_lora_on_all_linear_layers_counts_what_peft_trains(name):
    config = FAMILY_CONFIGS[name]
    count = count_parameters(config)
    assert adapter_parameters(count, 8, None) == _peft_trainable(
        config, r=8, target_modules="all-linear")
    assert quantized_parameters(count) == _block_linear_weights(config)


def test_lora_targets_dora_and_modules_to_save_count_what_peft_trains():
    config = FAMILY_CONFIGS["llama"]
    count = count_parameters(config)
    assert adapter_parameters(count, 4, ["q_proj", "v_proj"]) == _peft_trainable(
        config, r=4, target_modules=["q_proj", "v_proj"])
    assert adapter_parameters(count, 4, None, dora=True) == _peft_trainable(
        config, r=4, target_modules="all-linear", use_dora=True)
    assert adapter_parameters(count, 4, ["q_proj"], modules_to_save=["lm_head"]) == \
        _peft_trainable(config, r=4, target_modules=["q_proj"], modules_to_save=["lm_head"])
    with pytest.raises(ConfigError, match="name no linear layer"):
        adapter_parameters(count, 4, ["query_key_value"])


def test_llama_3_8b_lora_rank_16_trains_41_9m_parameters():
    """The count peft prints for Llama 3 8B with r=16 on every linear layer."""
    count = count_parameters(models.find_model("meta-llama/Llama-3.1-8B"))
    assert adapter_parameters(count, 16, None) == 41_943_040
