"""The resolved trainer configuration: everything one training rank needs, identical on all.

The operator (for pods, finetune_operator/render.py) and the local runner (for this machine,
finetune_operator/local/localize.py) write one from a FineTuneJob and its plan; every rank of
`python -m finetune_trainer --config FILE` reads it back. Importing it needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field

from finetune_contract.api import ApiModel, FineTuneJobSpec, Plan
from finetune_contract.layout import METRICS_PORT

# libyaml's safe loader and dumper when PyYAML was built with them (its wheels are): the same
# types and resolution as yaml.safe_load and safe_dump, several times faster. The operator
# renders one config per job and parses each job's ConfigMap once; in pure Python the two were
# most of its CPU at 500 new jobs (docs/benchmarks.md).
SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SAFE_DUMPER: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class TrainerConfig(ApiModel):
    """Everything one training process needs to know; identical on every rank."""

    name: str = Field(description="FineTuneJob name (metrics label `finetunejob`).")
    namespace: str = Field("local", description="Namespace (metrics label `namespace`).")
    spec: FineTuneJobSpec = Field(description="The validated FineTuneJob spec.")
    plan: Plan = Field(description="The planner's decisions (strategy, batch, precision...).")
    data_root: str = Field(
        description="Directory that relative dataset, model and tokenizer paths resolve against."
    )
    output_dir: str = Field(description="Checkpoints, final model and training_summary.json.")
    model_cache: str | None = Field(
        None,
        description="Hugging Face hub cache holding the model named by spec.model.name, "
        "filled before the ranks start (python -m finetune_trainer.model_cache); the ranks "
        "load the model and its tokenizer from it without the network. Unset: the hub "
        "client's own cache, downloading as needed.",
    )
    run_id: str | None = Field(
        None, max_length=64,
        description="What names this job's run in MLflow and W&B across its attempts (the "
        "FineTuneJob's uid). Unset (a local run): derived from the output directory, so a "
        "resumed local run logs on in the same run.",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the ranks compute.")
    metrics_port: int = Field(
        METRICS_PORT,
        ge=0,
        le=65535,
        description="Prometheus port of local rank 0 (rank r uses port + local rank); 0 = off.",
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics server binds.")
    peak_flops_per_rank: float | None = Field(
        None,
        gt=0,
        description="Hardware peak FLOP/s of one rank in the planned precision, the MFU "
        "denominator. Unset: measured with a dense matmul on CPU, MFU not reported on GPU.",
    )

    def resolve(self, path: str) -> Path:
        """A path from the spec, resolved against the data root when relative."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.data_root) / p

    def dump_yaml(self) -> str:
        return yaml.dump(self.to_wire(), Dumper=SAFE_DUMPER, sort_keys=False)

    @classmethod
    def parse(cls, text: str) -> TrainerConfig:
        """Raises yaml.YAMLError or pydantic's ValidationError."""
        return cls.model_validate(yaml.load(text, Loader=SAFE_LOADER))

    @classmethod
    def load(cls, path: str | Path) -> TrainerConfig:
        return cls.parse(Path(path).read_text())
