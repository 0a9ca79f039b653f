"""Depths, freezing, gradual unfreezing, per-layer learning rates and the L2 anchor."""

from __future__ import annotations

import pytest
import torch
from finetune_trainer import tuning
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.support.tiny import TINY_LLAMA


def _config(**extra):
    keys = {k: v for k, v in TINY_LLAMA.items() if k != "model_type"}
    return AutoConfig.for_model("llama", vocab_size=300, pad_token_id=0, **keys, **extra)


@pytest.fixture
def causal():
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(_config())


@pytest.fixture
def classifier():
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(_config(num_labels=3))


def test_depths_run_from_head_to_embeddings(causal):
    depths = tuning.parameter_depths(causal)
    assert depths["lm_head.weight"] == 0
    assert depths["model.norm.weight"] == 1
    assert depths["model.layers.1.self_attn.q_proj.weight"] == 1  # the top block
    assert depths["model.layers.0.mlp.up_proj.weight"] == 2
    assert depths["model.embed_tokens.weight"] == 3


def test_classification_head_is_depth_zero(classifier):
    depths = tuning.parameter_depths(classifier)
    assert depths["score.weight"] == 0 and depths["model.embed_tokens.weight"] == 3


def test_tied_head_counts_as_head():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(tie_word_embeddings=True))
    depths = tuning.parameter_depths(model)
    assert depths["model.embed_tokens.weight"] == 0 and "lm_head.weight" not in depths


def test_freeze_top_layers(causal):
    counts = tuning.set_trainable_depth(causal, 1)
    trainable = {n for n, p in causal.named_parameters() if p.requires_grad}
    assert "lm_head.weight" in trainable and "model.norm.weight" in trainable
    assert all(n.startswith(("lm_head", "model.norm", "model.layers.1.")) for n in trainable)
    assert counts["trainable"] + counts["frozen"] == causal.num_parameters()
    assert counts["frozen"] > 0


def test_feature_extraction_trains_only_the_head(classifier):
    tuning.set_trainable_depth(classifier, 0)
    assert [n for n, p in classifier.named_parameters() if p.requires_grad] == ["score.weight"]


def test_gradual_unfreeze_schedule():
    # epoch 0: head only; each later epoch one more block from the top
    assert [tuning.unfrozen_depth(e) for e in (0.0, 0.5, 0.999, 1.0, 1.5, 2.0, 3.7)] == \
        [0, 0, 0, 1, 1, 2, 3]


def test_layerwise_lr_groups(causal):
    lr, decay = 1e-3, 0.5
    names = {n for n, p in causal.named_parameters() if p.dim() > 1}
    groups = tuning.param_groups(causal, lr=lr, decay=decay, weight_decay=0.1, decay_names=names)
    by_depth = {}
    for group in groups:
        by_depth.setdefault(group["depth"], set()).add(group["lr"])
        assert group["weight_decay"] == (0.1 if set(group["names"]) <= names else 0.0)
    assert by_depth == {0: {1e-3}, 1: {5e-4}, 2: {2.5e-4}, 3: {1.25e-4}}
    # every trainable parameter is in exactly one group
    grouped = [n for g in groups for n in g["names"]]
    assert sorted(grouped) == sorted(n for n, _ in causal.named_parameters())


def test_param_groups_leave_out_frozen_unless_asked(causal):
    tuning.set_trainable_depth(causal, 0)
    groups = tuning.param_groups(causal, lr=1.0, decay=1.0, weight_decay=0, decay_names=set())
    assert [n for g in groups for n in g["names"]] == ["lm_head.weight"]
    groups = tuning.param_groups(causal, lr=1.0, decay=1.0, weight_decay=0, decay_names=set(),
                                 include_frozen=True)
    assert len([n for g in groups for n in g["names"]]) == len(list(causal.parameters()))


def test_l2_anchor_gradient_is_that_of_the_penalty(causal):
    anchor = tuning.L2Anchor.capture(causal, strength=0.3)
    with torch.no_grad():
        for p in causal.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    # autograd of lambda * ||theta - theta0||^2 must equal the gradient the anchor adds
    penalty = anchor.strength * sum(((p - anchor.anchors[n]) ** 2).sum()
                                    for n, p in causal.named_parameters())
    penalty.backward()
    expected = {n: p.grad.clone() for n, p in causal.named_parameters()}
    causal.zero_grad(set_to_none=False)
    anchor.add_gradient(causal)
    for name, param in causal.named_parameters():
        torch.testing.assert_close(param.grad, expected[name])
    assert anchor.distance(causal) == pytest.approx(penalty.item() / 0.3, rel=1e-4)
