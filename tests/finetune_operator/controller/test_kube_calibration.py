"""The calibration ConfigMap's calls of the operator's door to the API server: read by name
(absent: None), created or replaced by its resourceVersion, and a 409 handed back to the
store, which reads again (not counted as an API error)."""

from __future__ import annotations

from typing import Any

import pytest
from finetune_operator.controller.kube import Cluster
from finetune_operator.metrics import OperatorMetrics
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from tests.finetune_operator.controller.test_kube import FakeResponse


class FakeCore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.conflict = False

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        raise ApiException(status=404)

    def create_namespaced_config_map(self, namespace: str, body: Any, **_: Any) -> FakeResponse:
        self.calls.append(("create", body["metadata"]))
        if self.conflict:
            raise ApiException(status=409)
        return FakeResponse({**body, "metadata": {**body["metadata"], "resourceVersion": "1"}})

    def replace_namespaced_config_map(self, name: str, namespace: str, body: Any,
                                      **_: Any) -> FakeResponse:
        self.calls.append(("replace", body["metadata"]))
        return FakeResponse(body)


def cluster_with(core: FakeCore) -> tuple[Cluster, CollectorRegistry]:
    registry = CollectorRegistry()
    cluster = Cluster(OperatorMetrics(registry))
    cluster.core = core  # type: ignore[assignment]
    return cluster, registry


def body(**metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "finetune-calibration", "namespace": "ops", **metadata},
            "data": {}}


def test_an_absent_configmap_reads_as_none():
    cluster, _ = cluster_with(FakeCore())
    assert cluster.read_config_map("ops", "finetune-calibration") is None


def test_a_new_configmap_is_created_and_a_read_one_replaced():
    core = FakeCore()
    cluster, _ = cluster_with(core)
    created = cluster.store_config_map("ops", body())
    assert created["metadata"]["resourceVersion"] == "1"
    cluster.store_config_map("ops", body(resourceVersion="7"))
    assert [(what, meta.get("resourceVersion")) for what, meta in core.calls] == [
        ("create", None), ("replace", "7")]


def test_a_conflict_is_raised_for_the_store_and_not_counted_as_an_api_error():
    core = FakeCore()
    core.conflict = True
    cluster, registry = cluster_with(core)
    with pytest.raises(ApiException) as err:
        cluster.store_config_map("ops", body())
    assert err.value.status == 409
    assert registry.get_sample_value("finetune_operator_api_errors_total") == 0
