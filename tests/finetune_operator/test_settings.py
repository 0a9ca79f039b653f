"""Operator settings from the environment: the stuck-pods grace period, where 0 means never
(the other durations must be positive)."""

from __future__ import annotations

import pytest
from finetune_operator.settings import SettingsError, from_env


def test_the_stuck_pods_grace_period_is_off_unless_set():
    assert from_env({}).stuck_pods_fail_after == 0
    assert from_env({"FINETUNE_STUCK_PODS_FAIL_AFTER": "0"}).stuck_pods_fail_after == 0
    assert from_env({"FINETUNE_STUCK_PODS_FAIL_AFTER": "1800"}).stuck_pods_fail_after == 1800


@pytest.mark.parametrize("text", ["-5", "soon", "inf"])
def test_a_bad_grace_period_is_refused_naming_the_variable(text):
    with pytest.raises(SettingsError, match="FINETUNE_STUCK_PODS_FAIL_AFTER must be a"):
        from_env({"FINETUNE_STUCK_PODS_FAIL_AFTER": text})


def test_zero_stays_refused_where_it_means_nothing():
    with pytest.raises(SettingsError, match="FINETUNE_UNSCHEDULABLE_AFTER must be a positive "
                                            r"number of seconds \(got '0'\)"):
        from_env({"FINETUNE_UNSCHEDULABLE_AFTER": "0"})
