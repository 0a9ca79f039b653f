"""Re-targeting a job at this machine: ranks, resources, output folder, trainer config."""

from __future__ import annotations

import pytest
import yaml
from finetune_contract.api import FineTuneJob
from finetune_operator.local import localize
from finetune_operator.local.machine import LocalGpu, LocalHardware

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
CPU = LocalHardware()
TWO_GPUS = LocalHardware((LocalGpu("NVIDIA L4", 23034 * 2**20), LocalGpu("NVIDIA L4", 23034 * 2**20)))


def job(**spec_updates) -> FineTuneJob:
    doc = yaml.safe_load((EXAMPLES / "tiny-chat.yaml").read_text())
    doc["spec"].update(spec_updates)
    return FineTuneJob.model_validate(doc)


def gpu_job() -> FineTuneJob:
    return job(resources={"gpu": "H100-80GB", "gpusPerNode": 8, "maxNodes": 4})


def test_rank_count_defaults():
    assert localize.rank_count(job().spec, CPU, None) == 2  # the spec's gpusPerNode on cpu
    assert localize.rank_count(job(resources={"gpu": "cpu", "gpusPerNode": 3}).spec,
                             CPU, None) == 3
    assert localize.rank_count(gpu_job().spec, CPU, None) == localize.DEFAULT_CPU_RANKS
    assert localize.rank_count(gpu_job().spec, TWO_GPUS, None) == 2
    assert localize.rank_count(gpu_job().spec, CPU, 1) == 1  # --nproc wins


def test_local_spec_on_cpu_is_one_node_of_cpu_ranks():
    original = gpu_job().spec
    spec = localize.local_spec(original, CPU, 2)
    r = spec.resources
    assert (r.gpu, r.gpus_per_node, r.nodes, r.max_nodes) == ("cpu", 2, 1, 1)
    assert spec.model == original.model and spec.training == original.training
    assert original.resources.gpu == "H100-80GB"  # the input is not modified


def test_local_spec_on_cuda_uses_the_real_gpu_memory():
    spec = localize.local_spec(gpu_job().spec, TWO_GPUS, 2, gpu_type="L4-24GB")
    r = spec.resources
    assert (r.gpu, r.gpus_per_node, r.nodes) == ("L4-24GB", 2, 1)
    assert r.gpu_memory_gib == pytest.approx(22.5, abs=0.05)


def test_output_dir_default_override_and_spec(tmp_path):
    job_dir, cwd = tmp_path / "jobs", tmp_path / "here"
    assert localize.output_dir(job(), job_dir, cwd, None) == (cwd / "runs" / "tiny-chat")
    assert localize.output_dir(job(), job_dir, cwd, "elsewhere") == cwd / "elsewhere"
    # a path the user wrote in the YAML is relative to the YAML file
    assert localize.output_dir(job(output={"path": "out"}), job_dir, cwd, None) == job_dir / "out"
    # with a PVC the path is a pod path: a laptop uses the default
    pvc = job(output={"path": "/output", "pvc": "data"})
    assert localize.output_dir(pvc, job_dir, cwd, None) == cwd / "runs" / "tiny-chat"


def test_trainer_config_round_trips_through_its_file(tmp_path):
    j = job()
    spec = localize.local_spec(j.spec, CPU, 2)
    plan = _plan()
    config = localize.trainer_config(j, spec, plan, data_root=EXAMPLES, out=tmp_path / "run",
                                   metrics_port=41234, device="cpu")
    path = localize.write_trainer_config(config)
    assert path == tmp_path / "run" / localize.CONFIG_FILE
    loaded = type(config).load(path)
    assert loaded == config
    assert loaded.metrics_host == "127.0.0.1" and loaded.metrics_port == 41234
    assert loaded.resolve("data/train.jsonl") == EXAMPLES / "data" / "train.jsonl"


def test_catalog_gpu_matches_the_driver_name():
    h100 = LocalHardware((LocalGpu("NVIDIA H100 80GB HBM3", 81559 * 2**20),))
    a100_40 = LocalHardware((LocalGpu("NVIDIA A100-SXM4-40GB", 40960 * 2**20),))
    odd = LocalHardware((LocalGpu("NVIDIA GeForce RTX 4090", 24564 * 2**20),))
    assert localize.catalog_gpu(h100) == "H100-80GB"
    assert localize.catalog_gpu(a100_40) == "A100-40GB"
    assert localize.catalog_gpu(TWO_GPUS) == "L4-24GB"
    assert localize.catalog_gpu(odd) is None
    assert localize.catalog_gpu(CPU) is None


def _plan():
    from finetune_contract.api import Plan

    return Plan(parameters=1000, trainable_parameters=1000, strategy="ddp", nodes=1,
                gpus_per_node=2, world_size=2, gpu="cpu", gpu_memory=2**30, precision="fp32",
                micro_batch_size=16, gradient_accumulation=1, global_batch_size=32,
                gradient_checkpointing=False, fits=True, reason="test",
                memory_per_gpu={"total": 1})
