"""`finetune plan`: flags or a YAML file, --json, the human table, user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from finetune_operator.cli import main

JSON_KEYS = {"parameters", "trainableParameters", "strategy", "nodes", "gpusPerNode",
             "precision", "microBatchSize", "gradientAccumulation", "gradientCheckpointing",
             "gpuMemory", "fits", "reason", "memoryPerGpu", "alternatives", "estimate"}

JOB = textwrap.dedent("""\
    apiVersion: finetune.dev/v1alpha1
    kind: FineTuneJob
    metadata:
      name: tiny
    spec:
      model:
        name: tiny-llama
        init: random
        config: {model_type: llama, hidden_size: 64, intermediate_size: 128,
                 num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
                 vocab_size: 1024}
      dataset:
        train: {path: train.jsonl}
      training: {maxSeqLength: 256, globalBatchSize: 16, maxSteps: 30}
      resources: {gpu: cpu, gpusPerNode: 2, maxNodes: 1}
    """)


def plan_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["plan", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_json_has_every_documented_key(capsys):
    code, out = plan_json(capsys, "--model", "meta-llama/Llama-3.1-8B", "--gpu", "H100-80GB",
                          "--gpus-per-node", "8")
    assert code == 0
    assert JSON_KEYS <= set(out)
    assert set(out["memoryPerGpu"]) >= {"weights", "gradients", "optimizer", "activations",
                                        "overhead", "total"}
    assert all(isinstance(v, int) for v in out["memoryPerGpu"].values())
    assert set(out["estimate"]) >= {"tokens", "flops", "gpuHours", "costUsd", "tokensPerSecond"}
    assert {a["strategy"] for a in out["alternatives"]} == {
        "ddp", "zero1", "zero2", "zero3", "fsdp", "zero3-offload"}
    assert set(out["alternatives"][0]) == {"strategy", "nodes", "gpusPerNode", "memoryPerGpu",
                                           "fits", "microBatchSize", "gradientCheckpointing",
                                           "tokensPerSecond", "stepSeconds"}


def test_flags_reach_the_plan(capsys):
    _, out = plan_json(capsys, "--model", "someone/private", "--parameters", "7.5B",
                       "--gpu", "A100-40GB", "--gpus-per-node", "4", "--max-nodes", "2",
                       "--seq-len", "1024", "--global-batch", "32", "--tuning", "freeze")
    assert out["parameters"] == 7_500_000_000 and out["parameterSource"] == "hint"
    assert out["gpu"] == "A100-40GB" and out["gpusPerNode"] == 4 and out["nodes"] <= 2
    assert out["seqLength"] == 1024 and out["globalBatchSize"] == 32
    assert out["trainableParameters"] < out["parameters"]


def test_gpus_with_strategy_evaluates_exactly_that_layout(capsys):
    code, out = plan_json(capsys, "--model", "meta-llama/Llama-3.1-8B", "--gpus", "16",
                          "--strategy", "zero3")
    assert code == 0
    assert (out["strategy"], out["nodes"], out["gpusPerNode"]) == ("zero3", 2, 8)
    assert [a["strategy"] for a in out["alternatives"]] == ["zero3"]


def test_gpus_fewer_than_a_node(capsys):
    _, out = plan_json(capsys, "--model", "Qwen/Qwen2.5-0.5B", "--gpus", "2",
                       "--seq-len", "512")
    assert (out["nodes"], out["gpusPerNode"], out["worldSize"]) == (1, 2, 2)


def test_nothing_fits_exits_2_and_says_what_would(capsys):
    code = main(["plan", "--model", "meta-llama/Llama-3.1-70B", "--gpu", "T4-16GB",
                 "--max-nodes", "1"])
    out = capsys.readouterr().out
    assert code == 2
    assert "DOES NOT FIT" in out and "suggestion" in out and "would fit" in out


def test_human_table_lists_every_strategy(capsys):
    assert main(["plan", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "H100-80GB"]) == 0
    out = capsys.readouterr().out
    assert "zero2 on 1 node(s) x 8 H100-80GB" in out
    for strategy in ("ddp", "zero1", "zero2", "zero3", "fsdp", "zero3-offload"):
        assert f"\n  {strategy} " in out
    assert "<- chosen" in out and "why" in out


def test_human_table_shows_tokens_per_second_and_step_time_of_each_alternative(capsys):
    assert main(["plan", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "H100-80GB"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.strip().startswith("strategy"))
    assert header.split()[-2:] == ["tokens/s", "s/step"]
    chosen = next(line for line in lines if line.endswith("<- chosen"))
    tokens, step = chosen.split()[-4:-2]
    assert float(tokens.replace(",", "")) > 0 and float(step) > 0
    ddp = next(line for line in lines if line.startswith("  ddp "))
    assert ddp.split()[-1].startswith("(")  # does not fit: what it would do, in parentheses
    assert any(line.strip().startswith("speed ") and "tokens/s" in line for line in lines)


def test_a_peak_below_the_sum_of_the_items_is_explained(capsys):
    args = ["--model", "meta-llama/Llama-3.1-8B", "--gpu", "H100-80GB"]
    _, plan = plan_json(capsys, *args)
    memory = plan["memoryPerGpu"]
    items = sum(v for k, v in memory.items() if k != "total")
    assert items > memory["total"]  # activations and the optimizer step are not live at once
    assert main(["plan", *args]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  memory/GPU")]
    assert line.endswith("not all of these are held at once)")


def _host_line(capsys, *args: str) -> str:
    main(["plan", *args])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  host/node")]
    return line


def test_host_line_shows_the_node_shape_offloading_is_held_to_and_its_cpus(capsys):
    line = _host_line(capsys, "--model", "meta-llama/Llama-3.1-70B", "--gpu", "H100-80GB",
                      "--max-nodes", "1")
    assert line == "  host/node   1.7 TiB of 1.8 TiB (a3-highgpu-8g); 64 CPUs"
    line = _host_line(capsys, "--model", "meta-llama/Llama-3.1-8B", "--gpu", "L4-24GB",
                      "--gpus-per-node", "4", "--max-nodes", "1")
    assert line.endswith(" of 192.0 GiB (g6.12xlarge, g2-standard-48); 32 CPUs")


def test_host_line_without_a_bound_is_the_need_alone(capsys):
    line = _host_line(capsys, "--model", "meta-llama/Llama-3.1-8B", "--gpu", "H100-80GB")
    assert line == "  host/node   375.0 GiB"


def test_yaml_file(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    code, out = plan_json(capsys, str(job))
    assert code == 0
    assert out["parameters"] == 205_120 and out["gpu"] == "cpu" and out["precision"] == "fp32"
    assert out["estimate"]["tokens"] == 30 * 16 * 256
    # Flags override the file.
    _, out = plan_json(capsys, str(job), "--global-batch", "32")
    assert out["globalBatchSize"] == 32


def test_yaml_with_config_json_under_model_path(tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 100}))
    text = JOB.replace("    name: tiny-llama\n    init: random\n", "    path: base\n")
    text = text[:text.index("    config:")] + text[text.index("  dataset:"):]
    (tmp_path / "job.yaml").write_text(text)
    _, out = plan_json(capsys, str(tmp_path / "job.yaml"))
    assert out["parameterSource"] == "config"


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "meta-llama/Llama-3.1-8B", "--gpu", "H900"],
     "--gpu H900 (spec.resources.gpu): unknown GPU type 'H900'"),
    (["--model", "nobody/model"], "or its size: --parameters"),
    (["--model", "meta-llama/Llama-3.1-8B", "--global-batch", "12"],
     "spec.training.globalBatchSize"),
    (["--model", "meta-llama/Llama-3.1-8B", "--gpus", "12"], "not a whole number of nodes"),
    (["--model", "x", "--parameters", "lots"], "spec.model.parameters"),
    (["--model", "meta-llama/Llama-3.1-8B", "--seq-len", "3"], "maxSeqLength"),
    ([], "give a FineTuneJob file"),
])
def test_user_mistakes_are_one_line_without_traceback(capsys, args, expected):
    assert main(["plan", *args]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert err.startswith("finetune plan: ")


def test_invalid_yaml_names_file_and_line(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("maxSeqLength: 256", "maxSeqLength: -1"))
    assert main(["plan", str(job)]) == 1
    err = capsys.readouterr().err
    assert f"{job}:1: spec.training.maxSeqLength" in err


def test_missing_file(capsys):
    assert main(["plan", "/nonexistent/job.yaml"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_operator_side_never_imports_torch():
    """The planner and `finetune plan` run in the operator image, which has no torch."""
    code = ("import sys, finetune_operator.planner, finetune_operator.cli.plan_cmd; "
            "from finetune_operator.cli import main; "
            "main(['plan', '--model', 'meta-llama/Llama-3.1-8B', '--json']); "
            "sys.exit(1 if {'torch', 'transformers', 'deepspeed'} & set(sys.modules) else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_a_secret_next_to_the_job_is_skipped(tmp_path, capsys):
    job = tmp_path / "bundle.yaml"
    job.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: hf}\n---\n" + JOB)
    code, out = plan_json(capsys, str(job))
    assert code == 0 and out["gpu"] == "cpu"


def test_gpus_without_a_batch_gets_a_default_the_ranks_divide(capsys):
    code, out = plan_json(capsys, "--parameters", "7.5B", "--gpu", "V100-32GB", "--gpus", "64")
    assert code == 0
    assert out["worldSize"] == 64 and out["globalBatchSize"] == 64


def test_gpus_below_the_default_batch_keeps_the_default(capsys):
    _, out = plan_json(capsys, "--parameters", "125M", "--gpu", "H100-80GB", "--gpus", "4")
    assert out["globalBatchSize"] == 16


def test_a_problem_with_a_flag_names_the_flag(capsys):
    args = ["plan", "--parameters", "7.5B", "--gpu", "V100-32GB", "--gpus", "64",
            "--global-batch", "16"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--global-batch 16 (spec.training.globalBatchSize): is 16, not a multiple" in err


def test_a_schema_problem_with_a_flag_names_the_flag(capsys):
    assert main(["plan", "--parameters", "7.5B", "--seq-len", "3"]) == 1
    assert "--seq-len 3 (spec.training.maxSeqLength): must be >= 16" in capsys.readouterr().err
