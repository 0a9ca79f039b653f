"""The CRD's CEL rules, evaluated the way the API server does: defaults first, then rules.

No API server runs here, so the rules are evaluated with cel-python against the same
documents `finetune validate` checks: valid jobs pass every rule, and each cross-field mistake
the schema promises to catch is rejected by the one rule written for it, not only by the CLI.
A rule that fails to evaluate is an error of the rule, never counted as a rejection.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from finetune_contract import rules
from finetune_operator.crd import crd

from tests.conftest import ROOT

INVALID = ROOT / "tests" / "cases" / "invalid"
SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
ENV = celpy.Environment()

# Corpus cases whose mistake a CEL rule (not only the Python validation) must reject, with
# where the rule sits and the rule meant to reject it.
CAUGHT_BY_CEL = {
    "missing-model": ("spec.model", rules.MODEL[0].cel),
    "random-init-without-config": ("spec.model", rules.MODEL[1].cel),
    "train-path-and-hf": ("spec.dataset.train", rules.DATA_SOURCE[0].cel),
    "train-neither-path-nor-hf": ("spec.dataset.train", rules.DATA_SOURCE[0].cel),
    "eval-and-split-ratio": ("spec.dataset", rules.DATASET[0].cel),
    "classification-without-num-labels": ("spec.method", rules.METHOD[0].cel),
    "freeze-sft-trains-nothing": ("spec.method", rules.METHOD[1].cel),
    "nodes-above-max-nodes": ("spec.resources", rules.RESOURCES[0].cel),
    "micro-batch-above-global": ("spec.training", rules.TRAINING[0].cel),
}


def apply_defaults(value: Any, schema: dict) -> Any:
    """What the API server does before validation: fill defaults of absent fields."""
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def rule_failures(value: Any, schema: dict, path: str = "spec") -> list[tuple[str, str]]:
    """(where, rule) of every rule that evaluates to false on `value`. A rule that cannot be
    evaluated fails the test: an error is a broken rule, not a rejection."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = ENV.program(ENV.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as err:
            pytest.fail(f"{path}: rule {rule['rule']!r} could not be evaluated: {err}")
        if not ok:
            failures.append((path, rule["rule"]))
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                failures += rule_failures(value[name], sub, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            failures += rule_failures(item, schema["items"], f"{path}[{i}]")
    return failures


def load(path: Path) -> dict:
    return apply_defaults(yaml.safe_load(path.read_text(encoding="utf-8")), SCHEMA)


def spec_failures(doc: dict) -> list[tuple[str, str]]:
    return rule_failures(doc["spec"], SCHEMA["properties"]["spec"])


def valid_documents() -> list[Path]:
    return sorted((ROOT / "examples").glob("*.yaml")) + [INVALID / "negative-learning-rate.yaml"]


def test_every_rule_compiles():
    def rules(schema: dict):
        yield from schema.get("x-kubernetes-validations", [])
        for sub in schema.get("properties", {}).values():
            yield from rules(sub)
        if isinstance(schema.get("items"), dict):
            yield from rules(schema["items"])

    found = list(rules(SCHEMA))
    assert len(found) >= 8
    for rule in found:
        ENV.compile(rule["rule"])


@pytest.mark.parametrize("path", valid_documents(), ids=lambda p: p.name)
def test_documents_without_cross_field_mistakes_pass_every_rule(path):
    # negative-learning-rate is wrong only in a bound, which the schema (not CEL) checks.
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        assert spec_failures(apply_defaults(doc, SCHEMA)) == []


@pytest.mark.parametrize("case", CAUGHT_BY_CEL)
def test_cross_field_mistake_is_rejected_by_the_rule_written_for_it(case):
    assert spec_failures(load(INVALID / f"{case}.yaml")) == [CAUGHT_BY_CEL[case]]


def test_a_rule_that_cannot_be_evaluated_is_not_taken_for_a_rejection():
    broken = {"x-kubernetes-validations": [{"rule": "self.missing > 0", "message": "m"}]}
    with pytest.raises(pytest.fail.Exception, match="could not be evaluated"):
        rule_failures({}, broken)


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_gradient_checkpointing_rule_accepts_booleans_and_auto(value):
    doc = load(INVALID / "negative-learning-rate.yaml")
    doc["spec"]["training"]["gradientCheckpointing"] = value
    assert spec_failures(doc) == []
