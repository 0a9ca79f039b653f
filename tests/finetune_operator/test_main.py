"""kopf runs the operator against kmock's emulated API server on loopback.

One emulator and one operator serve the module; every test works in its own namespace.
The test plays the cluster's controllers: it creates pods and patches Job status.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from finetune_operator import main
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import MetricsHandler
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ftj_samples import spec_dict
from tests.support.wiring import Kube, emulated_cluster, running_operator, wait_for

TWO_NODES = {"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2, "strategy": "ddp"}


def job_spec(**overrides: Any) -> dict[str, Any]:
    return spec_dict(**{"resources": TWO_NODES, **overrides})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Any]:
    with emulated_cluster(tmp_path_factory.mktemp("kube")) as emulator, running_operator():
        yield emulator


@pytest.fixture
def kube(cluster) -> Kube:
    return Kube()


@pytest.fixture
def ns(request, kube) -> Iterator[str]:
    """A namespace per test; its FineTuneJobs are deleted afterwards so the operator stops
    reconciling them."""
    namespace = "t-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    yield namespace
    kube.delete_all(namespace)


def children_of(kube: Kube, ns: str, name: str, attempt: int = 0):
    return (kube.config_map(ns, f"{name}-trainer"), kube.service(ns, name),
            kube.job(ns, f"{name}-r{attempt}"))


def events(cluster, ns: str) -> list[dict[str, Any]]:
    return cluster.read(lambda emulator: [
        dict(obj) for (res, namespace, _), obj in emulator.objects.items()
        if res.plural == "events" and namespace == ns and not obj.deleted])


def operator_metrics() -> dict[tuple[str, tuple], float]:
    url = f"http://127.0.0.1:{main.SETTINGS.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# --------------------------------------------------------------------------- tests


def test_apply_creates_children_and_writes_the_plan(kube, cluster, ns):
    kube.apply(ns, "chat", job_spec())
    status = kube.wait_phase(ns, "chat", "Pending")
    cm, svc, job = wait_for("children", lambda: all(children_of(kube, ns, "chat"))
                            and children_of(kube, ns, "chat"))
    uid = kube.ftj(ns, "chat")["metadata"]["uid"]
    for child in (cm, svc, job):
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("FineTuneJob", "chat", uid)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 2
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.test/finetune-trainer:test"  # FINETUNE_DEFAULT_IMAGE
    plan = status["plan"]
    assert (plan["strategy"], plan["nodes"], plan["gpusPerNode"]) == ("ddp", 2, 2)
    assert plan["memoryPerGpu"]["total"] > 0
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {"Valid": "True", "Planned": "True", "Created": "True",
                     "OutputPersisted": "False"}  # no output.pvc
    assert status["observedGeneration"] == 1
    created, warned = wait_for("the Events", lambda: len(events(cluster, ns)) >= 2
                               and sorted(events(cluster, ns), key=lambda e: e["type"]))
    assert (warned["reason"], warned["type"]) == ("EphemeralOutput", "Warning")
    assert warned["message"].startswith("spec.output.pvc: is not set")
    assert (created["reason"], created["type"]) == ("Created", "Normal")
    assert created["message"].startswith("planned ddp on 2 x 2 cpu; created Job chat-r0")
    assert (created["involvedObject"]["name"], created["involvedObject"]["uid"]) == ("chat",
                                                                                   uid)
    # the operator writes only the status: no finalizer (nothing to remove by hand if the
    # operator is uninstalled first), no bookkeeping annotations, no status.kopf
    stored = kube.ftj(ns, "chat")
    assert not stored["metadata"].get("finalizers")
    assert not stored["metadata"].get("annotations")
    assert "kopf" not in stored["status"]


def test_a_finalizer_left_by_an_older_operator_version_is_removed(kube, ns):
    body = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "chat", "namespace": ns,
                         "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"]},
            "spec": job_spec()}
    kube.custom.create_namespaced_custom_object("finetune.dev", "v1alpha1", ns,
                                                "finetunejobs", body)
    wait_for("the old finalizer removed",
             lambda: not (kube.ftj(ns, "chat") or {}).get("metadata", {}).get("finalizers"),
             detail=lambda: kube.ftj(ns, "chat")["metadata"])
    kube.wait_phase(ns, "chat", "Pending")


def test_success(kube, ns):
    kube.apply(ns, "chat", job_spec())
    job = wait_for("job", lambda: kube.job(ns, "chat-r0"))
    kube.start_pods(ns, job)
    status = kube.wait_phase(ns, "chat", "Running")
    assert status["startTime"]
    kube.set_job_status(ns, "chat-r0", {"succeeded": 2, "conditions": [
        {"type": "Complete", "status": "True"}]})
    status = kube.wait_phase(ns, "chat", "Succeeded")
    assert status["completionTime"]
    assert kube.job(ns, "chat-r0") is not None  # no TTL: the children stay


def test_failed_rank_restarts_the_gang_with_a_new_job(kube, ns):
    kube.apply(ns, "chat", job_spec())
    job = wait_for("job", lambda: kube.job(ns, "chat-r0"))
    pods = kube.start_pods(ns, job)
    kube.wait_phase(ns, "chat", "Running")
    kube.fail_pod(ns, pods[1], "OOMKilled", 137)
    status = wait_for("a restart", lambda: (s := kube.status(ns, "chat")).get("restarts") == 1
                      and s)
    assert status["phase"] == "Restarting"
    assert "OOMKilled, exit code 137" in status["message"]
    new = wait_for("job r1", lambda: kube.job(ns, "chat-r1"))
    assert "chat-r1-0.chat" in " ".join(new["spec"]["template"]["spec"]["containers"][0]["args"])
    wait_for("r0 deleted", lambda: kube.job(ns, "chat-r0") is None)
    kube.start_pods(ns, new)
    kube.wait_phase(ns, "chat", "Running")
    restarts = ("finetune_operator_restarts_total", (("finetunejob", "chat"), ("namespace", ns)))
    assert operator_metrics()[restarts] == 1


def test_repeated_failures_fail_the_job(kube, ns):
    kube.apply(ns, "chat", job_spec(runPolicy={"backoffLimit": 1}))
    for attempt in range(2):
        job = wait_for(f"job r{attempt}", lambda a=attempt: kube.job(ns, f"chat-r{a}"))
        pods = kube.start_pods(ns, job)
        wait_for("running", lambda: kube.status(ns, "chat").get("phase") == "Running")
        kube.fail_pod(ns, pods[0], "Error", 2)
        kube.set_job_status(ns, job["metadata"]["name"], {"failed": 1})
        if attempt == 0:
            wait_for("a restart", lambda: kube.status(ns, "chat").get("restarts") == 1)
    status = kube.wait_phase(ns, "chat", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "exit code 2" in failed["message"]
    assert kube.job(ns, "chat-r2") is None


def test_suspend_and_resume(kube, ns):
    kube.apply(ns, "chat", job_spec())
    job = wait_for("job", lambda: kube.job(ns, "chat-r0"))
    kube.start_pods(ns, job)
    kube.wait_phase(ns, "chat", "Running")
    kube.patch_spec(ns, "chat", {"runPolicy": {"suspend": True}})
    kube.wait_phase(ns, "chat", "Suspended")
    wait_for("Job suspended", lambda: kube.job(ns, "chat-r0")["spec"]["suspend"] is True)
    kube.patch_spec(ns, "chat", {"runPolicy": {"suspend": False}})
    wait_for("Job resumed", lambda: kube.job(ns, "chat-r0")["spec"]["suspend"] is False)
    assert kube.status(ns, "chat")["restarts"] == 0


def test_spec_change_after_start_is_rejected(kube, ns):
    kube.apply(ns, "chat", job_spec())
    kube.wait_phase(ns, "chat", "Pending")
    kube.patch_spec(ns, "chat", {"training": {"learningRate": 0.5}})
    def rejection():
        conditions = kube.status(ns, "chat").get("conditions", [])
        return next((c for c in conditions if c["type"] == "SpecChangeRejected"
                     and c["status"] == "True"), None)

    rejected = wait_for("rejection", rejection)
    assert "spec.training.learningRate" in rejected["message"]
    assert rejected["observedGeneration"] == 2


def test_invalid_job_fails_while_a_valid_one_beside_it_proceeds(kube, ns):
    kube.apply(ns, "bad", job_spec(training={"learningRate": -1}))
    kube.apply(ns, "good", job_spec())
    bad = kube.wait_phase(ns, "bad", "Failed")
    valid = next(c for c in bad["conditions"] if c["type"] == "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "InvalidSpec")
    assert "spec.training.learningRate" in valid["message"]
    wait_for("good's Job", lambda: kube.job(ns, "good-r0"))
    assert children_of(kube, ns, "bad") == (None, None, None)


def test_delete_releases_the_job_and_drops_its_metrics(kube, ns):
    kube.apply(ns, "chat", job_spec())
    wait_for("job", lambda: kube.job(ns, "chat-r0"))
    wait_for("phase tracked", lambda: (ns, "chat") in main.METRICS.tracked_jobs())
    kube.delete_ftj(ns, "chat")
    # no finalizer holds the deletion; the children follow their owner through their
    # ownerReferences (the API server's GC)
    wait_for("FineTuneJob gone", lambda: kube.ftj(ns, "chat") is None,
             detail=lambda: kube.ftj(ns, "chat")["metadata"])
    wait_for("the job dropped from the metrics",
             lambda: (ns, "chat") not in main.METRICS.tracked_jobs())


class Rank0:
    """A real prometheus-client endpoint on loopback standing in for rank 0's trainer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauges = {name: Gauge(name, name, registry=self.registry) for name in (
            "finetune_train_step", "finetune_train_total_steps", "finetune_train_epoch",
            "finetune_train_loss", "finetune_train_tokens_per_second",
            "finetune_train_eta_seconds")}
        for name, value in {"finetune_train_step": 30, "finetune_train_total_steps": 120,
                            "finetune_train_epoch": 0.25, "finetune_train_loss": 2.5,
                            "finetune_train_tokens_per_second": 1800.0,
                            "finetune_train_eta_seconds": 90}.items():
            gauges[name].set(value)
        handler = MetricsHandler.factory(self.registry)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_progress_is_copied_from_rank_0_and_goes_stale_when_it_is_unreachable(kube, ns):
    rank0 = Rank0()
    try:
        kube.apply(ns, "chat", job_spec())
        job = wait_for("job", lambda: kube.job(ns, "chat-r0"))
        kube.start_pods(ns, job, pod_ip="127.0.0.1", metrics_port=rank0.port)
        status = wait_for("progress", lambda: (s := kube.status(ns, "chat")).get("progress")
                          and s)
        progress = status["progress"]
        assert (progress["step"], progress["totalSteps"], progress["percent"]) == (30, 120, 25.0)
        assert progress["loss"] == 2.5
        assert progress["tokensPerSecond"] == 1800.0
        assert progress["etaSeconds"] == 90
        assert progress["stale"] is False
        metrics = operator_metrics()
        labels = (("finetunejob", "chat"), ("namespace", ns))
        assert metrics[("finetune_job_loss", labels)] == 2.5
        assert metrics[("finetune_job_tokens_per_second", labels)] == 1800.0
        assert metrics[("finetune_job_progress_ratio", labels)] == 0.25
    finally:
        rank0.stop()
    status = wait_for("stale progress", lambda: (s := kube.status(ns, "chat"))
                      .get("progress", {}).get("stale") and s)
    assert status["phase"] == "Running"  # an unreachable endpoint never fails the job
    assert status["progress"]["step"] == 30  # the last reading stays
    available = next(c for c in status["conditions"] if c["type"] == "ProgressAvailable")
    assert (available["status"], available["reason"]) == ("False", "MetricsUnreachable")


def test_operator_metrics(kube, ns):
    kube.apply(ns, "chat", job_spec())
    kube.wait_phase(ns, "chat", "Pending")
    metrics = operator_metrics()
    assert metrics[("finetune_operator_jobs", (("phase", "Pending"),))] >= 1
    assert metrics[("finetune_operator_reconcile_seconds_count", ())] > 0
    assert ("finetune_operator_api_errors_total", ()) in metrics


# --------------------------------------------------------------------------- finetune run


def _job_file(tmp_path, ns: str) -> str:
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
                                    "metadata": {"name": "chat", "namespace": ns},
                                    "spec": job_spec()}))
    return str(path)


def test_run_detach_submits_and_returns(kube, ns, tmp_path):
    import argparse
    import io

    from finetune_operator.remote import run_remote

    out = io.StringIO()
    code = run_remote(argparse.Namespace(file=_job_file(tmp_path, ns), detach=True), out=out)
    assert code == 0
    assert f"created finetunejob {ns}/chat" in out.getvalue()
    assert kube.ftj(ns, "chat") is not None
    # the same file again updates the existing job instead of failing
    code = run_remote(argparse.Namespace(file=_job_file(tmp_path, ns), detach=True), out=out)
    assert code == 0 and f"updated finetunejob {ns}/chat" in out.getvalue()


def test_run_follows_the_job_until_it_succeeds(kube, ns, tmp_path):
    import argparse
    import io

    from finetune_operator.remote import run_remote

    out = io.StringIO()
    result: dict[str, int] = {}
    args = argparse.Namespace(file=_job_file(tmp_path, ns), detach=False)
    follower = threading.Thread(
        target=lambda: result.setdefault("code", run_remote(args, out=out, poll_seconds=0.1)))
    follower.start()
    job = wait_for("job", lambda: kube.job(ns, "chat-r0"))
    kube.start_pods(ns, job)
    kube.wait_phase(ns, "chat", "Running")
    kube.set_job_status(ns, "chat-r0", {"succeeded": 2, "conditions": [
        {"type": "Complete", "status": "True"}]})
    follower.join(30)
    assert result == {"code": 0}
    text = out.getvalue()
    assert "phase Pending" in text and "phase Running" in text and "phase Succeeded" in text
