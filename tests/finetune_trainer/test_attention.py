"""varlen_sdpa (finetune_trainer/attention.py): per-row causal attention on packed
padding-free batches must equal transformers' SDPA with its block-diagonal mask, keep rows
apart, build no mask, and leave every other case (padding, decoding) to plain SDPA."""

from __future__ import annotations

import copy
from itertools import pairwise

import pytest
import torch
from finetune_trainer import attention
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import create_causal_mask

LENGTHS = [5, 1, 9, 3]  # a one-token row too


def tiny_llama(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, **overrides)
    return LlamaForCausalLM(config).float().eval()


def pair() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """The same weights under transformers' sdpa and under varlen_sdpa."""
    reference = tiny_llama()
    assert reference.config._attn_implementation == "sdpa"
    varlen = copy.deepcopy(reference)
    assert attention.choose(varlen, "cpu", "fp32") == attention.VARLEN_SDPA
    return reference, varlen


def packed(lengths=LENGTHS, seed=1) -> dict[str, torch.Tensor]:
    """A padding-free batch as TRL's collator makes it (one sequence, positions restart)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (1, sum(lengths)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    # use_cache=False as in TRL's compute_loss: transformers only looks for packed rows when
    # there is no cache.
    return {"input_ids": ids, "position_ids": positions, "use_cache": False,
            "cu_seq_lens_q": bounds,
            "cu_seq_lens_k": bounds, "max_length_q": max(lengths), "max_length_k": max(lengths)}


def loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), {
        name: p.grad.clone() for name, p in model.named_parameters()}


def test_packed_batch_matches_sdpa_with_its_block_mask():
    reference, varlen = pair()
    batch = packed()
    logits_r, loss_r, grads_r = loss_and_grads(reference, batch)
    logits_v, loss_v, grads_v = loss_and_grads(varlen, batch)
    torch.testing.assert_close(logits_v, logits_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_v, loss_r, rtol=1e-6, atol=1e-6)
    for name, grad in grads_r.items():
        torch.testing.assert_close(grads_v[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("boundaries", ["cu_seq_lens", "position_ids"])
def test_rows_do_not_attend_across_boundaries(boundaries):
    _, varlen = pair()
    batch = packed()
    if boundaries == "position_ids":  # e.g. DataCollatorWithFlattening: no cu_seq_lens
        batch = {k: batch[k] for k in ("input_ids", "position_ids", "use_cache")}
    with torch.no_grad():
        logits = varlen(**batch).logits[0]
        starts = [0, *torch.tensor(LENGTHS).cumsum(0).tolist()]
        for row, (a, b) in enumerate(pairwise(starts)):
            alone = varlen(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(logits[a:b], alone, rtol=1e-5, atol=1e-5,
                                       msg=f"row {row}")
        # Changing one row's tokens changes no other row's logits.
        changed = dict(batch, input_ids=batch["input_ids"].clone())
        changed["input_ids"][0, starts[2]:starts[3]] = 3
        other = varlen(**changed).logits[0]
        keep = torch.ones(starts[-1], dtype=torch.bool)
        keep[starts[2]:starts[3]] = False
        torch.testing.assert_close(other[keep], logits[keep], rtol=0, atol=0)
        assert not torch.equal(other[~keep], logits[~keep])


def test_no_mask_is_built_for_a_packed_batch_but_padding_keeps_its_mask():
    reference, varlen = pair()
    batch = packed()
    embeds = torch.zeros(1, sum(LENGTHS), 32)

    def mask_of(model, embeds=embeds, **kw):
        return create_causal_mask(config=model.config, inputs_embeds=embeds,
                                  past_key_values=None, **kw)

    # sdpa materializes an L x L block-diagonal mask; varlen_sdpa needs none
    assert mask_of(reference, attention_mask=None,
                   position_ids=batch["position_ids"]).shape[-2:] == (18, 18)
    assert mask_of(varlen, attention_mask=None, position_ids=batch["position_ids"]) is None
    padding = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    embeds2 = torch.zeros(2, 4, 32)
    torch.testing.assert_close(mask_of(varlen, embeds=embeds2, attention_mask=padding),
                               mask_of(reference, embeds=embeds2, attention_mask=padding))


def test_padded_batches_and_generation_are_plain_sdpa():
    reference, varlen = pair()
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(2))
    padding = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(varlen(input_ids=ids, attention_mask=padding).logits,
                                   reference(input_ids=ids, attention_mask=padding).logits)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    prompt = {"input_ids": ids[1:], "attention_mask": padding[1:]}
    assert torch.equal(varlen.generate(**prompt, **settings),
                       reference.generate(**prompt, **settings))


def test_sliding_window_models_keep_their_mask():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=3)
    reference = MistralForCausalLM(config).eval()
    varlen = copy.deepcopy(reference)
    attention.choose(varlen, "cpu", "fp32")
    batch = packed()
    with torch.no_grad():
        torch.testing.assert_close(varlen(**batch).logits, reference(**batch).logits,
                                   rtol=1e-5, atol=1e-5)


def test_the_choice_is_made_by_hardware(monkeypatch):
    assert attention.choose(tiny_llama(), "cpu", "fp32") == attention.VARLEN_SDPA
    assert attention.choose(tiny_llama(), "cpu", "bf16") == attention.VARLEN_SDPA
    # CUDA: flash_attention_2 when the package is installed and the plan is 16-bit; no
    # CUDA device is needed to see that the fallback is transformers' own sdpa.
    monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name: None)
    assert attention.choose(tiny_llama(), "cuda", "bf16") == "sdpa"
    # a model loaded with eager attention (no SDPA support) keeps it
    eager = tiny_llama(attn_implementation="eager")
    assert attention.choose(eager, "cpu", "fp32") == "eager"


def test_a_saved_model_does_not_name_the_implementation(tmp_path):
    _, varlen = pair()
    varlen.save_pretrained(tmp_path)
    assert "varlen" not in (tmp_path / "config.json").read_text()
