"""The lifecycle's typed input, built from the raw objects the API server returns: a Job with
only its own pods, a pod's rank, phase, scheduling and termination, its containers' states."""

from __future__ import annotations

from datetime import UTC, datetime

from finetune_contract.api import FineTuneJobStatus
from finetune_operator.controller.observe import attempt, observation, pod_state

BODY = {"metadata": {"name": "chat", "namespace": "research", "uid": "u-1", "generation": 3},
        "spec": {"model": {"name": "org/model"}}}


def raw_pod(job: str, index: int, **status: object) -> dict:
    return {"metadata": {"name": f"{job}-{index}-x", "creationTimestamp": "2026-11-01T12:00:00Z",
                         "labels": {"batch.kubernetes.io/job-name": job},
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": dict(status)}


def test_without_children_nothing_exists():
    observed = observation(BODY, FineTuneJobStatus())
    assert (observed.owner.name, observed.owner.namespace, observed.owner.uid) == (
        "chat", "research", "u-1")
    assert observed.generation == 3 and observed.spec == BODY["spec"]
    assert (observed.started_config, observed.has_service, observed.attempts) == (None, False,
                                                                                  {})


def test_a_configmap_gives_its_trainer_config_and_one_without_it_an_empty_text():
    with_config = {"data": {"trainer.yaml": "name: chat\n"}}
    assert observation(BODY, FineTuneJobStatus(),
                       config_map=with_config).started_config == "name: chat\n"
    assert observation(BODY, FineTuneJobStatus(), config_map={"data": {}}).started_config == ""


def test_each_attempt_gets_only_the_pods_of_its_own_job():
    jobs = {0: {"metadata": {"name": "chat-r0"}}, 1: {"metadata": {"name": "chat-r1"}}}
    pods = [raw_pod("chat-r0", 0), raw_pod("chat-r1", 0), raw_pod("chat-r1", 1)]
    observed = observation(BODY, FineTuneJobStatus(), config_map={}, service={}, jobs=jobs,
                           pods=pods)
    assert observed.has_service
    assert [p.name for p in observed.attempts[0].pods] == ["chat-r0-0-x"]
    assert [p.index for p in observed.attempts[1].pods] == ["0", "1"]


def test_a_jobs_conditions_counts_and_suspension():
    job = {"metadata": {"name": "chat-r0"}, "spec": {"suspend": True},
           "status": {"failed": 1, "succeeded": 2, "conditions": [
               {"type": "Complete", "status": "False"},
               {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "one pod failed"}]}}
    seen = attempt(job, [])
    assert seen.suspended and not seen.complete and seen.failed
    assert (seen.failure_reason, seen.failure_message) == ("BackoffLimitExceeded",
                                                           "one pod failed")
    assert (seen.failed_pods, seen.succeeded_pods) == (1, 2)


def test_a_pod_that_waits_for_the_scheduler():
    pending = pod_state(raw_pod("chat-r0", 1, phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "False", "message": "0/3 nodes have a GPU",
         "lastTransitionTime": "2026-11-01T12:01:00Z"}]))
    assert (pending.phase, pending.index, pending.scheduled) == ("Pending", "1", False)
    assert pending.waiting_since == datetime(2026, 11, 1, 12, 1, tzinfo=UTC)
    assert pending.scheduler_message == "0/3 nodes have a GPU"
    unknown = pod_state(raw_pod("chat-r0", 0))
    assert unknown.phase == "Pending" and unknown.scheduler_message == "not scheduled"
    assert unknown.waiting_since == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # its creation


def test_a_failed_pod_ends_as_its_trainer_container_says():
    failed = pod_state(raw_pod("chat-r0", 0, phase="Failed", containerStatuses=[
        {"name": "sidecar", "state": {"terminated": {"reason": "Completed", "exitCode": 0,
                                                     "finishedAt": "2026-11-01T12:04:00Z"}}},
        {"name": "trainer", "state": {"terminated": {"reason": "OOMKilled",
                                                     "exitCode": 137}}}]))
    assert (failed.exit_reason, failed.exit_code) == ("OOMKilled", 137)
    assert failed.finished_at == "2026-11-01T12:04:00Z"
    evicted = pod_state(raw_pod("chat-r0", 0, phase="Failed", reason="Evicted"))
    assert (evicted.exit_reason, evicted.exit_code) == ("Evicted", "?")


def test_a_pods_containers_and_init_containers_as_their_statuses_say():
    pod = pod_state(raw_pod("chat-r0", 0, phase="Pending", initContainerStatuses=[
        {"name": "fetch", "image": "registry.test/fetch:1", "state": {"terminated": {
            "reason": "Completed", "exitCode": 0}}}],
        containerStatuses=[
        {"name": "trainer", "image": "registry.test/trainer:1", "state": {"waiting": {
            "reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}}},
        {"name": "proxy", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"reason": "Error", "exitCode": 2}}},
        {"name": "logs", "state": {"running": {"startedAt": "2026-11-01T12:00:00Z"}}}]))
    fetch, trainer, proxy, logs = pod.containers
    assert (fetch.name, fetch.init, fetch.running, fetch.waiting_reason) == ("fetch", True,
                                                                             False, "")
    assert (trainer.init, trainer.image, trainer.waiting_reason, trainer.waiting_message) == (
        False, "registry.test/trainer:1", "ImagePullBackOff", 'Back-off pulling image "x"')
    assert (proxy.waiting_reason, proxy.last_exit_reason, proxy.last_exit_code) == (
        "CrashLoopBackOff", "Error", 2)
    assert logs.running and not logs.waiting_reason
    assert pod_state(raw_pod("chat-r0", 0)).containers == ()


def test_a_pod_whose_model_download_failed_says_so_with_its_exit_code():
    init = {"name": "model-cache", "state": {"terminated": {"reason": "Error", "exitCode": 2}}}
    waiting = {"name": "trainer", "state": {"waiting": {"reason": "PodInitializing"}}}
    failed = pod_state(raw_pod("chat-r0", 0, phase="Failed", initContainerStatuses=[init],
                               containerStatuses=[waiting]))
    assert failed.exit_reason == ("Error in init container model-cache (downloading the "
                                  "model)")
    assert failed.exit_code == 2
    # a download that succeeded is not why the trainer failed
    init["state"]["terminated"] = {"reason": "Completed", "exitCode": 0}
    trainer = {"name": "trainer", "state": {"terminated": {"reason": "Error", "exitCode": 1}}}
    failed = pod_state(raw_pod("chat-r0", 0, phase="Failed", initContainerStatuses=[init],
                               containerStatuses=[trainer]))
    assert (failed.exit_reason, failed.exit_code) == ("Error", 1)
