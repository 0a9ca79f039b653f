"""The GPU catalog's table of GPU Feature Discovery product names and its node shapes
(gpus.py); the catalog's figures are tested through plan_job."""

from __future__ import annotations

from finetune_operator.planner import gpus


def test_every_product_name_aliases_a_catalog_gpu():
    assert set(gpus.GFD_PRODUCTS.values()) <= set(gpus.CATALOG)


def test_product_names_are_found_whatever_the_case():
    assert gpus.find_gpu("nvidia-h100-80gb-hbm3") is gpus.CATALOG["H100-80GB"]


def test_an_unknown_product_is_told_the_catalog_name():
    assert gpus.suggest_gpu("NVIDIA-H100-80GB-HBM2e") == "H100-80GB"
    assert gpus.suggest_gpu("A100") is None or gpus.suggest_gpu("A100").startswith("A100")
    assert gpus.suggest_gpu("quantum-chip-9000") is None


def test_every_gpu_of_the_catalog_has_node_shapes_fewest_gpus_first():
    for gpu in gpus.CATALOG.values():
        counts = [shape.gpus for shape in gpu.node_shapes]
        assert counts == sorted(set(counts)), gpu.name
        assert bool(counts) != gpu.is_cpu, gpu.name


def test_host_memory_of_the_shape_with_that_many_gpus():
    l4 = gpus.CATALOG["L4-24GB"]
    assert gpus.node_host_memory(l4, 4) == (192 * gpus.GIB, "g6.12xlarge, g2-standard-48")
    assert gpus.node_host_memory(l4, 8) == (384 * gpus.GIB, "g2-standard-96")


def test_between_shapes_a_pod_gets_its_gpus_share_of_the_next_larger_one():
    a10g = gpus.CATALOG["A10G-24GB"]  # no 2-GPU instance: half of a g5.12xlarge
    assert gpus.node_host_memory(a10g, 2) == (96 * gpus.GIB, "2 of the 4 GPUs of g5.12xlarge")


def test_beyond_the_largest_shape_its_ram_per_gpu():
    h100 = gpus.CATALOG["H100-80GB"]
    memory, source = gpus.node_host_memory(h100, 16)
    assert memory == 2 * 1872 * gpus.GIB and "a3-highgpu-8g" in source


def test_no_shapes_no_host_memory():
    assert gpus.node_host_memory(gpus.CATALOG["cpu"], 2) is None


def test_gfd_products_of_a_catalog_gpu():
    assert gpus.gfd_products("L4-24GB") == ("NVIDIA-L4",)
    assert gpus.gfd_products("cpu") == ()


def test_every_catalog_gpu_has_bandwidths():
    from finetune_operator.planner.gpus import LINKS, links_of

    assert set(LINKS) == set(gpus.CATALOG)
    for gpu in gpus.CATALOG.values():
        links = links_of(gpu)
        assert links.intra_node > 0 and links.inter_node > 0 and links.pcie > 0


def test_nvlink_gpus_talk_faster_within_a_node_than_across_nodes():
    from finetune_operator.planner.gpus import LINKS

    for name in ("H100-80GB", "H200-141GB", "A100-80GB", "V100-32GB"):
        assert LINKS[name].intra_node > 5 * LINKS[name].inter_node


def test_a_gpu_the_catalog_lacks_gets_pcie_class_links():
    from dataclasses import replace

    from finetune_operator.planner.gpus import DEFAULT_LINKS, links_of

    assert links_of(replace(gpus.CATALOG["L4-24GB"], name="custom")) == DEFAULT_LINKS
