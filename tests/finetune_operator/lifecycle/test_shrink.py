"""A gang whose nodes are gone (lifecycle/shrink.py, runPolicy.shrinkAfterSeconds): re-planned
on the nodes its pods were placed on, through the re-plan, once."""

from __future__ import annotations

from datetime import timedelta

from finetune_operator.lifecycle.actions import SetSuspend

from tests.finetune_operator.lifecycle.test_machine import condition, created, kinds, reasons
from tests.support.ftj_samples import spec_dict
from tests.support.world import T0, World

ELASTIC = {"gpu": "cpu", "gpusPerNode": 1, "maxNodes": 4, "strategy": "ddp"}


def four_node_world(**run_policy) -> World:
    world = World(spec_dict(resources=ELASTIC, runPolicy=run_policy))
    world.step()
    assert world.status.plan.nodes == 4
    return world


def strand(world: World, stranded: list[int]) -> None:
    """Pods of the current attempt: those in `stranded` unschedulable since T0, the others
    placed and waiting for them at the rendezvous."""
    world.start_pods()
    for index in stranded:
        world.pods[index]["status"] = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "lastTransitionTime": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": "0/2 nodes are available: 2 Insufficient cpu."}]}


def test_a_gang_short_of_nodes_is_replanned_on_those_it_has():
    world = four_node_world(shrinkAfterSeconds=120)
    before = world.status.plan
    strand(world, [2, 3])
    world.now = T0 + timedelta(seconds=119)
    assert world.step().status.node_limit is None  # not yet
    world.now = T0 + timedelta(seconds=120)
    decision = world.step()
    assert decision.status.node_limit == 2
    assert kinds(decision, SetSuspend) == [SetSuspend("chat-r0", True)]
    assert reasons(decision)[:2] == ["Shrinking", "Replanning"]
    world.step()  # its pods gone: the Job deleted, the new plan recorded
    moved = world.step()
    assert created(moved) == ["ConfigMap/chat-trainer", "Job/chat-r1"]
    plan = world.status.plan
    assert (plan.nodes, plan.global_batch_size) == (2, before.global_batch_size)
    assert world.job()["spec"]["completions"] == 2
    world.start_pods()
    settled = world.step()
    assert settled.status.phase == "Running" and settled.status.replans == 1
    # maxNodes counts as 2 from now on: the started spec and the capped one agree
    assert not kinds(settled, SetSuspend)
    assert condition(settled.status, "SpecChangeRejected") is None


def test_without_the_run_policy_the_gang_waits_for_its_nodes():
    world = four_node_world()
    strand(world, [3])
    world.now = T0 + timedelta(hours=1)
    decision = world.step()
    assert decision.status.node_limit is None and not kinds(decision, SetSuspend)
    assert condition(decision.status, "Unschedulable").status == "True"


def test_a_gang_none_of_whose_pods_was_placed_is_not_shrunk():
    world = four_node_world(shrinkAfterSeconds=60)
    strand(world, [0, 1, 2, 3])
    world.now = T0 + timedelta(hours=1)
    assert world.step().status.node_limit is None
