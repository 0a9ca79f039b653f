"""The CRD's CEL rules, evaluated the way the API server does: defaults first, then rules.

No API server runs here, so the rules are evaluated with cel-python against the same
documents `finetune validate` checks: valid jobs pass every rule, and each cross-field mistake
the schema promises to catch is caught by a rule, not only by the CLI.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from finetune_operator.crd import crd

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "tests" / "cases" / "invalid"
SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
ENV = celpy.Environment()

# Corpus cases whose mistake a CEL rule (not only the Python validation) must reject.
CAUGHT_BY_CEL = [
    "missing-model",
    "random-init-without-config",
    "train-path-and-hf",
    "train-neither-path-nor-hf",
    "eval-and-split-ratio",
    "classification-without-num-labels",
    "freeze-sft-trains-nothing",
    "nodes-above-max-nodes",
    "micro-batch-above-global",
]


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


def rule_failures(value: Any, schema: dict, path: str = "") -> list[str]:
    """Messages of every rule that rejects `value` (an evaluation error rejects too)."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = ENV.program(ENV.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError:
            ok = False
        if not ok:
            failures.append(f"{path}: {rule['message']}")
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
        assert rule_failures(apply_defaults(doc, SCHEMA), SCHEMA) == []


@pytest.mark.parametrize("case", CAUGHT_BY_CEL)
def test_cross_field_mistake_is_rejected_by_a_rule(case):
    assert rule_failures(load(INVALID / f"{case}.yaml"), SCHEMA), f"no CEL rule rejects {case}"


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_gradient_checkpointing_rule_accepts_booleans_and_auto(value):
    doc = load(INVALID / "negative-learning-rate.yaml")
    doc["spec"]["training"]["gradientCheckpointing"] = value
    assert rule_failures(doc, SCHEMA) == []
