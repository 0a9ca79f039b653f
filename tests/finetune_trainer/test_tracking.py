"""tracking.py: the variables transformers' tracker callbacks read, and the run's key."""

from __future__ import annotations

import json

from finetune_trainer import tracking

from tests.support.tiny import tiny_config, tiny_plan, tiny_spec

MLFLOW = {"trackingUri": "http://mlflow.mlops:5000"}


def _config(tmp_path, **training):
    return tiny_config(tmp_path, spec=tiny_spec(training=training), run_id="uid-1")


def test_mlflow_logs_into_the_namespace_experiment_tagged_with_the_job(tmp_path):
    config = _config(tmp_path, reportTo=["mlflow"], mlflow=MLFLOW)
    environ: dict[str, str] = {}
    tracking.point_trackers_at(config, environ, rank=1)  # not rank 0: no server call
    assert environ["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert environ["MLFLOW_EXPERIMENT_NAME"] == "test"
    assert json.loads(environ["MLFLOW_TAGS"]) == {tracking.RUN_TAG: tracking.run_key(config),
                                                  tracking.JOB_TAG: "test/tiny"}
    assert "MLFLOW_RUN_ID" not in environ and "WANDB_PROJECT" not in environ


def test_wandb_resumes_the_run_of_the_job_and_layout(tmp_path):
    wandb = {"project": "chat", "entity": "team", "baseUrl": "https://wandb.internal",
             "apiKey": {"name": "wandb", "key": "k"}}
    config = _config(tmp_path, reportTo=["wandb", "tensorboard"], wandb=wandb)
    environ: dict[str, str] = {}
    tracking.point_trackers_at(config, environ)
    assert environ == {
        "TENSORBOARD_LOGGING_DIR": f"{config.output_dir}/tensorboard",
        "WANDB_PROJECT": "chat", "WANDB_ENTITY": "team",
        "WANDB_BASE_URL": "https://wandb.internal", "WANDB_MODE": "online",
        "WANDB_DIR": config.output_dir, "WANDB_RUN_ID": tracking.run_key(config),
        "WANDB_RESUME": "allow", "WANDB_NAME": "tiny", "WANDB_RUN_GROUP": "test/tiny"}


def test_the_run_key_follows_the_job_and_its_layout(tmp_path):
    config = _config(tmp_path)
    assert tracking.run_key(config) == tracking.run_key(config.model_copy())
    assert tracking.run_key(config).startswith("uid-1-")
    replanned = config.model_copy(update={"plan": tiny_plan(micro_batch_size=2)})
    assert tracking.run_key(replanned) != tracking.run_key(config)
    other_job = config.model_copy(update={"run_id": "uid-2"})
    assert tracking.run_key(other_job) != tracking.run_key(config)


def test_a_local_run_keys_its_run_by_its_output_directory(tmp_path):
    first = tiny_config(tmp_path, output_dir=str(tmp_path / "a"))
    again = tiny_config(tmp_path, output_dir=str(tmp_path / "a"))
    elsewhere = tiny_config(tmp_path, output_dir=str(tmp_path / "b"))
    assert tracking.run_key(first) == tracking.run_key(again) != tracking.run_key(elsewhere)


def test_no_tracker_sets_nothing(tmp_path):
    environ: dict[str, str] = {}
    tracking.point_trackers_at(_config(tmp_path), environ)
    assert environ == {}
