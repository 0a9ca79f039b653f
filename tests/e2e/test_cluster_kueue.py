"""Kueue on the real cluster (issue 21): a higher-priority job preempts a running one, which
checkpoints, is suspended, and later resumes where it was.

Kueue v0.17 runs as a process beside the control plane (scripts/cluster/kueue.sh, which the
module fixture starts and stops). One ClusterQueue has quota for exactly one of the test's
one-pod jobs, with preemption withinClusterQueue: LowerPriority. The low-priority job trains
past its first checkpoint; then the high-priority job is submitted. Kueue evicts the low one
by suspending its Job: the Job controller deletes the pod, whose trainer writes an emergency
checkpoint on the SIGTERM and exits 143. The high job runs to its end, Kueue admits the low
one again, and it resumes from that checkpoint: the same Job, no restart, no steps redone.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from finetune_contract.layout import METRICS_PORT
from finetune_operator.scrape import ProgressUnavailable, fetch_progress

from tests.conftest import ROOT, require_tool
from tests.e2e.cluster import CLUSTER_STATE, Cluster, condition, wait_until
from tests.e2e.conftest import job_phase, wait_for_phase
from tests.e2e.jobs import delete_volume, newest_complete, one_pod_job, running_pod, summary, volume

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "ftj-kueue"
STEPS, SAVE = 40, 10
RUN_TIMEOUT = 1200
KUEUE_SH = ROOT / "scripts" / "cluster" / "kueue.sh"
KUEUE_LOG = CLUSTER_STATE / "logs" / "kueue.log"
FLAVOR, CLUSTER_QUEUE, QUEUE = "ftj-kueue-default", "ftj-kueue", "training"
# What each job's pod requests (the example's figures, set here so that the quota below
# follows them), and a quota that admits one such pod and not two.
CPU, MEMORY = "500m", "3Gi"
QUOTA = {"cpu": "750m", "memory": "4608Mi"}
# Kueue takes a workload's priority from its pods' PriorityClass. preemptionPolicy Never:
# the scheduler never preempts other tests' pods for these; preempting is Kueue's part.
PRIORITY = {"low": ("ftj-kueue-low", 100), "high": ("ftj-kueue-high", 1000)}
KUEUE_API = "kueue.x-k8s.io/v1beta2"


def _kueue_objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
        {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": CLUSTER_QUEUE},
         "spec": {"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": NAMESPACE}},
                  "queueingStrategy": "BestEffortFIFO",
                  "preemption": {"withinClusterQueue": "LowerPriority"},
                  "resourceGroups": [{
                      "coveredResources": sorted(QUOTA),
                      "flavors": [{"name": FLAVOR, "resources": [
                          {"name": r, "nominalQuota": q} for r, q in sorted(QUOTA.items())]}],
                  }]}},
        *({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
           "metadata": {"name": name}, "value": value, "preemptionPolicy": "Never",
           "description": "test_cluster_kueue.py"} for name, value in PRIORITY.values()),
    ]


def _kueue_sh(command: str) -> subprocess.CompletedProcess:
    # The first `up` on a machine builds Kueue from its Go module (minutes).
    return subprocess.run(["bash", str(KUEUE_SH), command], capture_output=True, text=True,
                          timeout=3600, check=False)


def _diagnostics(cluster: Cluster) -> str:
    kueue = cluster.kubectl("get", "clusterqueues,workloads", "-A", "-o", "yaml", check=False)
    log = KUEUE_LOG.read_text().splitlines()[-40:] if KUEUE_LOG.exists() else []
    return (cluster.diagnostics(NAMESPACE) + f"\n$ kubectl get clusterqueues,workloads -A\n"
            f"{kueue.stdout}{kueue.stderr}\n$ tail {KUEUE_LOG}\n" + "\n".join(log))


@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[None]:
    """Kueue running, with a flavor, the one-job ClusterQueue, the LocalQueue QUEUE in a fresh
    NAMESPACE, and the two PriorityClasses; all gone again, and Kueue stopped, at the end."""
    for tool in ("go", "openssl", "curl"):  # kueue.sh builds Kueue, makes its certificates
        require_tool(tool)
    started = _kueue_sh("up")
    print(started.stderr[-2000:])
    assert started.returncode == 0, started.stderr[-4000:] + started.stdout[-2000:]
    try:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                        timeout=300)
        cluster.restricted_namespace(NAMESPACE)
        cluster.apply_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            *_kueue_objects(),
            {"apiVersion": KUEUE_API, "kind": "LocalQueue",
             "metadata": {"name": QUEUE, "namespace": NAMESPACE},
             "spec": {"clusterQueue": CLUSTER_QUEUE}}]}))
        wait_until("the ClusterQueue to be active", lambda: (condition(
            cluster.get("clusterqueue", CLUSTER_QUEUE), "Active") or {}).get("status") == "True",
            60, on_timeout=lambda: _diagnostics(cluster))
        yield
    finally:
        # While Kueue runs: it removes its finalizers from the Workloads and the ClusterQueue.
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                        timeout=300, check=False)
        for obj in reversed(_kueue_objects()):
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"],
                            "--ignore-not-found", "--wait=true", timeout=120, check=False)
        stopped = _kueue_sh("down")
        assert stopped.returncode == 0, stopped.stderr


def _job(name: str, priority: str) -> dict[str, Any]:
    job = one_pod_job(NAMESPACE, name, STEPS, SAVE)
    job["spec"]["resources"].update(cpu=CPU, memory=MEMORY, queueName=QUEUE,
                                    priorityClassName=PRIORITY[priority][0])
    # The operator's deadline counts from the first start, the wait for Kueue included.
    job["spec"]["runPolicy"].pop("activeDeadlineSeconds", None)
    return job


def _batch_jobs(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return cluster.get("jobs", "-n", NAMESPACE, "-l", f"finetune.dev/job={name}")["items"]


def _suspended(cluster: Cluster, name: str) -> bool:
    jobs = _batch_jobs(cluster, name)
    return bool(jobs) and all(j["spec"].get("suspend") for j in jobs)


def _step_training_past_a_checkpoint(cluster: Cluster, name: str, path: Path) -> int | None:
    """Rank 0's step, read from its metrics endpoint, once the job trains past a complete
    checkpoint; None before."""
    pod = running_pod(cluster, NAMESPACE, name)
    complete = newest_complete(path)
    if pod is None or complete is None or not pod["status"].get("podIP"):
        return None
    try:
        progress = fetch_progress(f"http://{pod['status']['podIP']}:{METRICS_PORT}/metrics")
    except ProgressUnavailable:
        return None
    return progress.step if progress.step is not None and progress.step > complete else None


def _held_by_kueue(cluster: Cluster, name: str) -> dict[str, Any] | None:
    """The FineTuneJob once it shows that Kueue suspended it."""
    ftj = cluster.get("ftj", name, "-n", NAMESPACE)
    held = condition(ftj, "Suspended")
    if ftj["status"].get("phase") == "Pending" and held and held["status"] == "True":
        return ftj
    return None


def _watch_pods(cluster: Cluster, name: str, out: IO[str]) -> subprocess.Popen:
    """Every change to the job's pods, as kubectl's watch prints them (JSON objects)."""
    return subprocess.Popen(
        [cluster.kubectl_bin, "--kubeconfig", str(cluster.kubeconfig), "get", "pods", "-n",
         NAMESPACE, "-l", f"finetune.dev/job={name}", "--watch", "-o", "json"],
        stdout=out, stderr=subprocess.DEVNULL, text=True)


def _objects(text: str) -> list[dict[str, Any]]:
    decoder, objs, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(text, at)) < len(text):
        obj, at = decoder.raw_decode(text, at)
        objs.append(obj)
    return objs


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _trainer_exits(pods: list[dict[str, Any]]) -> list[tuple[int, bool]]:
    """(exit code, being deleted) of each terminated trainer container the watch saw."""
    seen = set()
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []):
            done = status.get("state", {}).get("terminated")
            if status["name"] == "trainer" and done:
                seen.add((pod["metadata"]["uid"], done["exitCode"],
                          bool(pod["metadata"].get("deletionTimestamp"))))
    return sorted((code, deleting) for _, code, deleting in seen)


@pytest.fixture(scope="module")
def preemption(cluster: Cluster, operator_release: str, kueue: None,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    volumes = {name: volume(cluster, NAMESPACE, name) for name in ("low", "high")}
    out: dict[str, Any] = {}
    started = time.monotonic()
    cluster.apply_text(yaml.safe_dump(_job("low", "low")))
    out["step_before_high"] = wait_until(
        "the low job to train past a complete checkpoint",
        lambda: _step_training_past_a_checkpoint(cluster, "low", volumes["low"]), RUN_TIMEOUT,
        interval=0.5, on_timeout=lambda: _diagnostics(cluster))
    watch_file = tmp_path_factory.mktemp("kueue") / "low-pods.json"
    with watch_file.open("w") as sink:
        watch = _watch_pods(cluster, "low", sink)
        try:
            time.sleep(1)  # the watch's first listing
            cluster.apply_text(yaml.safe_dump(_job("high", "high")))
            submitted = time.monotonic()
            wait_until("Kueue to suspend the low job's Job", lambda: _suspended(cluster, "low"),
                       300, interval=0.5, on_timeout=lambda: _diagnostics(cluster))
            out["suspended_after_s"] = time.monotonic() - submitted
            out["held"] = wait_until("the low FineTuneJob to show that Kueue holds it",
                                     lambda: _held_by_kueue(cluster, "low"), 120,
                                     on_timeout=lambda: _diagnostics(cluster))
            wait_until("the low job's pod to be gone",
                       lambda: not cluster.get("pods", "-n", NAMESPACE, "-l",
                                               "finetune.dev/job=low")["items"], 300,
                       on_timeout=lambda: _diagnostics(cluster))
        finally:
            watch.terminate()
            watch.wait(30)
    out["low_pods_seen"] = _objects(watch_file.read_text())
    out["checkpoint_at_stop"] = newest_complete(volumes["low"])
    out["workloads_while_held"] = cluster.get("workloads", "-n", NAMESPACE)["items"]
    wait_for_phase(cluster, NAMESPACE, "high", {"Running", "Succeeded", "Failed"}, RUN_TIMEOUT)
    out["low_suspended_while_high_ran"] = _suspended(cluster, "low")
    out["low_phase_while_high_ran"] = job_phase(cluster, NAMESPACE, "low")
    for name in ("high", "low"):
        wait_for_phase(cluster, NAMESPACE, name, {"Succeeded", "Failed"}, RUN_TIMEOUT)
        out[name] = {"ftj": cluster.get("ftj", name, "-n", NAMESPACE),
                     "jobs": _batch_jobs(cluster, name), "summary": summary(volumes[name])}
    print(f"low job: step {out['step_before_high']} when the high job was submitted, Job "
          f"suspended {out['suspended_after_s']:.1f} s later, newest complete checkpoint "
          f"{out['checkpoint_at_stop']} once its pod was gone; resumed from "
          f"{out['low']['summary'].get('resumedFrom')}; the whole flow took "
          f"{time.monotonic() - started:.0f} s")
    yield out
    # The claims first: a PersistentVolume's deletion waits for its claim to go.
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300, check=False)
    for name in volumes:
        delete_volume(cluster, NAMESPACE, name)


def test_kueue_preempts_the_running_low_priority_job_for_the_high_one(
        cluster: Cluster, preemption: dict[str, Any]) -> None:
    (workload,) = [w for w in preemption["workloads_while_held"]
                   if w["metadata"]["ownerReferences"][0]["name"] == "low-r0"]
    evicted, preempted = condition(workload, "Evicted"), condition(workload, "Preempted")
    assert evicted and evicted["status"] == "True" and evicted["reason"] == "Preempted", \
        workload["status"]
    assert preempted and preempted["reason"] == "InClusterQueue", workload["status"]
    # The quota holds one job: the low one stays suspended while the high one runs.
    assert preemption["low_suspended_while_high_ran"]
    assert preemption["low_phase_while_high_ran"] == "Pending"


def test_the_held_job_says_kueue_suspended_it(preemption: dict[str, Any]) -> None:
    status = preemption["held"]["status"]
    assert status["phase"] == "Pending"
    assert "suspended by Kueue" in status["message"]
    assert f"waits for Kueue to admit the gang again (queue {QUEUE})" in status["message"]
    assert condition(preemption["held"], "Suspended")["reason"] == "SuspendedByKueue"
    assert condition(preemption["held"], "Running")["status"] == "False"


def test_the_preempted_trainer_checkpoints_and_exits_143(preemption: dict[str, Any]) -> None:
    # Its pod was being deleted (the Job controller, for the suspension) when it ended.
    assert _trainer_exits(preemption["low_pods_seen"]) == [(143, True)]
    assert preemption["checkpoint_at_stop"] >= preemption["step_before_high"]


def test_the_high_priority_job_runs_to_its_end(preemption: dict[str, Any]) -> None:
    high = preemption["high"]
    assert high["ftj"]["status"]["phase"] == "Succeeded", high["ftj"]["status"]
    assert high["summary"]["steps"] == STEPS
    assert high["summary"].get("resumedFrom") is None


def test_the_preempted_job_resumes_where_it_was_and_succeeds(
        preemption: dict[str, Any]) -> None:
    low = preemption["low"]
    status, summary_ = low["ftj"]["status"], low["summary"]
    assert status["phase"] == "Succeeded", status
    assert summary_["steps"] == STEPS
    # From the emergency checkpoint: at least the step rank 0 served before the high job came.
    resumed = str(summary_.get("resumedFrom", ""))
    assert resumed.rsplit("/", 1)[-1] == f"checkpoint-{preemption['checkpoint_at_stop']}", \
        resumed
    assert preemption["checkpoint_at_stop"] >= preemption["step_before_high"]
    # Nothing trained twice, as far as the progress timer (every 5 s here) saw: a run of a few
    # seconds on each side of the preemption may give it no read of one of them, or of both.
    lost = status.get("lostWork") or {"stepsRedone": 0, "resumptions": 0}
    assert lost["stepsRedone"] == 0, lost
    assert lost["resumptions"] <= 1, lost


def test_a_preemption_is_neither_a_restart_nor_a_failure(preemption: dict[str, Any]) -> None:
    low = preemption["low"]
    assert low["ftj"]["status"].get("restarts", 0) == 0
    # The same Job, admitted again; the pod its suspension deleted counts as no failure.
    (job,) = low["jobs"]
    assert job["metadata"]["name"] == low["ftj"]["status"]["activeJob"]
    assert not job["status"].get("failed"), job["status"]
    assert condition(job, "Failed") is None


def _gone(cluster: Cluster, name: str) -> bool:
    """No FineTuneJob `name`, and none of its children or its Kueue Workload, remain."""
    left = [cluster.kubectl("get", kind, "-n", NAMESPACE, "-l", f"finetune.dev/job={name}",
                            "-o", "name", check=False).stdout.strip()
            for kind in ("jobs", "services", "configmaps", "pods")]
    workloads = [w for w in cluster.get("workloads", "-n", NAMESPACE)["items"]
                 if w["metadata"].get("ownerReferences", [{}])[0].get("name", "").startswith(
                     f"{name}-r")]
    found = cluster.kubectl("get", "ftj", name, "-n", NAMESPACE, check=False)
    return not any(left) and not workloads and not found.ok


@pytest.fixture(scope="module")
def queued(cluster: Cluster, operator_release: str, kueue: None,
           preemption: dict[str, Any]) -> dict[str, Any]:
    """After the preemption flow: `first` holds the quota, `second` waits behind it; then
    `second` is deleted while it waits."""
    volume(cluster, NAMESPACE, "first")
    cluster.apply_text(yaml.safe_dump(_job("first", "low")))
    wait_until("first to be admitted and run",
               lambda: running_pod(cluster, NAMESPACE, "first"), RUN_TIMEOUT,
               on_timeout=lambda: _diagnostics(cluster))
    second = _job("second", "low")
    second["spec"]["output"] = {}  # it never runs
    cluster.apply_text(yaml.safe_dump(second))
    waiting = wait_until("second to wait for Kueue", lambda: (
        ftj if (ftj := cluster.get("ftj", "second", "-n", NAMESPACE)).get("status", {}).get(
            "activeJob") and _suspended(cluster, "second") else None), 120,
        on_timeout=lambda: _diagnostics(cluster))
    out = {"waiting": waiting, "pods_while_waiting": cluster.get(
        "pods", "-n", NAMESPACE, "-l", "finetune.dev/job=second")["items"]}
    cluster.kubectl("delete", "ftj", "second", "-n", NAMESPACE, "--wait=true", timeout=120)
    out["gone"] = wait_until("second and everything of it to be gone",
                             lambda: _gone(cluster, "second"), 120,
                             on_timeout=lambda: _diagnostics(cluster))
    out["first_phase"] = job_phase(cluster, NAMESPACE, "first")
    cluster.kubectl("delete", "ftj", "first", "-n", NAMESPACE, "--wait=true", timeout=120)
    # The claim first: a PersistentVolume's deletion waits for its claim to go.
    cluster.kubectl("delete", "pvc", "first-output", "-n", NAMESPACE, "--wait=true",
                    timeout=120)
    delete_volume(cluster, NAMESPACE, "first")
    return out


def test_a_job_behind_a_full_queue_waits_suspended_with_kueues_reason(queued) -> None:
    status = queued["waiting"]["status"]
    assert status["phase"] == "Pending"
    assert f"waits for Kueue to admit the gang (queue {QUEUE})" in status["message"]
    assert queued["pods_while_waiting"] == []  # not one pod of the gang before admission
    assert queued["first_phase"] in ("Running", "Succeeded")  # the quota's holder went on


def test_deleting_a_waiting_job_leaves_nothing_behind(queued) -> None:
    assert queued["gone"] is True
