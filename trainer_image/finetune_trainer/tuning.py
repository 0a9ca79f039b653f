"""Which weights train, at what learning rate, and how far they may drift.

Every parameter gets a *depth*: 0 for the head (the LM head or the classification head),
1 for the top transformer block (and the final norm, which sits on top of it), L for the
bottom block and L + 1 for the embeddings. Freezing, gradual unfreezing and layer-wise
learning-rate decay are all rules on that depth:

- freeze with trainableLayers k: depths 0..k train;
- gradual-unfreeze: in epoch e (from 0) depths 0..e train: the head first, then one more
  block from the top each epoch;
- layerwiseLrDecay d: a parameter at depth i trains at lr * d**i.

A head tied to the input embeddings is one tensor; it counts as the head (depth 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def transformer_blocks(model: nn.Module) -> tuple[str, int]:
    """(qualified name of the ModuleList of transformer blocks, its length).

    The blocks are the longest ModuleList inside the base model; for Llama-like models that
    is `model.layers`, for GPT-2 `transformer.h`.
    """
    from torch import nn

    best: tuple[str, int] = ("", 0)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > best[1]:
            best = (name, len(module))
    if not best[1]:
        raise ValueError(f"{type(model).__name__}: no list of transformer blocks found")
    return best


def parameter_depths(model: nn.Module) -> dict[str, int]:
    """Depth of every named parameter (see the module docstring)."""
    blocks, count = transformer_blocks(model)
    base_prefix = model.base_model_prefix + "." if model.base_model_prefix else ""
    tied_head = _tied_head_parameter(model)
    depths: dict[str, int] = {}
    for name, param in model.named_parameters():
        if param is tied_head:
            depths[name] = 0
        elif name.startswith(blocks + "."):
            index = int(name[len(blocks) + 1:].split(".", 1)[0])
            depths[name] = count - index  # top block (index count-1) is depth 1
        elif base_prefix and not name.startswith(base_prefix):
            depths[name] = 0  # lm_head, score, classifier: outside the base model
        elif "embed" in name or "wte" in name or "wpe" in name:
            depths[name] = count + 1
        else:
            depths[name] = 1  # final norm: sits on the top block
    return depths


def _tied_head_parameter(model: nn.Module) -> Any:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inputs = model.get_input_embeddings()
    if output is not None and output.weight is inputs.weight:
        return inputs.weight
    return None


def set_trainable_depth(model: nn.Module, max_depth: int | None) -> dict[str, int]:
    """requires_grad = (depth <= max_depth); None trains everything. Returns
    {"trainable": n, "frozen": m} parameter counts."""
    depths = parameter_depths(model)
    counts = {"trainable": 0, "frozen": 0}
    for name, param in model.named_parameters():
        trainable = max_depth is None or depths[name] <= max_depth
        param.requires_grad_(trainable)
        counts["trainable" if trainable else "frozen"] += param.numel()
    return counts


def unfrozen_depth(epoch: float) -> int:
    """gradual-unfreeze: deepest depth that trains during (fractional) epoch `epoch`."""
    return math.floor(epoch + 1e-9)


def lr_scale(depth: int, decay: float) -> float:
    return decay**depth


def param_groups(model: nn.Module, *, lr: float, decay: float, weight_decay: float,
                 decay_names: set[str], include_frozen: bool = False) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per (depth, with/without weight decay).

    `include_frozen` keeps parameters that do not require grad yet (gradual unfreezing
    switches them on later; AdamW skips a parameter whose grad is None)."""
    depths = parameter_depths(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not (param.requires_grad or include_frozen):
            continue
        key = (depths[name], name in decay_names)
        group = groups.setdefault(key, {
            "params": [], "names": [], "depth": key[0],
            "lr": lr * lr_scale(key[0], decay),
            "weight_decay": weight_decay if key[1] else 0.0,
        })
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


@dataclass
class L2Anchor:
    """lambda * ||theta - theta0||^2 over the trainable parameters, applied as its gradient
    2 * lambda * (theta - theta0) added to each parameter's gradient before clipping: the
    same update as adding the term to the loss, without depending on how the trainer scales
    the loss for accumulation and ranks. The reported training loss stays the task loss."""

    strength: float
    anchors: dict[str, torch.Tensor]

    @classmethod
    def capture(cls, model: nn.Module, strength: float) -> L2Anchor:
        return cls(strength, {n: p.detach().clone() for n, p in model.named_parameters()
                              if p.requires_grad})

    def add_gradient(self, model: nn.Module) -> None:
        import torch

        with torch.no_grad():
            for name, param in model.named_parameters():
                anchor = self.anchors.get(name)
                if anchor is not None and param.grad is not None:
                    param.grad.add_(param.detach() - anchor, alpha=2 * self.strength)

    def distance(self, model: nn.Module) -> float:
        """||theta - theta0||^2 over the anchored parameters."""
        import torch

        with torch.no_grad():
            return float(sum(((p.detach() - self.anchors[n]) ** 2).sum()
                             for n, p in model.named_parameters() if n in self.anchors))


def drop_frozen_gradients(model: nn.Module, depths: dict[str, int], max_depth: int) -> None:
    """gradual-unfreeze: forget the gradients of blocks that are still frozen, so clipping
    ignores them and AdamW leaves them untouched (it skips parameters whose grad is None).
    Every parameter keeps requires_grad, so DDP reduces all of them from the first step.
    `depths` is parameter_depths(model), computed once."""
    for name, param in model.named_parameters():
        if depths[name] > max_depth:
            param.grad = None
