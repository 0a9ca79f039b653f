"""bench/operator_scale.py: the real operator against the emulator, counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import operator_scale

pytestmark = [pytest.mark.slow]


def test_operator_scale_counts_children_and_requests(tmp_path: Path) -> None:
    result = operator_scale.measure_one(2, tmp_path, timeout=60)
    assert result.completed == 2 and not result.timed_out
    assert result.requests_per_job["create jobs"] == 1
    assert result.requests_per_job["patch finetunejobs/status"] >= 1
    assert result.peak_rss > 0 and result.writes_per_job >= 4
