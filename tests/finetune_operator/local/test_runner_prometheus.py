"""A real Prometheus server scrapes a local run's metrics endpoint.

Debian's `prometheus` runs on 127.0.0.1 with a 1 s scrape interval against the port that
`finetune run --local` prints; after the run, its HTTP query API must hold the throughput and
a falling training loss, labelled with the job's namespace, name and rank.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from finetune_operator.local.launcher import free_port_block

from tests.conftest import require_tool
from tests.support.local_run import finetune_command, write_job
from tests.support.prometheus import start_prometheus

JOB_NAME = "tiny-prom"
MAX_STEPS = 80
RUN_TIMEOUT_SECONDS = 300
_METRICS_LINE = re.compile(r"^metrics: http://127\.0\.0\.1:(\d+)/metrics")

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: finetune-local
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def _metrics_port(run: subprocess.Popen) -> int:
    for line in run.stdout:
        if match := _METRICS_LINE.match(line):
            return int(match.group(1))
    run.wait()
    pytest.fail("finetune run printed no metrics port")


def _start_prometheus(folder: Path, target_port: int) -> tuple[subprocess.Popen, str]:
    (folder / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(port=target_port))
    return start_prometheus(folder, f"127.0.0.1:{free_port_block(1)}")


def _samples(url: str, metric: str) -> tuple[dict, list[float]]:
    """Labels and every stored value (oldest first, NaN "not known yet" left out)."""
    query = urllib.parse.urlencode({"query": f"{metric}[15m]"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    results = body["data"]["result"]
    assert len(results) == 1, f"{metric}: expected one series, got {results}"
    values = [float(v) for _, v in results[0]["values"]]
    return results[0]["metric"], [v for v in values if not math.isnan(v)]


@pytest.mark.slow
@pytest.mark.distributed
def test_prometheus_scrapes_a_local_run(tmp_path: Path):
    require_tool("prometheus")  # before the run starts, not after
    job = write_job(tmp_path / "job", max_steps=MAX_STEPS, save_steps=MAX_STEPS,
                    name=JOB_NAME)
    run = subprocess.Popen(finetune_command(job, tmp_path / "out", "--no-sample"),
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    server = None
    try:
        port = _metrics_port(run)
        server, url = _start_prometheus(tmp_path, port)
        rest, _ = run.communicate(timeout=RUN_TIMEOUT_SECONDS)
        assert run.returncode == 0, rest

        labels, throughput = _samples(url, "finetune_train_tokens_per_second")
        assert labels["namespace"] == "local"
        assert labels["finetunejob"] == JOB_NAME
        assert labels["rank"] == "0"
        assert labels["job"] == "finetune-local"  # Prometheus's own label, not overwritten
        assert throughput and max(throughput) > 0

        _, losses = _samples(url, "finetune_train_loss")
        assert len(losses) >= 3, f"too few scrapes during training: {losses}"
        assert losses[-1] < losses[0], f"the loss did not fall: {losses}"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
