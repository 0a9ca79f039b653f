"""The chart's `policy` value reaches the operator: rendered by the real helm into
FINETUNE_POLICY, read by settings.from_env into the same Policy, checked by the values
schema, and limiting nothing by default."""

from __future__ import annotations

import json

import pytest
import yaml
from finetune_operator import policy, settings

from tests.chart.helpers import (
    CHART,
    VALUE_SETS,
    HelmError,
    helm_template,
    one,
    values_args,
    values_of,
)
from tests.conftest import require_tool

POLICY_VALUES = "tenant-policy-values.yaml"


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm")


def operator_env(objects: list[dict]) -> dict[str, str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_default_policy_limits_nothing(helm: str) -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text())["policy"] == {
        "allowedImagePrefixes": [], "allowedTolerations": [], "forcedTolerations": [],
        "allowedNodeSelectors": [], "forcedNodeSelector": {}, "allowedPriorityClasses": [],
        "namespaceLimits": {}}
    assert settings.from_env(operator_env(helm_template(helm))).policy == policy.NO_POLICY


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_policy_value_reaches_the_operators_settings(helm: str, value_set: str) -> None:
    env = operator_env(helm_template(helm, *values_args(value_set)))
    expected = policy.Policy.model_validate(values_of(value_set)["policy"], by_alias=True)
    assert settings.from_env(env).policy == expected


def test_the_example_policy_file_limits_what_it_says(helm: str) -> None:
    assert POLICY_VALUES in VALUE_SETS
    s = settings.from_env(operator_env(helm_template(helm, *values_args(POLICY_VALUES))))
    assert s.policy.allowed_image_prefixes == ("registry.corp/ml/",
                                               "ghcr.io/finetune-dev/finetune-trainer")
    assert s.policy.forced_node_selector == {"pool": "tenants"}
    assert s.policy.limits("team-a").model_dump() == {"max_gpus": 8, "max_nodes": 1}
    assert s.policy.limits("research").model_dump() == {"max_gpus": 64, "max_nodes": 8}
    # the chart's own trainer image, which jobs without spec.image get, is allowed
    assert policy.image_allowed(s.default_image, s.policy.allowed_image_prefixes)


@pytest.mark.parametrize("values,expected", [
    ({"policy.allowedImagePrefixes": "{registry.corp/ml/}"},
     {"allowedImagePrefixes": ["registry.corp/ml/"]}),
    ({"policy.namespaceLimits.team-a.maxGpus": "16", "policy.namespaceLimits.*.maxNodes": "1"},
     {"namespaceLimits": {"team-a": {"maxGpus": 16}, "*": {"maxNodes": 1}}}),
    ({"policy.forcedNodeSelector.pool": "tenants"}, {"forcedNodeSelector": {"pool": "tenants"}}),
])
def test_set_flags_reach_the_env_as_json(helm: str, values: dict, expected: dict) -> None:
    args = [a for key, value in values.items() for a in ("--set", f"{key}={value}")]
    raw = json.loads(operator_env(helm_template(helm, *args))["FINETUNE_POLICY"])
    for key, value in expected.items():
        assert raw[key] == value


@pytest.mark.parametrize("bad_values, complaint", [
    (["--set", "policy.allowedImagePrefixs={x}"], "allowedImagePrefixs"),
    (["--set", "policy.allowedImagePrefixes={has space}"], "allowedImagePrefixes"),
    (["--set", "policy.allowedTolerations[0].key=a,policy.allowedTolerations[0].effect=Never"],
     "allowedTolerations/0/effect"),
    (["--set", "policy.allowedNodeSelectors={not a key}"], "allowedNodeSelectors"),
    (["--set", "policy.forcedNodeSelector.pool=bad value"], "forcedNodeSelector"),
    (["--set", "policy.namespaceLimits.team-a.maxGpus=-1"], "maxGpus"),
    (["--set", "policy.namespaceLimits.team-a.maxNodes=0"], "maxNodes"),
    (["--set", "policy.namespaceLimits.team-a.gpus=4"], "gpus"),
])
def test_values_schema_rejects_bad_policies(helm: str, bad_values: list[str],
                                            complaint: str) -> None:
    with pytest.raises(HelmError, match=complaint):
        helm_template(helm, *bad_values)
