"""`finetune render JOB.yaml`: the objects the operator would create, by the operator's own
steps: compared with what the lifecycle creates for the same job."""

from __future__ import annotations

import pytest
import yaml
from finetune_operator.cli import main
from finetune_operator.cli.render_cmd import render_job
from finetune_operator.lifecycle.actions import Create
from finetune_operator.settings import Settings

from tests.support.ftj_samples import OWNER, VALID
from tests.support.world import World, two_node_spec


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch):
    for name in ("FINETUNE_DEFAULT_IMAGE", "FINETUNE_DEFAULT_GPU", "FINETUNE_GPU_NODE_LABELS"):
        monkeypatch.delenv(name, raising=False)


def _job(spec: dict) -> dict:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": OWNER.name, "namespace": OWNER.namespace}, "spec": spec}


def _operator_creates(spec: dict, settings: Settings) -> list[dict]:
    decision = World(spec, settings=settings).step()
    return [a.obj for a in decision.actions if isinstance(a, Create)]


def test_render_prints_what_the_operator_creates():
    spec = two_node_spec()
    rendered = render_job(_job(spec), None, OWNER.uid)
    assert [o["kind"] for o in rendered] == ["ConfigMap", "Service", "Job"]
    assert rendered == _operator_creates(spec, Settings())


def test_render_applies_the_operators_settings(monkeypatch):
    monkeypatch.setenv("FINETUNE_DEFAULT_IMAGE", "registry.example/trainer:1")
    spec = two_node_spec()
    rendered = render_job(_job(spec), None, OWNER.uid)
    assert rendered == _operator_creates(spec, Settings(default_image="registry.example/trainer:1"))


def test_render_places_gpu_pods_as_the_operator_does(monkeypatch):
    spec = two_node_spec(resources={"gpu": "L4-24GB", "gpusPerNode": 1, "nodes": 2,
                                    "maxNodes": 2, "strategy": "ddp"})
    rendered = render_job(_job(spec), None, OWNER.uid)
    assert rendered == _operator_creates(spec, Settings())
    pod = rendered[2]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    monkeypatch.setenv("FINETUNE_GPU_NODE_LABELS", '{"enabled": false}')
    pod = render_job(_job(spec), None, OWNER.uid)[2]["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "affinity" not in pod


def test_a_bad_gpu_node_label_setting_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FINETUNE_GPU_NODE_LABELS", '{"values": {"H100": ["h100"]}}')
    job = tmp_path / "job.yaml"
    job.write_text(VALID)
    assert main(["render", str(job)]) == 1
    err = capsys.readouterr().err
    assert "FINETUNE_GPU_NODE_LABELS (the chart's trainer.gpuNodeLabels)" in err
    assert "did you mean H100-80GB?" in err and "Traceback" not in err


def test_cli_prints_yaml_documents_with_the_trainer_config_readable(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: hf}\n---\n" + VALID)
    assert main(["render", str(job), "-n", "team"]) == 0
    out = capsys.readouterr().out
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "Job"]
    assert {d["metadata"]["namespace"] for d in docs} == {"team"}
    assert "trainer.yaml: |" in out
    assert yaml.safe_load(docs[0]["data"]["trainer.yaml"])["name"] == "tiny"


def test_an_invalid_job_renders_nothing_and_says_why(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(VALID.replace("maxSteps: 10", "maxSteps: 10, learning_rate: 1e-4"))
    assert main(["render", str(job)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "spec.training.learning_rate: unknown field" in captured.err


def test_a_job_whose_configmap_the_api_server_would_refuse_renders_nothing(tmp_path, capsys):
    """The operator fails this job (ChildRejected) instead of creating its children: render
    says so as well, rather than print a ConfigMap over 1 MiB."""
    spec = two_node_spec()
    spec["model"] = {**spec["model"], "config": {**spec["model"]["config"],
                                                 "note": "x" * (1024 * 1024)}}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_job(spec)))
    assert main(["render", str(job)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the API server would refuse ConfigMap chat-trainer: data: is " in captured.err
    assert "Traceback" not in captured.err
