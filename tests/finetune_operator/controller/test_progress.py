"""The progress read of a Running job: rank 0's endpoint found from its pod, the status after a
read (fresh progress, or the last one marked stale with the reason), and the one read."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobStatus, Progress
from finetune_contract.layout import METRICS_PORT
from finetune_operator.controller import progress
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.scrape import ProgressUnavailable
from prometheus_client import CollectorRegistry

from tests.support.ftj_samples import plan as plan_of

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
JOB = "chat-r0"


def pod(index: str, *, job: str = JOB, ip: str | None = "10.0.0.5", port: int | None = None,
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"{job}-{index}", "labels": {
        "batch.kubernetes.io/job-name": job},
        "annotations": {"batch.kubernetes.io/job-completion-index": index}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-01T12:00:00Z"
    ports = [{"name": "metrics", "containerPort": port}] if port else []
    return {"metadata": meta, "spec": {"containers": [{"name": "trainer", "ports": ports}]},
            "status": {"podIP": ip} if ip else {}}


def test_rank0_of_the_active_job_is_read_on_its_metrics_port():
    pods = [pod("1", ip="10.0.0.6"), pod("0", job="chat-r1"), pod("0", port=9500)]
    assert progress.rank0_metrics_url(pods, JOB) == "http://10.0.0.5:9500/metrics"


def test_without_a_named_port_the_contracts_metrics_port_is_used():
    assert progress.rank0_metrics_url([pod("0")], JOB) == f"http://10.0.0.5:{METRICS_PORT}/metrics"


def test_no_url_before_rank0_has_an_ip_or_while_it_is_deleted():
    assert progress.rank0_metrics_url([pod("0", ip=None)], JOB) is None
    assert progress.rank0_metrics_url([pod("0", deleting=True)], JOB) is None
    assert progress.rank0_metrics_url([pod("1")], JOB) is None


def test_a_read_replaces_the_progress_and_says_it_is_available():
    fresh = Progress(step=3, total_steps=12, updated_at=NOW, stale=False)
    status = progress.with_progress(FineTuneJobStatus(phase="Running"), fresh, None, now=NOW,
                                    generation=2)
    assert status.progress == fresh
    (available,) = status.conditions
    assert (available.type, available.status, available.reason) == (
        "ProgressAvailable", "True", "MetricsRead")
    assert available.observed_generation == 2


def test_a_failed_read_keeps_the_last_progress_marked_stale_and_says_why():
    last = Progress(step=3, total_steps=12, updated_at=NOW, stale=False)
    before = FineTuneJobStatus(phase="Running", progress=last)
    status = progress.with_progress(before, None, "connection refused", now=NOW, generation=2)
    assert status.progress == last.model_copy(update={"stale": True})
    (available,) = status.conditions
    assert (available.status, available.reason) == ("False", "MetricsUnreachable")
    assert available.message == "connection refused; progress is from 2026-11-01T12:00:00+00:00"
    assert before.progress.stale is False  # the status it was given is left alone


class FakeCluster:
    def __init__(self, status: dict[str, Any]) -> None:
        self.body = {"metadata": {"name": "chat", "namespace": "research", "generation": 1},
                     "status": status}
        self.written: list[FineTuneJobStatus] = []
        self.events: list[Any] = []
        self.pods = [pod("0")]

    def current_finetunejob(self, namespace: str, name: str) -> dict[str, Any]:
        return self.body

    def list_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.pods

    def post_event(self, body: dict[str, Any], emit: Any, now: datetime) -> None:
        self.events.append(emit)

    def write_status(self, namespace: str, name: str, old: Any, new: FineTuneJobStatus,
                     **_: Any) -> None:
        self.written.append(new)


class FakeReconciler:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.metrics = OperatorMetrics(CollectorRegistry())
        lock = threading.Lock()
        self.locks = lambda namespace, name: lock
        self.clock = lambda: NOW


@pytest.fixture
def fetched(monkeypatch) -> list[str]:
    urls: list[str] = []

    def fetch(url: str, timeout: float) -> Progress:
        urls.append(url)
        if url.startswith("http://10.0.0.5"):
            return Progress(step=5, total_steps=10, loss=1.5, updated_at=NOW, stale=False)
        raise ProgressUnavailable(f"{url}: refused")

    monkeypatch.setattr(progress, "fetch_progress", fetch)
    return urls


def test_one_read_of_a_running_job_writes_its_progress_and_metrics(fetched):
    cluster = FakeCluster({"phase": "Running", "activeJob": JOB})
    reconciler = FakeReconciler(cluster)
    progress.refresh_progress(reconciler, "research", "chat")  # type: ignore[arg-type]
    assert fetched == [f"http://10.0.0.5:{METRICS_PORT}/metrics"]
    (written,) = cluster.written
    assert written.progress is not None and written.progress.step == 5
    loss = reconciler.metrics.registry.get_sample_value(
        "finetune_job_loss", {"namespace": "research", "finetunejob": "chat"})
    assert loss == 1.5


def test_a_read_that_shows_a_resumed_run_records_and_counts_the_steps_redone(monkeypatch):
    # The last run was read at step 9; the new one resumed from the checkpoint at step 4.
    last = {"progress": {"step": 9, "resumedFromStep": 0},
            "lostWork": {"runStep": 9, "runResumedFromStep": 0}}
    cluster = FakeCluster({"phase": "Running", "activeJob": JOB, **last})
    reconciler = FakeReconciler(cluster)
    resumed = Progress(step=5, resumed_from_step=4, updated_at=NOW, stale=False)
    monkeypatch.setattr(progress, "fetch_progress", lambda url, timeout: resumed)
    progress.refresh_progress(reconciler, "research", "chat")  # type: ignore[arg-type]
    (written,) = cluster.written
    assert written.lost_work.steps_redone == 5 and written.lost_work.resumptions == 1
    (event,) = written.lost_work.recent
    assert (event.reached_step, event.resumed_from_step, event.at) == (9, 4, NOW)
    labels = {"namespace": "research", "finetunejob": "chat"}
    assert reconciler.metrics.registry.get_sample_value(
        "finetune_job_steps_redone_total", labels) == 5


def test_a_read_of_a_trainer_that_accounts_for_its_time_writes_goodput_and_its_gauges(
        monkeypatch):
    started = "2026-11-01T11:59:00Z"  # the pods first ran 60 s before NOW
    plan = plan_of(gpu="cpu", gpus_per_node=2).to_wire()
    cluster = FakeCluster({"phase": "Running", "activeJob": JOB, "startTime": started,
                           "plan": plan})
    reconciler = FakeReconciler(cluster)
    read = Progress(step=20, resumed_from_step=0, tokens_per_second=300.0, run_seconds=60.0,
                    startup_seconds=15.0, step_seconds=40.0, checkpoint_seconds=2.0,
                    updated_at=NOW, stale=False)
    monkeypatch.setattr(progress, "fetch_progress", lambda url, timeout: read)
    progress.refresh_progress(reconciler, "research", "chat")  # type: ignore[arg-type]
    (written,) = cluster.written
    assert written.goodput.ratio == round(40 / 60, 4)
    assert written.goodput.tokens_per_second_per_gpu == 150.0
    labels = {"namespace": "research", "finetunejob": "chat"}
    sample = reconciler.metrics.registry.get_sample_value
    assert sample("finetune_job_goodput_ratio", labels) == written.goodput.ratio
    assert sample("finetune_job_lost_seconds", {**labels, "cause": "startup"}) == 15.0
    reconciler.metrics.forget("research", "chat")
    assert sample("finetune_job_goodput_ratio", labels) is None
    assert sample("finetune_job_lost_seconds", {**labels, "cause": "startup"}) is None


@pytest.mark.parametrize("status", [{"phase": "Pending", "activeJob": JOB},
                                    {"phase": "Running"}])
def test_a_job_that_is_not_running_is_not_read(fetched, status):
    cluster = FakeCluster(status)
    progress.refresh_progress(FakeReconciler(cluster), "research", "chat")  # type: ignore[arg-type]
    assert fetched == [] and cluster.written == []


def ranked_pod(index: str, ip: str, ranks: int) -> dict[str, Any]:
    """A node's pod with one metrics port per local rank (metrics, metrics-1, ...)."""
    found = pod(index, ip=ip)
    found["spec"]["containers"][0]["ports"] = [
        {"name": "metrics" if r == 0 else f"metrics-{r}", "containerPort": 9400 + r}
        for r in range(ranks)]
    return found


def test_every_rank_is_found_on_its_pod_and_port_up_to_the_cap(monkeypatch):
    pods = [ranked_pod("1", "10.0.0.6", 2), ranked_pod("0", "10.0.0.5", 2),
            pod("0", job="chat-r1"), ranked_pod("2", "10.0.0.7", 2) | {
                "metadata": {**pod("2")["metadata"], "deletionTimestamp": "now"}}]
    assert progress.rank_metrics_urls(pods, JOB, 2) == {
        0: "http://10.0.0.5:9400/metrics", 1: "http://10.0.0.5:9401/metrics",
        2: "http://10.0.0.6:9400/metrics", 3: "http://10.0.0.6:9401/metrics"}
    monkeypatch.setattr(progress, "MAX_RANKS_READ", 3)
    assert list(progress.rank_metrics_urls(pods, JOB, 2)) == [0, 1, 2]


def _drifting(monkeypatch, peaks: dict[str, int]) -> FakeCluster:
    """A running 2 x 2 job whose ranks report `peaks` (by pod IP and port)."""
    plan = plan_of(gpu="cpu", gpus_per_node=2, nodes=2).to_wire()  # 3,350,000 bytes a rank
    cluster = FakeCluster({"phase": "Running", "activeJob": JOB, "plan": plan})
    cluster.pods = [ranked_pod("0", "10.0.0.5", 2), ranked_pod("1", "10.0.0.6", 2)]

    def fetch(url: str, timeout: float) -> Progress:
        if url not in peaks:
            raise ProgressUnavailable(f"{url}: refused")
        return Progress(step=4, peak_memory_bytes=peaks[url], updated_at=NOW, stale=False)

    monkeypatch.setattr(progress, "fetch_progress", fetch)
    return cluster


def test_the_largest_rank_is_held_against_the_plan_and_a_drift_is_said_once(monkeypatch):
    peaks = {"http://10.0.0.5:9400/metrics": 3_000_000, "http://10.0.0.5:9401/metrics": 3_100_000,
             "http://10.0.0.6:9400/metrics": 4_000_000}  # rank 3 does not answer
    cluster = _drifting(monkeypatch, peaks)
    reconciler = FakeReconciler(cluster)
    progress.refresh_progress(reconciler, "research", "chat")  # type: ignore[arg-type]
    memory = cluster.written[-1].memory
    assert (memory.planned_bytes, memory.measured_bytes, memory.largest_rank,
            memory.ranks_read) == (3_350_000, 4_000_000, 2, 3)
    assert memory.ratio == round(4_000_000 / 3_350_000, 3)
    drift = next(c for c in cluster.written[-1].conditions if c.type == "PlanDrift")
    assert (drift.status, drift.reason) == ("True", "AboveThePlan")
    assert drift.message.startswith("rank 2 peaked at 3.8 MiB, 119% of the planned 3.2 MiB")
    (event,) = cluster.events
    assert (event.type, event.reason) == ("Warning", "PlanDrift")
    cluster.body["status"] = cluster.written[-1].to_wire()
    progress.refresh_progress(reconciler, "research", "chat")  # type: ignore[arg-type]
    assert len(cluster.events) == 1  # the same drift: no second Event


def test_a_peak_within_the_plan_raises_nothing(monkeypatch):
    peaks = {"http://10.0.0.5:9400/metrics": 3_000_000}
    cluster = _drifting(monkeypatch, peaks)
    progress.refresh_progress(FakeReconciler(cluster), "research", "chat")  # type: ignore
    assert cluster.written[-1].memory.ratio == round(3_000_000 / 3_350_000, 3)
    assert not [c for c in cluster.written[-1].conditions if c.type == "PlanDrift"]
    assert cluster.events == []
