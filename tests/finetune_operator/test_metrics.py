"""The operator's own registry (metrics.py): a job's goodput series, and their removal."""

from __future__ import annotations

from finetune_contract.api import CostRange, Goodput, LostTime
from finetune_operator.metrics import OperatorMetrics
from prometheus_client import CollectorRegistry


def _series(metrics: OperatorMetrics, prefix: str) -> dict[tuple, float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in metrics.registry.collect() for sample in family.samples
            if sample.name.startswith(prefix)}


def test_goodput_cost_and_lost_time_are_served_per_job_and_forgotten_with_it():
    metrics = OperatorMetrics(CollectorRegistry())
    goodput = Goodput(ratio=0.75, tokens_per_second_per_gpu=900.0, mfu=0.41, gpu_hours=12.5,
                      cost_usd=CostRange(low=25.0, high=62.5),
                      lost_seconds=LostTime(startup=30.0, restarts=12.0))
    metrics.observe_goodput("team-a", "chat", goodput)
    job = (("finetunejob", "chat"), ("namespace", "team-a"))
    got = _series(metrics, "finetune_job_")
    assert got[("finetune_job_goodput_ratio", job)] == 0.75
    assert got[("finetune_job_tokens_per_second_per_gpu", job)] == 900.0
    assert got[("finetune_job_mfu", job)] == 0.41
    assert got[("finetune_job_gpu_hours", job)] == 12.5
    assert got[("finetune_job_cost_usd", (("bound", "low"), *job))] == 25.0
    assert got[("finetune_job_cost_usd", (("bound", "high"), *job))] == 62.5
    assert got[("finetune_job_lost_seconds", (("cause", "startup"), *job))] == 30.0
    assert got[("finetune_job_lost_seconds", (("cause", "restarts"), *job))] == 12.0
    metrics.forget("team-a", "chat")
    assert _series(metrics, "finetune_job_") == {}
