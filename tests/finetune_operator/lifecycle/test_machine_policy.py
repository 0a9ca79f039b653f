"""A job the operator's policy refuses (lifecycle/start.py with settings.policy): Failed with
reason PolicyViolation, the Valid condition saying the rule, one Warning Event and no
child; before planning for what the spec asks, after it for what the plan uses. An allowed
job under the same policy starts as any other."""

from __future__ import annotations

import pytest
from finetune_operator.lifecycle import machine
from finetune_operator.lifecycle.actions import Create, Emit
from finetune_operator.lifecycle.step import POLICY_VIOLATION
from finetune_operator.policy import Policy
from finetune_operator.settings import Settings

from tests.support.ftj_samples import plan, spec_dict
from tests.support.world import World, two_node_spec

POLICY = Policy(allowed_image_prefixes=("registry.corp/ml/",),
                allowed_priority_classes=("tenant",),
                namespace_limits={"*": {"max_nodes": 2, "max_gpus": 4}})
SETTINGS = Settings(policy=POLICY)
GPU = {"gpu": "L4-24GB", "gpusPerNode": 2, "maxNodes": 2}


def refused(world: World) -> tuple[str, list[Emit]]:
    decision = world.step()
    status = decision.status
    assert status.phase == "Failed"
    valid = next(c for c in status.conditions if c.type == "Valid")
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert (valid.status, valid.reason, failed.reason) == ("False", POLICY_VIOLATION,
                                                           POLICY_VIOLATION)
    assert not [a for a in decision.actions if isinstance(a, Create)]
    events = [a for a in decision.actions if isinstance(a, Emit)]
    assert [(e.type, e.reason) for e in events] == [("Warning", POLICY_VIOLATION)]
    assert events[0].message == valid.message == status.message
    return valid.message, events


@pytest.mark.parametrize("field,value,named", [
    ("image", "evil.io/x:1", "spec.image: 'evil.io/x:1' is not allowed"),
    ("image", "registry.corp/ml-evil/x:1", "policy.allowedImagePrefixes: registry.corp/ml/"),
    ("priorityClassName", "system-node-critical", "policy.allowedPriorityClasses: tenant"),
    ("nodes", 3, "spec.resources.nodes: 3 nodes"),
])
def test_a_job_that_breaks_the_policy_fails_before_it_is_planned(field, value, named):
    resources = {"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 4}
    if field == "image":
        job = spec_dict(image=value, resources=resources)
    else:
        job = spec_dict(resources={**resources, field: value})
    world = World(job, settings=SETTINGS)
    message, _ = refused(world)
    assert named in message
    assert world.status.plan is None  # refused before planning


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_a_plan_over_the_namespaces_gpus_or_nodes_fails_after_planning(nodes):
    """The planner picks the fewest nodes that fit; a model that needs more of them than the
    namespace may use is refused once the plan says so."""
    rules = Policy(namespace_limits={"*": {"max_gpus": 8, "max_nodes": 2}})
    world = World(spec_dict(resources={**GPU, "gpusPerNode": 4, "maxNodes": 4}),
                  settings=Settings(policy=rules))
    planned = plan(nodes=nodes, gpus_per_node=4, gpu="L4-24GB")
    decision = machine.decide(world.observe(), world.now, world.settings,
                              plan_fn=lambda *_, **__: planned)
    if nodes * 4 <= 8:
        assert decision.status.phase == "Pending"
        return
    assert decision.status.phase == "Failed"
    assert decision.status.conditions[-1].reason == POLICY_VIOLATION
    assert f"the plan needs {nodes} x 4 = {nodes * 4} GPUs" in decision.status.message
    assert 'policy.namespaceLimits."*".maxGpus: 8' in decision.status.message
    assert ("policy.namespaceLimits.\"*\".maxNodes: 2" in decision.status.message) is (
        nodes > 2)
    assert not [a for a in decision.actions if isinstance(a, Create)]


def test_an_allowed_job_under_the_policy_starts_with_the_forced_entries():
    forced = POLICY.model_copy(update={"forced_node_selector": {"pool": "tenants"}})
    world = World(two_node_spec(image="registry.corp/ml/trainer:1"),
                  settings=Settings(policy=forced))
    decision = world.step()
    assert decision.status.phase == "Pending"
    job = next(a.obj for a in decision.actions if isinstance(a, Create)
               and a.obj["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "tenants"}


def test_a_refused_job_is_not_decided_again_until_it_is_edited():
    world = World(spec_dict(image="evil.io/x:1"), settings=SETTINGS)
    refused(world)
    assert world.step().actions == []  # no second Event
    world.spec = spec_dict(image="registry.corp/ml/trainer:1")
    world.generation += 1
    assert world.step().status.phase == "Pending"
