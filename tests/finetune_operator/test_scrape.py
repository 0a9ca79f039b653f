"""Progress is read from the trainer's real Prometheus exposition format."""

from __future__ import annotations

import math

from finetune_contract.progress_gauges import PROGRESS_GAUGES
from finetune_operator.scrape import parse_progress
from prometheus_client import CollectorRegistry, Gauge, generate_latest


def exposition(values: dict[str, float]) -> str:
    registry = CollectorRegistry()
    labels = {"namespace": "ml", "finetunejob": "demo", "rank": "0"}
    for name, value in values.items():
        gauge = Gauge(name, name, list(labels), registry=registry)
        gauge.labels(**labels).set(value)
    return generate_latest(registry).decode()


def test_parses_every_progress_field():
    text = exposition({
        "finetune_train_step": 30,
        "finetune_train_total_steps": 120,
        "finetune_train_epoch": 0.75,
        "finetune_train_loss": 1.25,
        "finetune_eval_loss": 1.5,
        "finetune_train_tokens_per_second": 5000,
        "finetune_train_eta_seconds": 90,
        "finetune_train_resumed_step": 20,
    })
    p = parse_progress(text)
    assert (p.step, p.total_steps, p.percent) == (30, 120, 25.0)
    assert (p.epoch, p.loss, p.eval_loss) == (0.75, 1.25, 1.5)
    assert (p.tokens_per_second, p.eta_seconds) == (5000, 90)
    assert p.resumed_from_step == 20
    assert p.stale is False and p.updated_at is not None


def test_every_progress_gauge_of_the_contract_fills_its_field():
    p = parse_progress(exposition(dict.fromkeys(PROGRESS_GAUGES, 3)))
    for gauge, field in PROGRESS_GAUGES.items():
        assert getattr(p, field) is not None, f"{gauge} is not parsed into Progress.{field}"


def test_values_are_rounded_for_kubectl_get():
    """`kubectl get ftj` prints status numbers as stored: 2.1945, not 2.194502830505371."""
    p = parse_progress(exposition({
        "finetune_train_loss": 2.194502830505371,
        "finetune_eval_loss": 2.000049,
        "finetune_train_tokens_per_second": 3563.107725666723,
        "finetune_train_epoch": 1.3333333,
        "finetune_train_eta_seconds": 12.6,
    }))
    assert (p.loss, p.eval_loss, p.tokens_per_second) == (2.1945, 2.0, 3563)
    assert (p.epoch, p.eta_seconds) == (1.33, 13)


def test_missing_and_nan_metrics_stay_unset():
    p = parse_progress(exposition({"finetune_train_step": 3, "finetune_eval_loss": math.nan}))
    assert p.step == 3
    assert p.eval_loss is None and p.total_steps is None and p.percent is None


def test_unrelated_metrics_are_ignored():
    p = parse_progress(exposition({"process_cpu_seconds_total_x": 4}))
    assert p.step is None and p.loss is None


def test_an_answer_that_is_not_prometheus_text_is_unavailable():
    import http.server
    import threading

    import pytest
    from finetune_operator.scrape import ProgressUnavailable, fetch_progress

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>502 Bad Gateway</html>\n{{{"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ProgressUnavailable):
            fetch_progress(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
