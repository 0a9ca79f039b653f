"""The spec as the lifecycle uses it, parsed once per content: the copy a job started with
(its ConfigMap's text) and the validated current spec, through the caches the controller lends;
the started copy is seeded, and the round trip through the ConfigMap loses nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobStatus
from finetune_operator.controller.caches import spec_caches
from finetune_operator.controller.observe import observation
from finetune_operator.lifecycle import spec as specs

from tests.support.world import ftj, started_world


def config_text(config_map: dict[str, Any]) -> str | None:
    """The started config as the shell hands it to the lifecycle."""
    return observation(ftj(), FineTuneJobStatus(), config_map=config_map).started_config


# --------------------------------------------------------------------------- ParseCache


# --------------------------------------------------------------------------- started spec


def test_started_spec_is_parsed_once_per_configmap_content(monkeypatch):
    world = started_world()
    config_map = world.objects[("ConfigMap", "chat-trainer")]
    caches = spec_caches()  # as in an operator process that did not create it
    parses: list[str] = []
    real = specs.parse_started
    monkeypatch.setattr(specs, "parse_started", lambda text: parses.append(text) or real(text))

    first = specs.started(config_text(config_map), caches)
    # the same ConfigMap read again: another dict, another resourceVersion, the same data
    again = copy.deepcopy(config_map)
    again.setdefault("metadata", {})["resourceVersion"] = "99"
    assert specs.started(config_text(again), caches) is first
    assert len(parses) == 1

    # a new version with other content is parsed again, and gives the new spec
    changed = copy.deepcopy(config_map)
    text = changed["data"]["trainer.yaml"]
    changed["data"]["trainer.yaml"] = text.replace("maxSeqLength: 64", "maxSeqLength: 32")
    assert changed["data"]["trainer.yaml"] != text
    updated = specs.started(config_text(changed), caches)
    assert len(parses) == 2
    assert updated is not None and first is not None
    assert (first.training.max_seq_length, updated.training.max_seq_length) == (64, 32)


def test_a_damaged_configmap_is_remembered_as_damaged():
    caches = spec_caches()
    bad = {"data": {"trainer.yaml": "spec: [not, a, spec"}}
    assert specs.started(config_text(bad), caches) is None
    assert specs.started(config_text(copy.deepcopy(bad)), caches) is None
    assert (caches.started.hits, caches.started.misses) == (1, 1)


def test_reconciles_of_an_unchanged_job_parse_nothing_again():
    world = started_world()
    world.step()
    caches = world.caches
    started, current = caches.started.misses, caches.current.misses
    for _ in range(3):
        world.step()
    assert (caches.started.misses, caches.current.misses) == (started, current)
    assert caches.started.hits >= 3 and caches.current.hits >= 3


def test_an_edited_spec_is_validated_again_and_still_rejected():
    world = started_world()
    world.step()
    misses = world.caches.current.misses
    world.edit(training={"epochs": 1, "globalBatchSize": 8, "maxSeqLength": 64,
                         "precision": "fp32", "learningRate": 0.5})
    decision = world.step()
    assert world.caches.current.misses == misses + 1
    assert "SpecChangeRejected" in [getattr(a, "reason", None) for a in decision.actions]


# --------------------------------------------------------------------------- resync_due


# --------------------------------------------------------------------------- the watch's body


# --------------------------------------------------------------------------- the resync timer


# --------------------------------------------------------------------------- observe


# --------------------------------------------------------------------------- YAML parsing


def test_a_configmap_the_operator_created_is_not_parsed_when_read_back(monkeypatch):
    parses: list[str] = []
    real = specs.parse_started
    monkeypatch.setattr(specs, "parse_started", lambda text: parses.append(text) or real(text))
    world = started_world()  # renders the ConfigMap and creates it
    world.step()  # reads it back
    assert parses == []
    config_map = world.objects[("ConfigMap", "chat-trainer")]
    assert specs.started(config_text(config_map), world.caches) == real(
        config_map["data"]["trainer.yaml"])


@pytest.mark.parametrize("example", ["llama-8b-sft.yaml", "tiny-chat-k8s.yaml"])
def test_the_seeded_started_spec_is_what_parsing_the_configmap_gives(example):
    """The seed is only sound if the round trip through the ConfigMap's YAML is lossless."""
    import yaml
    from finetune_operator import render
    from finetune_operator.planner import plan_job
    from finetune_operator.validation import validate_spec

    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    spec, problems = validate_spec(doc["spec"], doc["metadata"]["name"], plan=False)
    assert spec is not None, problems
    owner = render.Owner(name=doc["metadata"]["name"], namespace="research", uid="u-1")
    text = render.config_map(owner, spec, plan_job(spec))["data"]["trainer.yaml"]
    assert specs.parse_started(text) == spec
