"""The GPU catalog's table of GPU Feature Discovery product names (gpus.py); the catalog itself
is tested through plan_job."""

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


def test_gfd_products_of_a_catalog_gpu():
    assert gpus.gfd_products("L4-24GB") == ("NVIDIA-L4",)
    assert gpus.gfd_products("cpu") == ()
