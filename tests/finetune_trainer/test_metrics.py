"""The metrics registry and endpoint of one rank, read back by the operator's parser, and
the throughput window behind its tokens/s and ETA."""

from __future__ import annotations

import urllib.request

import pytest
from finetune_contract.progress_gauges import PROGRESS_GAUGES
from finetune_operator.scrape import parse_progress
from finetune_trainer.metrics import (
    GAUGES,
    RATE_WINDOW_SECONDS,
    RankMetrics,
    ThroughputWindow,
    training_flops_per_token,
)

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


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_log_that_lands_late_barely_moves_the_rate():
    """Steps of 50 ms, 1000 tokens each; this rank's last log lands 20 ms late. A one-step
    rate would read 1000 / 0.07 s; the window's reads the job's 20000 tokens/s within 0.3 %."""
    clock = Clock(0.0)
    window = ThroughputWindow(clock=clock)
    window.begin(1, 1000)
    for step in range(2, 201):
        clock.now = (step - 1) * 0.05
        rate = window.tokens_per_second(1000 * step)
    clock.now = 200 * 0.05 + 0.02
    late = window.tokens_per_second(1000 * 201)
    assert rate == pytest.approx(20000) and late == pytest.approx(20000, rel=0.003)


def test_the_rate_follows_a_slowdown_once_the_window_has_passed():
    clock = Clock(0.0)
    window = ThroughputWindow(clock=clock)
    window.begin(0, 0)
    tokens = 0
    for _ in range(60):  # a minute at 1000 tokens/s, logged every second
        clock.now, tokens = clock.now + 1, tokens + 1000
        window.tokens_per_second(tokens)
    for _ in range(int(RATE_WINDOW_SECONDS) + 1):  # then at 100 tokens/s
        clock.now, tokens = clock.now + 1, tokens + 100
        rate = window.tokens_per_second(tokens)
    assert rate == pytest.approx(100)


def test_no_rate_before_the_first_step_or_without_new_tokens():
    clock = Clock(5.0)
    window = ThroughputWindow(clock=clock)
    assert window.tokens_per_second(100) is None
    window.begin(1, 100)
    clock.now = 6.0
    assert window.tokens_per_second(100) is None
    assert window.eta_seconds(1, 10) is None
    clock.now = 7.0
    assert window.tokens_per_second(300) == 100.0
    assert window.eta_seconds(3, 10) == pytest.approx(7.0)
