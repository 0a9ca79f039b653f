"""LoRA and QLoRA: the peft adapters, the 4-bit base, and the merged model.

- `lora_config` maps `spec.method.lora` onto peft's LoraConfig, which TRL's SFTTrainer
  receives as `peft_config` and applies to the model (it freezes every base weight).
- `quantization_config` maps `spec.method.qlora` onto transformers' BitsAndBytesConfig: the
  linear layers of the base load as bitsandbytes 4-bit weights (NF4 by default, with double
  quantization and bf16 compute); embeddings, norms and the LM head stay in `base_dtype`.
- `base_dtype`: the frozen base is kept in the working precision (bf16 or fp16 on GPUs, fp32
  where the plan trains in fp32), not in fp32 as for full fine-tuning: it gets no gradient
  and no optimizer state, so it needs no fp32 master copy. The planner counts the same
  (finetune_operator/planner/memory.py).
- `merged_model` builds a plain transformers model whose adapter-carrying layers hold
  W + (alpha / r) B A (DoRA: its magnitude times the normalized sum), 4-bit weights
  dequantized first, so the result loads with transformers alone and computes what the
  trained model computed.
"""

from __future__ import annotations

import re
from typing import Any

from finetune_contract import layout

ADAPTER_TUNINGS = ("lora", "qlora")
MERGED_DIR = layout.MERGED_DIR  # under final/: the base with the adapters merged in
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def uses_adapters(tuning: str) -> bool:
    return tuning in ADAPTER_TUNINGS


def base_dtype(precision: str) -> Any:
    import torch

    return getattr(torch, DTYPES[precision])


def lora_config(method: Any) -> Any:
    """peft's LoraConfig for an api.MethodSpec with tuning lora or qlora."""
    from peft import LoraConfig

    lora = method.lora
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        # "all-linear": every nn.Linear (or 4-bit Linear) of the model but the output layer.
        target_modules=list(lora.target_modules) if lora.target_modules else "all-linear",
        modules_to_save=list(lora.modules_to_save) if lora.modules_to_save else None,
        use_dora=lora.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def quantization_config(method: Any) -> Any:
    """transformers' BitsAndBytesConfig for an api.MethodSpec with tuning qlora."""
    from transformers import BitsAndBytesConfig

    qlora = method.qlora
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=qlora.quant_type,
        bnb_4bit_use_double_quant=qlora.double_quant,
        bnb_4bit_compute_dtype=base_dtype(qlora.compute_dtype),
    )


def frozen_base(model: Any) -> dict[str, Any]:
    """The base weights of a peft model (everything but adapters and modules_to_save
    copies), by name, as the tensors the model holds."""
    return {name: param for name, param in model.named_parameters()
            if "lora_" not in name and "modules_to_save" not in name}


def _dequantized(weight: Any) -> Any:
    """A weight as a float tensor: bitsandbytes 4-bit weights dequantized."""
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes as bnb

        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    return weight.detach()


def merged_model(peft_model: Any, dtype: Any) -> Any:
    """A new transformers model, on the CPU in `dtype`, holding the base of `peft_model`
    with every adapter merged into its layer and every modules_to_save copy in place of its
    original; `peft_model` is left as it is."""
    import copy

    import torch
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    base = peft_model.get_base_model()
    layers = {name: module for name, module in base.named_modules()
              if isinstance(module, LoraLayer)}
    state: dict[str, Any] = {}
    with torch.no_grad():
        for name, module in layers.items():
            layer = module.get_base_layer()
            state[f"{name}.weight"] = _merged_weight(module).to(dtype).cpu()
            if layer.bias is not None:
                state[f"{name}.bias"] = layer.bias.detach().to(dtype).cpu()
        for name, param in base.named_parameters():
            if "lora_" in name or ".original_module." in name:
                continue
            if any(name.startswith(f"{layer}.base_layer.") for layer in layers):
                continue  # merged above
            key = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)
            state[key] = _dequantized(param).to(dtype).cpu()
    config = copy.deepcopy(base.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():  # every weight is overwritten below
        merged = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = merged.load_state_dict(state, strict=False, assign=True)
    tied = {name for name, _ in merged.named_parameters(remove_duplicate=False)} - {
        name for name, _ in merged.named_parameters()}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"merging the adapters left weights out: missing {missing}, "
                           f"unexpected {unexpected}")
    merged.tie_weights()
    return merged


def _merged_weight(module: Any) -> Any:
    """W + (alpha / r) B A for each active adapter of a peft LoRA layer (DoRA: the trained
    magnitude times the row-normalized sum), from the dequantized base weight, in fp32."""
    weight = _dequantized(module.get_base_layer().weight).float()
    for adapter in module.active_adapters:
        if adapter not in module.lora_A:
            continue
        delta = module.get_delta_weight(adapter).float()
        if module.use_dora.get(adapter):
            magnitude = module.lora_magnitude_vector[adapter].weight.float()
            combined = weight + delta
            weight = (magnitude.view(-1, 1) / combined.norm(p=2, dim=1, keepdim=True)) * combined
        else:
            weight = weight + delta
    return weight
