"""`finetune operator` as a process: kopf starts, liveness and metrics answer, jobs get
reconciled, and a bad setting is one clear line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

from tests.conftest import ROOT
from tests.support.ftj_samples import spec_dict
from tests.support.wiring import Kube, emulated_cluster, wait_for

FINETUNE = os.path.join(os.path.dirname(sys.executable), "finetune")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError:
        return None


def test_operator_command_serves_liveness_and_metrics_and_reconciles(tmp_path):
    metrics_port = _free_port()
    with emulated_cluster(tmp_path) as _:
        env = {**os.environ, "FINETUNE_RESYNC_INTERVAL": "1"}
        process = subprocess.Popen(
            [FINETUNE, "operator", "--all-namespaces", "--metrics-port", str(metrics_port)],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            health = wait_for("liveness", lambda: _get("http://127.0.0.1:8081/healthz"))
            assert health[0] == 200
            metrics = wait_for("metrics", lambda: _get(f"http://127.0.0.1:{metrics_port}/"))
            assert "finetune_operator_jobs" in metrics[1]
            kube = Kube()
            kube.apply("cli", "chat", spec_dict())
            wait_for("the Job", lambda: kube.job("cli", "chat-r0"))
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            output = process.communicate(timeout=30)[0].decode(errors="replace")
        assert "Traceback" not in output, output[-3000:]


def test_bad_setting_is_one_line_naming_the_variable():
    env = {**os.environ, "FINETUNE_PROGRESS_INTERVAL": "soon"}
    result = subprocess.run([FINETUNE, "operator"], env=env, capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == ("finetune operator: FINETUNE_PROGRESS_INTERVAL must be a "
                                     "number of seconds (got 'soon')")
