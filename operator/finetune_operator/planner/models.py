"""Built-in catalog of popular models: the config.json values that size them.

With these, `meta-llama/Llama-3.1-8B` plans without network access or a hub token. The values
are copied from each model's published config.json; the unit tests build every entry with
transformers on the meta device and check the count, and check it against the parameter
count each model card publishes.
"""

from __future__ import annotations

from typing import Any

_LLAMA3 = {"model_type": "llama", "vocab_size": 128256, "tie_word_embeddings": False}

CATALOG: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-2-7b-hf": {"model_type": "llama", "vocab_size": 32000,
                                 "hidden_size": 4096, "intermediate_size": 11008,
                                 "num_hidden_layers": 32, "num_attention_heads": 32,
                                 "num_key_value_heads": 32},
    "meta-llama/Llama-2-13b-hf": {"model_type": "llama", "vocab_size": 32000,
                                  "hidden_size": 5120, "intermediate_size": 13824,
                                  "num_hidden_layers": 40, "num_attention_heads": 40,
                                  "num_key_value_heads": 40},
    "meta-llama/Llama-3.2-1B": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192,
                                "num_hidden_layers": 16, "num_attention_heads": 32,
                                "num_key_value_heads": 8, "head_dim": 64,
                                "tie_word_embeddings": True},
    "meta-llama/Llama-3.2-3B": {**_LLAMA3, "hidden_size": 3072, "intermediate_size": 8192,
                                "num_hidden_layers": 28, "num_attention_heads": 24,
                                "num_key_value_heads": 8, "head_dim": 128,
                                "tie_word_embeddings": True},
    "meta-llama/Llama-3.1-8B": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336,
                                "num_hidden_layers": 32, "num_attention_heads": 32,
                                "num_key_value_heads": 8},
    "meta-llama/Llama-3.1-70B": {**_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672,
                                 "num_hidden_layers": 80, "num_attention_heads": 64,
                                 "num_key_value_heads": 8},
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": {
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
        "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
        "num_key_value_heads": 4},
    "mistralai/Mistral-7B-v0.1": {"model_type": "mistral", "vocab_size": 32000,
                                  "hidden_size": 4096, "intermediate_size": 14336,
                                  "num_hidden_layers": 32, "num_attention_heads": 32,
                                  "num_key_value_heads": 8},
    "mistralai/Mistral-7B-v0.3": {"model_type": "mistral", "vocab_size": 32768,
                                  "hidden_size": 4096, "intermediate_size": 14336,
                                  "num_hidden_layers": 32, "num_attention_heads": 32,
                                  "num_key_value_heads": 8},
    "mistralai/Mixtral-8x7B-v0.1": {"model_type": "mixtral", "vocab_size": 32000,
                                    "hidden_size": 4096, "intermediate_size": 14336,
                                    "num_hidden_layers": 32, "num_attention_heads": 32,
                                    "num_key_value_heads": 8, "num_local_experts": 8,
                                    "num_experts_per_tok": 2},
    "Qwen/Qwen2.5-0.5B": {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
                          "intermediate_size": 4864, "num_hidden_layers": 24,
                          "num_attention_heads": 14, "num_key_value_heads": 2,
                          "tie_word_embeddings": True},
    "Qwen/Qwen2.5-7B": {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584,
                        "intermediate_size": 18944, "num_hidden_layers": 28,
                        "num_attention_heads": 28, "num_key_value_heads": 4,
                        "tie_word_embeddings": False},
    "Qwen/Qwen2.5-72B": {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 8192,
                         "intermediate_size": 29568, "num_hidden_layers": 80,
                         "num_attention_heads": 64, "num_key_value_heads": 8,
                         "tie_word_embeddings": False},
    "Qwen/Qwen3-8B": {"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096,
                      "intermediate_size": 12288, "num_hidden_layers": 36,
                      "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                      "tie_word_embeddings": False},
    "google/gemma-2b": {"model_type": "gemma", "vocab_size": 256000, "hidden_size": 2048,
                        "intermediate_size": 16384, "num_hidden_layers": 18,
                        "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256},
    "google/gemma-7b": {"model_type": "gemma", "vocab_size": 256000, "hidden_size": 3072,
                        "intermediate_size": 24576, "num_hidden_layers": 28,
                        "num_attention_heads": 16, "num_key_value_heads": 16,
                        "head_dim": 256},
    "google/gemma-2-2b": {"model_type": "gemma2", "vocab_size": 256000, "hidden_size": 2304,
                          "intermediate_size": 9216, "num_hidden_layers": 26,
                          "num_attention_heads": 8, "num_key_value_heads": 4,
                          "head_dim": 256},
    "google/gemma-2-9b": {"model_type": "gemma2", "vocab_size": 256000, "hidden_size": 3584,
                          "intermediate_size": 14336, "num_hidden_layers": 42,
                          "num_attention_heads": 16, "num_key_value_heads": 8,
                          "head_dim": 256},
    "microsoft/Phi-3-mini-4k-instruct": {"model_type": "phi3", "vocab_size": 32064,
                                         "hidden_size": 3072, "intermediate_size": 8192,
                                         "num_hidden_layers": 32, "num_attention_heads": 32,
                                         "num_key_value_heads": 32},
    "openai-community/gpt2": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768,
                              "n_layer": 12, "n_head": 12, "n_positions": 1024},
    "openai-community/gpt2-medium": {"model_type": "gpt2", "vocab_size": 50257,
                                     "n_embd": 1024, "n_layer": 24, "n_head": 16,
                                     "n_positions": 1024},
}

# Names people type for the same checkpoints.
ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "meta-llama/Meta-Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-70B": "meta-llama/Llama-3.1-70B",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
}
# Instruct variants share their base model's architecture: suffix -> the base's suffix.
_VARIANTS = {"-Instruct": "", "-instruct": "", "-it": "", "-chat-hf": "-hf", "-Chat": ""}


def find_model(name: str) -> dict[str, Any] | None:
    """The config values of a catalog model (case-insensitive; instruct variants too)."""
    by_lower = {key.lower(): key for key in CATALOG}
    candidates = [name, ALIASES.get(name, name)]
    for suffix, base in _VARIANTS.items():
        if name.endswith(suffix):
            candidates.append(name[: -len(suffix)] + base)
    for candidate in candidates:
        key = by_lower.get(candidate.lower()) or by_lower.get(ALIASES.get(candidate, "").lower())
        if key:
            return dict(CATALOG[key])
    return None
