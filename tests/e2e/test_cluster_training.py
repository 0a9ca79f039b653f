"""examples/tiny-chat-k8s.yaml on the real cluster, driven with kubectl like a user drives it.

Two trainer pods (one CPU rank each) meet over the pod network, with torchrun's rendezvous at
rank 0's name under the headless Service; `kubectl get ftj` follows the run; the trained
model lands on the output volume; a real Prometheus scrapes the trainers and the operator as
the chart's PodMonitor and ServiceMonitor describe them. The job runs once (module fixture);
each test checks one of those promises.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.e2e import monitors
from tests.e2e.cluster import (
    CHART,
    CLUSTER_STATE,
    OPERATOR_NAMESPACE,
    RELEASE,
    Cluster,
    condition,
    wait_until,
)
from tests.e2e.conftest import job_phase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "ftj-e2e"
JOB = "tiny-chat"
JOB_FILE = ROOT / "examples" / "tiny-chat-k8s.yaml"
OUTPUT_FILE = ROOT / "examples" / "volumes" / "tiny-chat-output.yaml"
RUN_TIMEOUT = 1200


@dataclass
class Observed:
    """What the test saw while the job ran."""

    rows: list[dict[str, str]] = field(default_factory=list)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    concurrent_ips: set[str] = field(default_factory=set)
    resolved_rank0: str | None = None
    rank0_ip: str | None = None
    master_addr: str | None = None
    final_phase: str | None = None
    final_status: dict[str, Any] = field(default_factory=dict)
    volume: Path | None = None
    prometheus_url: str = ""


def _table_row(cluster: Cluster) -> dict[str, str] | None:
    out = cluster.kubectl("get", "ftj", JOB, "-n", NAMESPACE, check=False)
    lines = out.stdout.splitlines()
    if not out.ok or len(lines) < 2:
        return None
    header, values = lines[0], lines[1]
    # Columns are left-aligned under their header: cut at each header's start.
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    cells = [values[a:b].strip() for a, b in zip(starts, starts[1:] + [len(values)])]
    return dict(zip(names, cells))


def _output_volume(cluster: Cluster) -> Path:
    """A hostPath PersistentVolume for the example's claim: the node's disk, like a real PV."""
    path = CLUSTER_STATE / "volumes" / f"{NAMESPACE}-{JOB}-output"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.chown(path, 1000, 1000)  # the trainer image's user; hostPath ignores fsGroup
    claim = yaml.safe_load(OUTPUT_FILE.read_text())
    cluster.apply_text(json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"{NAMESPACE}-{JOB}-output"},
        "spec": {"capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                 "accessModes": claim["spec"]["accessModes"],
                 "persistentVolumeReclaimPolicy": "Retain",
                 "claimRef": {"namespace": NAMESPACE, "name": claim["metadata"]["name"]},
                 "hostPath": {"path": str(path), "type": "Directory"}}}))
    return path


def _start_prometheus(cluster: Cluster, folder: Path) -> tuple[subprocess.Popen,
                                                               monitors.Discovery, str]:
    rendered = cluster.helm(
        "template", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
        "-f", str(CHART / "ci" / "kind-values.yaml"),
        "--set", "podMonitor.enabled=true", "--set", "serviceMonitor.enabled=true",
        "--set", "podMonitor.interval=1s", "--set", "podMonitor.scrapeTimeout=1s",
        "--set", "serviceMonitor.interval=1s", "--set", "serviceMonitor.scrapeTimeout=1s",
        "--show-only", "templates/podmonitor.yaml",
        "--show-only", "templates/servicemonitor.yaml").stdout
    config = monitors.scrape_config([d for d in yaml.safe_load_all(rendered) if d], folder)
    assert {j["x-discovery"]["role"] for j in config["scrape_configs"]} == {"pod", "endpoints"}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(monitors.prometheus_config(config)))
    discovery = monitors.Discovery(config, lambda kind: cluster.get(kind, "-A")["items"])
    discovery.__enter__()
    port = 19090
    server = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=(folder / "prometheus.log").open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until("Prometheus to be ready", lambda: _http_ok(f"{url}/-/ready"), 60,
               on_timeout=lambda: (folder / "prometheus.log").read_text())
    return server, discovery, url


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def query(url: str, promql: str) -> list[dict[str, Any]]:
    address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(address, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def _trainer_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.get("pods", "-n", NAMESPACE, "-l", f"finetune.dev/job={JOB}")["items"]


def _resolve_in_pod(cluster: Cluster, pod: str, host: str) -> str | None:
    """The address `host` has inside trainer pod `pod`: its resolver is the cluster DNS."""
    out = cluster.kubectl("exec", "-n", NAMESPACE, pod, "-c", "trainer", "--", "python", "-c",
                          f"import socket; print(socket.gethostbyname({host!r}))",
                          check=False, timeout=60)
    return out.stdout.strip() if out.ok else None


def _watch(cluster: Cluster, seen: Observed) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if row := _table_row(cluster):
            seen.rows.append(row)
        pods = _trainer_pods(cluster)
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        for pod in pods:
            seen.pods[pod["metadata"]["name"]] = pod
        if len(running) == 2:
            seen.concurrent_ips = {p["status"]["podIP"] for p in running}
            if seen.resolved_rank0 is None:
                _check_dns(cluster, running, seen)
        phase = job_phase(cluster, NAMESPACE, JOB)
        if phase in ("Succeeded", "Failed"):
            seen.final_phase = phase
            seen.final_status = cluster.get("ftj", JOB, "-n", NAMESPACE).get("status", {})
            # The row above may predate the final phase: the table's last row is read now.
            if row := _table_row(cluster):
                seen.rows.append(row)
            return
        time.sleep(2)


def _check_dns(cluster: Cluster, running: list[dict[str, Any]], seen: Observed) -> None:
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
                for p in running}
    rank0, rank1 = by_index["0"], by_index["1"]
    env = {e["name"]: e.get("value") for e in rank1["spec"]["containers"][0]["env"]}
    seen.master_addr = env["MASTER_ADDR"]
    seen.rank0_ip = rank0["status"]["podIP"]
    seen.resolved_rank0 = _resolve_in_pod(cluster, rank1["metadata"]["name"],
                                          seen.master_addr)


@pytest.fixture(scope="module")
def run(cluster: Cluster, operator_release: str, tmp_path_factory) -> Iterator[Observed]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=300)
    cluster.kubectl("delete", "pv", f"{NAMESPACE}-{JOB}-output", "--ignore-not-found")
    cluster.restricted_namespace(NAMESPACE)
    seen = Observed(volume=_output_volume(cluster))
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(OUTPUT_FILE))
    server, discovery, seen.prometheus_url = _start_prometheus(
        cluster, tmp_path_factory.mktemp("prom"))
    try:
        cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(JOB_FILE))
        _watch(cluster, seen)
        if seen.final_phase != "Succeeded":
            print(cluster.diagnostics(NAMESPACE))
        time.sleep(3)  # a last scrape of the operator after the final status
        yield seen
    finally:
        discovery.__exit__()
        server.terminate()
        server.wait(timeout=30)


def test_job_succeeds_with_the_trained_model_on_the_output_volume(run: Observed) -> None:
    assert run.final_phase == "Succeeded"
    final = run.volume / "final"
    assert (final / "config.json").is_file()
    assert (final / "model.safetensors").stat().st_size > 100_000
    summary = json.loads((run.volume / "training_summary.json").read_text())
    assert summary, "empty training summary"


def test_two_pods_train_at_once_on_distinct_pod_addresses(run: Observed) -> None:
    assert len(run.pods) == 2, sorted(run.pods)
    assert len(run.concurrent_ips) == 2


def test_trainer_pods_are_admitted_as_restricted_and_carry_no_service_account_token(
        cluster: Cluster, run: Observed) -> None:
    labels = cluster.get("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert len(run.pods) == 2  # admitted there: the API server created both
    for name, pod in run.pods.items():
        assert pod["spec"]["automountServiceAccountToken"] is False, name
        projected = [v for v in pod["spec"].get("volumes", []) if any(
            "serviceAccountToken" in source for source in v.get("projected", {}).get(
                "sources", []))]
        assert projected == [], name
        mounts = [m["mountPath"] for c in pod["spec"]["containers"] + pod["spec"].get(
            "initContainers", []) for m in c.get("volumeMounts", [])]
        assert not [m for m in mounts if "serviceaccount" in m], (name, mounts)


def test_ranks_find_rank0_through_the_headless_service_dns_name(run: Observed) -> None:
    assert run.master_addr and run.master_addr.endswith(f".{NAMESPACE}.svc")
    assert run.master_addr.split(".")[1].startswith(JOB)  # the Service, not a pod IP
    assert run.resolved_rank0 == run.rank0_ip


def test_kubectl_get_shows_phase_progress_loss_and_tokens_per_second(run: Observed) -> None:
    running = [r for r in run.rows if r.get("PHASE") == "Running"
               and r.get("LOSS") not in (None, "", "<none>")]
    assert running, run.rows[-5:]
    row = running[-1]
    assert 0 < float(row["PROGRESS"]) <= 100
    assert float(row["LOSS"]) > 0
    assert float(row["TOKENS/S"]) > 0
    assert row["STRATEGY"] == "ddp" and row["GPUS"] == "2"
    # The same read of rank 0 gave the goodput (status.goodput): per rank, and a share.
    assert float(row["TOK/S/GPU"]) == pytest.approx(float(row["TOKENS/S"]) / 2, rel=0.01)
    assert 0 < float(row["GOODPUT"]) <= 1
    assert run.rows[-1]["PHASE"] == "Succeeded"


def test_the_largest_ranks_peak_memory_is_held_against_the_plan(run: Observed) -> None:
    status = run.final_status
    memory = status["memory"]  # read with the progress that gave the LOSS column
    assert memory["ranksRead"] == 2  # both pods' rank, each on its own metrics port
    assert memory["plannedBytes"] == status["plan"]["memoryPerGpu"]["total"]
    assert memory["largestRank"] in (0, 1) and memory["measuredBytes"] > 0
    print(f"planned {memory['plannedBytes']} bytes a rank, measured {memory['measuredBytes']} "
          f"(ratio {memory['ratio']})")
    drift = condition({"status": status}, "PlanDrift")
    outside = not 0.7 <= memory["measuredBytes"] / memory["plannedBytes"] <= 1.1
    assert (drift is not None and drift["status"] == "True") == outside, drift


def test_prometheus_scrapes_trainers_and_operator_as_the_monitors_describe(
        run: Observed) -> None:
    url = run.prometheus_url
    selector = f'finetunejob="{JOB}",namespace="{NAMESPACE}"'
    rate = query(url, f"max_over_time(finetune_train_tokens_per_second{{{selector}}}[30m])")
    assert rate and float(rate[0]["value"][1]) > 0
    loss = query(url, f"max_over_time(finetune_train_loss{{{selector}}}[30m])")
    last = query(url, f"last_over_time(finetune_train_loss{{{selector}}}[30m])")
    assert loss and last and float(last[0]["value"][1]) < float(loss[0]["value"][1])
    # Every rank is scraped (the PodMonitor has an endpoint per local rank): one series each.
    memory = query(url, "max by (rank) (max_over_time("
                        f"finetune_train_peak_memory_bytes{{{selector}}}[30m]))")
    assert {r["metric"]["rank"] for r in memory} == {"0", "1"}, memory
    # The trainer pods' scrape job is the PodMonitor's; the operator's is the ServiceMonitor's.
    jobs = {r["metric"]["job"] for r in query(url, "max_over_time(up[30m]) == 1")}
    assert any(j.startswith("podMonitor/") for j in jobs), jobs
    assert any(j.startswith("serviceMonitor/") for j in jobs), jobs
    operator = query(url, f"max_over_time(finetune_job_loss{{{selector}}}[30m])")
    assert operator and float(operator[0]["value"][1]) > 0


def test_deleting_the_job_lets_the_garbage_collector_remove_its_children(
        cluster: Cluster, run: Observed) -> None:
    """The children carry ownerReferences: the real garbage collector removes them."""
    selector = f"finetune.dev/job={JOB}"
    kinds = "configmaps,services,jobs.batch,pods"
    assert cluster.get(kinds, "-n", NAMESPACE, "-l", selector)["items"]
    cluster.kubectl("delete", "ftj", JOB, "-n", NAMESPACE, "--wait=true", timeout=120)
    wait_until("the children to be garbage-collected",
               lambda: not cluster.get(kinds, "-n", NAMESPACE, "-l", selector)["items"], 120,
               on_timeout=lambda: cluster.diagnostics(NAMESPACE))
