"""Turn a FineTuneJob into what a local run needs: a spec for this machine, paths, the
trainer config. Pure functions of data, except `write_trainer_config` which writes the file.
"""

from __future__ import annotations

from pathlib import Path

from finetune_contract.api import FineTuneJob, FineTuneJobSpec, Plan
from finetune_contract.trainer_config import TrainerConfig
from finetune_operator.local.machine import LocalHardware
from finetune_operator.planner.gpus import CATALOG

DEFAULT_CPU_RANKS = 2
RUNS_DIR = "runs"
CONFIG_FILE = "trainer-config.yaml"
LOG_FILE = "train.log"
METRICS_HOST = "127.0.0.1"


def rank_count(spec: FineTuneJobSpec, hardware: LocalHardware, requested: int | None) -> int:
    """--nproc wins; CPU keeps the spec's ranks per node; CUDA uses every visible GPU."""
    if requested is not None:
        return requested
    if hardware.device == "cuda":
        return len(hardware.gpus)
    return spec.resources.gpus_per_node if spec.resources.gpu == "cpu" else DEFAULT_CPU_RANKS


def local_spec(spec: FineTuneJobSpec, hardware: LocalHardware, nproc: int,
               gpu_type: str | None = None) -> FineTuneJobSpec:
    """The spec re-targeted at this machine: one node of `nproc` CPU ranks or local GPUs.

    Everything else (model, data, hyperparameters, strategy) is the user's. On CUDA the
    GPU's real memory is passed, so the planner sizes for the card actually present;
    `gpu_type` is its catalog name when known (precision and speed depend on it).
    """
    resources = spec.resources.model_copy(update={"nodes": 1, "max_nodes": 1,
                                                  "gpus_per_node": nproc})
    if hardware.device == "cpu":
        resources = resources.model_copy(update={"gpu": "cpu", "gpu_memory_gib": None})
    else:
        memory_gib = min(g.memory_bytes for g in hardware.gpus) / 2**30
        resources = resources.model_copy(update={
            "gpu": gpu_type or spec.resources.gpu, "gpu_memory_gib": round(memory_gib, 1)})
    return spec.model_copy(update={"resources": resources})


def output_dir(job: FineTuneJob, job_dir: Path, cwd: Path, override: str | None) -> Path:
    """--output, else spec.output.path when the user set it (relative to the YAML file),
    else ./runs/<metadata.name>. The pod default /output is never used on a laptop."""
    if override:
        return (cwd / override).resolve()
    out = job.spec.output
    if "path" in out.model_fields_set and not out.pvc:
        return (job_dir / out.path).resolve()
    return (cwd / RUNS_DIR / job.metadata.name).resolve()


def trainer_config(job: FineTuneJob, spec: FineTuneJobSpec, plan: Plan, *, data_root: Path,
                   out: Path, metrics_port: int, device: str) -> TrainerConfig:
    return TrainerConfig(
        name=job.metadata.name,
        namespace="local",
        spec=spec,
        plan=plan,
        data_root=str(data_root),
        output_dir=str(out),
        device=device,
        metrics_port=metrics_port,
        metrics_host=METRICS_HOST,
    )


def write_trainer_config(config: TrainerConfig) -> Path:
    path = Path(config.output_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.dump_yaml())
    return path


def catalog_gpu(hardware: LocalHardware) -> str | None:
    """The catalog entry of the local GPU ("NVIDIA H100 80GB HBM3" -> H100-80GB): the model
    name must appear in the driver's name; among those, the closest in memory wins."""
    if not hardware.gpus:
        return None
    local = hardware.gpus[0]
    name = local.name.upper()
    matches = [gpu for key, gpu in CATALOG.items()
               if key != "cpu" and key.split("-")[0].upper() in name]
    if not matches:
        return None
    return min(matches, key=lambda gpu: abs(gpu.memory - local.memory_bytes)).name
