"""What the pods of an attempt say: every rank running, the failed rank and why, the pod the
scheduler cannot place, the container that waits on an image or config error or crash-loops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finetune_operator.lifecycle.observation import Attempt, ContainerState, PodState
from finetune_operator.lifecycle.pods import (
    OOM_ADVICE,
    STOP_MARGIN,
    all_running,
    any_failed,
    crash_looping,
    failed,
    failure_summary,
    still_training,
    stuck,
    unschedulable_message,
)

NOW = datetime(2026, 11, 1, 12, 10, tzinfo=UTC)


def test_all_running_counts_distinct_ranks_that_are_not_being_deleted():
    two = (PodState("a", "Running", "0"), PodState("b", "Running", "1"))
    assert all_running(two, nodes=2)
    assert not all_running((*two[:1], PodState("c", "Running", "0")), nodes=2)  # same rank
    assert not all_running((two[0], PodState("b", "Running", "1", deleting=True)), nodes=2)
    assert not all_running((two[0], PodState("b", "Running", None)), nodes=2)


def test_the_first_failed_rank_is_the_one_reported():
    pods = (PodState("r0", "Failed", "0", exit_reason="Error", exit_code=1,
                     finished_at="2026-11-01T12:06:00Z"),
            PodState("r1", "Failed", "1", exit_reason="OOMKilled", exit_code=137,
                     finished_at="2026-11-01T12:05:00Z"),
            PodState("r3", "Failed", "3", exit_reason="Error", exit_code=1),  # time unknown
            PodState("r2", "Running", "2"))
    assert any_failed(Attempt("chat-r0", pods=pods))
    assert failure_summary(Attempt("chat-r0", pods=pods)) == (
        f"node rank 1 (pod r1) failed: OOMKilled, exit code 137; {OOM_ADVICE}")
    assert "raise spec.resources.memory" in OOM_ADVICE


def test_pods_a_suspension_deletes_are_not_failed_ranks():
    # Kueue preempts: the Job controller deletes the pods, the trainers exit 143 on SIGTERM.
    stopped = PodState("r0", "Failed", "0", deleting=True, exit_reason="Error", exit_code=143)
    assert not any_failed(Attempt("chat-r0", suspended=True, pods=(stopped,)))
    # The same pod deleted while the Job runs (kubectl delete pod) is a failed rank ...
    assert any_failed(Attempt("chat-r0", pods=(stopped,)))
    # ... and so is a rank that failed by itself, suspended or not.
    crashed = PodState("r1", "Failed", "1", exit_reason="Error", exit_code=1)
    suspended = Attempt("chat-r0", suspended=True, pods=(stopped, crashed))
    assert failed(suspended) == [crashed]
    assert failure_summary(suspended) == "node rank 1 (pod r1) failed: Error, exit code 1"


def test_ranks_stopped_after_the_failure_are_not_its_cause():
    stopped = PodState("r0", "Failed", "0", exit_code=143, finished_at="2026-11-01T12:05:00Z")
    broke = PodState("r1", "Failed", "1", exit_reason="Error", exit_code=1,
                     finished_at="2026-11-01T12:05:30Z")
    assert failure_summary(Attempt("chat-r0", pods=(stopped, broke))) == (
        "node rank 1 (pod r1) failed: Error, exit code 1")
    # a deleted pod alone: its stop is the cause
    assert failure_summary(Attempt("chat-r0", pods=(stopped,))) == (
        "node rank 0 (pod r0) failed: Failed, exit code 143")


def test_running_pods_of_a_failed_attempt_still_train_until_past_their_grace_period():
    deadline = NOW + timedelta(seconds=60)
    live = PodState("r0", "Running", "0")
    told = PodState("r1", "Running", "1", deleting=True, deletion_deadline=deadline)
    done = PodState("r2", "Failed", "2", exit_code=143)
    waiting = PodState("r3", "Pending", "3")
    assert still_training((live, told, done, waiting), NOW) == (live, told)
    assert still_training((told,), deadline + STOP_MARGIN) == (told,)
    # past the deadline and the margin: on a lost node, it will never report
    assert still_training((told,), deadline + STOP_MARGIN + timedelta(seconds=1)) == ()


def test_a_crash_looping_pod_is_not_waited_for():
    looping = PodState("r1", "Running", "1", containers=(ContainerState(
        "trainer", waiting_reason="CrashLoopBackOff"),))
    assert still_training((looping,), NOW) == ()


def test_without_a_failed_pod_the_jobs_reason_is_reported():
    job = Attempt("chat-r0", failed=True, failure_reason="DeadlineExceeded", failure_message="")
    assert failure_summary(job) == "Job failed: DeadlineExceeded"
    assert failure_summary(Attempt("chat-r0")) == "a node rank failed"


def test_a_pod_is_unschedulable_once_it_waited_longer_than_allowed():
    waiting = PodState("r1", "Pending", "1", waiting_since=NOW - timedelta(seconds=301),
                       scheduler_message="0/3 nodes are available")
    assert unschedulable_message((waiting,), NOW, 300) == (
        "pod r1 pending for 301 s: 0/3 nodes are available")
    assert unschedulable_message((waiting,), NOW, 600) is None
    scheduled = PodState("r1", "Pending", "1", scheduled=True,
                         waiting_since=NOW - timedelta(hours=1))
    assert unschedulable_message((scheduled,), NOW, 300) is None  # pulling its image


# --------------------------------------------------------------------------- stuck containers


def waiting(name: str, reason: str, message: str = "", *, init: bool = False,
            image: str = "registry.test/trainer:1", **last: object) -> ContainerState:
    return ContainerState(name, init=init, image=image, waiting_reason=reason,
                          waiting_message=message, **last)  # type: ignore[arg-type]


TRAINER_RUNS = ContainerState("trainer", running=True)


def pod(name: str, index: str, *containers: ContainerState, phase: str = "Pending",
        **fields: object) -> PodState:
    return PodState(name, phase, index, scheduled=True, containers=containers,
                    **fields)  # type: ignore[arg-type]


def test_an_image_pull_error_names_the_pod_the_container_and_what_to_do():
    pods = (pod("r0", "0", ContainerState("trainer", waiting_reason="ContainerCreating")),
            pod("r1", "1", waiting("trainer", "ImagePullBackOff",
                                   'Back-off pulling image "registry.test/trainer:1"')))
    found = stuck(pods)
    assert found is not None and found.blocking
    assert (found.pod.name, found.container.name, found.reason) == ("r1", "trainer",
                                                                    "ImagePullBackOff")
    message = found.message("research")
    assert message.startswith('ImagePullBackOff in node rank 1 (pod r1) container trainer: '
                              'Back-off pulling image "registry.test/trainer:1"; ')
    assert "image registry.test/trainer:1 exists" in message
    assert "pull secret" in message and "imagePullSecrets" in message
    assert "kubectl describe pod -n research r1" in message


def test_the_first_rank_is_named_and_the_others_counted():
    pods = tuple(pod(f"r{i}", str(i), waiting("trainer", "ErrImagePull", "not found"))
                 for i in (2, 0, 1))
    found = stuck(pods)
    assert found is not None and found.pod.name == "r0" and found.others == 2
    assert found.message("ns").startswith(
        "ErrImagePull in node rank 0 (pod r0) container trainer (and 2 more pod(s)): not found")


def test_an_init_containers_waiting_state_counts_too():
    found = stuck((pod("r0", "0", waiting("fetch", "ErrImagePull", "pull access denied",
                                          init=True),
                       ContainerState("trainer", waiting_reason="PodInitializing")),))
    assert found is not None and found.container.init
    assert "in node rank 0 (pod r0) init container fetch: pull access denied" in \
        found.message("ns")


def test_a_missing_secret_says_to_create_it():
    found = stuck((pod("r0", "0", waiting("trainer", "CreateContainerConfigError",
                                          'secret "hf-token" not found')),))
    assert found is not None and found.blocking
    message = found.message("research")
    assert 'CreateContainerConfigError in node rank 0 (pod r0) container trainer: secret ' \
           '"hf-token" not found' in message
    assert "create the Secret or ConfigMap it names, with that key, in namespace research" \
        in message


def test_an_invalid_image_name_says_to_fix_the_image():
    found = stuck((pod("r0", "0", waiting("trainer", "InvalidImageName",
                                          'couldn\'t parse image name "Bad:Name"',
                                          image="Bad:Name")),))
    assert found is not None and found.blocking
    assert "Bad:Name is not a valid image reference: fix spec.image" in found.message("ns")


def test_the_same_problem_is_recognised_across_the_kubelets_alternating_reasons():
    pull = stuck((pod("r0", "0", waiting("trainer", "ErrImagePull", "not found")),))
    assert pull is not None
    assert pull.told_by("ImagePullBackOff", "anything") and pull.told_by("ErrImagePull", "")
    assert not pull.told_by("CreateContainerConfigError", "not found")
    key = stuck((pod("r0", "0", waiting("trainer", "CreateContainerConfigError",
                                        "couldn't find key token in Secret ns/hf")),))
    assert key is not None
    told = key.message("ns")
    assert key.told_by("CreateContainerConfigError", told)
    assert not key.told_by("CreateContainerConfigError", 'secret "hf" not found; ...')


def test_pods_that_ended_or_are_being_deleted_are_not_stuck():
    blocked = waiting("trainer", "ImagePullBackOff")
    assert stuck((pod("r0", "0", blocked, phase="Failed"),)) is None
    assert stuck((pod("r0", "0", blocked, deleting=True),)) is None
    assert stuck((pod("r0", "0", ContainerState("trainer", waiting_reason="ContainerCreating")),
                  pod("r1", "1", TRAINER_RUNS, phase="Running"))) is None


def test_a_crash_looping_trainer_is_a_rank_failure_with_its_logs_command():
    looping = waiting("trainer", "CrashLoopBackOff", "back-off 10s restarting failed container",
                      last_exit_reason="Error", last_exit_code=1)
    pods = (pod("r0", "0", TRAINER_RUNS, phase="Running"),
            pod("r1", "1", looping, phase="Running"))
    assert crash_looping(pods) == (pods[1], looping)
    assert stuck(pods) is None  # a rank failure, not a wait
    assert failure_summary(Attempt("chat-r0", pods=pods), "research") == (
        "CrashLoopBackOff in node rank 1 (pod r1) container trainer: back-off 10s restarting "
        "failed container (last run: Error, exit code 1); read its logs: "
        "kubectl logs -n research r1 -c trainer --previous")


def test_an_init_container_crash_looping_before_the_trainer_ran_is_a_rank_failure():
    sidecar = waiting("proxy", "CrashLoopBackOff", "back-off 20s", init=True)
    before = (pod("r0", "0", sidecar, ContainerState("trainer", waiting_reason="PodInitializing")),)
    assert crash_looping(before) == (before[0], sidecar)
    # the same sidecar beside a trainer that runs: named, not a failure
    beside = (pod("r0", "0", sidecar, TRAINER_RUNS, phase="Running"),)
    assert crash_looping(beside) is None
    found = stuck(beside)
    assert found is not None and not found.blocking and found.reason == "CrashLoopBackOff"
    assert found.message("ns").endswith("read its logs: kubectl logs -n ns r0 -c proxy "
                                        "--previous")


def test_a_blocked_container_is_named_before_a_crash_looping_sidecar():
    pods = (pod("r0", "0", TRAINER_RUNS, waiting("logs", "CrashLoopBackOff"), phase="Running"),
            pod("r1", "1", waiting("trainer", "CreateContainerConfigError", "no key")))
    found = stuck(pods)
    assert found is not None and found.reason == "CreateContainerConfigError"
    assert found.others == 1
