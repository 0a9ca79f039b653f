"""The planned GPU type as node labels: GFD's product names by default, a platform's own
label, or nothing; the job's nodeSelector on the same key wins."""

from __future__ import annotations

import json

import pytest
from finetune_operator import placement
from finetune_operator.placement import GpuNodeLabels, node_constraints
from finetune_operator.planner import gpus

GFD = gpus.GFD_PRODUCT_LABEL
DEFAULT = GpuNodeLabels()


def _in_term(constraints: dict) -> dict:
    required = constraints["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = required["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    return expression


def test_the_defaults_are_the_product_names_of_the_gpu_table():
    for name in gpus.CATALOG:
        aliases = tuple(p for p, key in gpus.GFD_PRODUCTS.items() if key == name)
        assert DEFAULT.of(name) == (() if name == gpus.CPU else aliases), name
    assert DEFAULT.of("H100-80GB") == ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB",
                                       "NVIDIA-H100-PCIe")


def test_several_products_become_a_required_node_affinity_term():
    constraints = node_constraints(DEFAULT, "H100-80GB", {})
    assert _in_term(constraints) == {"key": GFD, "operator": "In",
                                     "values": list(gpus.gfd_products("H100-80GB"))}
    assert "nodeSelector" not in constraints


def test_one_product_becomes_a_node_selector_beside_the_users_labels():
    constraints = node_constraints(DEFAULT, "L4-24GB", {"pool": "inference"})
    assert constraints == {"nodeSelector": {"pool": "inference", GFD: "NVIDIA-L4"}}


def test_the_users_node_selector_on_the_same_key_replaces_the_gpu_label():
    mine = {GFD: "NVIDIA-H100-PCIe"}
    assert node_constraints(DEFAULT, "H100-80GB", mine) == {"nodeSelector": mine}


@pytest.mark.parametrize("gpu", ["cpu", "MI300X-192GB"])
def test_cpu_and_gpus_the_catalog_lacks_get_no_gpu_label(gpu):
    assert node_constraints(DEFAULT, gpu, {}) == {}
    assert node_constraints(DEFAULT, gpu, {"pool": "a"}) == {"nodeSelector": {"pool": "a"}}


def test_switched_off_only_the_users_labels_apply():
    assert node_constraints(None, "H100-80GB", {}) == {}
    assert placement.parse('{"enabled": false}') is None


def test_a_platform_label_with_its_own_values():
    labels = placement.parse(json.dumps(
        {"enabled": True, "key": "node.example.com/gpu", "values": {"H100-80GB": ["h100"]}}))
    assert node_constraints(labels, "H100-80GB", {}) == {
        "nodeSelector": {"node.example.com/gpu": "h100"}}
    # another key: a type it does not list is not constrained
    assert node_constraints(labels, "L4-24GB", {}) == {}


def test_gfd_key_with_some_values_keeps_the_product_names_of_the_others():
    labels = placement.parse(json.dumps({"key": GFD, "values": {"L4-24GB": ["NVIDIA-L4-X"]}}))
    assert labels.of("L4-24GB") == ("NVIDIA-L4-X",)
    assert labels.of("A10G-24GB") == ("NVIDIA-A10G",)


def test_gpu_types_are_named_as_resources_gpu_takes_them():
    labels = placement.parse('{"values": {"nvidia-l4": ["l4"], "NVIDIA-H100-PCIe": ["h100"]}}')
    assert labels.values == {"L4-24GB": ("l4",), "H100-80GB": ("h100",)}


def test_empty_text_is_the_default():
    assert placement.parse("") == DEFAULT
    assert placement.parse('{"enabled": true, "key": "nvidia.com/gpu.product", "values": {}}') \
        == DEFAULT


@pytest.mark.parametrize("text, complaint", [
    ("{not json", "is not JSON"),
    ("[1]", "must be an object"),
    ('{"enable": false}', "unknown field 'enable'"),
    ('{"enabled": "no"}', "enabled must be true or false"),
    ('{"key": "not a key"}', "key must be a node label key"),
    ('{"key": "node.example.com/gpu"}', "has no values, so it would constrain nothing"),
    ('{"values": {"H100": ["h100"]}}', "'H100' is not a GPU type of the catalog (did you mean"),
    ('{"values": {"L4-24G": ["l4"]}}', "did you mean L4-24GB?"),
    ('{"values": {"L4-24GB": ["a"], "NVIDIA-L4": ["b"]}}', "is L4-24GB, which is listed twice"),
    ('{"values": {"cpu": ["x"]}}', "'cpu' is not a GPU type"),
    ('{"values": {"L4-24GB": "l4"}}', "values.L4-24GB must be a non-empty list"),
    ('{"values": {"L4-24GB": []}}', "values.L4-24GB must be a non-empty list"),
    ('{"values": {"L4-24GB": ["has space"]}}', "values.L4-24GB must be a non-empty list"),
    ('{"values": ["L4-24GB"]}', "values must map GPU types"),
])
def test_a_malformed_setting_says_what_is_wrong(text, complaint):
    with pytest.raises(placement.LabelsError) as err:
        placement.parse(text)
    assert complaint in str(err.value)
