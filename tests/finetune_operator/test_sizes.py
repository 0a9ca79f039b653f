"""Model sizes as people write them (125M, 7.5B) and back."""

from __future__ import annotations

import pytest
from finetune_operator.sizes import format_size, parse_size


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
