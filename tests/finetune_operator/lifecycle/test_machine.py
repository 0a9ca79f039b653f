"""The lifecycle state machine (lifecycle/machine.py: decide), transition by transition,
against a World that plays the API server (tests/support/world.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobStatus
from finetune_operator.lifecycle import machine
from finetune_operator.lifecycle.actions import Create, Decision, Delete, Emit, SetSuspend
from finetune_operator.settings import Settings

from tests.support.ftj_samples import spec_dict
from tests.support.world import (
    T0,
    TWO_NODES,
    World,
    finished,
    started_world,
    two_node_spec,
    waiting_status,
)


def kinds(decision: Decision, action_type: type) -> list[Any]:
    return [a for a in decision.actions if isinstance(a, action_type)]


def created(decision: Decision) -> list[str]:
    return [f"{a.obj['kind']}/{a.obj['metadata']['name']}" for a in kinds(decision, Create)]


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in kinds(decision, Emit)]


def condition(status: FineTuneJobStatus, type_: str):
    return next((c for c in status.conditions if c.type == type_), None)


# --------------------------------------------------------------------------- start


def test_valid_job_is_planned_and_gets_its_three_children(world):
    decision = world.step()
    assert created(decision) == ["ConfigMap/chat-trainer", "Service/chat", "Job/chat-r0"]
    status = decision.status
    assert status.phase == "Pending"
    assert status.plan is not None and status.plan.fits
    assert (status.plan.strategy, status.plan.nodes, status.plan.gpus_per_node) == ("ddp", 2, 2)
    assert status.active_job == "chat-r0"
    assert status.observed_generation == 1
    for type_ in ("Valid", "Planned", "Created"):
        c = condition(status, type_)
        assert c.status == "True"
        assert c.observed_generation == 1
        assert c.last_transition_time == T0
    # one Event for a new job with its output on a PVC: the plan and the children it got
    assert reasons(decision) == ["EphemeralOutput", "Created"]  # this one has no PVC
    created_event = kinds(decision, Emit)[-1]
    assert created_event.message.startswith("planned ddp on 2 x 2 cpu; created Job chat-r0")


def test_a_job_without_output_pvc_is_warned_once_that_its_result_dies_with_the_pods(world):
    decision = world.step()
    output = condition(decision.status, "OutputPersisted")
    assert (output.status, output.reason) == ("False", "EphemeralOutput")
    assert output.message.startswith("spec.output.pvc: is not set: in a cluster the "
                                     "checkpoints and the final model go to an emptyDir")
    (warning,) = [e for e in kinds(decision, Emit) if e.reason == "EphemeralOutput"]
    assert (warning.type, warning.message) == ("Warning", output.message)
    world.start_pods()
    for _ in range(3):  # later reconciles keep the condition and post nothing again
        world.now += timedelta(seconds=30)
        assert "EphemeralOutput" not in reasons(world.step())
    assert condition(world.status, "OutputPersisted").last_transition_time == T0


def test_an_invalid_job_fixed_by_an_edit_is_warned_once_it_is_planned():
    world = World(two_node_spec(training={"learningRate": -1}))
    world.step()
    world.edit(training={"learningRate": 1e-3, "globalBatchSize": 8, "maxSeqLength": 64})
    world.step()
    world.now += timedelta(seconds=30)
    world.step()
    warned = [r for d in world.history for r in reasons(d) if r == "EphemeralOutput"]
    assert warned == ["EphemeralOutput"]


def test_a_job_with_output_pvc_says_where_its_result_goes_and_warns_nothing():
    world = World(two_node_spec(output={"pvc": "checkpoints", "path": "/mnt/out"}))
    decision = world.step()
    output = condition(decision.status, "OutputPersisted")
    assert (output.status, output.reason) == ("True", "PersistentVolumeClaim")
    assert output.message == "checkpoints and the final model go to PVC checkpoints"
    assert reasons(decision) == ["Created"]


def test_invalid_spec_fails_with_the_messages_and_creates_nothing():
    world = World(spec_dict(training={"learningRate": -1, "globalBatchSize": 8}))
    decision = world.step()
    assert kinds(decision, Create) == []
    assert decision.status.phase == "Failed"
    valid = condition(decision.status, "Valid")
    assert (valid.status, valid.reason) == ("False", "InvalidSpec")
    assert "spec.training.learningRate: must be > 0" in valid.message
    assert condition(decision.status, "Failed").reason == "InvalidSpec"
    assert [(e.type, e.reason) for e in kinds(decision, Emit)] == [("Warning", "InvalidSpec")]
    # nothing more happens on later reconciles
    world.now += timedelta(minutes=5)
    again = world.step()
    assert again.actions == [] and again.status.phase == "Failed"


def test_an_invalid_job_fixed_by_an_edit_starts():
    world = World(spec_dict(training={"learningRate": -1}))
    world.step()
    world.edit(training={"learningRate": 1e-3, "globalBatchSize": 8, "maxSeqLength": 64})
    decision = world.step()
    assert decision.status.phase == "Pending"
    assert condition(decision.status, "Valid").status == "True"
    assert "Job/chat-r0" in created(decision)
    assert decision.status.observed_generation == 2


def test_job_that_does_not_fit_fails_with_the_planners_suggestion():
    world = World(spec_dict(model={"name": "meta-llama/Llama-3.1-70B"},
                            resources={"gpu": "T4-16GB", "gpusPerNode": 1, "maxNodes": 1,
                                       "strategy": "ddp"}))
    decision = world.step()
    assert kinds(decision, Create) == []
    assert decision.status.phase == "Failed"
    failed = condition(decision.status, "Failed")
    assert failed.reason == "DoesNotFit"
    assert decision.status.plan is not None and not decision.status.plan.fits
    assert decision.status.plan.suggestion and decision.status.plan.suggestion in failed.message
    assert condition(decision.status, "Planned").status == "False"


def test_sharded_multi_node_layout_without_a_shared_output_is_invalid():
    world = World(two_node_spec(resources={**TWO_NODES, "strategy": "zero2"}))
    decision = world.step()
    assert kinds(decision, Create) == []
    valid = condition(decision.status, "Valid")
    assert (valid.status, valid.reason) == ("False", "InvalidSpec")
    assert "spec.output.pvc: is required: zero2 on 2 nodes" in valid.message
    fixed = World(two_node_spec(resources={**TWO_NODES, "strategy": "zero2"},
                                output={"pvc": "shared", "path": "/output"}))
    assert "Job/chat-r0" in created(fixed.step())


def test_operator_default_gpu_applies_only_when_the_job_names_none():
    settings = Settings(default_gpu="A100-80GB")
    no_gpu = spec_dict(resources={"gpusPerNode": 1, "maxNodes": 1})
    world = World(no_gpu, settings)
    assert world.step().status.plan.gpu == "A100-80GB"
    world = World(spec_dict(), settings)
    assert world.step().status.plan.gpu == "cpu"


# --------------------------------------------------------------------------- idempotence


def test_same_observation_gives_the_same_decision(world):
    assert world.decide() == world.decide()
    world.step()
    world.start_pods()
    assert world.decide() == world.decide()


def test_crash_before_the_status_write_repeats_only_idempotent_creates(world):
    first = world.step(write_status=False)  # children created, status lost
    assert len(created(first)) == 3
    retry = world.step()
    assert created(retry) == []
    assert retry.status == first.status
    assert len([k for k in world.objects if k[0] == "Job"]) == 1


def test_no_creates_once_the_children_exist(world):
    world.step()
    for _ in range(3):
        world.now += timedelta(seconds=10)
        assert kinds(world.step(), Create) == []


# --------------------------------------------------------------------------- run


def test_pending_until_every_pod_runs_then_running(world):
    world.step()
    world.start_pods(count=1)
    assert world.step().status.phase == "Pending"
    world.start_pods()
    world.now += timedelta(seconds=5)
    decision = world.step()
    assert decision.status.phase == "Running"
    assert decision.status.start_time == world.now
    assert condition(decision.status, "Running").status == "True"
    assert reasons(decision) == ["Running"]
    world.now += timedelta(seconds=5)
    assert reasons(world.step()) == []  # one event per transition


def test_completed_job_succeeds(running):
    running.complete()
    running.now += timedelta(minutes=10)
    decision = running.step()
    assert decision.status.phase == "Succeeded"
    assert decision.status.completion_time == running.now
    assert condition(decision.status, "Succeeded").status == "True"
    assert condition(decision.status, "Running").status == "False"
    assert reasons(decision) == ["Succeeded"]
    assert kinds(decision, Delete) == []


def test_ranks_finishing_one_by_one_keep_the_job_running(running):
    running.pods[1]["status"] = {"phase": "Succeeded"}
    assert running.step().status.phase == "Running"


# --------------------------------------------------------------------------- restarts


def test_failed_rank_restarts_the_gang_as_the_next_attempt(running):
    running.fail_rank(1, "OOMKilled", 137)
    decision = running.step()
    assert created(decision) == ["Job/chat-r1"]
    assert kinds(decision, Delete) == [Delete("Job", "chat-r0")]
    assert decision.status.phase == "Restarting"
    assert decision.status.restarts == 1
    assert decision.status.active_job == "chat-r1"
    (event,) = kinds(decision, Emit)
    assert event.type == "Warning" and event.reason == "Restarting"
    assert "node rank 1" in event.message and "OOMKilled, exit code 137" in event.message
    # the new attempt's pods come up: Running again
    running.start_pods()
    assert running.step().status.phase == "Running"


def test_a_restart_waits_for_the_rest_of_the_gang_to_write_its_checkpoint(running):
    running.fail_rank(1, "OOMKilled", 137, gang_stopped=False)
    decision = running.step()
    # rank 0 still trains: it is told to stop (SIGTERM, its grace period) and nothing starts
    assert kinds(decision, Delete) == [Delete("Pod", "chat-r0-0-abcde")]
    assert created(decision) == [] and kinds(decision, Emit) == []
    assert decision.status.phase == "Restarting" and decision.status.restarts == 0
    assert decision.status.message.endswith(
        "waiting for chat-r0-0-abcde to stop (each writes its part of the emergency "
        "checkpoint within its grace period) before restarting the gang")
    assert "node rank 1 (pod chat-r0-1-abcde) failed: OOMKilled" in decision.status.message
    # deleting now, inside its grace period: still waited for, not deleted again
    deadline = running.now + timedelta(seconds=90)
    running.pods[0]["metadata"]["deletionTimestamp"] = deadline.isoformat()
    assert kinds(running.step(), Delete) == [] and running.status.restarts == 0
    # it stopped: the gang restarts, naming the rank that failed first
    running.pods[0]["status"] = {"phase": "Failed", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"reason": "Error", "exitCode": 143,
                                                     "finishedAt": "2026-11-01T12:06:00Z"}}}]}
    restart = running.step()
    assert created(restart) == ["Job/chat-r1"] and restart.status.restarts == 1
    (event,) = kinds(restart, Emit)
    assert "node rank 1" in event.message and "OOMKilled, exit code 137" in event.message


def test_a_pod_on_a_lost_node_is_not_waited_for_past_its_grace_period(running):
    running.fail_rank(1, gang_stopped=False)
    deadline = running.now + timedelta(seconds=30)
    running.pods[0]["metadata"]["deletionTimestamp"] = deadline.isoformat()
    assert created(running.step()) == []
    running.now = deadline + timedelta(minutes=1)  # the kubelet never reported back
    assert created(running.step()) == ["Job/chat-r1"]


@pytest.mark.parametrize("output,resumes", [
    ({"pvc": "checkpoints", "path": "/mnt/out"}, "from the latest checkpoint"),
    ({}, "from the start (no output.pvc: the checkpoints went with the pods)")])
def test_restart_and_suspend_say_where_the_new_pods_pick_up(output, resumes):
    world = World(two_node_spec(output=output))
    world.step()
    world.start_pods()
    world.step()
    world.fail_rank(0)
    (restart,) = [e for e in kinds(world.step(), Emit) if e.reason == "Restarting"]
    assert f"restarting the gang {resumes} as Job chat-r1" in restart.message
    world.edit(runPolicy={"suspend": True})
    (suspended,) = [e for e in kinds(world.step(), Emit) if e.reason == "Suspended"]
    assert suspended.message.endswith(f"resuming continues {resumes}")


def test_crash_in_the_middle_of_a_restart_does_not_restart_twice(running):
    running.fail_rank(0)
    restart = running.step(write_status=False)  # r1 created, r0 deleted, status lost
    assert "Job/chat-r1" in created(restart)
    # worst case: the delete of r0 did not happen either
    running.objects[("Job", "chat-r0")] = {"metadata": {"name": "chat-r0"},
                                          "spec": {"completions": 1},
                                          "status": {"failed": 1}}
    decision = running.step()
    assert decision.status.restarts == 1
    assert created(decision) == []
    assert kinds(decision, Delete) == [Delete("Job", "chat-r0")]


def test_repeated_failures_end_in_failed_with_the_last_reason_and_exit_code():
    world = World(two_node_spec(runPolicy={"backoffLimit": 2}))
    world.step()
    for attempt in range(2):
        world.start_pods()
        world.step()
        world.fail_rank(0)
        assert world.step().status.restarts == attempt + 1
    world.start_pods()
    world.step()
    world.fail_rank(1, "Error", 3)
    decision = world.step()
    assert decision.status.phase == "Failed"
    failed = condition(decision.status, "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert "node rank 1" in failed.message and "exit code 3" in failed.message
    assert created(decision) == []
    assert world.status.restarts == 2


def test_job_deleted_behind_our_back_is_created_again(running):
    del running.objects[("Job", "chat-r0")]
    running.pods = []
    decision = running.step()
    assert created(decision) == ["Job/chat-r0"]
    assert reasons(decision) == ["JobRecreated"]


# --------------------------------------------------------------------------- suspend


def test_suspend_and_resume(running):
    running.edit(runPolicy={"suspend": True})
    decision = running.step()
    assert kinds(decision, SetSuspend) == [SetSuspend("chat-r0", True)]
    assert decision.status.phase == "Suspended"
    assert condition(decision.status, "Suspended").status == "True"
    assert reasons(decision) == ["Suspended"]
    assert kinds(running.step(), SetSuspend) == []  # already suspended: nothing to do
    running.edit(runPolicy={"suspend": False})
    decision = running.step()
    assert kinds(decision, SetSuspend) == [SetSuspend("chat-r0", False)]
    assert decision.status.phase == "Pending"
    assert condition(decision.status, "Suspended").status == "False"
    running.start_pods()
    assert running.step().status.phase == "Running"
    assert running.status.restarts == 0  # a resume is not a restart


def test_job_created_suspended_when_the_run_starts_suspended():
    world = World(two_node_spec(runPolicy={"suspend": True}))
    decision = world.step()
    assert world.job()["spec"]["suspend"] is True
    assert decision.status.phase == "Suspended"


def test_queued_job_waits_for_kueue_to_admit_the_gang():
    world = World(spec_dict(resources={"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 1,
                                       "strategy": "ddp", "queueName": "team-a"}))
    world.step()
    job = world.job()
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    decision = world.step()
    assert kinds(decision, SetSuspend) == []  # admission is Kueue's decision
    assert decision.status.phase == "Pending" and "Kueue" in decision.status.message
    job["spec"]["suspend"] = False  # Kueue admits
    world.start_pods()
    assert world.step().status.phase == "Running"


def _preempted_pods(world: World) -> None:
    """Kueue preempted: the Job controller deletes the pods, and their trainers stop on the
    SIGTERM (exit 143 after the emergency checkpoint): Failed while being deleted."""
    for p in world.pods:
        p["metadata"]["deletionTimestamp"] = "2026-11-01T12:05:00Z"
        p["status"] = {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {
            "terminated": {"reason": "Error", "exitCode": 143,
                           "finishedAt": "2026-11-01T12:05:01Z"}}}]}


@pytest.fixture
def admitted() -> World:
    """A queued job that Kueue admitted, running."""
    world = World(two_node_spec(resources={**TWO_NODES, "queueName": "team-a"}))
    world.step()
    world.job()["spec"]["suspend"] = False  # Kueue admits
    world.start_pods()
    assert world.step().status.phase == "Running"
    return world


def test_kueue_preempting_a_running_job_suspends_it_without_a_restart(admitted):
    admitted.job()["spec"]["suspend"] = True  # Kueue preempts
    decision = admitted.step()  # the pods are on their way out
    assert decision.actions == [kinds(decision, Emit)[0]]  # no Job created, deleted or resumed
    assert reasons(decision) == ["SuspendedByKueue"]
    assert decision.status.phase == "Pending"
    assert "suspended by Kueue" in decision.status.message
    assert "waits for Kueue to admit the gang again (queue team-a)" in decision.status.message
    assert condition(decision.status, "Running").status == "False"
    assert condition(decision.status, "Suspended").reason == "SuspendedByKueue"
    _preempted_pods(admitted)  # the trainers exited 143
    decision = admitted.step()
    assert kinds(decision, Create) == kinds(decision, Delete) == []
    assert kinds(decision, SetSuspend) == [] and reasons(decision) == []
    assert decision.status.restarts == 0
    assert "suspended by Kueue" in decision.status.message  # the message stays
    admitted.pods = []  # deleted
    assert admitted.step().actions == []
    admitted.job()["spec"]["suspend"] = False  # Kueue admits it again: the same Job
    admitted.start_pods(phase="Pending")
    decision = admitted.step()
    assert decision.status.phase == "Pending"
    assert condition(decision.status, "Suspended").status == "False"
    admitted.start_pods()
    decision = admitted.step()
    assert decision.status.phase == "Running"
    assert decision.status.restarts == 0 and decision.status.active_job == "chat-r0"
    assert kinds(decision, Create) == []


def test_a_rank_that_fails_while_kueue_holds_the_job_is_still_a_failure(admitted):
    admitted.fail_rank(1)
    admitted.job()["spec"]["suspend"] = True
    decision = admitted.step()
    assert decision.status.phase == "Restarting"
    assert "node rank 1" in decision.status.message


def test_ranks_stopped_by_a_users_suspend_are_not_failures(running):
    running.edit(runPolicy={"suspend": True})
    running.job()["spec"]["suspend"] = True  # as the shell patches it; the pods still exist
    _preempted_pods(running)
    decision = running.step()
    assert decision.status.phase == "Suspended"
    assert decision.status.restarts == 0 and kinds(decision, Create) == []


# --------------------------------------------------------------------------- deadline, ttl


def test_deadline_fails_the_job_and_stops_its_pods():
    world = World(two_node_spec(runPolicy={"activeDeadlineSeconds": 600}))
    world.step()
    world.start_pods()
    world.step()
    world.now += timedelta(seconds=599)
    assert world.step().status.phase == "Running"
    world.now += timedelta(seconds=1)
    decision = world.step()
    assert decision.status.phase == "Failed"
    assert condition(decision.status, "Failed").reason == "DeadlineExceeded"
    assert kinds(decision, Delete) == [Delete("Job", "chat-r0")]


def test_ttl_deletes_the_children_but_nothing_else():
    world = World(two_node_spec(runPolicy={"ttlSecondsAfterFinished": 60},
                            output={"pvc": "results", "path": "/out"}))
    world.step()
    world.start_pods()
    world.step()
    world.complete()
    world.step()
    world.now += timedelta(seconds=59)
    assert world.step().actions == []
    world.now += timedelta(seconds=1)
    decision = world.step()
    assert set(kinds(decision, Delete)) == {Delete("ConfigMap", "chat-trainer"),
                                            Delete("Service", "chat"), Delete("Job", "chat-r0")}
    assert reasons(decision) == ["CleanedUp"]
    assert world.objects == {}
    assert world.step().actions == []  # gone: no more deletes, no more events


def test_no_ttl_keeps_the_children():
    world = World()
    world.step()
    world.start_pods()
    world.step()
    world.complete()
    world.step()
    world.now += timedelta(days=30)
    assert world.step().actions == []


# --------------------------------------------------------------------------- unschedulable


def unschedulable(world: World, since: datetime) -> None:
    for p in world.pods:
        p["status"] = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}


def test_pods_pending_too_long_get_the_schedulers_message(world):
    world.step()
    world.start_pods(phase="Pending")
    unschedulable(world, since=T0)
    world.now = T0 + timedelta(seconds=299)
    assert condition(world.step().status, "Unschedulable") is None
    world.now = T0 + timedelta(seconds=300)
    decision = world.step()
    c = condition(decision.status, "Unschedulable")
    assert c.status == "True"
    assert "Insufficient nvidia.com/gpu" in c.message
    assert decision.status.phase == "Pending"
    assert reasons(decision) == ["Unschedulable"]
    # scheduled at last
    world.start_pods()
    decision = world.step()
    assert condition(decision.status, "Unschedulable").status == "False"
    assert decision.status.phase == "Running"


# --------------------------------------------------------------------------- stuck pods

PULL = 'Back-off pulling image "registry.test/finetune-trainer:test"'


def stick(world: World, reason: str, message: str = "", **kwargs: Any) -> None:
    """Every pod of the attempt waits for `reason`."""
    for p in world.pods:
        p["status"] = waiting_status(reason, message, **kwargs)


def warnings(decision: Decision) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in kinds(decision, Emit) if e.type == "Warning"]


def test_an_image_pull_error_is_named_once_and_clears_when_the_pods_start(world):
    world.step()
    world.start_pods(phase="Pending")
    stick(world, "ErrImagePull", "failed to pull: not found")
    world.now += timedelta(seconds=10)
    decision = world.step()
    c = condition(decision.status, "PodsStuck")
    assert (c.status, c.reason) == ("True", "ErrImagePull")
    assert c.message.startswith("ErrImagePull in node rank 0 (pod chat-r0-0-abcde) container "
                                "trainer (and 1 more pod(s)): failed to pull: not found; "
                                "check that image registry.test/finetune-trainer:test exists")
    assert warnings(decision) == [("ErrImagePull", c.message)]
    assert decision.status.phase == "Pending"
    assert decision.status.message == c.message  # not "waiting for the pods"
    # the kubelet backs off and tries again: the same problem, no second Event
    for reason in ("ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"):
        stick(world, reason, PULL)
        world.now += timedelta(seconds=10)
        decision = world.step()
        assert reasons(decision) == []
        assert condition(decision.status, "PodsStuck").reason == reason
    since = condition(decision.status, "PodsStuck").last_transition_time
    assert since == T0 + timedelta(seconds=10)
    # the pull secret was added: the pods start
    world.start_pods()
    world.now += timedelta(seconds=10)
    decision = world.step()
    c = condition(decision.status, "PodsStuck")
    assert (c.status, c.reason) == ("False", "Recovered")
    assert decision.status.phase == "Running"
    assert sorted(reasons(decision)) == ["Recovered", "Running"]
    world.now += timedelta(seconds=10)
    assert reasons(world.step()) == []


def test_a_missing_secret_is_named_and_a_different_missing_key_named_again(world):
    world.step()
    world.start_pods(phase="Pending")
    stick(world, "CreateContainerConfigError", 'secret "hf-token" not found')
    decision = world.step()
    ((reason, message),) = warnings(decision)
    assert reason == "CreateContainerConfigError"
    assert 'secret "hf-token" not found; create the Secret or ConfigMap it names' in message
    assert "in namespace research" in message
    assert reasons(world.step()) == []
    stick(world, "CreateContainerConfigError", "couldn't find key token in Secret research/hf")
    assert [r for r, _ in warnings(world.step())] == ["CreateContainerConfigError"]
    assert reasons(world.step()) == []


def test_an_init_containers_image_error_counts(world):
    world.step()
    world.start_pods(phase="Pending")
    stick(world, "InvalidImageName", 'couldn\'t parse image name "Bad:Name"', container="fetch",
          init=True, image="Bad:Name")
    decision = world.step()
    c = condition(decision.status, "PodsStuck")
    assert (c.status, c.reason) == ("True", "InvalidImageName")
    assert "init container fetch" in c.message and "fix spec.image" in c.message


def test_a_stuck_job_waits_without_a_grace_period_and_says_so_once(world):
    world.step()
    world.start_pods(phase="Pending")
    stick(world, "ImagePullBackOff", PULL)
    assert reasons(world.step()) == ["ImagePullBackOff"]
    world.now += timedelta(days=3)
    decision = world.step()
    assert decision.status.phase == "Pending" and decision.actions == []


def test_a_stuck_job_fails_after_the_grace_period_and_its_job_goes():
    world = World(settings=Settings(unschedulable_after=300, stuck_pods_fail_after=600))
    world.step()
    world.start_pods(phase="Pending")
    stick(world, "ImagePullBackOff", PULL)
    world.step()  # stuck since T0
    world.now = T0 + timedelta(seconds=599)
    assert world.step().status.phase == "Pending"
    world.now = T0 + timedelta(seconds=600)
    decision = world.step()
    assert decision.status.phase == "Failed"
    failed = condition(decision.status, "Failed")
    assert failed.reason == "PodsStuck"
    assert failed.message.startswith("ImagePullBackOff in node rank 0")
    assert "stuck for 600 s, longer than FINETUNE_STUCK_PODS_FAIL_AFTER (600 s)" in \
        failed.message
    assert kinds(decision, Delete) == [Delete("Job", "chat-r0")]
    assert reasons(decision) == ["PodsStuck"]
    assert condition(decision.status, "PodsStuck").status == "False"


def test_a_crash_looping_trainer_restarts_the_gang_naming_its_logs(running):
    running.pods[1]["status"] = waiting_status(
        "CrashLoopBackOff", "back-off 10s restarting failed container=trainer",
        phase="Running", last={"reason": "Error", "exitCode": 1})
    waiting = running.step()  # rank 0 first stops (SIGTERM), then the gang restarts
    assert kinds(waiting, Delete) == [Delete("Pod", "chat-r0-0-abcde")]
    running.pods[0]["status"] = {"phase": "Failed", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"reason": "Error", "exitCode": 143}}}]}
    decision = running.step()
    assert decision.status.phase == "Restarting"
    assert created(decision) == ["Job/chat-r1"]
    (event,) = kinds(decision, Emit)
    assert event.reason == "Restarting"
    assert event.message.startswith(
        "CrashLoopBackOff in node rank 1 (pod chat-r0-1-abcde) container trainer: back-off 10s "
        "restarting failed container=trainer (last run: Error, exit code 1); read its logs: "
        "kubectl logs -n research chat-r0-1-abcde -c trainer --previous; restarting the gang")


def test_a_crash_loop_that_exhausts_the_backoff_fails_and_stops_the_pods():
    world = World(two_node_spec(runPolicy={"backoffLimit": 0}))
    world.step()
    world.start_pods(phase="Pending")
    world.pods[0]["status"] = waiting_status("CrashLoopBackOff", "back-off 20s", container="mesh",
                                             init=True)
    decision = world.step()
    assert decision.status.phase == "Failed"
    failed = condition(decision.status, "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert "init container mesh" in failed.message
    assert failed.message.endswith("Job chat-r0 deleted to stop its pods")
    assert kinds(decision, Delete) == [Delete("Job", "chat-r0")]


def test_a_sidecar_crash_looping_beside_a_running_trainer_is_named_not_restarted(running):
    running.pods[0]["status"] = waiting_status(
        "CrashLoopBackOff", "back-off 40s", container="logs", phase="Running",
        others=[{"name": "trainer", "state": {"running": {}}}])
    decision = running.step()
    assert decision.status.phase == "Running" and created(decision) == []
    c = condition(decision.status, "PodsStuck")
    assert (c.status, c.reason) == ("True", "CrashLoopBackOff")
    assert "kubectl logs -n research chat-r0-0-abcde -c logs --previous" in c.message
    assert reasons(decision) == ["CrashLoopBackOff"]
    assert decision.status.message == "training: Job chat-r0"


def test_a_stuck_new_gang_is_named_and_a_restart_clears_the_condition(running):
    running.fail_rank(1, "OOMKilled", 137)
    restart = running.step().status.message
    assert restart.startswith("node rank 1 (pod chat-r0-1-abcde) failed: OOMKilled")
    running.start_pods(phase="Pending")  # the new gang lands on a node that cannot pull
    stick(running, "ErrImagePull", "not found")
    decision = running.step()
    assert decision.status.phase == "Restarting"
    assert decision.status.message.startswith("ErrImagePull in node rank 0 (pod chat-r1-0")
    running.start_pods(phase="Pending")  # pulled: starting
    decision = running.step()
    assert condition(decision.status, "PodsStuck").reason == "Recovered"
    assert decision.status.message == restart  # why it restarts, again
    # stuck again, then a rank fails: the condition goes with the failed gang's pods
    stick(running, "ImagePullBackOff", PULL)
    assert condition(running.step().status, "PodsStuck").status == "True"
    running.fail_rank(1)
    decision = running.step()
    assert decision.status.phase == "Restarting" and decision.status.restarts == 2
    c = condition(decision.status, "PodsStuck")
    assert (c.status, c.reason) == ("False", "Restarting")
    assert "Recovered" not in reasons(decision)


def test_suspending_a_stuck_job_clears_the_condition(world):
    world.step()
    world.start_pods(phase="Pending")
    stick(world, "ImagePullBackOff", PULL)
    world.step()
    world.edit(runPolicy={"suspend": True})
    decision = world.step()
    assert decision.status.phase == "Suspended"
    assert condition(decision.status, "PodsStuck").status == "False"
    assert "Recovered" not in reasons(decision)


# --------------------------------------------------------------------------- spec changes


def test_spec_change_after_start_is_rejected_with_a_condition(running):
    running.edit(training={"learningRate": 0.5, "globalBatchSize": 8, "maxSeqLength": 64,
                           "epochs": 1, "precision": "fp32"})
    decision = running.step()
    c = condition(decision.status, "SpecChangeRejected")
    assert c.status == "True"
    assert "spec.training.learningRate" in c.message
    assert c.observed_generation == 2
    assert reasons(decision) == ["SpecChangeRejected"]
    assert decision.status.phase == "Running"
    # the rejected value never reaches a restarted gang
    running.fail_rank(0)
    restart = running.step()
    new_job = next(a.obj for a in kinds(restart, Create) if a.obj["kind"] == "Job")
    assert new_job["metadata"]["name"] == "chat-r1"
    cm = running.objects[("ConfigMap", "chat-trainer")]
    assert "learningRate: 0.5" not in cm["data"]["trainer.yaml"]


def test_run_policy_changes_apply_while_running(running):
    running.edit(runPolicy={"backoffLimit": 0})
    running.fail_rank(0)
    decision = running.step()
    assert decision.status.phase == "Failed"  # the new backoffLimit applied
    assert condition(decision.status, "SpecChangeRejected") is None


def test_reverting_a_rejected_change_clears_the_condition(running):
    original = running.spec
    running.edit(training={"learningRate": 0.5})
    running.step()
    running.spec = original
    running.generation += 1
    c = condition(running.step().status, "SpecChangeRejected")
    assert c.status == "False"


def test_condition_transition_time_moves_only_when_its_status_changes(running):
    since = condition(running.status, "Running").last_transition_time
    running.now += timedelta(minutes=3)
    assert condition(running.step().status, "Running").last_transition_time == since


def due(world: World) -> bool:
    return machine.resync_due(world.spec, world.status, world.generation, "chat", world.now,
                              world.settings, world.caches)


def test_resync_is_due_for_active_jobs_whatever_the_clock():
    world = started_world()
    assert world.status.phase == "Pending"
    assert due(world)


def test_resync_of_a_finished_job_is_due_exactly_when_its_ttl_is():
    world = finished(started_world(runPolicy={"ttlSecondsAfterFinished": 60}))
    world.now += timedelta(seconds=59)
    assert not due(world)
    assert world.step().actions == []  # what the skipped reconcile would have decided
    world.now += timedelta(seconds=1)
    assert due(world)
    assert world.step().actions != []  # the cleanup


def test_resync_of_a_finished_job_without_ttl_is_never_due():
    world = finished(started_world())
    world.now += timedelta(days=30)
    assert not due(world)
    assert world.step().actions == []


def test_resync_of_a_job_rejected_before_starting_waits_for_an_edit():
    world = World(two_node_spec(training={"learningRate": -1}))
    world.step()
    assert world.status.phase == "Failed"
    assert not due(world)
    world.edit(training={"epochs": 1, "globalBatchSize": 8, "maxSeqLength": 64,
                         "precision": "fp32"})
    assert due(world)  # edited: observedGeneration is behind
