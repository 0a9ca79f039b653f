"""An edit of spec.resources on a started job (lifecycle/replan.py): re-planned, its gang
stopped through the emergency checkpoint, resumed on the new layout as the next attempt."""

from __future__ import annotations

from datetime import timedelta

import yaml
from finetune_operator.lifecycle.actions import Create, Delete, SetSuspend

from tests.finetune_operator.lifecycle.test_machine import condition, created, kinds, reasons
from tests.support.world import TWO_NODES, World

ONE_NODE = {**TWO_NODES, "nodes": 1, "maxNodes": 1, "gpusPerNode": 1}


def trainer_config(world: World) -> dict:
    return yaml.safe_load(world.objects[("ConfigMap", "chat-trainer")]["data"]["trainer.yaml"])


def deleted(decision) -> list[str]:
    return [f"{a.kind}/{a.name}" for a in kinds(decision, Delete)]


def test_a_resources_edit_moves_the_running_gang_to_the_new_layout(running):
    before = running.status.plan
    running.edit(resources=ONE_NODE)
    # 1. the gang stops through its emergency checkpoint: its Job is suspended
    stop = running.step()
    assert kinds(stop, SetSuspend) == [SetSuspend("chat-r0", True)]
    assert stop.status.phase == "Restarting"
    assert "re-planned as ddp on 1 x 1 cpu" in stop.status.message
    assert reasons(stop) == ["Replanning"]
    # 2. its pods are gone: the old Job goes, the new plan is recorded
    moved = running.step()
    assert deleted(moved) == ["Job/chat-r0"] and created(moved) == []
    plan = moved.status.plan
    assert (plan.nodes, plan.gpus_per_node, plan.world_size) == (1, 1, 1)
    assert (moved.status.replans, moved.status.restarts) == (1, 0)
    assert moved.status.active_job == "chat-r1"
    # the global batch is the spec's: one rank accumulates what four did together
    assert plan.global_batch_size == before.global_batch_size
    assert plan.micro_batch_size * plan.gradient_accumulation * plan.world_size == \
        before.micro_batch_size * before.gradient_accumulation * before.world_size
    # 3. the ConfigMap says the edited spec and the new plan; the next attempt's Job starts
    started = running.step()
    assert deleted(started) == ["ConfigMap/chat-trainer"]
    assert created(started) == ["ConfigMap/chat-trainer", "Job/chat-r1"]
    assert reasons(started) == ["Replanned"]
    assert running.job()["spec"]["completions"] == 1
    config = trainer_config(running)
    assert config["plan"]["worldSize"] == 1
    assert config["plan"]["gradientAccumulation"] == plan.gradient_accumulation
    running.start_pods()
    resumed = running.step()
    assert resumed.status.phase == "Running"
    assert resumed.actions == [a for a in resumed.actions if not isinstance(a, (Create, Delete))]
    assert condition(resumed.status, "SpecChangeRejected") is None


def test_the_new_attempt_waits_until_the_old_ranks_have_written_their_checkpoint(running):
    running.suspension_keeps_pods = True
    running.edit(resources=ONE_NODE)
    running.step()
    for _ in range(2):  # still running: nothing moves, and the Job is suspended once
        running.now += timedelta(seconds=5)
        waiting = running.step()
        assert waiting.actions == []
        assert "waiting for chat-r0-0-abcde, chat-r0-1-abcde of Job chat-r0" in \
            waiting.status.message
    running.pods = []  # exited 143 after the checkpoint; the Job controller removed them
    assert deleted(running.step()) == ["Job/chat-r0"]


def test_a_crash_between_the_moves_repeats_none_and_skips_none(running):
    running.edit(resources=ONE_NODE)
    running.step()
    running.step(write_status=False)  # Job chat-r0 deleted, the status write lost
    assert ("Job", "chat-r0") not in running.objects
    redone = running.step()
    assert (redone.status.replans, redone.status.active_job) == (1, "chat-r1")
    running.step(write_status=False)  # the ConfigMap replaced and Job chat-r1 created, lost
    again = running.step()
    assert again.status.replans == 1
    assert created(again) == []
    assert trainer_config(running)["plan"]["worldSize"] == 1
    assert running.job()["spec"]["completions"] == 1


def test_a_replan_is_no_failure_and_leaves_the_backoff_limit_whole(running):
    running.spec = {**running.spec, "runPolicy": {"backoffLimit": 1}}
    running.edit(resources=ONE_NODE)
    for _ in range(3):
        running.step()
    running.start_pods()
    running.step()
    running.fail_rank(0)
    restart = running.step()
    assert restart.status.phase == "Restarting"
    assert (restart.status.restarts, restart.status.replans) == (1, 1)
    assert restart.status.active_job == "chat-r2"
    assert "restart 1 of 1" in restart.status.message


def test_a_resources_edit_that_does_not_fit_is_rejected_and_the_gang_trains_on(running):
    running.edit(resources={**TWO_NODES, "memory": "1Mi"})
    decision = running.step()
    rejected = condition(decision.status, "SpecChangeRejected")
    assert (rejected.status, rejected.reason) == ("True", "ReplanRefused")
    assert rejected.message.startswith("spec.resources changed, but the job cannot run on "
                                       "them: does not fit: nothing fits within 2 x 2 cpu")
    assert "it goes on as planned before" in rejected.message
    assert decision.status.phase == "Running"
    assert not kinds(decision, SetSuspend) and not kinds(decision, Delete)
    assert reasons(decision) == ["SpecChangeRejected"]
    # fixed by another edit: the re-plan goes ahead and the rejection is cleared
    running.edit(resources=ONE_NODE)
    fixed = running.step()
    assert kinds(fixed, SetSuspend) == [SetSuspend("chat-r0", True)]
    assert condition(fixed.status, "SpecChangeRejected").status == "False"


def test_a_resources_edit_beside_another_edit_is_rejected_whole(running):
    running.edit(resources=ONE_NODE, training={**running.spec["training"],
                                               "learningRate": 0.5})
    decision = running.step()
    rejected = condition(decision.status, "SpecChangeRejected")
    assert rejected.reason == "ImmutableFieldChanged"
    assert "spec.resources.nodes" in rejected.message
    assert "spec.training.learningRate" in rejected.message
    assert decision.status.plan.nodes == 2
    assert not kinds(decision, SetSuspend)


def test_a_pending_gang_that_cannot_be_scheduled_is_moved_at_once():
    world = World()
    world.step()
    world.start_pods(phase="Pending")  # e.g. no node has room for it
    world.edit(resources=ONE_NODE)
    moved = world.step()  # no rank trains: nothing to stop
    assert deleted(moved) == ["Job/chat-r0"]
    assert world.step().status.active_job == "chat-r1"
    assert world.job()["spec"]["completions"] == 1
