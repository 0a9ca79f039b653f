"""Model sizes as people write them (125M, 7.5B) and back, and Kubernetes quantities."""

from __future__ import annotations

import pytest
from finetune_operator.sizes import format_gib, format_size, parse_quantity, parse_size


@pytest.mark.parametrize(
    ("text", "count"),
    [("125M", 125_000_000), ("7.5B", 7_500_000_000), ("70b", 70_000_000_000),
     (1234, 1234), ("1T", 10**12), (" 8B ", 8 * 10**9)],
)
def test_parse_size(text, count):
    assert parse_size(text) == count


@pytest.mark.parametrize("text", ["huge", "-7B", "0", "7X", "", True])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(ValueError, match="must be"):
        parse_size(text)


def test_format_size_round_trips_common_sizes():
    assert format_size(7_500_000_000) == "7.5B"
    assert format_size(125_000_000) == "125M"


@pytest.mark.parametrize(("text", "value"), [("96", 96), ("500m", 0.5), ("16Gi", 16 * 2**30),
                                             ("1.5Ti", 1.5 * 2**40), ("2k", 2000)])
def test_parse_quantity_reads_kubernetes_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["96 cores", "16gi", " 16Gi", "lots", "0", "-2"])
def test_parse_quantity_refuses_what_kubernetes_refuses(text):
    with pytest.raises(ValueError, match="Kubernetes quantity|must be positive"):
        parse_quantity(text)


def test_format_gib_rounds_up_to_whole_gi():
    assert format_gib(64 * 2**30) == "64Gi"
    assert format_gib(64 * 2**30 + 1) == "65Gi"
