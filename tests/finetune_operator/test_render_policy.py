"""The policy's forced tolerations and node selector in the rendered training pods
(render.py with settings.policy): added to every attempt's pods, over the job's own entries
and the GPU-type label, and nothing added without a policy."""

from __future__ import annotations

import itertools

import pytest
from finetune_operator import render
from finetune_operator.placement import GpuNodeLabels
from finetune_operator.policy import Policy
from finetune_operator.settings import Settings

from tests.support.ftj_samples import OWNER, gpu_spec, plan, spec

FORCED = {"key": "pool", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"}
POLICY = Policy(forced_tolerations=(FORCED,), forced_node_selector={"pool": "tenants"})
OWN_TOLERATIONS = [[], [{"key": "spot", "operator": "Exists"}], [FORCED]]
OWN_SELECTORS = [{}, {"zone": "a"}, {"pool": "tenants"}]


def pod_spec(job, job_plan, settings: Settings, attempt: int = 0) -> dict:
    return render.batch_job(OWNER, job, job_plan, settings, attempt)["spec"]["template"]["spec"]


@pytest.mark.parametrize("own,selector,attempt", itertools.product(
    range(len(OWN_TOLERATIONS)), range(len(OWN_SELECTORS)), [0, 3]))
def test_every_pod_gets_the_forced_entries_once_next_to_its_own(own, selector, attempt):
    tolerations, node_selector = OWN_TOLERATIONS[own], OWN_SELECTORS[selector]
    job = spec(resources={"gpu": "cpu", "gpusPerNode": 2, "tolerations": tolerations,
                          "nodeSelector": node_selector})
    pod = pod_spec(job, plan(), Settings(policy=POLICY), attempt)
    # the job's own first, then the forced one unless the job repeats it
    assert pod["tolerations"] == tolerations + ([] if FORCED in tolerations else [FORCED])
    assert pod["nodeSelector"] == {**node_selector, "pool": "tenants"}


def test_without_a_policy_the_pods_get_only_their_own_entries():
    job = spec(resources={"gpu": "cpu", "gpusPerNode": 2})
    pod = pod_spec(job, plan(), Settings())
    assert "tolerations" not in pod and "nodeSelector" not in pod


def test_a_forced_entry_on_the_gpu_label_key_replaces_the_gpu_types_label():
    labels = GpuNodeLabels(key="node.corp/gpu", values={"H100-80GB": ("h100",)})
    forced = Policy(forced_node_selector={"node.corp/gpu": "tenant-h100"})
    gpu_plan = plan(gpu="H100-80GB", gpus_per_node=8)
    pod = pod_spec(gpu_spec(), gpu_plan, Settings(gpu_node_labels=labels, policy=forced))
    assert pod["nodeSelector"] == {"node.corp/gpu": "tenant-h100"}
    # and with another key the GPU type's label stays next to the forced entry
    other = Policy(forced_node_selector={"pool": "tenants"})
    pod = pod_spec(gpu_spec(), gpu_plan, Settings(gpu_node_labels=labels, policy=other))
    assert pod["nodeSelector"] == {"pool": "tenants", "node.corp/gpu": "h100"}
