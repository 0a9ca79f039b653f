"""A child that cannot be created: the lifecycle fails the job before creating any child the
API server would refuse (a ConfigMap over 1 MiB), and `child_rejected` turns a refusal the
shell met into Failed, one Warning Event and the deletes of the children created before."""

from __future__ import annotations

import copy

from finetune_operator import conditions as cond
from finetune_operator.lifecycle.actions import Create, Delete, Emit
from finetune_operator.lifecycle.machine import child_rejected
from finetune_operator.lifecycle.step import CHILD_REJECTED, REJECTION_MESSAGE_MAX

from tests.support.ftj_samples import TINY_MODEL
from tests.support.world import T0, World, two_node_spec


def huge_config_world() -> World:
    """A valid spec whose trainer config, which holds the spec, exceeds a ConfigMap's 1 MiB."""
    model = copy.deepcopy(TINY_MODEL)
    model["config"]["note"] = "x" * (1024 * 1024)
    return World(two_node_spec(model=model))


def test_a_configmap_over_1_mib_fails_the_job_before_any_child_is_created():
    decision = huge_config_world().step()
    assert not [a for a in decision.actions if isinstance(a, Create)]
    events = [a for a in decision.actions if isinstance(a, Emit)]
    assert [(e.type, e.reason) for e in events] == [("Warning", CHILD_REJECTED)]
    status = decision.status
    assert status.phase == "Failed"
    assert "ConfigMap chat-trainer: data: is " in (status.message or "")
    assert "over the API server's limit of 1048576" in (status.message or "")
    created = cond.find(status.conditions, cond.CREATED)
    assert created is not None and (created.status, created.reason) == ("False",
                                                                       CHILD_REJECTED)


def test_the_failed_job_stays_failed_and_creates_nothing_at_later_resyncs():
    world = huge_config_world()
    world.step()
    for _ in range(3):
        assert not [a for a in world.step().actions if isinstance(a, Create)]
    assert world.status.phase == "Failed" and world.objects == {}


def test_a_refused_job_deletes_the_children_created_before_it_newest_first():
    world = World(two_node_spec())
    decision = world.decide()
    creates = [a for a in decision.actions if isinstance(a, Create)]
    assert [c.obj["kind"] for c in creates] == ["ConfigMap", "Service", "Job"]
    failed = child_rejected(world.observe(), decision, T0, world.settings, creates[2],
                            'Job.batch "chat-r0" is invalid: spec.template: bad', creates[:2])
    assert failed.actions[:2] == [Delete("Service", "chat"), Delete("ConfigMap", "chat-trainer")]
    events = [a for a in failed.actions if isinstance(a, Emit)]
    assert [(e.type, e.reason) for e in events] == [("Warning", CHILD_REJECTED)]
    assert len(failed.actions) == 3  # the Created Event of the decision is dropped
    assert failed.status.phase == "Failed"
    assert failed.status.active_job is None
    assert 'the API server refused Job chat-r0: Job.batch "chat-r0" is invalid' in (
        failed.status.message or "")
    assert cond.find(failed.status.conditions, cond.CREATED).status == "False"
    assert cond.find(failed.status.conditions, cond.FAILED).reason == CHILD_REJECTED


def test_a_long_refusal_is_capped_in_the_status_and_the_event():
    world = World(two_node_spec())
    decision = world.decide()
    job = [a for a in decision.actions if isinstance(a, Create)][-1]
    failed = child_rejected(world.observe(), decision, T0, world.settings, job, "x" * 10_000,
                            [])
    message = failed.status.message or ""
    assert REJECTION_MESSAGE_MAX < len(message) < REJECTION_MESSAGE_MAX + 80
    assert message.endswith("delete and re-create the job")
