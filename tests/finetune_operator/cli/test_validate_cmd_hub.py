"""`finetune validate` for a model the catalog lacks: planned with what the Hub stand-in
serves, or valid with a note where it cannot be read (the cluster sizes it)."""

from __future__ import annotations

import socket

from finetune_operator.cli import main

from tests.support.hub_standin import go_online

JOB = """\
apiVersion: finetune.dev/v1alpha1
kind: FineTuneJob
metadata: {name: hub-model}
spec:
  model: {name: MODEL}
  dataset: {train: {path: train.jsonl}}
  training: {maxSeqLength: 64, globalBatchSize: 8}
  resources: {gpu: cpu, gpusPerNode: 1, maxNodes: 1, memory: MEMORY}
"""


def write(tmp_path, model: str, memory: str = "8Gi"):
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("MODEL", model).replace("MEMORY", memory))
    return job


def test_a_hub_model_that_fits_is_valid(tiny_hub, tmp_path, capsys):
    job = write(tmp_path, "acme/tiny")
    assert main(["validate", str(job)]) == 0
    out = capsys.readouterr().out
    assert f"{job}: doc 1: valid" in out and "note" not in out


def test_a_hub_model_that_does_not_fit_is_told(tiny_hub, tmp_path, capsys):
    job = write(tmp_path, "acme/tiny", memory="64Mi")
    assert main(["validate", str(job)]) == 1
    assert "spec.resources: does not fit" in capsys.readouterr().err


def test_a_gated_model_without_a_token_names_the_model_and_the_token_field(tiny_hub, tmp_path,
                                                                          capsys):
    job = write(tmp_path, "acme/gated")
    assert main(["validate", str(job)]) == 1
    err = capsys.readouterr().err
    assert "spec.model.name: model 'acme/gated' (spec.model.name) is gated" in err
    assert "spec.secrets.hfToken" in err


def test_a_missing_model_is_invalid(tiny_hub, tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, "acme/missing"))]) == 1
    assert "'acme/missing' (spec.model.name) was not found" in capsys.readouterr().err


def test_an_unreachable_hub_leaves_the_job_valid_with_a_note(monkeypatch, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    go_online(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "hf")
    job = write(tmp_path, "meta-llama/Llama-3.3-70B-Instruct")
    assert main(["validate", str(job)]) == 0
    out = capsys.readouterr().out
    assert f"{job}: doc 1: valid (note: not sized here:" in out
    assert "cannot be reached" in out and "the operator sizes" in out


def test_offline_and_a_model_path_on_a_volume_are_valid_with_a_note(tmp_path, capsys):
    job = write(tmp_path, "meta-llama/Llama-3.3-70B-Instruct")  # conftest: HF_HUB_OFFLINE
    assert main(["validate", str(job)]) == 0
    assert "valid (note: not sized here: huggingface_hub is offline" in capsys.readouterr().out
    job.write_text(job.read_text().replace(
        "model: {name: meta-llama/Llama-3.3-70B-Instruct}", "model: {path: models/base}"))
    assert main(["validate", str(job)]) == 0
    assert "valid (note: not sized here: model.path 'models/base'" in capsys.readouterr().out
