"""FineTuneJob specs and plans for the operator tests (plans written out, not computed, so the
render and lifecycle tests pin exactly the layout they check)."""

from __future__ import annotations

import textwrap
from typing import Any

from finetune_contract.api import FineTuneJobSpec, MemoryBreakdown, Plan
from finetune_operator.render import Owner

OWNER = Owner(name="chat", namespace="research", uid="0b8f4c1e-5d6a-4a41-9a55-3f0c8f1a2b3c")

TINY_MODEL = {
    "name": "tiny-llama",
    "init": "random",
    "config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "max_position_embeddings": 128},
    "tokenizer": {"train": {"vocabSize": 512}},
}


def spec_dict(**overrides: Any) -> dict[str, Any]:
    """A CPU job of the tiny model; `overrides` replace whole top-level sections."""
    spec: dict[str, Any] = {
        "model": TINY_MODEL,
        "dataset": {"format": "messages", "train": {"path": "chat/train.jsonl"}},
        "training": {"epochs": 1, "globalBatchSize": 8, "maxSeqLength": 64,
                     "precision": "fp32"},
        "resources": {"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 1, "strategy": "ddp"},
    }
    spec.update(overrides)
    return spec


def spec(**overrides: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(spec_dict(**overrides))


def plan(*, strategy: str = "ddp", nodes: int = 1, gpus_per_node: int = 2, gpu: str = "cpu",
         fits: bool = True, host_memory: int = 0, suggestion: str | None = None,
         cpu_per_node: int | None = None) -> Plan:
    """A plan as the planner writes it; CPU ranks request one core each unless told."""
    if cpu_per_node is None:
        cpu_per_node = gpus_per_node if gpu == "cpu" else 0
    memory = MemoryBreakdown(weights=800_000, gradients=800_000, optimizer=1_600_000,
                             activations=100_000, logits=50_000, overhead=0, total=3_350_000)
    return Plan(
        parameters=200_000, trainable_parameters=200_000, strategy=strategy, nodes=nodes,
        gpus_per_node=gpus_per_node, world_size=nodes * gpus_per_node, gpu=gpu,
        gpu_memory=80 * 2**30 if gpu != "cpu" else 8 * 2**30,
        precision="bf16" if gpu != "cpu" else "fp32", micro_batch_size=2,
        gradient_accumulation=2, global_batch_size=8, gradient_checkpointing=False,
        seq_length=64, fits=fits, reason=f"{strategy} fits" if fits else "weights alone "
        "exceed the memory of one GPU", suggestion=suggestion, memory_per_gpu=memory,
        host_memory_per_node=host_memory, cpu_per_node=cpu_per_node,
    )


def gpu_spec(**resources: Any) -> FineTuneJobSpec:
    return spec(resources={"gpu": "H100-80GB", "gpusPerNode": 8, "maxNodes": 4, **resources})


# A valid FineTuneJob document, as a user writes it (the validate tests' baseline).
VALID = textwrap.dedent(
    """\
    apiVersion: finetune.dev/v1alpha1
    kind: FineTuneJob
    metadata: {name: tiny}
    spec:
      model:
        init: random
        config: {model_type: llama, hidden_size: 64, intermediate_size: 128,
                 num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2}
        tokenizer: {train: {vocabSize: 512}}
      dataset: {train: {path: data/train.jsonl}}
      training: {maxSteps: 10, globalBatchSize: 4, maxSeqLength: 128}
      resources: {gpu: cpu, gpusPerNode: 2, maxNodes: 1}
    """
)
