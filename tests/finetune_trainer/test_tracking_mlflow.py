"""training.mlflow: a real run logs to a real MLflow tracking server on loopback, and the run,
its parameters and its loss of every logged step are there, read back with MLflow's client."""

from __future__ import annotations

import pytest
from finetune_trainer import tracking
from finetune_trainer.errors import TrainerError
from finetune_trainer.training_run import Ranks, run
from mlflow.tracking import MlflowClient

from tests.support.mlflow_server import mlflow_server
from tests.support.tiny import chat_rows, free_port, tiny_config, tiny_plan, tiny_spec, write_jsonl

pytestmark = pytest.mark.slow

TRACKER_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TAGS",
                     "MLFLOW_RUN_ID", "MLFLOW_FLATTEN_PARAMS")


def _mlflow_spec(uri: str, **training):
    return tiny_spec(training={"maxSteps": 4, "reportTo": ["mlflow"],
                               "mlflow": {"trackingUri": uri, "experiment": "chat-sft"},
                               **training})


def test_the_run_its_parameters_and_its_loss_reach_the_server(tmp_path, monkeypatch):
    for name in TRACKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    write_jsonl(tmp_path / "train.jsonl", chat_rows(32))
    with mlflow_server(tmp_path) as url:
        config = tiny_config(tmp_path, spec=_mlflow_spec(url, learningRate=0.002),
                             run_id="0b6c3c52-uid")
        result = run(config, Ranks())
        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("chat-sft")
        assert experiment is not None, "the experiment was not created"
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 1, runs
        logged = runs[0]
        assert logged.info.run_name == "tiny" and logged.info.status == "FINISHED"
        assert logged.data.tags[tracking.RUN_TAG] == tracking.run_key(config)
        assert logged.data.tags[tracking.JOB_TAG] == "test/tiny"
        assert float(logged.data.params["learning_rate"]) == 0.002
        assert int(logged.data.params["per_device_train_batch_size"]) == \
            config.plan.micro_batch_size
        history = client.get_metric_history(logged.info.run_id, "loss")
        expected = [(p["step"], p["loss"]) for p in result.summary["lossCurve"]]
        assert [(m.step, m.value) for m in history] == [
            (step, pytest.approx(loss, rel=1e-5)) for step, loss in expected]

        # A gang restart (same job, same plan) finds that run; a re-plan does not.
        assert tracking.earlier_mlflow_run(config, tracking.mlflow_environment(config)) == \
            logged.info.run_id
        replanned = config.model_copy(update={"plan": tiny_plan(micro_batch_size=1)})
        assert tracking.run_key(replanned) != tracking.run_key(config)
        assert tracking.earlier_mlflow_run(
            replanned, tracking.mlflow_environment(replanned)) is None


def test_an_unreachable_server_is_a_clear_error_naming_the_field(tmp_path, monkeypatch):
    for name in TRACKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tiny_config(tmp_path, spec=_mlflow_spec(url))
    with pytest.raises(TrainerError, match=r"^training\.mlflow\.trackingUri: cannot reach the "
                       r"MLflow server at http://127\.0\.0\.1:\d+ "):
        tracking.point_trackers_at(config, {})
