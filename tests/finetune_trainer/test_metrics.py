"""The metrics registry and endpoint of one rank, read back by the operator's parser."""

from __future__ import annotations

import urllib.request

from finetune_contract.progress_gauges import PROGRESS_GAUGES
from finetune_operator.scrape import parse_progress
from finetune_trainer.metrics import GAUGES, RankMetrics, training_flops_per_token

from tests.support.tiny import free_port


def test_unset_gauges_are_nan_and_parse_as_unknown():
    metrics = RankMetrics("ns", "job1", 0)
    metrics.set("finetune_train_step", 3)
    metrics.set("finetune_train_total_steps", 12)
    from prometheus_client import generate_latest

    progress = parse_progress(generate_latest(metrics.registry).decode())
    assert progress.step == 3 and progress.total_steps == 12 and progress.percent == 25.0
    assert progress.loss is None and progress.eval_loss is None


def test_endpoint_serves_every_gauge_with_the_labels():
    port = free_port()
    metrics = RankMetrics("team-a", "chat", 1)
    metrics.set("finetune_train_loss", 2.5)
    metrics.set("finetune_train_loss", float("nan"))  # a NaN update keeps the last value
    metrics.serve("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.close()
    for name in GAUGES:
        assert f'{name}{{finetunejob="chat",namespace="team-a",rank="1"}}' in text
    assert parse_progress(text).loss == 2.5


def test_every_progress_gauge_the_operator_reads_is_served():
    assert set(PROGRESS_GAUGES) <= set(GAUGES)


def test_flops_per_token():
    assert training_flops_per_token(100, 100) == 600  # 6N for full tuning
    assert training_flops_per_token(100, 0) == 400


def test_a_taken_metrics_port_costs_the_endpoint_not_the_training(capsys):
    import socket

    from finetune_trainer.metrics import RankMetrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = RankMetrics("ns", "job", 1)
        metrics.serve("127.0.0.1", port)  # does not raise
        metrics.set("finetune_train_step", 3)
        metrics.close()
    assert f"warning: metrics on 127.0.0.1:{port} not served" in capsys.readouterr().err
