"""training.reportTo: a real run logs to TensorBoard, read back with tensorboard's own reader."""

from __future__ import annotations

import pytest
from finetune_contract.layout import TENSORBOARD_DIR
from finetune_trainer.training_run import Ranks, run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.support.tiny import chat_rows, tiny_config, tiny_spec, write_jsonl

pytestmark = pytest.mark.slow


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_the_loss_of_every_logged_step_reaches_tensorboard(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    write_jsonl(tmp_path / "train.jsonl", chat_rows(48))
    write_jsonl(tmp_path / "eval.jsonl", chat_rows(8, seed=3))
    spec = tiny_spec(dataset={"eval": {"path": "eval.jsonl"}},
                     training={"maxSteps": 6, "evalSteps": 3, "reportTo": ["tensorboard"]})
    config = tiny_config(tmp_path, spec=spec)
    result = run(config, Ranks())
    scalars = _scalars(config.resolve("out") / TENSORBOARD_DIR)
    logged = [(p["step"], p["loss"]) for p in result.summary["lossCurve"]]
    assert [step for step, _ in scalars["train/loss"]] == [step for step, _ in logged]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in logged],
                                                                  rel=1e-5)
    assert [step for step, _ in scalars["eval/loss"]] == [3, 6]


def test_without_report_to_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    config = tiny_config(tmp_path, spec=tiny_spec(training={"maxSteps": 2}))
    run(config, Ranks())
    out = config.resolve("out")
    assert not (out / TENSORBOARD_DIR).exists() and not (out / "runs").exists()
