"""kopf runs the operator against the emulated API server: a job whose model the catalog
lacks gets a sizing pod, and is planned with what the pod reports (the test plays the
kubelet: it ends the pod with a termination message), or fails in the pod's words."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from finetune_contract.api import ModelSizing
from finetune_operator import sizing

from tests.support.ftj_samples import spec_dict
from tests.support.wiring import Kube, emulated_cluster, running_operator, wait_for

TWO_NODES = {"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2, "strategy": "ddp"}
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 1024}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Any]:
    with emulated_cluster(tmp_path_factory.mktemp("kube")) as emulator, running_operator():
        yield emulator


@pytest.fixture
def kube(cluster) -> Kube:
    return Kube()


@pytest.fixture
def ns(request, kube) -> Iterator[str]:
    namespace = "s-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    yield namespace
    kube.delete_all(namespace)


def hub_job() -> dict[str, Any]:
    return spec_dict(model={"name": "acme/new-model"}, resources=TWO_NODES,
                     secrets={"hfToken": {"name": "hf", "key": "token"}})


def sizing_pod(kube: Kube, ns: str) -> dict[str, Any] | None:
    return kube._get(lambda: kube.core.read_namespaced_pod("chat-size", ns))


def end_pod(kube: Kube, ns: str, phase: str, message: str) -> None:
    kube.set_pod_status(ns, "chat-size", {"phase": phase, "containerStatuses": [{
        "name": sizing.SIZING_CONTAINER, "image": "op", "imageID": "", "ready": False,
        "restartCount": 0, "state": {"terminated": {
            "exitCode": 0 if phase == "Succeeded" else 1, "message": message,
            "finishedAt": "2026-11-01T12:00:00Z"}}}]})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def test_a_job_is_sized_by_its_pod_then_planned_and_started(kube, ns):
    kube.apply(ns, "chat", hub_job())
    pod = wait_for("sizing pod", lambda: sizing_pod(kube, ns))
    container = pod["spec"]["containers"][0]
    assert container["args"][:3] == ["size", "--model", "acme/new-model"]
    (token,) = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"], token.get("value")) == ("hf", "token", None)
    status = kube.wait_phase(ns, "chat", "Pending")
    assert condition(status, "Sized")["status"] == "Unknown"

    end_pod(kube, ns, "Succeeded", sizing.result_message(ModelSizing(
        model="acme/new-model", revision="main", commit="ab" * 20, config=TINY,
        parameters=205_120, safetensors_files=1)))
    job = wait_for("the gang's Job", lambda: kube.job(ns, "chat-r0"))
    assert job["spec"]["completions"] == 2
    # The children are created before the status that records the plan is written.
    status = wait_for("the plan in status",
                      lambda: (s := kube.status(ns, "chat")).get("plan") and s)
    assert status["plan"]["parameterSource"] == "safetensors"
    assert status["plan"]["parameters"] == 205_120
    assert status["sizing"]["commit"] == "ab" * 20
    assert condition(status, "Sized")["status"] == "True"
    wait_for("the sizing pod deleted", lambda: sizing_pod(kube, ns) is None
             or (sizing_pod(kube, ns) or {}).get("metadata", {}).get("deletionTimestamp"))


def test_a_sizing_failure_fails_the_job_in_the_pods_words(kube, ns):
    kube.apply(ns, "chat", hub_job())
    wait_for("sizing pod", lambda: sizing_pod(kube, ns))
    end_pod(kube, ns, "Failed", sizing.SizingFailed(
        "TokenRefused", "model 'acme/new-model' (spec.model.name) is gated and the token was "
        "refused access").to_json())
    status = kube.wait_phase(ns, "chat", "Failed")
    failed = condition(status, "Failed")
    assert failed["reason"] == "SizingFailed" and "refused access" in failed["message"]
    assert kube.job(ns, "chat-r0") is None
