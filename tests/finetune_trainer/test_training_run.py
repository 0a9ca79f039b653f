"""Real training of a 2-layer Llama in this process: SFT on every format, the loss masks,
the saved model, classification heads, tuning methods and schedules."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest
import torch
from finetune_contract.layout import FINAL_DIR, PLOT_FILE, SUMMARY_FILE
from finetune_trainer import build
from finetune_trainer.data import prepare
from finetune_trainer.tokenizer import CHATML_TEMPLATE, IM_END
from finetune_trainer.training_run import Ranks, run

from tests.support.tiny import NUMBERS, chat_rows, tiny_config, tiny_plan, tiny_spec, write_jsonl

pytestmark = pytest.mark.slow

IM_START_ASSISTANT = "<|im_start|>assistant\n"


def _build(config):
    spec = config.spec
    data = prepare(spec.dataset, resolve=config.resolve, num_labels=spec.method.num_labels,
                   assistant_only_loss=spec.method.assistant_only_loss, seed=0)
    trainer, parts = build.trainer_for(config, data, Ranks())
    parts.extra["data"] = data
    return trainer, parts


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """One SFT run on chats, shared by the tests that read its results."""
    tmp = tmp_path_factory.mktemp("sft")
    write_jsonl(tmp / "train.jsonl", chat_rows(96))
    write_jsonl(tmp / "eval.jsonl", chat_rows(16, seed=9))
    spec = tiny_spec(dataset={"eval": {"path": "eval.jsonl"}},
                     training={"maxSteps": 30, "evalSteps": 15})
    config = tiny_config(tmp, spec=spec)
    return config, run(config, Ranks())


def test_sft_loss_falls_and_summary_is_complete(sft_run):
    config, result = sft_run
    summary = json.loads((config.resolve("out") / SUMMARY_FILE).read_text())
    assert summary == json.loads(json.dumps(result.summary, default=str))
    curve = [point["loss"] for point in summary["lossCurve"]]
    assert summary["steps"] == 30 and len(curve) == 30
    assert sum(curve[-5:]) / 5 < 0.6 * curve[0]
    assert summary["firstLoss"] == curve[0] and summary["lastLoss"] == curve[-1]
    assert summary["evalLoss"] is not None and len(summary["evalCurve"]) == 2
    assert summary["evalCurve"][1]["loss"] < summary["evalCurve"][0]["loss"]
    assert summary["tokens"] > 0 and summary["tokensPerSecond"] > 0
    assert summary["plan"]["strategy"] == "ddp" and summary["strategy"]["wrapper"] == "none"
    assert summary["data"]["trainRows"] == 96 and summary["data"]["evalRows"] == 16
    assert summary["resumedFrom"] is None
    # The curves, drawn next to the model: tokens/s at every log after the first.
    assert summary["plot"] == str(config.resolve("out") / PLOT_FILE)
    assert (config.resolve("out") / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(summary["throughputCurve"]) >= 25
    assert all(p["tokensPerSecond"] > 0 for p in summary["throughputCurve"])
    assert summary["finalModel"] == str(config.resolve("out") / FINAL_DIR)


def test_final_model_answers_through_its_chat_template(sft_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config, result = sft_run
    final = config.resolve("out") / FINAL_DIR
    assert (final / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    # The saved model carries the template it was trained with, generation markers included.
    assert tokenizer.chat_template == result.trainer.processing_class.chat_template
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert "{%- generation -%}" in CHATML_TEMPLATE and "{%- endgeneration -%}" in CHATML_TEMPLATE
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id)
    generated = out[0, prompt["input_ids"].shape[1]:].tolist()
    # The answer ends where the template ends an assistant turn (the trained span includes
    # the end-of-turn token, which is the eos) ...
    assert tokenizer.eos_token == IM_END and tokenizer.eos_token_id in generated
    answer = tokenizer.decode(generated, skip_special_tokens=True)
    # ... and has the answers' shape ("3 plus 4 is seven."), if not their arithmetic, after
    # 30 steps.
    assert re.fullmatch(r"\d+ plus [^\n]+", answer.strip()), answer


def _expected_trained_positions(tokenizer, messages):
    """Token positions of each assistant answer and its end-of-turn token, found from the
    rendered text's character offsets (independently of the template's markers)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    spans, start = [], 0
    while (found := text.find(IM_START_ASSISTANT, start)) >= 0:
        begin = found + len(IM_START_ASSISTANT)
        end = text.index(IM_END, begin) + len(IM_END)
        spans.append((begin, end))
        start = end
    positions = {i for i, (a, b) in enumerate(encoded["offset_mapping"])
                 if any(lo <= a and b <= hi for lo, hi in spans)}
    return encoded["input_ids"], positions


def test_assistant_mask_on_a_padding_free_batch_is_exactly_the_assistant_tokens(tmp_path):
    rows = chat_rows(8)
    rows[0]["messages"] += [{"role": "user", "content": "And 1 plus 1?"},
                            {"role": "assistant", "content": "two."}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    trainer, _ = _build(tiny_config(tmp_path))
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, positions = (batch[k][0].tolist() for k in ("input_ids", "labels",
                                                              "position_ids"))
    assert len(ids) == sum(len(_expected_trained_positions(trainer.processing_class,
                                                           r["messages"])[0]) for r in rows)
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
    seen_two_turns = False
    for begin, end in itertools.pairwise(starts):
        sequence = ids[begin:end]
        text = trainer.processing_class.decode(sequence)
        messages = next(r["messages"] for r in rows
                        if trainer.processing_class.apply_chat_template(
                            r["messages"], tokenize=False) == text)
        expected_ids, trained = _expected_trained_positions(trainer.processing_class, messages)
        assert sequence == expected_ids
        got = {i for i, label in enumerate(labels[begin:end]) if label != -100}
        assert got == trained and trained
        assert all(labels[begin + i] == sequence[i] for i in got)
        seen_two_turns |= len(messages) == 5
    assert seen_two_turns


def test_prompt_completion_trains_on_the_completion_only(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"{a} plus {a} is", "completion":
                                            f" {NUMBERS[2 * a]}."} for a in range(9)])
    spec = tiny_spec(dataset={"format": "prompt-completion"}, training={"maxSteps": 3})
    config = tiny_config(tmp_path, spec=spec)
    result = run(config, Ranks())
    dataset = result.trainer.train_dataset
    tokenizer = result.trainer.processing_class
    for row, ids, labels in zip(range(9), dataset["input_ids"], dataset["labels"], strict=True):
        trained = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
        assert trained.startswith(f" {NUMBERS[2 * row]}.")  # the completion (and eos)
        assert "plus" not in trained
    assert result.summary["steps"] == 3


def test_text_format_trains_on_every_token(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"{a} plus {a} is {NUMBERS[2 * a]}."}
                                           for a in range(9)])
    spec = tiny_spec(dataset={"format": "text"}, training={"maxSteps": 3})
    result = run(tiny_config(tmp_path, spec=spec), Ranks())
    dataset = result.trainer.train_dataset
    assert all(ids == labels for ids, labels in zip(dataset["input_ids"], dataset["labels"],
                                                    strict=True))


def test_rows_longer_than_the_plan_are_truncated_and_fully_masked_ones_counted(tmp_path):
    long_prompt = "word " * 200
    rows = chat_rows(6) + [{"messages": [{"role": "user", "content": long_prompt},
                                         {"role": "assistant", "content": "ok"}]}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    trainer, parts = _build(tiny_config(tmp_path, plan=tiny_plan(seq_length=64)))
    assert len(trainer.train_dataset) == 6
    report = parts.extra["data"].report
    assert report.skipped == {"no trained token within the first 64 tokens (maxSeqLength)": 1}
    assert report.skipped_examples[0].startswith(f"{tmp_path / 'train.jsonl'}:7: ")
    assert max(len(ids) for ids in trainer.train_dataset["input_ids"]) <= 64


def _classification_data(tmp_path):
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(["good", "fine", "nice"] if label else
                                         ["bad", "poor", "awful"]) for _ in range(6)),
             "label": label} for label in [0, 1] * 24]
    write_jsonl(tmp_path / "train.jsonl", rows)


@pytest.mark.parametrize("tuning", ["freeze", "full"])
def test_classification_feature_extraction_and_full(tmp_path, tuning):
    _classification_data(tmp_path)
    spec = tiny_spec(dataset={"format": "classification"},
                     method={"task": "classification", "numLabels": 2, "tuning": tuning},
                     training={"maxSteps": 8})
    trainer, _ = _build(tiny_config(tmp_path, spec=spec))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert not torch.equal(after["score.weight"], before["score.weight"])
    backbone = [n for n in before if not n.startswith("score.")]
    unchanged = [n for n in backbone if torch.equal(after[n], before[n])]
    if tuning == "freeze":
        assert unchanged == backbone  # bit-identical
    else:
        assert not unchanged


def test_gradual_unfreeze_trains_one_more_block_each_epoch(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(32))
    spec = tiny_spec(method={"tuning": "gradual-unfreeze"},
                     training={"maxSteps": None, "epochs": 2})
    trainer, parts = _build(tiny_config(tmp_path, spec=spec))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert "lm_head.weight" in changed
    assert any(n.startswith("model.layers.1.") for n in changed)  # top block: epoch 1
    assert not any(n.startswith("model.layers.0.") for n in changed)  # bottom block: epoch 2
    assert "model.embed_tokens.weight" not in changed
    assert [(e["epoch"], e["trainableDepth"]) for e in parts.unfreeze.schedule] == \
        [(0, 0), (1, 1)]


def test_layerwise_lr_decay_builds_per_depth_groups(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    spec = tiny_spec(method={"layerwiseLrDecay": 0.5}, training={"maxSteps": 2,
                                                                  "scheduler": "constant",
                                                                  "warmupRatio": 0})
    trainer, _ = _build(tiny_config(tmp_path, spec=spec))
    trainer.train()
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups}, reverse=True)
    assert lrs == pytest.approx([3e-3, 1.5e-3, 7.5e-4, 3.75e-4])


def test_l2_to_pretrained_pulls_toward_the_initial_weights(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(32))

    def distance(strength):
        spec = tiny_spec(method={"l2ToPretrained": strength}, training={"maxSteps": 10})
        trainer, _ = _build(tiny_config(tmp_path, spec=spec))
        start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        return sum(((p.detach() - start[n]) ** 2).sum().item()
                   for n, p in trainer.model.named_parameters())

    free, pulled = distance(0.0), distance(5.0)
    assert pulled < 0.8 * free


@pytest.mark.parametrize("name", ["cosine", "linear", "constant", "wsd"])
def test_schedules_after_linear_warmup(tmp_path, name):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    spec = tiny_spec(training={"scheduler": name, "warmupRatio": 0.1, "decayRatio": 0.2})
    trainer, _ = _build(tiny_config(tmp_path, spec=spec))
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(100, trainer.optimizer)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0] / 3e-3)
        trainer.optimizer.step()
        scheduler.step()
    assert lrs[0] == 0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    if name == "cosine":
        assert lrs[55] == pytest.approx(0.5, abs=0.02) and lrs[99] < 0.01
    elif name == "linear":
        assert lrs[55] == pytest.approx(0.5, abs=0.02) and lrs[99] < 0.02
    elif name == "constant":
        assert lrs[99] == 1.0
    else:  # warmup, stable until the last 20 steps, then decay
        assert lrs[79] == 1.0 and lrs[90] == pytest.approx(0.5, abs=0.06) and lrs[99] < 0.06


def test_early_stopping_keeps_the_best_model(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(64))
    # The eval set answers differently: it improves while the format is learned, then
    # worsens as the training answers are memorized.
    wrong = chat_rows(16, seed=9)
    for row in wrong:
        row["messages"][2]["content"] = "I do not know."
    write_jsonl(tmp_path / "eval.jsonl", wrong)
    spec = tiny_spec(dataset={"eval": {"path": "eval.jsonl"}},
                     training={"maxSteps": 60, "evalSteps": 4, "saveSteps": 4,
                               "saveTotalLimit": 1, "earlyStoppingPatience": 2})
    config = tiny_config(tmp_path, spec=spec)
    result = run(config, Ranks())
    summary = result.summary
    evals = [e["loss"] for e in summary["evalCurve"]]
    assert summary["earlyStopped"] and summary["steps"] < 60
    assert summary["bestEvalLoss"] == pytest.approx(min(evals))
    assert evals[-1] > min(evals)
    # the kept model is the best one, not the last one
    assert result.trainer.evaluate()["eval_loss"] == pytest.approx(min(evals), rel=1e-4)


def test_optimizer_is_fused_adamw_and_ddp_skips_the_unused_parameter_search(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    trainer, _ = _build(tiny_config(tmp_path))
    assert trainer.args.optim == "adamw_torch_fused"
    assert trainer.args.ddp_find_unused_parameters is False  # a dense Llama
    # gradients are views into DDP's all-reduce buckets (no copy out of them after each step)
    assert trainer.accelerator.ddp_handler.to_kwargs()["gradient_as_bucket_view"] is True
    trainer.create_optimizer()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.defaults["fused"] is True


def test_cpu_training_runs_per_row_attention_and_saves_a_portable_config(sft_run):
    config, result = sft_run
    assert result.trainer.model.config._attn_implementation == "varlen_sdpa"
    # the saved model loads anywhere: the implementation is not written into its config
    assert "varlen" not in (config.resolve("out") / FINAL_DIR / "config.json").read_text()


def test_only_models_with_routed_experts_make_ddp_search_for_unused_parameters():
    from transformers import LlamaConfig, MixtralConfig

    class Holder:
        def __init__(self, config):
            self.config = config

    assert build.routes_to_experts(Holder(MixtralConfig(num_local_experts=4)))
    assert not build.routes_to_experts(Holder(LlamaConfig()))
    assert not build.routes_to_experts(torch.nn.Linear(2, 2))  # no config at all


def test_fused_adamw_makes_the_same_updates_as_the_loop_implementation():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=300)
    loop, fused = LlamaForCausalLM(config), LlamaForCausalLM(config)
    fused.load_state_dict(loop.state_dict())
    start = {n: p.detach().clone() for n, p in loop.named_parameters()}
    optimizers = [torch.optim.AdamW(loop.parameters(), lr=3e-3, weight_decay=0.01,
                                    foreach=False),
                  torch.optim.AdamW(fused.parameters(), lr=3e-3, weight_decay=0.01, fused=True)]
    for _ in range(20):
        ids = torch.randint(0, 300, (4, 32))
        for model, optimizer in zip((loop, fused), optimizers):
            optimizer.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
    for (name, a), b in zip(loop.named_parameters(), fused.parameters()):
        moved = (a.detach() - start[name]).abs().max()
        assert moved > 1e-3  # the comparison is not between two untouched models
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("packing,balanced", [("padding-free", True), ("none", False)])
def test_padding_free_batches_are_balanced_over_ranks(tmp_path, monkeypatch, packing, balanced):
    from finetune_trainer.balance import BalancedSampler

    write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    trainer, _ = _build(tiny_config(tmp_path, plan=tiny_plan(packing=packing)))
    # One process stands in for rank 0 of two; only the sampler choice is under test.
    monkeypatch.setattr(type(trainer.args), "world_size", property(lambda self: 2))
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, BalancedSampler) is balanced
    if balanced:
        assert sampler.ranks == 2 and sampler.micro_batch == 8 and sampler.seed == 42
        assert sampler.lengths == [len(ids) for ids in trainer.train_dataset["input_ids"]]


def test_run_leaves_the_process_group_it_trained_in(monkeypatch):
    from finetune_trainer.training_run import _leave_process_group

    from tests.support.tiny import free_port

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    _leave_process_group()
    assert not torch.distributed.is_initialized()
    _leave_process_group()  # nothing to leave: no error
