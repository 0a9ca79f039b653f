"""The fit check at admission (admission.py): what the webhook refuses, in the words of
`finetune validate` and the start of a job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from finetune_operator.admission import refusals, spec_changed
from finetune_operator.policy import Policy
from finetune_operator.settings import Settings

from tests.conftest import ROOT
from tests.support.ftj_samples import spec_dict

SETTINGS = Settings()
# What the API server checks before it calls any webhook: the resource, and the name.
SERVER_CHECKED = ("apiVersion", "kind", "metadata.name: is required")
EIGHT_B_ON_ONE_A10G = {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
                       "resources": {"gpu": "A10G-24GB", "gpusPerNode": 1, "maxNodes": 1}}


def job(**spec) -> dict:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "chat", "namespace": "team-a"}, "spec": spec_dict(**spec)}


def test_a_job_that_fits_is_admitted():
    assert refusals(job(), "team-a", SETTINGS) == []


def test_a_job_that_does_not_fit_is_refused_with_the_planners_reason_and_suggestion():
    (why,) = refusals(job(**EIGHT_B_ON_ONE_A10G), "team-a", SETTINGS)
    assert why.startswith("spec.resources: does not fit: nothing fits within 1 x 1 A10G-24GB; "
                          "smallest footprint: ")
    assert "tuning: qlora would fit (ddp on 1 x 1 A10G-24GB, " in why


def test_a_field_mistake_is_refused_naming_the_field():
    assert refusals(job(training={"learningRate": -1}), "team-a", SETTINGS) == [
        "spec.training.learningRate: must be > 0 (got -1)"]


def test_the_tenant_policy_is_applied_in_the_jobs_namespace():
    capped = Settings(policy=Policy.model_validate(
        {"namespaceLimits": {"team-a": {"maxNodes": 1}}}))
    two_nodes = job(resources={"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2})
    (why,) = refusals(two_nodes, "team-a", capped)
    assert why.startswith("spec.resources.nodes: 2 nodes, more than a job of namespace "
                          "'team-a' may use")
    assert refusals(two_nodes, "team-b", capped) == []


def test_the_operators_default_gpu_applies_as_it_does_at_the_start():
    spec = spec_dict(**EIGHT_B_ON_ONE_A10G)
    del spec["resources"]["gpu"]
    obj = {"metadata": {"name": "chat"}, "spec": spec}
    (why,) = refusals(obj, "team-a", Settings(default_gpu="A10G-24GB"))
    assert "A10G-24GB" in why


def test_a_model_only_a_sizing_pod_can_read_is_left_to_the_operator():
    unknown = job(model={"name": "some-org/some-new-model"})
    assert refusals(unknown, "team-a", SETTINGS) == []


def _expect(text: str) -> str:
    return next(line.removeprefix("# expect: ") for line in text.splitlines()
                if line.startswith("# expect: "))


def _reaching_a_webhook() -> list[Path]:
    """The invalid cases an API server sends on to its webhooks: kubectl refuses those that
    are no object, and the server those of another resource or without a name."""
    cases = []
    for case in sorted((ROOT / "tests" / "cases" / "invalid").glob("*.yaml")):
        text = case.read_text(encoding="utf-8")
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("spec"), dict) \
                and not _expect(text).startswith(SERVER_CHECKED):
            cases.append(case)
    return cases


@pytest.mark.parametrize("case", _reaching_a_webhook(), ids=lambda p: p.stem)
def test_every_invalid_case_is_refused_with_its_expected_message(case: Path):
    text = case.read_text(encoding="utf-8")
    expect = _expect(text)
    said = refusals(yaml.safe_load(text), "default", SETTINGS)
    assert any(expect.split(":", 1)[-1].strip() in line for line in said), (expect, said)


def test_only_spec_edits_beyond_the_run_policy_are_checked():
    stored = job(training={"learningRate": -1})
    labelled = {**stored, "metadata": {**stored["metadata"], "labels": {"team": "a"}}}
    assert not spec_changed(stored, labelled)
    suspended = {**stored, "spec": {**stored["spec"], "runPolicy": {"suspend": True}}}
    assert not spec_changed(stored, suspended)  # always applied by the operator
    assert spec_changed(stored, job())
    assert spec_changed(None, stored)  # a create
