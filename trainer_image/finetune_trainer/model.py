"""Building the model: pretrained from a path or hub id (from the job's model cache when it
has one, model_cache.py), or random from model.config."""

from __future__ import annotations

import os
from typing import Any

from finetune_contract.trainer_config import TrainerConfig

from finetune_trainer.errors import TrainerError
from finetune_trainer.hub_errors import hub_error
from finetune_trainer.model_cache import load_options


def model_class(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM


def build_model(config: TrainerConfig, tokenizer: Any) -> Any:
    """The model the spec names, with weights in fp32 (mixed precision keeps fp32 masters;
    the trainer's autocast computes in the planned precision). Under tuning lora the frozen
    base loads in the working precision instead, under qlora its linear layers in 4 bits
    (finetune_trainer/adapters.py); the adapters are added by the trainer."""
    import torch
    from transformers import AutoConfig

    from finetune_trainer import adapters

    spec = config.spec
    tuning = spec.method.tuning
    dtype = (adapters.base_dtype(config.plan.precision) if adapters.uses_adapters(tuning)
             else torch.float32)
    quantized: dict[str, Any] = {}
    if tuning == "qlora":
        quantized["quantization_config"] = adapters.quantization_config(spec.method)
        # bitsandbytes quantizes while loading, on the device the weights load onto.
        quantized["device_map"] = ({"": int(os.environ.get("LOCAL_RANK", "0"))}
                                   if config.device == "cuda" else "cpu")
    cls = model_class(spec.method.task)
    extra: dict[str, Any] = {}
    if spec.method.task == "classification":
        extra["num_labels"] = spec.method.num_labels
    token_ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if tokenizer.bos_token_id is not None:
        token_ids["bos_token_id"] = tokenizer.bos_token_id

    if spec.model.init == "random":
        keys = dict(spec.model.config or {})
        model_type = keys.pop("model_type", None)
        if not model_type:
            raise TrainerError("model.config.model_type: required for init: random "
                               "(e.g. llama)")
        keys["vocab_size"] = len(tokenizer)  # the tokenizer decides the vocabulary
        try:
            hf_config = AutoConfig.for_model(model_type, **keys, **token_ids, **extra)
        except (ValueError, TypeError) as err:
            raise TrainerError(f"model.config: {err}") from None
        if quantized:
            raise TrainerError("spec.method.tuning: qlora quantizes pretrained weights; set "
                               "model.path or model.name with init: pretrained")
        torch.manual_seed(spec.training.seed)  # identical initial weights on every rank
        return _with_attention(cls.from_config(hf_config, dtype=dtype), config)

    source = spec.model.path or spec.model.name
    local = config.resolve(source) if spec.model.path else None
    if local is not None and not local.is_dir():
        raise TrainerError(f"model.path: {local} is not a directory (relative paths resolve "
                           "against the data root)")
    try:
        model = cls.from_pretrained(str(local or source), dtype=dtype, **extra, **quantized,
                                    **load_options(config, source))
    except (OSError, ValueError) as err:
        if local is not None:
            raise TrainerError(f"model.path: cannot load {source!r} "
                               f"({str(err).splitlines()[0]})") from None
        raise hub_error(err, field="model.name", kind="model", repo=str(source),
                        doing=f"load {source!r}") from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return _with_attention(model, config)


def _with_attention(model: Any, config: TrainerConfig) -> Any:
    """The attention kernel for this hardware (finetune_trainer/attention.py decides)."""
    from finetune_trainer import attention

    attention.choose(model, config.device, config.plan.precision)
    return model
