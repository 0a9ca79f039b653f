"""The monitor translation the real-cluster Prometheus test relies on, checked on its own."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.e2e import monitors

CHART = ROOT / "charts" / "finetune-operator"


def _chart_monitors(*settings: str) -> list[dict]:
    out = subprocess.run(
        [require_tool("helm"), "template", "r", str(CHART), "--namespace", "ops",
         "--set", "podMonitor.enabled=true", "--set", "serviceMonitor.enabled=true",
         *[arg for setting in settings for arg in ("--set", setting)],
         "--show-only", "templates/podmonitor.yaml",
         "--show-only", "templates/servicemonitor.yaml"],
        check=True, capture_output=True, text=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _keeps(job: dict, labels: dict[str, str]) -> bool:
    """Prometheus' `keep` rules applied to one target's labels."""
    for rule in job["relabel_configs"]:
        if rule.get("action") == "keep":
            value = ";".join(labels.get(name, "") for name in rule["source_labels"])
            if not re.fullmatch(rule["regex"], value):
                return False
    return True


def _pod(name: str, labels: dict[str, str], port: str) -> dict:
    return {"metadata": {"name": name, "namespace": "team", "labels": labels},
            "status": {"podIP": "10.244.0.9", "phase": "Running"},
            "spec": {"containers": [{"name": "trainer", "ports": [
                {"name": port, "containerPort": 9400}]}]}}


def test_the_chart_pod_monitor_keeps_only_trainer_pods_metrics_ports(tmp_path: Path) -> None:
    config = monitors.scrape_config(_chart_monitors(), tmp_path)
    jobs = [j for j in config["scrape_configs"] if j["x-discovery"]["role"] == "pod"]
    trainer = {"app.kubernetes.io/name": "finetune-trainer", "finetune.dev/job": "a"}
    pods = [_pod("kept", trainer, "metrics"), _pod("kept-rank-3", trainer, "metrics-3"),
            _pod("other-port", trainer, "rendezvous"),
            _pod("no-job-label", {"app.kubernetes.io/name": "finetune-trainer"}, "metrics"),
            _pod("other-app", {"app.kubernetes.io/name": "x", "finetune.dev/job": "a"},
                 "metrics")]
    kept = [t["labels"]["__meta_kubernetes_pod_name"] for job in jobs
            for t in monitors.pod_targets(pods) if _keeps(job, t["labels"])]
    assert kept == ["kept", "kept-rank-3"]
    assert all(job["honor_labels"] is False for job in jobs)  # the pods run tenant code


def test_every_local_rank_of_a_rendered_trainer_pod_is_scraped_once(tmp_path: Path) -> None:
    """A pod of 2 ranks, as the operator renders it: each rank's port is a target of exactly
    one of the PodMonitor's jobs (one per endpoint), the rendezvous port of none."""
    from finetune_operator import render
    from finetune_operator.settings import Settings

    from tests.support.ftj_samples import OWNER, plan, spec

    template = render.batch_job(OWNER, spec(), plan(nodes=2, gpus_per_node=2), Settings(),
                                0)["spec"]["template"]
    pod = {"metadata": {**template["metadata"], "name": "chat-r0-0-x", "namespace": "team"},
           "status": {"podIP": "10.244.0.9", "phase": "Running"}, "spec": template["spec"]}
    jobs = [j for j in monitors.scrape_config(_chart_monitors(), tmp_path)["scrape_configs"]
            if j["x-discovery"]["role"] == "pod"]
    assert len(jobs) == 8  # ranksPerPod
    scraped = [t["targets"][0] for job in jobs for t in monitors.pod_targets([pod])
               if _keeps(job, t["labels"])]
    assert scraped == ["10.244.0.9:9400", "10.244.0.9:9401"]


def test_the_chart_service_monitor_watches_the_release_namespace(tmp_path: Path) -> None:
    config = monitors.scrape_config(_chart_monitors(), tmp_path)
    (job,) = [j for j in config["scrape_configs"] if j["x-discovery"]["role"] == "endpoints"]
    assert job["x-discovery"]["namespaces"] == {"names": ["ops"]}
    assert "x-discovery" not in monitors.prometheus_config(config)["scrape_configs"][0]


def test_a_monitor_field_that_is_not_translated_is_refused(tmp_path: Path) -> None:
    monitor = _chart_monitors()[0]
    monitor["spec"]["podMetricsEndpoints"][0]["tlsConfig"] = {"insecureSkipVerify": True}
    with pytest.raises(ValueError, match="tlsConfig"):
        monitors.scrape_config([monitor], tmp_path)


HOSTILE_SAMPLE = b'finetune_train_loss{namespace="victim",finetunejob="theirs",rank="0"} 1.5\n'


class _Exporter(http.server.BaseHTTPRequestHandler):
    """A tenant's training pod that claims another namespace's and job's labels."""

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(HOSTILE_SAMPLE)

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_training_pod_cannot_relabel_its_namespace_or_job(tmp_path: Path) -> None:
    """Real Prometheus, with the chart's PodMonitor translated, scrapes a pod of namespace
    tenant-a and job mine whose samples claim namespace victim and job theirs: what is stored
    names the pod's real namespace and job, and nothing of the claim."""
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    labels = {"app.kubernetes.io/name": "finetune-trainer", "finetune.dev/job": "mine"}
    pod = {"metadata": {"name": "mine-0", "namespace": "tenant-a", "labels": labels},
           "status": {"podIP": "127.0.0.1", "phase": "Running"},
           "spec": {"containers": [{"name": "trainer", "ports": [
               {"name": "metrics", "containerPort": exporter.server_address[1]}]}]}}
    config = monitors.scrape_config(
        _chart_monitors("podMonitor.interval=1s", "podMonitor.scrapeTimeout=1s"), tmp_path)
    for job in config["scrape_configs"]:
        role = job["x-discovery"]["role"]
        targets = monitors.pod_targets([pod]) if role == "pod" else []
        Path(job["x-discovery"]["file"]).write_text(json.dumps(targets))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(monitors.prometheus_config(config)))
    url = f"http://127.0.0.1:{_free_port()}"
    server = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={url.removeprefix('http://')}", "--log.level=warn"],
        stdout=(tmp_path / "prometheus.log").open("w"), stderr=subprocess.STDOUT)
    try:
        series = _wait_for_series(url, "finetune_train_loss", tmp_path / "prometheus.log")
    finally:
        server.terminate()
        server.wait(timeout=30)
        exporter.shutdown()
    assert len(series) == 1
    stored = series[0]["metric"]
    assert stored["namespace"] == "tenant-a" and stored["finetunejob"] == "mine"
    assert stored["rank"] == "0" and stored["pod"] == "mine-0"
    assert not [k for k in stored if k.startswith("exported_")]
    assert "victim" not in stored.values() and "theirs" not in stored.values()


def _wait_for_series(url: str, name: str, log: Path, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': name})}"
            with urllib.request.urlopen(address, timeout=5) as response:
                result = json.load(response)["data"]["result"]
            if result:
                return result
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"Prometheus stored no {name} in {timeout} s:\n{log.read_text()}")
