"""Which attention kernel the model runs, chosen here and nowhere else, by hardware.

Padding-free batches put a micro-batch's rows one after the other in a single sequence whose
position ids restart at 0 for each row. Every row must attend only to itself.

- CUDA with `flash_attn` installed and a 16-bit plan: `flash_attention_2`, whose variable-length
  kernel takes the row boundaries (`cu_seq_lens_*` from TRL's collator, or the position ids).
- CPU: `varlen_sdpa` (below). With plain `sdpa`, transformers sees the packed position ids and
  builds a block-diagonal causal mask over the whole micro-batch, so SDPA computes attention
  over L x L positions (L: all the rows' tokens) where the rows only need the sum of their own
  Li x Li, and a masked call cannot skip the blocks a causal one skips. `varlen_sdpa` splits the
  sequence at the row boundaries and runs causal SDPA on each row: the same result, no mask.
- Anything else (CUDA without flash-attn or in fp32, models without SDPA support): the
  implementation transformers picked when loading the model.

`varlen_sdpa` only takes the split path when it is exact: no padding mask, queries and keys of
the same length (training and eval, not decoding from a cache), causal attention without a
sliding window or other mask overlay. Everything else is handed to transformers' own SDPA path
with the mask transformers builds for it, so generation, padded batches and sliding-window
models behave exactly as under `sdpa`.
"""

from __future__ import annotations

import importlib.util
from itertools import pairwise
from typing import Any

import torch

VARLEN_SDPA = "varlen_sdpa"


def choose(model: Any, device: str, precision: str) -> str:
    """Set the model's attention implementation for this hardware and return its name."""
    current = model.config._attn_implementation
    wanted = current
    if device == "cuda":
        if (precision in ("bf16", "fp16") and getattr(model, "_supports_flash_attn", False)
                and importlib.util.find_spec("flash_attn") is not None):
            wanted = "flash_attention_2"
    elif device == "cpu" and current == "sdpa" and model._can_set_attn_implementation():
        register()
        wanted = VARLEN_SDPA
    if wanted != current:
        model.set_attn_implementation(wanted)
    return model.config._attn_implementation


def register() -> None:
    """Make `varlen_sdpa` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention)
    AttentionMaskInterface.register(VARLEN_SDPA, varlen_sdpa_mask)


def varlen_sdpa_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0,
                     kv_offset: int = 0, attention_mask: torch.Tensor | None = None,
                     local_size: int | None = None, use_vmap: bool = False,
                     config: Any = None, **kwargs: Any) -> torch.Tensor | None:
    """No mask where `varlen_sdpa_attention` splits the rows itself; otherwise SDPA's mask."""
    from transformers.masking_utils import sdpa_mask

    if (attention_mask is None and q_length == kv_length and not q_offset and not kv_offset
            and local_size is None and not use_vmap and getattr(config, "is_causal", True)):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length,
                     q_offset=q_offset, kv_offset=kv_offset, attention_mask=attention_mask,
                     local_size=local_size, use_vmap=use_vmap, config=config, **kwargs)


def row_lengths(length: int, batch_size: int, position_ids: torch.Tensor | None,
                cu_seq_lens: torch.Tensor | None) -> list[list[int]]:
    """The lengths of the rows packed in each batch item, from TRL's cumulative sequence
    lengths (one batch item) or else from the position ids (a row starts where the position
    does not follow the previous one)."""
    if cu_seq_lens is not None and batch_size == 1:
        bounds = [int(b) for b in cu_seq_lens.tolist()]
        if bounds and bounds[0] == 0 and bounds[-1] == length:
            return [[b - a for a, b in pairwise(bounds) if b > a]]
    if position_ids is None:
        return [[length]] * batch_size
    positions = position_ids.expand(batch_size, -1)
    starts = torch.ones_like(positions, dtype=torch.bool)
    starts[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
    out = []
    for row in starts.tolist():
        first = [i for i, start in enumerate(row) if start] + [length]
        out.append([b - a for a, b in pairwise(first)])
    return out


def varlen_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                          value: torch.Tensor, attention_mask: torch.Tensor | None,
                          dropout: float = 0.0, scaling: float | None = None,
                          is_causal: bool | None = None, **kwargs: Any
                          ) -> tuple[torch.Tensor, None]:
    """Causal SDPA over each packed row on its own. query/key/value: (batch, heads, L, dim);
    returns (batch, L, heads, dim) like transformers' `sdpa_attention_forward`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    config = getattr(module, "config", None)
    batch, _, length, _ = query.shape
    splittable = (attention_mask is None and causal and length > 1 and key.shape[2] == length
                  and getattr(config, "is_causal", True)
                  and kwargs.get("position_bias") is None and kwargs.get("cache") is None
                  and kwargs.get("sliding_window") is None)
    lengths = (row_lengths(length, batch, kwargs.get("position_ids"),
                           kwargs.get("cu_seq_lens_q")) if splittable else None)
    if lengths is None or all(len(rows) == 1 for rows in lengths):
        # Nothing to split: transformers' own path (plain causal SDPA when the mask is None).
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, is_causal=is_causal,
                                      **kwargs)
    extra = {}
    if getattr(module, "num_key_value_groups", 1) > 1:
        extra["enable_gqa"] = True
    items = []
    for b in range(batch):
        # (Indexing the only batch item would add a slice whose backward writes a zero-filled
        # full-size gradient; split's backward is one concatenation.)
        q, k, v = ((t if batch == 1 else t[b:b + 1]).split(lengths[b], dim=2)
                   for t in (query, key, value))
        # Each row's output transposed to (1, Li, heads, dim): the concatenation along the
        # sequence is then the layout the caller reshapes, in one copy.
        items.append(torch.cat([
            torch.nn.functional.scaled_dot_product_attention(
                qi, ki, vi, dropout_p=dropout, scale=scaling, is_causal=True, **extra
            ).transpose(1, 2)
            for qi, ki, vi in zip(q, k, v)], dim=1))
    return (items[0] if batch == 1 else torch.cat(items, dim=0)), None
