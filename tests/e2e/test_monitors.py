"""The monitor translation the real-cluster Prometheus test relies on, checked on its own."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.e2e import monitors

CHART = ROOT / "charts" / "finetune-operator"


def _chart_monitors() -> list[dict]:
    out = subprocess.run(
        [require_tool("helm"), "template", "r", str(CHART), "--namespace", "ops",
         "--set", "podMonitor.enabled=true", "--set", "serviceMonitor.enabled=true",
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
    assert all(job["honor_labels"] is True for job in jobs)  # what the chart says today


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
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"] = [{"action": "drop"}]
    with pytest.raises(ValueError, match="relabelings"):
        monitors.scrape_config([monitor], tmp_path)
