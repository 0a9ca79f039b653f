"""Trainer callbacks (callbacks.py): where a run's wall time goes (TimeAccounting), and the
rate each rank reports (MetricsCallback)."""

from __future__ import annotations

from types import SimpleNamespace

from finetune_trainer.callbacks import MetricsCallback, TimeAccounting
from finetune_trainer.metrics import RankMetrics
from prometheus_client import generate_latest


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _gauges(metrics: RankMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("finetune_train_") and "_seconds" in line.split("{")[0]
            and "eta" not in line}


def test_startup_steps_evaluations_and_saves_are_timed_apart():
    clock, metrics = Clock(100.0), RankMetrics("ns", "job", 0)
    times = TimeAccounting(metrics, started=90.0, clock=clock)
    for begin, end in ((100.0, 102.0), (103.0, 105.0)):  # two steps of 2 s, 1 s apart
        clock.now = begin
        times.on_step_begin(None, None, None)
        clock.now = end
        times.on_step_end(None, None, None)
    clock.now = 108.0  # an evaluation of 3 s after the second step
    times.on_evaluate(None, None, None)
    clock.now = 112.0  # then a save of 4 s
    times.on_save(None, None, None)
    assert times.seconds == {"startup": 10.0, "steps": 4.0, "eval": 3.0, "checkpoint": 4.0}
    assert _gauges(metrics) == {
        "finetune_train_run_seconds": 22.0, "finetune_train_startup_seconds": 10.0,
        "finetune_train_step_seconds_total": 4.0, "finetune_train_eval_seconds_total": 3.0,
        "finetune_train_checkpoint_seconds_total": 4.0}
    clock.now = 130.0
    report = times.report()
    assert report["wallSeconds"] == 40.0 and report["goodput"] == 0.1


def _tokens_per_second(metrics: RankMetrics) -> float:
    text = generate_latest(metrics.registry).decode()
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("finetune_train_tokens_per_second{"))


def test_ranks_that_entered_training_apart_report_the_same_rate():
    """Rank 1 enters training 30 s before rank 0 and waits for it in the first step's
    all-reduce; from there both step together. The run logs once, at its last step: both
    must report the job's rate, 2000 tokens a step, a step every 2 s."""
    rates = []
    for entered in (100.0, 70.0):
        clock, metrics = Clock(entered), RankMetrics("ns", "job", 0)
        callback = MetricsCallback(metrics, flops_per_token=1.0, peak_flops_all_ranks=None)
        callback.window.clock = clock
        state = SimpleNamespace(global_step=0, max_steps=3, epoch=0.0, num_input_tokens_seen=0)
        callback.on_train_begin(None, state, None)
        for step, ends in ((1, 110.0), (2, 112.0), (3, 114.0)):  # 2000 tokens a step
            clock.now, state.global_step, state.num_input_tokens_seen = ends, step, 2000 * step
            callback.on_step_end(None, state, None)
        callback.on_log(None, state, None, logs={"loss": 1.0})
        rates.append(_tokens_per_second(metrics))
    assert rates == [1000.0, 1000.0]
