"""A model the catalog lacks, sized on the real cluster by a sizing pod in the job's namespace.

The Hub stand-in (tests/support/hub_standin.py) listens on the node's bridge address, where
pods reach it; the chart's operator.hfEndpoint points the sizing pods at it (conftest). The
repository is gated: the pod must carry the job's token, from its Secret by secretKeyRef,
and the operator never reads that Secret. The job is created suspended, so that it stops
once planned: nothing downloads weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from finetune_operator import names

from tests.e2e.cluster import HUB_PORT, NODE_IP, Cluster, condition
from tests.e2e.conftest import wait_for_phase
from tests.support.hub_standin import HubStandIn
from tests.support.tiny import save_tiny_model

pytestmark = [pytest.mark.cluster]

NAMESPACE = "ftj-e2e-sizing"
NAME = "sized-by-pod"
REPO = "e2e-org/tiny-llama"
TOKEN = "hf_e2e_sizing_token"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubStandIn, int]]:
    folder = tmp_path_factory.mktemp("tiny-llama")
    parameters = save_tiny_model(Path(folder))
    with HubStandIn(host=NODE_IP, port=HUB_PORT) as standin:
        standin.add_repo(REPO, folder, gated=True, tokens={TOKEN})
        yield standin, parameters


def _job() -> dict:
    return {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": REPO, "init": "pretrained"},
            "dataset": {"format": "messages", "train": {"path": "train.jsonl"}},
            "training": {"globalBatchSize": 8, "maxSeqLength": 96, "precision": "fp32"},
            "resources": {"gpu": "cpu", "gpusPerNode": 1, "nodes": 1, "cpu": "500m",
                          "memory": "2Gi"},
            "secrets": {"hfToken": {"name": "hf-token", "key": "token"}},
            "runPolicy": {"suspend": True},
        },
    }


@pytest.fixture(scope="module")
def sized(cluster: Cluster, operator_release: str, hub: tuple[HubStandIn, int]
          ) -> Iterator[dict]:
    cluster.fresh_namespace_with_token(NAMESPACE, TOKEN)
    cluster.apply_text(yaml.safe_dump(_job()))
    wait_for_phase(cluster, NAMESPACE, NAME, {"Suspended", "Failed"}, timeout=240)
    yield cluster.get("ftj", NAME, "-n", NAMESPACE)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_the_sizing_pod_reads_the_exact_count_with_the_jobs_token(
        sized: dict, hub: tuple[HubStandIn, int]) -> None:
    standin, parameters = hub
    status = sized["status"]
    assert status["phase"] == "Suspended", json.dumps(status, indent=1)[:3000]
    assert status["sizing"]["parameters"] == parameters
    assert condition(sized, "Sized")["status"] == "True"
    assert status["plan"]["parameterSource"] == "safetensors"
    # The pod sent the Secret's token, and read the weights' headers, not the weights.
    weights = [r for r in standin.requests
               if r.path.startswith(f"/{REPO}/resolve/") and r.path.endswith(".safetensors")]
    assert weights, [r.path for r in standin.requests]
    assert all(r.token == TOKEN for r in weights)
    assert all(r.method == "HEAD" or r.range for r in weights)


def test_the_sizing_pod_is_gone_once_read(cluster: Cluster, sized: dict) -> None:
    pod = cluster.kubectl("get", "pod", names.sizing_pod_name(NAME), "-n", NAMESPACE,
                          "-o", "jsonpath={.metadata.deletionTimestamp}", check=False)
    assert not pod.ok or pod.stdout.strip(), "the sizing pod outlived its reading"
