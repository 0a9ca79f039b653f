"""A job holding a megabyte in any string field gets a status that the API server accepts:
every message at most caps.MAX_MESSAGE, the status patch as a whole at most
caps.MAX_STATUS_BYTES, whichever field it is and whether the job ends Failed or planned.

(`model.parameters: 'x' * 1000000`, a storable job, once made a 4 MB status patch: the
error quoted the value whole, copied into status.message and three conditions.)
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from finetune_operator.caps import MAX_MESSAGE, MAX_STATUS_BYTES
from finetune_operator.controller.kube import status_patch
from finetune_operator.lifecycle.actions import Emit

from tests.support.world import World, two_node_spec

HUGE = "x" * 1_000_000


def full_spec() -> dict[str, Any]:
    """The two-node sample with every optional string field the API has set, so that each
    can be made huge in turn."""
    spec = copy.deepcopy(two_node_spec())
    spec["model"]["parameters"] = "7B"
    spec["dataset"]["eval"] = {"path": "chat/eval.jsonl"}
    spec["resources"] |= {"cpu": "4", "memory": "16Gi", "nodeSelector": {"pool": "cpu"},
                          "tolerations": [{"key": "k", "operator": "Equal", "value": "v",
                                           "effect": "NoSchedule"}]}
    spec["output"] = {"pvc": "claim", "path": "/output"}
    spec["image"] = "trainer:1"
    return spec


def string_paths(node: Any, path: tuple = ()) -> list[tuple]:
    """The path of every string leaf (and of every mapping key of a free-form map)."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in string_paths(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in string_paths(v, (*path, i))]
    return [path] if isinstance(node, str) else []


def with_huge(path: tuple) -> dict[str, Any]:
    spec = full_spec()
    node = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = HUGE
    return spec


PATHS = string_paths(full_spec())
CASES = [pytest.param(with_huge(p), id=".".join(map(str, p))) for p in PATHS]
CASES += [pytest.param({**full_spec(), "extra": HUGE}, id="unknown-field"),
          pytest.param({**full_spec(), "resources": {**full_spec()["resources"],
                                                     "nodeSelector": {HUGE: "v"}}},
                       id="node-selector-key")]


def test_the_sample_is_planned_so_the_cases_reach_both_ends():
    assert len(PATHS) >= 20, PATHS
    assert World(full_spec()).step().status.phase == "Pending"


@pytest.mark.parametrize("spec", CASES)
def test_a_megabyte_in_any_string_field_makes_a_bounded_status(spec):
    world = World(spec)
    decision = world.step()
    status = decision.status
    messages = [c.message for c in status.conditions] + [status.message or ""]
    messages += [a.message for a in decision.actions if isinstance(a, Emit)]
    assert max(map(len, messages)) <= MAX_MESSAGE
    patch = json.dumps({"status": status_patch(None, status)})
    assert len(patch.encode()) <= MAX_STATUS_BYTES, (status.phase, len(patch))


def test_a_megabyte_size_hint_fails_the_job_with_a_short_message():
    spec = full_spec()
    spec["model"] = {"name": "some-org/some-model", "parameters": HUGE}
    status = World(spec).step().status
    assert status.phase == "Failed"
    assert status.message is not None and status.message.startswith("spec.model.parameters: ")
    assert "characters, cut" in status.message
    assert len(json.dumps(status_patch(None, status))) <= MAX_STATUS_BYTES
