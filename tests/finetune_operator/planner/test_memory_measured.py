"""The planner's memory arithmetic against what torch really holds: the activations autograd
saves, the model states AdamW keeps, and the DeepSpeed settings the planner and the trainer
must agree on.

The model is a tiny random Llama built from its config, run the way the trainer runs it:
TRL's padding-free collator (the micro-batch's rows in one sequence), TRL's fused LM head,
SDPA attention with the packed mask or split into rows (finetune_trainer/attention.py), in
fp32, in bf16 (DeepSpeed casts the model) and under autocast (DDP's fp32 weights), with and
without gradient checkpointing. Every tensor autograd saves during the forward pass is
counted once by storage, parameters excluded.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from finetune_contract import strategies
from finetune_operator.planner import memory as mem
from finetune_operator.planner.parameters import count_parameters
from finetune_trainer import attention, strategy
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import add_fused_lm_head

from tests.support.tiny import one_torch_thread  # noqa: F401  (autouse: one torch thread)

# Grouped-query attention (kv heads < heads) and an MLP width that is no multiple of h.
CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 512, "max_position_embeddings": 2048, "tie_word_embeddings": False}

# (planner precision and strategy, model dtype, autocast)
PRECISIONS = {
    "fp32": ("fp32", "zero2", torch.float32, False),
    "bf16": ("bf16", "zero2", torch.bfloat16, False),  # DeepSpeed: the model cast to bf16
    "autocast": ("bf16", "ddp", torch.float32, True),  # DDP: fp32 weights, bf16 autocast
}


def saved_bytes(config: dict, rows: list[int], *, dtype: torch.dtype, autocast: bool,
                checkpointing: bool, attn: str) -> int:
    """Bytes of the distinct storages autograd saves in one forward pass (parameters
    excluded), with the trainer's collator, fused head and attention."""
    values = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = transformers.AutoConfig.for_model("llama", **values)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        hf_config, attn_implementation="sdpa", dtype=dtype)
    if attn == attention.VARLEN_SDPA:
        attention.register()
        model.set_attn_implementation(attention.VARLEN_SDPA)
    if checkpointing:
        model.config.use_cache = False
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    generator = torch.Generator().manual_seed(1)
    batch = collator([{"input_ids": torch.randint(1, config["vocab_size"], (n,),
                                                  generator=generator).tolist()}
                      for n in rows])
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    cast = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
            else torch.autocast("cpu", enabled=False))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        out = model(**batch, fused_lm_head=True)
    assert out.loss.requires_grad
    return sum(saved.values())


def planned(config: dict, micro: int, seq: int, precision: str, strategy_name: str,
            checkpointing: bool, kind: str) -> int:
    count = count_parameters(config)
    return mem.activation_bytes(
        count, micro_batch=micro, seq_len=seq, precision=precision,
        checkpointing=checkpointing, layers_with_grad=count.shape.num_layers,
        strategy=strategy_name, attention=kind, packing="padding-free")


def head_saved_bytes(config: dict, tokens: int) -> int:
    """What the fused head saves per micro-batch beyond the hidden state (counted with the
    activations): label, log Z, entropy (and the label mask)."""
    return tokens * (8 + 4 + 4 + 1)


@pytest.mark.parametrize("kind", ["varlen", "masked"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["saved", "checkpointed"])
@pytest.mark.parametrize("name", list(PRECISIONS))
def test_planned_activations_are_what_autograd_saves(name, checkpointing, kind):
    precision, strategy_name, dtype, autocast = PRECISIONS[name]
    attn = attention.VARLEN_SDPA if kind == "varlen" else "sdpa"
    for micro, seq in [(2, 64), (2, 160), (3, 96)]:
        measured = saved_bytes(CONFIG, [seq] * micro, dtype=dtype, autocast=autocast,
                               checkpointing=checkpointing, attn=attn)
        plan = planned(CONFIG, micro, seq, precision, strategy_name, checkpointing, kind)
        # Checkpointing recomputes one block in the backward: the forward saves only the
        # block inputs, the planner adds the recomputed block on top.
        if checkpointing:
            count = count_parameters(CONFIG)
            plan -= mem.layer_activation_bytes(
                count, micro * seq, compute=mem.compute_of(strategy_name, precision),
                attention=kind, mask=mem.mask_elements(micro, seq, "padding-free"), seq_len=seq)
        plan += head_saved_bytes(CONFIG, micro * seq)
        # Left over: a few bytes per micro-batch (the shifted labels are one token shorter
        # than the sequence, a scalar or two).
        assert abs(measured - plan) <= 0.005 * measured + 64, (micro, seq, measured, plan)


def test_one_block_saves_the_per_layer_formula():
    """Two blocks minus one block: exactly the planner's per-layer bytes (fp32, masked)."""
    one = {**CONFIG, "num_hidden_layers": 1}
    for micro, seq in [(2, 64), (2, 128)]:
        two_blocks = saved_bytes(CONFIG, [seq] * micro, dtype=torch.float32, autocast=False,
                                 checkpointing=False, attn="sdpa")
        one_block = saved_bytes(one, [seq] * micro, dtype=torch.float32, autocast=False,
                                checkpointing=False, attn="sdpa")
        per_layer = mem.layer_activation_bytes(
            count_parameters(CONFIG), micro * seq, compute=mem.compute_of("zero2", "fp32"),
            attention="masked", mask=mem.mask_elements(micro, seq, "padding-free"))
        assert two_blocks - one_block == per_layer


def test_the_packed_mask_costs_tokens_squared_per_block():
    """Masked SDPA on a padding-free micro-batch saves the mask, converted to the compute
    dtype, in every block: doubling the tokens quadruples it."""
    args = {"dtype": torch.float32, "autocast": False, "checkpointing": False}
    per_token = []
    for seq in (64, 128):
        masked = saved_bytes(CONFIG, [seq, seq], attn="sdpa", **args)
        split = saved_bytes(CONFIG, [seq, seq], attn=attention.VARLEN_SDPA, **args)
        per_token.append(masked - split)
    layers, q, kv = 2, 64, 32
    for seq, difference in zip((64, 128), per_token, strict=True):
        tokens = 2 * seq
        # Masked SDPA gets k and v repeated to every query head (2q instead of 2kv); the
        # split rows keep each row's output and their concatenation (one q more).
        heads = layers * tokens * 4 * ((2 * q - 2 * kv) - q)
        assert difference == layers * tokens**2 * 4 + heads


# --------------------------------------------------------------------------- DeepSpeed


def test_zero_bucket_sizes_are_what_transformers_fills_in():
    """The trainer leaves the bucket sizes on "auto"; transformers fills them from the model's
    hidden size, and the planner counts the same numbers."""
    from transformers.integrations import deepspeed as hf_deepspeed

    hidden = 96
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model("llama", hidden_size=hidden, intermediate_size=128,
                                          num_hidden_layers=1, num_attention_heads=4,
                                          num_key_value_heads=4, vocab_size=64))
    config = strategy.deepspeed_config("zero3", "cpu")
    # Batch sizes and precision are filled from the training arguments, not the model.
    config.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1,
                  train_batch_size=1, gradient_clipping=1.0, bf16={"enabled": False},
                  fp16={"enabled": False})
    try:
        ds = hf_deepspeed.HfTrainerDeepSpeedConfig(config)
        ds.trainer_config_finalize(_Args(), model, num_training_steps=1)
    finally:  # the config registers itself globally (ZeRO-3 "enabled" for later models)
        hf_deepspeed.unset_hf_deepspeed_config()
    zero = ds.config["zero_optimization"]
    for key, value in mem.zero_bucket_elements(hidden).items():
        assert zero[key] == value


def test_zero3_retention_settings_come_from_the_contract():
    zero = strategy.deepspeed_config("zero3", "cuda")["zero_optimization"]
    assert zero["stage3_max_reuse_distance"] == strategies.ZERO3_MAX_REUSE_DISTANCE
    assert zero["stage3_max_live_parameters"] == strategies.ZERO3_MAX_LIVE_PARAMETERS
    assert "stage3_max_reuse_distance" not in strategy.deepspeed_config(
        "zero2", "cuda")["zero_optimization"]


class _Args:
    """The TrainingArguments fields trainer_config_finalize reads."""

    per_device_train_batch_size = 1
    gradient_accumulation_steps = 1
    world_size = 1
    max_grad_norm = 1.0
    fp16 = False
    bf16 = False
    learning_rate = 1e-4
    adam_beta1, adam_beta2, adam_epsilon, weight_decay = 0.9, 0.999, 1e-8, 0.0
    warmup_steps = 0
    lr_scheduler_type = "linear"

    def get_warmup_steps(self, steps: int) -> int:
        return 0


def test_ddps_states_are_the_tensors_adamw_holds_after_a_step():
    """DDP keeps whole states on each rank: the fp32 weights, their gradients and AdamW's two
    moments, measured on the tiny model after one optimizer step (its step counters aside),
    are the planner's ddp terms item by item, in fp32 and under bf16 autocast alike."""
    values = {k: v for k, v in CONFIG.items() if k != "model_type"}
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model("llama", **values))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(1, CONFIG["vocab_size"], (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()

    def nbytes(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    measured = {
        "weights": nbytes(model.parameters()),
        "gradients": nbytes(p.grad for p in model.parameters()),
        "optimizer": nbytes(value for state in optimizer.state.values()
                            for key, value in state.items() if key != "step"),
    }
    count = count_parameters(CONFIG)
    assert count.total == sum(p.numel() for p in model.parameters())
    for precision in ("fp32", "bf16"):
        terms = mem.state_terms("ddp", precision)
        assert mem.model_states(terms, count.total, count.total, 1) == measured

