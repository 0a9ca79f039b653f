"""`finetune run --local` the way a real user runs it: model.name and dataset.*.hf from the
Hugging Face Hub (the stand-in, tests/support/hub_standin.py, through HF_ENDPOINT; the token
in HF_TOKEN, which the local run passes to its ranks).

It trains from the pretrained weights (its first evaluation equals the saved model's loss on
the same rows), grows the embeddings for the tokens a chat template adds, leaves a model that
loads back, and reads the data from a dataset repository as JSONL and as parquet. A second
run downloads nothing. What the Hub refuses ends the run with one line naming the field, no
traceback, never the token."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.support.hub_standin import (  # noqa: F401  (fixtures)
    ADDED_TOKENS,
    chat_hub,
    chat_models,
    file_gets,
)
from tests.support.local_run import FINETUNE
from tests.support.tiny import chat_rows

pytestmark = pytest.mark.slow
UNKNOWN_TOKEN = "hf_notAtokenTheHubKnows0123456789"


def _job(folder: Path, model: str, dataset: str, *, parameters: str | None = None,
         **training) -> Path:
    doc = {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "hub-chat"},
        "spec": {
            "model": {"name": model, **({"parameters": parameters} if parameters else {})},
            "dataset": {"format": "messages", "train": {"hf": dataset},
                        "eval": {"hf": dataset, "split": "test"}},
            "training": {"maxSteps": 12, "learningRate": 3e-3, "warmupRatio": 0.0,
                         "globalBatchSize": 8, "maxSeqLength": 64, "evalSteps": 12,
                         "saveSteps": 1000, "loggingSteps": 1, "precision": "fp32",
                         **training},
            "resources": {"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 1},
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _env(hub, token: str | None = None) -> dict[str, str]:
    """This process's environment as go_online left it (HF_ENDPOINT, HF_HOME, online),
    with the token the user exported."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN")}
    assert env["HF_ENDPOINT"] == hub.endpoint
    if token:
        env["HF_TOKEN"] = token
    return env


def _run(job: Path, output: Path, env: dict[str, str]):
    import subprocess

    return subprocess.run([*FINETUNE, "run", str(job), "--local", "--nproc", "2", "--output",
                           str(output), "--no-sample"], cwd=job.parent, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_a_hub_model_and_dataset_train_grow_the_embeddings_and_reload(
        chat_hub, chat_models, tmp_path, file_format):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = _job(tmp_path / "job", "acme/chat-grown", f"acme/chats-{file_format}")
    done = _run(job, tmp_path / "out", _env(chat_hub))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["lastLoss"] < summary["firstLoss"]
    assert summary["data"]["read"] == {f"hf:acme/chats-{file_format}": 64 + 8}

    final = tmp_path / "out" / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    base = AutoTokenizer.from_pretrained(chat_models["base"])
    grown = len(base) + len(ADDED_TOKENS)
    hidden = model.config.hidden_size
    assert len(tokenizer) == grown
    assert tuple(model.get_input_embeddings().weight.shape) == (grown, hidden)
    assert tuple(model.lm_head.weight.shape) == (grown, hidden)
    assert all(t in tokenizer.get_vocab() for t in ADDED_TOKENS)


def test_it_starts_from_the_pretrained_weights_and_a_second_run_downloads_nothing(
        chat_hub, chat_models, tmp_path):  # noqa: F811
    # A learning rate too small to move the weights: the first evaluation is the model's.
    job = _job(tmp_path / "job", "acme/chat-base", "acme/chats-jsonl", maxSteps=1,
               evalSteps=1, learningRate=1e-9)
    done = _run(job, tmp_path / "first", _env(chat_hub))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "first" / "training_summary.json").read_text())
    config = yaml.safe_load((tmp_path / "first" / "trainer-config.yaml").read_text())
    expected = saved_model_eval_loss(chat_models["base"], chat_rows(8, seed=2),
                                     config["plan"]["microBatchSize"])
    assert summary["evalCurve"][0]["loss"] == pytest.approx(expected, rel=1e-3)

    weights = file_gets(chat_hub, "acme/chat-base")
    data = file_gets(chat_hub, "acme/chats-jsonl", "dataset")
    assert weights >= 1 and data >= 1
    again = _run(job, tmp_path / "second", _env(chat_hub))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert file_gets(chat_hub, "acme/chat-base") == weights
    assert file_gets(chat_hub, "acme/chats-jsonl", "dataset") == data


def saved_model_eval_loss(folder: Path, rows: list[dict], batch: int) -> float:
    """The eval loss of the model saved in `folder` on `rows` as the trainer computes it:
    cross-entropy on the assistant's tokens (the chat template's generation marks), the
    mean over the tokens of each batch, batches of `batch` rows averaged by their rows."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    per_batch = []
    for start in range(0, len(rows), batch):
        total, count = 0.0, 0
        for row in rows[start:start + batch]:
            encoded = tokenizer.apply_chat_template(row["messages"], tokenize=True,
                                                    return_dict=True,
                                                    return_assistant_tokens_mask=True)
            ids = torch.tensor([encoded["input_ids"]])
            mask = torch.tensor(encoded["assistant_masks"], dtype=torch.bool)
            with torch.no_grad():
                logits = model(ids).logits[0, :-1]
            targets = ids[0, 1:]
            losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            total += float(losses[mask[1:]].sum())
            count += int(mask[1:].sum())
        per_batch.append((total / count, len(rows[start:start + batch])))
    return sum(loss * n for loss, n in per_batch) / sum(n for _, n in per_batch)


# (case, model, dataset, token, the field, what the line says)
REFUSALS = [
    ("model-missing", "acme/nothing", "acme/chats-jsonl", None, "spec.model.name",
     "was not found on the Hugging Face Hub"),
    ("model-gated", "acme/chat-gated", "acme/chats-jsonl", None, "spec.model.name",
     "is gated on the Hugging Face Hub and no token was given"),
    ("model-refused", "acme/chat-gated", "acme/chats-jsonl", "hf_someone", "spec.model.name",
     "the token was refused access"),
    ("model-bad-token", "acme/chat-base", "acme/chats-jsonl", UNKNOWN_TOKEN,
     "spec.model.name", "refused the token as invalid credentials"),
    ("dataset-missing", "acme/chat-base", "acme/nothing", None, "dataset.train.hf",
     "dataset 'acme/nothing' was not found on the Hugging Face Hub"),
    ("dataset-gated", "acme/chat-base", "acme/chats-gated", None, "dataset.train.hf",
     "is gated on the Hugging Face Hub and no token was given"),
    ("dataset-refused", "acme/chat-base", "acme/chats-gated", "hf_someone",
     "dataset.train.hf", "is gated and the Hub refused the token access"),
    # With a size hint nothing sizes the model first: the ranks meet the token at the data.
    ("dataset-bad-token", "acme/chat-base", "acme/chats-jsonl", UNKNOWN_TOKEN,
     "dataset.train.hf", "refused the token as invalid credentials while loading dataset"),
]


@pytest.mark.parametrize(("case", "model", "dataset", "token", "field", "says"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_what_the_hub_refuses_is_one_line_naming_the_field(
        chat_hub, tmp_path, case, model, dataset, token, field, says):  # noqa: F811
    _gate_a_dataset(chat_hub)
    hint = "200K" if case == "dataset-bad-token" else None
    done = _run(_job(tmp_path / "job", model, dataset, parameters=hint), tmp_path / "out",
                _env(chat_hub, token))
    assert done.returncode == 1, done.stdout[-2000:]
    lines = done.stderr.strip().splitlines()
    # The sizer meets a model's refusal first (`finetune run: FILE: spec.model.name: ...`),
    # the ranks a dataset's (`training failed: dataset.train.hf: ...`).
    reason = next(line for line in lines
                  if line.startswith(("training failed: ", "finetune run: ")))
    assert field in reason and says in reason, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    if token:
        log = (tmp_path / "out" / "train.log")
        assert token not in done.stderr + done.stdout + (log.read_text() if log.exists() else "")


def test_a_split_the_dataset_lacks_names_the_split(chat_hub, tmp_path):  # noqa: F811
    job = _job(tmp_path / "job", "acme/chat-base", "acme/chats-jsonl")
    doc = yaml.safe_load(job.read_text())
    doc["spec"]["dataset"]["eval"]["split"] = "validation"
    job.write_text(yaml.safe_dump(doc))
    done = _run(job, tmp_path / "out", _env(chat_hub))
    assert done.returncode == 1
    assert ("training failed: dataset.eval.split: dataset 'acme/chats-jsonl' has no split "
            "'validation'; its splits: ['train', 'test']") in done.stderr.splitlines()
    assert "Traceback" not in done.stderr + done.stdout


def _gate_a_dataset(hub) -> None:
    files = hub.repos[("dataset", "acme/chats-jsonl")].resolve("main").files
    hub.add_repo("acme/chats-gated", files, repo_type="dataset", gated=True,
                 tokens={"hf_granted"})
    hub.users.add("hf_someone")
