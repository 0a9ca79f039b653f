"""The chart's memory calibration: the settings it gives the operator, and the Role that lets
it keep its one ConfigMap in the release's namespace."""

from __future__ import annotations

from typing import Any

import pytest
from finetune_operator import names, permissions, settings

from tests.chart.helpers import NAMESPACE, HelmError, by_kind, helm_template, one
from tests.conftest import require_tool

FULLNAME = "ft-finetune-operator"


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm")


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _calibration_objects(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in by_kind(objects, kind)
            if o["metadata"]["name"] == f"{FULLNAME}-calibration"]


@pytest.mark.parametrize("extra", [(), ("--set", "webhook.enabled=false")])
def test_by_default_the_operator_calibrates_in_the_release_namespace(helm, extra):
    objects = helm_template(helm, *extra)
    assert settings.from_env(_env(objects)).calibration == settings.CalibrationSettings(
        namespace=NAMESPACE)
    (role,) = _calibration_objects(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == permissions.calibration_rules(names.CALIBRATION_CONFIG_MAP)
    (binding,) = _calibration_objects(objects, "RoleBinding")
    sa = one(objects, "ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa,
                                    "namespace": NAMESPACE}]


def test_off_the_operator_plans_uncalibrated_and_gets_no_role_for_it(helm):
    objects = helm_template(helm, "--set", "calibration.enabled=false")
    assert settings.from_env(_env(objects)).calibration is None
    assert not _calibration_objects(objects, "Role")
    assert not _calibration_objects(objects, "RoleBinding")


def test_the_values_schema_refuses_a_setting_that_is_not_a_boolean(helm):
    with pytest.raises(HelmError, match="enabled"):
        helm_template(helm, "--set-string", "calibration.enabled=yes")
