"""FINETUNE_POLICY (the chart's policy) in settings.from_env: read once into settings.policy,
none when unset, and a value the operator cannot use stops it in one line naming the
variable, the chart value and the field."""

from __future__ import annotations

import json

import pytest
from finetune_operator import settings
from finetune_operator.policy import NO_POLICY


@pytest.mark.parametrize("env", [{}, {"FINETUNE_POLICY": ""}, {"FINETUNE_POLICY": "{}"}])
def test_no_policy_limits_nothing(env):
    assert settings.from_env(env).policy == NO_POLICY


def test_the_policy_is_read_from_its_json():
    value = {"allowedPriorityClasses": ["tenant"], "namespaceLimits": {"*": {"maxGpus": 8}}}
    s = settings.from_env({"FINETUNE_POLICY": json.dumps(value)})
    assert s.policy.allowed_priority_classes == ("tenant",)
    assert s.policy.limits("any").max_gpus == 8


@pytest.mark.parametrize("value,field", [
    ('{"namespaceLimits": {"*": {"maxGpus": "many"}}}', 'policy.namespaceLimits.*.maxGpus'),
    ('{"forcedTolerations": [{"key": "a", "effect": "Sometimes"}]}',
     "policy.forcedTolerations[0].effect"),
    ('{"allowedImagePrefixes": "registry.corp/"}', "policy.allowedImagePrefixes"),
    ("[]", "must be a mapping"),
])
def test_a_bad_policy_names_the_variable_the_chart_value_and_the_field(value, field):
    with pytest.raises(settings.SettingsError) as caught:
        settings.from_env({"FINETUNE_POLICY": value})
    message = str(caught.value)
    assert message.startswith("FINETUNE_POLICY (the chart's policy) ")
    assert field in message and "\n" not in message
