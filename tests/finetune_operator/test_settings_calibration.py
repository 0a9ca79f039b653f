"""The memory calibration setting: on wherever the operator knows its namespace (where its
ConfigMap lives), off when told; a bad value names the variable."""

from __future__ import annotations

import pytest
from finetune_operator import names
from finetune_operator.settings import CalibrationSettings, SettingsError, from_env


def test_calibration_is_on_in_the_operators_namespace_unless_turned_off():
    on = from_env({"FINETUNE_NAMESPACE": "ops"}).calibration
    assert on == CalibrationSettings(namespace="ops")
    assert on.config_map == names.CALIBRATION_CONFIG_MAP
    assert from_env({"FINETUNE_NAMESPACE": "ops", "FINETUNE_CALIBRATION": "True"}).calibration \
        == on
    assert from_env({"FINETUNE_NAMESPACE": "ops",
                     "FINETUNE_CALIBRATION": "false"}).calibration is None


def test_an_operator_without_a_namespace_of_its_own_plans_uncalibrated():
    assert from_env({}).calibration is None


def test_calibration_asked_for_without_a_namespace_is_refused():
    with pytest.raises(SettingsError, match="FINETUNE_CALIBRATION is true, so "
                                            "FINETUNE_NAMESPACE must be set too"):
        from_env({"FINETUNE_CALIBRATION": "true"})


def test_a_bad_value_names_the_variable_and_the_chart_value():
    with pytest.raises(SettingsError, match=r"FINETUNE_CALIBRATION \(the chart's "
                                            r"calibration.enabled\) must be true or false "
                                            r"\(got 'yes'\)"):
        from_env({"FINETUNE_CALIBRATION": "yes", "FINETUNE_NAMESPACE": "ops"})
