"""The example FineTuneJobs against the CRD's openAPIV3Schema (kubernetes-validate does not
know custom resources), and what the operator would render for them against Kubernetes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from finetune_contract.api import FineTuneJobStatus
from finetune_operator.crd import crd
from finetune_operator.lifecycle.actions import Create
from finetune_operator.lifecycle.machine import decide
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.render import Owner
from finetune_operator.settings import Settings

from tests.conftest import ROOT

EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))
# OpenAPI v3 schemas use draft 4 semantics (boolean exclusiveMinimum); x- keys are ignored.
VALIDATOR = jsonschema.Draft4Validator(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _jobs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "FineTuneJob"]


def test_there_are_examples():
    assert EXAMPLES, "examples/*.yaml holds the documented FineTuneJobs"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_matches_the_crd_schema(path):
    for job in _jobs(path):
        VALIDATOR.validate(job)


def test_crd_schema_check_really_rejects_a_bad_field():
    job = _jobs(EXAMPLES[0])[0]
    job["spec"]["training"] = {**job["spec"].get("training", {}), "learningRate": "fast"}
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(job)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_renders_objects_kubernetes_accepts(path):
    for job in _jobs(path):
        observed = Observed(owner=Owner(job["metadata"]["name"], "default", "uid-1"),
                            generation=1, spec=job["spec"], status=FineTuneJobStatus())
        decision = decide(observed, now=datetime.now(UTC), settings=Settings())
        creates = [a.obj for a in decision.actions if isinstance(a, Create)]
        assert [o["kind"] for o in creates] == ["ConfigMap", "Service", "Job"], decision.status
        for obj in creates:
            kubernetes_validate.validate(json.loads(json.dumps(obj)), "1.33.0", strict=True)
