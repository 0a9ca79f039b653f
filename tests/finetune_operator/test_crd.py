"""The CRD is generated from the API models, current, structural and documented."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml
from finetune_operator import crd
from finetune_operator.documents import read_documents

from tests.conftest import ROOT

CRD_FILE = ROOT / "crds" / "finetunejob.yaml"
KUBERNETES_VERSION = "1.33.0"


@pytest.fixture(scope="module")
def generated() -> dict:
    return crd.crd()


def _schema(generated: dict) -> dict:
    return generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crd_file_is_current():
    assert CRD_FILE.read_text() == crd.crd_yaml(), (
        "crds/finetunejob.yaml is stale: run `make crd`"
    )


def test_crd_is_a_valid_apiextensions_v1_object(generated):
    kubernetes_validate.validate(generated, KUBERNETES_VERSION, strict=True)


def _walk(node: dict, path: str):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural(generated):
    forbidden = {"anyOf", "oneOf", "allOf", "$ref", "title", "nullable", "const"}
    for path, node in _walk(_schema(generated), ""):
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
        untyped_ok = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert node.get("type") or untyped_ok, f"{path} has no type"
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(flag) in (None, True), f"{path}: {flag} must be a flag in OpenAPI 3.0"


def test_every_spec_and_status_field_has_a_description(generated):
    schema = _schema(generated)
    for root in ("spec", "status"):
        for path, node in _walk(schema["properties"][root], root):
            if path.endswith(("[]", "{}")):
                continue  # list items and map values are explained by their field
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_defaults_and_bounds_are_in_the_schema(generated):
    training = _schema(generated)["properties"]["spec"]["properties"]["training"]["properties"]
    assert training["learningRate"]["default"] == 2.0e-5
    assert training["learningRate"]["minimum"] == 0
    assert training["learningRate"]["exclusiveMinimum"] is True
    assert training["scheduler"]["enum"] == ["cosine", "linear", "constant", "wsd"]


def test_cross_field_rules_are_cel_validations(generated):
    spec = _schema(generated)["properties"]["spec"]["properties"]
    rules = {
        name: [r["rule"] for r in spec[name].get("x-kubernetes-validations", [])]
        for name in ("model", "dataset", "method", "resources", "training")
    }
    assert any("has(self.numLabels)" in r for r in rules["method"])
    assert any("self.nodes <= self.maxNodes" in r for r in rules["resources"])
    assert any("evalSplitRatio" in r for r in rules["dataset"])
    assert any("has(self.name)" in r for r in rules["model"])


def test_status_subresource_printer_columns_and_category(generated):
    version = generated["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Phase", "Model", "Strategy", "GPUs", "Progress", "Loss", "Tokens/s",
                     "Tok/s/GPU", "Goodput", "Age"]
    assert generated["spec"]["names"]["categories"] == ["finetune"]
    assert generated["spec"]["names"]["shortNames"] == ["ftj"]


def test_printer_columns_point_at_fields_that_exist(generated):
    schema = _schema(generated)
    for column in generated["spec"]["versions"][0]["additionalPrinterColumns"]:
        parts = column["jsonPath"].lstrip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = schema
        for part in parts:
            node = node["properties"][part]
        assert node["type"] in ("string", "integer", "number"), column


def _examples():
    return sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_examples_match_the_crd_schema(generated, path):
    validator = jsonschema.Draft4Validator(_schema(generated))
    for doc in read_documents(str(path)):
        errors = sorted(validator.iter_errors(doc.body), key=str)
        assert not errors, f"{path.name} doc {doc.index}: {errors[0].message}"


def test_invalid_types_are_rejected_by_the_crd_schema(generated):
    validator = jsonschema.Draft4Validator(_schema(generated))
    job = yaml.safe_load((ROOT / "tests/cases/invalid/negative-learning-rate.yaml").read_text())
    assert any("learningRate" in str(e.path) for e in validator.iter_errors(job))


@pytest.mark.parametrize(("value", "allowed"), [(True, True), (False, True), ("auto", True),
                                               ("sometimes", False), ("true", False), (1, False)])
def test_a_boolean_or_auto_field_is_checked_by_an_enum(generated, value, allowed):
    """No CEL rule can be compiled on a node without a structural type (the API server
    refuses the CRD), so a bool-or-"auto" field lists its values in an enum instead."""
    training = _schema(generated)["properties"]["spec"]["properties"]["training"]
    node = training["properties"]["gradientCheckpointing"]
    assert "x-kubernetes-validations" not in node
    errors = list(jsonschema.Draft4Validator(node).iter_errors(value))
    assert (not errors) == allowed, errors


def test_rule_field_paths_name_properties_of_their_object(generated):
    """The API server reports a rule's error at its fieldPath, which must exist there."""
    with_path = 0
    for path, node in _walk(_schema(generated), ""):
        for rule in node.get("x-kubernetes-validations", []):
            if "fieldPath" in rule:
                with_path += 1
                field = rule["fieldPath"].removeprefix(".")
                assert field in node.get("properties", {}), f"{path}: {rule['fieldPath']}"
    assert with_path >= 6
