"""Where the experiment trackers of training.reportTo log.

transformers' TensorBoard, MLflow and W&B callbacks read their settings from the environment
only, so this module sets it from the trainer config before the Trainer is built. The
credentials are in the environment already: in a pod from the job's secretKeyRefs
(finetune_operator/render.py), on a laptop from the user's shell. Only rank 0 logs.

One job, one run per layout: a gang restart logs on in the run the attempt before it opened
(MLflow: found by its tag; W&B: its id), while a re-plan, whose batch and strategy differ,
opens a new run carrying the same job tag. The same run across a re-plan would fail: MLflow
refuses a parameter logged again with another value.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path

from finetune_contract.layout import TENSORBOARD_DIR
from finetune_contract.trainer_config import TrainerConfig

from finetune_trainer.errors import TrainerError

RUN_TAG = "finetune.dev/run"  # one value per job and layout
JOB_TAG = "finetune.dev/job"  # namespace/name: every run of the job
# How long the first look for the run the previous attempt opened may take: a wrong URL
# should fail the run in seconds, not after MLflow's default of 7 retries.
LOOKUP_RETRIES, LOOKUP_TIMEOUT_SECONDS = "2", "10"


def run_key(config: TrainerConfig) -> str:
    """The run's id for this job and layout: the job's uid (a local run: its output
    directory) and a digest of the plan."""
    job = config.run_id or hashlib.sha256(
        str(Path(config.output_dir).resolve()).encode()).hexdigest()[:32]
    layout = hashlib.sha256(config.plan.model_dump_json().encode()).hexdigest()[:8]
    return f"{job}-{layout}"


def point_trackers_at(config: TrainerConfig, environ: MutableMapping[str, str] | None = None,
                      *, rank: int = 0) -> None:
    """Set the variables transformers' callbacks read; rank 0 also finds the MLflow run
    to log on in. Raises TrainerError when that server cannot be reached."""
    environ = os.environ if environ is None else environ
    training = config.spec.training
    if "tensorboard" in training.report_to:
        # transformers' own default is a folder named after the time and host, new per run.
        environ["TENSORBOARD_LOGGING_DIR"] = str(Path(config.output_dir) / TENSORBOARD_DIR)
    if training.mlflow and "mlflow" in training.report_to:
        environ.update(mlflow_environment(config))
        if rank == 0:
            earlier = earlier_mlflow_run(config, environ)
            if earlier:
                environ["MLFLOW_RUN_ID"] = earlier
    if training.wandb and "wandb" in training.report_to:
        environ.update(wandb_environment(config))


def mlflow_environment(config: TrainerConfig) -> dict[str, str]:
    mlflow = config.spec.training.mlflow
    assert mlflow is not None
    tags = {RUN_TAG: run_key(config), JOB_TAG: f"{config.namespace}/{config.name}"}
    return {
        "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": mlflow.experiment or config.namespace,
        "MLFLOW_TAGS": json.dumps(tags),
        # Nested arguments (the DeepSpeed config) as one parameter each, not one long value
        # that MLflow's 250-character limit would drop.
        "MLFLOW_FLATTEN_PARAMS": "TRUE",
    }


def wandb_environment(config: TrainerConfig) -> dict[str, str]:
    wandb = config.spec.training.wandb
    assert wandb is not None
    environ = {
        "WANDB_PROJECT": wandb.project or config.namespace,
        "WANDB_MODE": wandb.mode,
        "WANDB_DIR": config.output_dir,  # offline runs land in the output's wandb/
        "WANDB_RUN_ID": run_key(config),
        "WANDB_RESUME": "allow",
        "WANDB_NAME": config.name,
        "WANDB_RUN_GROUP": f"{config.namespace}/{config.name}",
    }
    if wandb.entity:
        environ["WANDB_ENTITY"] = wandb.entity
    if wandb.base_url:
        environ["WANDB_BASE_URL"] = wandb.base_url
    return environ


def earlier_mlflow_run(config: TrainerConfig, environ: MutableMapping[str, str]) -> str | None:
    """The id of the run an earlier attempt of this job and layout opened, or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri, experiment = environ["MLFLOW_TRACKING_URI"], environ["MLFLOW_EXPERIMENT_NAME"]
    try:
        with _bounded_retries():  # MLflow reads them from the process environment
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                return None
            runs = client.search_runs([found.experiment_id], max_results=1,
                                      filter_string=f"tags.`{RUN_TAG}` = '{run_key(config)}'",
                                      order_by=["attributes.start_time ASC"])
    except (MlflowException, OSError) as err:
        raise TrainerError(
            f"training.mlflow.trackingUri: cannot reach the MLflow server at {uri} "
            f"({_first_line(err)}); check the URL, that the server runs, and that this pod "
            "may reach it") from None
    return runs[0].info.run_id if runs else None


@contextmanager
def _bounded_retries() -> Iterator[None]:
    environ = os.environ
    saved = {key: environ.get(key) for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                               "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = LOOKUP_RETRIES
    environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = LOOKUP_TIMEOUT_SECONDS
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def finish(*, ok: bool, preempted: bool = False) -> None:
    """Close the trackers' runs. Both close theirs at interpreter exit, which a rank skips
    (finetune_trainer.__main__.leave), so a W&B run would lose its last records and an
    MLflow run that failed would stay RUNNING. A preempted run is marked so: its job resumes
    it. transformers already ended an MLflow run that finished."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        if preempted:
            wandb.run.mark_preempting()
        wandb.finish(exit_code=0 if ok or preempted else 1)
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="FINISHED" if ok else "KILLED" if preempted else "FAILED")
