"""The tiny job on the real cluster with its model and its data from the Hub: model.name and
dataset.train.hf / dataset.eval.hf served by the stand-in (tests/support/hub_standin.py) on
the node's bridge address, both gated, the token from a Secret by secretKeyRef.

The job must reach Succeeded; the init container downloads the weights once, with the
Secret's token, into the model cache on the output volume; the ranks read the model from
there (no GET of it from them) and the data from the Hub.

The training pods, their init container included, get HF_ENDPOINT from the chart's
operator.hfEndpoint (FINETUNE_HF_ENDPOINT, render._hub_env) as the sizing pod does. conftest
installs the chart with it set to the Service in front of the stand-in (cluster.HUB_ENDPOINT:
a DNS name, a ClusterIP, an EndpointSlice to NODE_IP:HUB_PORT, where this module's stand-in
listens), as a cluster with a Hub mirror would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.cluster import HUB_ENDPOINT, HUB_PORT, NODE_IP, Cluster
from tests.e2e.conftest import wait_for_phase
from tests.support.hub_standin import ADDED_TOKENS, HubStandIn, chat_dataset_files
from tests.support.tiny import chat_rows, grow_chat_template, save_chat_model

pytestmark = [pytest.mark.cluster]

NAMESPACE = "ftj-e2e-hub"
NAME = "hub-chat"
MODEL = "e2e-org/tiny-chat"
DATASET = "e2e-org/chats"
TOKEN = "hf_e2e_hub_token"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandIn]:
    root = tmp_path_factory.mktemp("hub-chat")
    save_chat_model(root / "base")
    grow_chat_template(root / "base", root / "grown", ADDED_TOKENS)  # the resize, in a pod
    files = chat_dataset_files(chat_rows(64, seed=1), chat_rows(8, seed=2), "parquet")
    with HubStandIn(host=NODE_IP, port=HUB_PORT) as standin:
        standin.add_repo(MODEL, root / "grown", gated=True, tokens={TOKEN})
        standin.add_repo(DATASET, files, repo_type="dataset", gated=True, tokens={TOKEN})
        yield standin


def _job() -> dict:
    return {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": MODEL},
            "dataset": {"format": "messages", "train": {"hf": DATASET},
                        "eval": {"hf": DATASET, "split": "test"}},
            "method": {"task": "sft", "tuning": "full"},
            "training": {"maxSteps": 10, "learningRate": 3e-3, "globalBatchSize": 8,
                         "maxSeqLength": 64, "packing": "padding-free", "precision": "fp32",
                         "evalSteps": 10, "saveSteps": 10, "loggingSteps": 1},
            "resources": {"gpu": "cpu", "gpusPerNode": 1, "nodes": 1, "maxNodes": 1,
                          "strategy": "ddp", "cpu": "500m", "memory": "3Gi"},
            "secrets": {"hfToken": {"name": "hf-token", "key": "token"}},
            "runPolicy": {"backoffLimit": 1, "activeDeadlineSeconds": 900},
        },
    }


@pytest.fixture(scope="module")
def finished(cluster: Cluster, operator_release: str, hub: HubStandIn) -> Iterator[dict]:
    cluster.fresh_namespace_with_token(NAMESPACE, TOKEN)
    cluster.apply_text(yaml.safe_dump(_job()))
    wait_for_phase(cluster, NAMESPACE, NAME, {"Succeeded", "Failed"}, timeout=900)
    yield cluster.get("ftj", NAME, "-n", NAMESPACE)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_the_job_trains_on_the_hub_model_and_data(cluster: Cluster, finished: dict) -> None:
    assert finished["status"]["phase"] == "Succeeded", cluster.diagnostics(NAMESPACE)


def test_the_weights_are_downloaded_once_with_the_secrets_token(finished: dict,
                                                                hub: HubStandIn) -> None:
    weights = [r for r in hub.requests_under(f"/{MODEL}/resolve/")
               if r.path.endswith(".safetensors") and r.method == "GET" and r.range is None]
    assert len(weights) == 1, [r.path for r in hub.requests]  # the init container's
    assert hub.downloads(f"/datasets/{DATASET}/resolve/") >= 1
    assert {r.token for r in hub.requests
            if r.path.startswith((f"/{MODEL}/", f"/datasets/{DATASET}/"))} == {TOKEN}


def test_every_pod_of_the_job_asks_the_hub_through_its_service(cluster: Cluster,
                                                               finished: dict) -> None:
    jobs = cluster.get("jobs", "-n", NAMESPACE)["items"]
    pod = jobs[0]["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod["containers"]
    endpoints = {c["name"]: {e["name"]: e.get("value") for e in c.get("env", [])}.get(
        "HF_ENDPOINT") for c in containers}
    assert set(endpoints.values()) == {HUB_ENDPOINT}, endpoints
