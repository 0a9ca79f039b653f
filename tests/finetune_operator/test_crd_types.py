"""The CLI takes exactly what the CRD takes, field by field: for every leaf of the generated
schema's spec, values of every JSON type and at every bound are checked by a small checker
of the API server's rules (type, enum, pattern as RE2 reads it, bounds, lengths, null pruned)
and by the CLI's schema layer; the two must agree on each."""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import celpy
import pytest
import yaml
from finetune_operator.crd import open_api_schema
from finetune_operator.lifecycle.spec import SpecCaches, validated
from finetune_operator.validation import parse_user_job, pydantic_problems, validate_job
from pydantic import ValidationError

from tests.conftest import ROOT

BASE = yaml.safe_load((ROOT / "examples" / "tiny-chat-k8s.yaml").read_text(encoding="utf-8"))
CEL = celpy.Environment()
ANY_TYPE = ["text", "3", "yes", "true", "", 0, 1, 3, -1, 2.5, 3.0, 10**12, True, False, [],
            ["x"], {}, {"a": 1}, None]


def leaves(schema: dict[str, Any], path: str, required: bool) -> list[tuple[str, dict, bool]]:
    """(field path, its schema, whether required) for each scalar field under `schema`."""
    if schema.get("type") == "object" and "properties" in schema:
        needed = set(schema.get("required", []))
        return [leaf for name, sub in schema["properties"].items()
                for leaf in leaves(sub, f"{path}.{name}", name in needed)]
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        return leaves(schema["additionalProperties"], f"{path}.k", False)
    if schema.get("type") == "array":
        return leaves(schema["items"], f"{path}[0]", False)
    if schema.get("x-kubernetes-preserve-unknown-fields") and "enum" not in schema:
        return []  # model.config: anything the schema keeps (its keys: test_validation)
    return [(path, schema, required)]


SPEC_LEAVES = leaves(open_api_schema()["properties"]["spec"], "spec", True)


def server_accepts(schema: dict[str, Any], value: Any, required: bool,
                   in_list: bool = False) -> bool:
    """The API server's verdict on one field's value, as it arrives from kubectl (JSON)."""
    if value is None:  # a field's null is pruned, the field then absent; a list's is kept
        return not required and not in_list
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 3.0 is written 3
    if "enum" in schema and not any(type(value) is type(e) and value == e
                                    for e in schema["enum"]):
        return False
    return _type_ok(schema, value) and _bounds_ok(schema, value) and _rules_ok(schema, value)


@functools.cache
def _program(rule: str) -> Any:
    return CEL.program(CEL.compile(rule))


def _rules_ok(schema: dict[str, Any], value: Any) -> bool:
    """The field's own CEL rules (x-kubernetes-validations), checked after its type."""
    for rule in schema.get("x-kubernetes-validations", []):
        program = _program(rule["rule"])
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            return False
    return True


def _type_ok(schema: dict[str, Any], value: Any) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    kind = schema.get("type")
    if kind is None:
        return "enum" in schema
    return {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }[kind]


def _bounds_ok(schema: dict[str, Any], value: Any) -> bool:
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            return False
        if len(value) < schema.get("minLength", 0):
            return False
        # Go's regexp (RE2): '$' is the end of the text, as \Z is in Python.
        pattern = schema.get("pattern")
        return pattern is None or re.search(re.sub(r"\$$", r"\\Z", pattern), value) is not None
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and (value <= low if schema.get("exclusiveMinimum") else value < low):
            return False
        if high is not None and (value >= high if schema.get("exclusiveMaximum")
                                 else value > high):
            return False
    return True


def values_for(schema: dict[str, Any]) -> list[Any]:
    """Every JSON type, and the values at this field's own bounds and enum."""
    values = list(ANY_TYPE) + list(schema.get("enum", [])) + ["not-in-the-enum"]
    for key in ("minimum", "maximum"):
        if key in schema:
            bound = schema[key]
            values += [bound, bound - 1, bound + 1, bound - 0.5, bound + 0.5, float(bound)]
    for key in ("maxLength", "minLength"):
        if key in schema:
            values += ["a" * n for n in (max(schema[key] - 1, 0), schema[key], schema[key] + 1)]
    if "pattern" in schema:
        values += ["ok", "ok\n", "a/b", "a..b", "a--b", "a.-.b", "a/b.git", "a" * 96,
                   "a" * 97, f"{'o' * 96}/{'n' * 96}", f"{'o' * 97}/n"]
    return values


def cases() -> list[tuple[str, dict, bool, Any]]:
    return [(path, schema, required, value) for path, schema, required in SPEC_LEAVES
            for value in values_for(schema)]


def set_at(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node: Any = doc
    parts = re.findall(r"[^.\[\]]+|\[0\]", path)
    for part, following in zip(parts, parts[1:] + [None], strict=True):
        if part == "[0]":
            if not node:
                node.append({})
            key: Any = 0
        else:
            key = part
        if following is None:
            node[key] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(key), dict | list):
                node[key] = [] if following == "[0]" else {}
            node = node[key]
    return doc


def cli_accepts(path: str, value: Any) -> bool:
    """No problem of the CLI's schema layer at the field itself (a rule across fields may
    still name the object holding it: not the type's business)."""
    try:
        parse_user_job(set_at(BASE, path, value))
    except ValidationError as err:
        return all(p.path != path for p in pydantic_problems(err))
    return True


def test_every_spec_leaf_is_covered():
    paths = {path for path, _, _ in SPEC_LEAVES}
    assert len(paths) > 80
    for path in ("spec.dataset.dedupe", "spec.training.epochs", "spec.resources.gpusPerNode",
                 "spec.model.name", "spec.dataset.train.hf", "spec.resources.nodeSelector.k",
                 "spec.resources.tolerations[0].value", "spec.training.gradientCheckpointing",
                 "spec.model.parameters"):
        assert path in paths


@pytest.mark.parametrize(("path", "schema", "required", "value"), cases(),
                         ids=lambda x: x if isinstance(x, str) and x.startswith("spec") else "")
def test_the_cli_accepts_exactly_what_the_crd_accepts(path, schema, required, value):
    expected = server_accepts(schema, value, required, in_list=path.endswith("]"))
    assert cli_accepts(path, value) == expected, (path, value)


@pytest.mark.parametrize(("path", "value"), [("spec.dataset.dedupe", "yes"),
                                             ("spec.training.epochs", "3"),
                                             ("spec.resources.gpusPerNode", "2"),
                                             ("spec.model.name", "evil..repo"),
                                             ("spec.model.name", "tiny\n")])
def test_the_measured_disagreements_are_refused(path, value):
    assert not cli_accepts(path, value)


URL_EXAMPLE = "http://tracking.mlops:5000"


@pytest.mark.parametrize(("path", "schema"), [(p, s) for p, s, _ in SPEC_LEAVES
                                              if "pattern" in s])
def test_no_pattern_takes_a_trailing_newline(path, schema):
    good = URL_EXAMPLE if schema["pattern"].startswith("^https?://") else \
        BASE["spec"]["model"]["name"]
    assert cli_accepts(path, good)
    assert not cli_accepts(path, good + "\n")
    assert not server_accepts(schema, good + "\n", False)


@pytest.mark.parametrize(("path", "schema", "required", "value"), cases()[::10],
                         ids=lambda x: x if isinstance(x, str) and x.startswith("spec") else "")
def test_the_operator_reads_a_stored_spec_as_the_cli_reads_the_file(path, schema, required,
                                                                     value):
    """The operator gets the spec from the API server as JSON (no YAML): the same strict
    types, through the same validate_spec, give it the same problems."""
    doc = set_at(BASE, path, value)
    _, from_file = validate_job(doc, plan=False)
    stored = json.loads(json.dumps(doc["spec"]))
    _, from_server = validated(doc["metadata"]["name"], stored, SpecCaches())
    assert from_server == [str(p) for p in from_file]
