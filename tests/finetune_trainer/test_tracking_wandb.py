"""training.wandb: a real run with W&B's own client, offline, writes its run under the output
path, and its run file, read back, holds the loss of every logged step."""

from __future__ import annotations

import pytest
from finetune_trainer import tracking
from finetune_trainer.training_run import Ranks, run

from tests.support import wandb_log
from tests.support.tiny import chat_rows, tiny_config, tiny_spec, write_jsonl

pytestmark = pytest.mark.slow


def test_an_offline_run_holds_every_logged_loss(tmp_path, monkeypatch):
    for name in ("WANDB_PROJECT", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    write_jsonl(tmp_path / "train.jsonl", chat_rows(32))
    spec = tiny_spec(training={"maxSteps": 4, "reportTo": ["wandb"],
                               "wandb": {"project": "chat", "mode": "offline"}})
    config = tiny_config(tmp_path, spec=spec, run_id="7f2d-uid")
    result = run(config, Ranks())
    key = tracking.run_key(config)
    run_files = list((config.resolve("out") / "wandb").glob(f"offline-run-*-{key}/run-{key}.wandb"))
    assert len(run_files) == 1, list((config.resolve("out") / "wandb").rglob("*"))
    logged = [(row["train/global_step"], row["train/loss"])
              for row in wandb_log.history(run_files[0]) if "train/loss" in row]
    expected = [(p["step"], p["loss"]) for p in result.summary["lossCurve"]]
    assert [step for step, _ in logged] == [step for step, _ in expected]
    assert [loss for _, loss in logged] == pytest.approx([loss for _, loss in expected], rel=1e-5)
