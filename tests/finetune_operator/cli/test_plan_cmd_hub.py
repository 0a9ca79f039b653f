"""`finetune plan` for a model the catalog lacks: read from the Hub stand-in (config.json,
safetensors headers), or told what it needs."""

from __future__ import annotations

import json
import textwrap

from finetune_operator.cli import main

CPU = ["--gpu", "cpu", "--gpus-per-node", "1", "--max-nodes", "1", "--seq-len", "64",
       "--global-batch", "8"]


def test_a_hub_model_is_planned_with_its_exact_count(tiny_hub, tiny_model, capsys):
    assert main(["plan", "--model", "acme/tiny", *CPU, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"] == tiny_model[1] and plan["parameterSource"] == "safetensors"
    assert main(["plan", "--model", "acme/tiny", *CPU]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    commit = tiny_hub.repos[("model", "acme/tiny")].branches["main"]
    assert f"(safetensors: acme/tiny@{commit[:12]}, 1 header(s))" in first


def test_a_job_file_with_a_gated_model_and_its_token(tiny_hub, tiny_model, tmp_path,
                                                      monkeypatch, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent("""\
        apiVersion: finetune.dev/v1alpha1
        kind: FineTuneJob
        metadata: {name: gated}
        spec:
          model: {name: acme/gated}
          dataset: {train: {path: train.jsonl}}
          secrets: {hfToken: {name: hf, key: token}}
          training: {maxSeqLength: 64, globalBatchSize: 8}
          resources: {gpu: cpu, gpusPerNode: 1, maxNodes: 1}
        """))
    assert main(["plan", str(job)]) == 1
    err = capsys.readouterr().err
    assert f"{job}: spec.model.name: model 'acme/gated' (spec.model.name) is gated" in err
    assert "spec.secrets.hfToken" in err and "Traceback" not in err
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert main(["plan", str(job), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == tiny_model[1]


def test_a_missing_model_is_a_clear_error(tiny_hub, capsys):
    assert main(["plan", "--model", "acme/missing", *CPU]) == 1
    err = capsys.readouterr().err
    assert "'acme/missing' (spec.model.name) was not found on the Hugging Face Hub" in err


def test_offline_it_says_what_planning_needs(capsys):
    # The tests' conftest sets HF_HUB_OFFLINE: no request leaves the process.
    assert main(["plan", "--model", "meta-llama/Llama-3.3-70B-Instruct", "--gpu",
                 "H100-80GB"]) == 1
    err = capsys.readouterr().err
    assert "cannot size 'meta-llama/Llama-3.3-70B-Instruct' here" in err
    assert "HF_HUB_OFFLINE" in err and "network access to the Hugging Face Hub" in err
    assert "--parameters" in err and "model.config" in err
    assert main(["plan", "--model", "meta-llama/Llama-3.3-70B-Instruct", "--gpu",
                 "H100-80GB", "--parameters", "70B"]) == 0
