"""The final check of rendered objects (apicheck.children_problems): what the API server
would refuse of a child is found, named by object and field, before anything is created."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from finetune_operator import apicheck, apirules, render

from tests.support.ftj_samples import OWNER, plan, spec
from tests.support.world import SETTINGS


def children() -> list[dict[str, Any]]:
    return render.children(OWNER, spec(), plan(), SETTINGS, 0)


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return objects[2]["spec"]["template"]["spec"]


def trainer(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return pod_spec(objects)["containers"][0]


def test_the_children_of_a_valid_spec_pass():
    assert apicheck.children_problems(children()) == []


def config_map_of(size: int) -> dict[str, Any]:
    key = "trainer.yaml"
    return {"kind": "ConfigMap", "metadata": {"name": "chat-trainer"},
            "data": {key: "x" * (size - len(key))}}


@pytest.mark.parametrize("size,refused", [
    (apirules.CONFIG_MAP_DATA_MAX - 1, False), (apirules.CONFIG_MAP_DATA_MAX, False),
    (apirules.CONFIG_MAP_DATA_MAX + 1, True), (2 * apirules.CONFIG_MAP_DATA_MAX, True)])
def test_a_configmap_is_refused_only_over_1_mib_of_keys_and_values(size, refused):
    problems = apicheck.children_problems([config_map_of(size)])
    assert bool(problems) is refused
    if refused:
        assert problems[0].startswith(f"ConfigMap chat-trainer: data: is {size} bytes")


def test_the_size_counts_bytes_not_characters():
    assert apirules.config_map_size({"k": "é" * 10}) == 1 + 20


Tamper = Callable[[list[dict[str, Any]]], None]
TAMPERED: list[tuple[str, Tamper, str]] = [
    ("toleration", lambda o: pod_spec(o).update(tolerations=[
        {"key": "a", "operator": "Exists", "value": "v"}]),
     "Job chat-r0: spec.template.spec.tolerations[0].value: must be empty"),
    ("node-selector", lambda o: pod_spec(o).update(nodeSelector={"pool": "-x"}),
     "Job chat-r0: spec.template.spec.nodeSelector.pool: must be empty or letters"),
    ("priority", lambda o: pod_spec(o).update(priorityClassName="High"),
     "Job chat-r0: spec.template.spec.priorityClassName: must be lower case"),
    ("mount-twice", lambda o: trainer(o)["volumeMounts"].append(
        {"name": "output", "mountPath": "/tmp"}),
     ("Job chat-r0: spec.template.spec.containers[0].volumeMounts: mountPath '/tmp' is used "
     "twice")),
    ("secret-key", lambda o: trainer(o)["env"].append({"name": "HF_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "hf", "key": "../token"}}}),
     "Job chat-r0: spec.template.spec.containers[0].env[" + str(len(trainer(children())["env"]))
     + "].valueFrom.secretKeyRef.key: must not start with '..'"),
    ("image", lambda o: trainer(o).update(image=" trainer:1 "),
     "Job chat-r0: spec.template.spec.containers[0].image: must not have leading"),
    ("label", lambda o: o[2]["metadata"]["labels"].update({"finetune.dev/job": "x" * 64}),
     "Job chat-r0: metadata.labels.finetune.dev/job: must be at most 63 characters"),
    ("pod-label-key", lambda o: o[2]["spec"]["template"]["metadata"]["labels"].update(
        {"a b": "x"}), "Job chat-r0: spec.template.metadata.labels: key 'a b': "),
    ("service-name", lambda o: o[1]["metadata"].update(name="1chat"),
     ("Service 1chat: metadata.name: must be lower case letters, digits and '-', start with a "
     "letter")),
    ("configmap-name", lambda o: o[0]["metadata"].update(name="Chat_trainer"),
     "ConfigMap Chat_trainer: metadata.name: must be lower case"),
    ("configmap-key", lambda o: o[0]["data"].update({"../x": "y"}),
     "ConfigMap chat-trainer: data.../x: must be letters"),
]


@pytest.mark.parametrize("tamper,expected", [(t, e) for _, t, e in TAMPERED],
                         ids=[i for i, _, _ in TAMPERED])
def test_a_rendered_field_the_api_server_refuses_is_named_with_its_object(tamper, expected):
    objects = copy.deepcopy(children())
    tamper(objects)
    problems = apicheck.children_problems(objects)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_mount_of_a_rendered_pod_but_the_output_is_a_fixed_mount():
    """FIXED_MOUNT_PATHS, which output.path may not touch, lists every other mount."""
    full = spec(model={"name": "Qwen/Qwen2.5-0.5B", "cachePvc": "cache"},
                dataset={"format": "messages", "pvc": "data", "train": {"path": "t.jsonl"}},
                output={"path": "/output/model", "pvc": "out"})
    job = render.batch_job(OWNER, full, plan(), SETTINGS, 0)
    pod = job["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for c in pod["containers"] + pod.get("initContainers", [])
              for m in c["volumeMounts"]}
    assert len(pod.get("initContainers", [])) == 1  # the model cache's: its mounts count too
    assert mounts - {"/output/model"} == set(render.FIXED_MOUNT_PATHS)
