"""Planned against measured memory (memory_drift.py): the largest rank, and the thresholds."""

from __future__ import annotations

import pytest
from finetune_operator import memory_drift

from tests.support.ftj_samples import plan

PLAN = plan()  # 3,350,000 bytes a rank


def test_the_largest_rank_is_the_one_held_against_the_plan():
    memory = memory_drift.check(PLAN, {0: 3_000_000, 3: 3_400_000, 1: 3_400_000}, step=2)
    assert (memory.largest_rank, memory.measured_bytes, memory.ranks_read) == (1, 3_400_000, 3)
    assert memory.ratio == round(3_400_000 / 3_350_000, 3)


@pytest.mark.parametrize("peak,why", [
    (3_350_000, None), (3_685_000, None),          # up to 10% above: within the plan
    (3_686_000, "AboveThePlan"),                   # beyond 10% above
    (2_345_000, None), (2_344_000, "BelowThePlan"),  # 30% below is the edge
])
def test_a_drift_is_named_beyond_ten_percent_above_or_thirty_below(peak, why):
    assert memory_drift.drift(memory_drift.check(PLAN, {0: peak}, step=1)) == why


def test_nothing_is_judged_before_a_logged_step_or_without_a_peak():
    assert memory_drift.check(PLAN, {0: 1}, step=0) is None
    assert memory_drift.check(PLAN, {0: 1}, step=None) is None
    assert memory_drift.check(PLAN, {}, step=5) is None


def test_the_largest_peak_so_far_is_kept_while_the_plan_stays():
    first = memory_drift.check(PLAN, {0: 3_000_000, 1: 3_200_000}, step=3)
    later = memory_drift.check(PLAN, {0: 3_100_000}, step=9)  # rank 1 has finished
    kept = memory_drift.largest(first, later)
    assert (kept.largest_rank, kept.measured_bytes, kept.ranks_read) == (1, 3_200_000, 2)
    replanned = memory_drift.check(plan(gpus_per_node=1), {0: 3_100_000}, step=9)
    assert memory_drift.largest(first, replanned.model_copy(
        update={"planned_bytes": 9})).measured_bytes == 3_100_000
