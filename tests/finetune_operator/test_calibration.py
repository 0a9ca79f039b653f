"""The calibration table (calibration.py): recording a finished job's reading once, the factor
of a key (the largest recent ratio, within its bounds), and the ConfigMap's data, good and
bad."""

from __future__ import annotations

import json
import re

import pytest
from finetune_contract.api import MemoryCheck, PlanCalibration
from finetune_operator import calibration as cal
from finetune_operator.calibration import Key, Run

from tests.support.ftj_samples import plan

KEY = Key("llama", "zero2", "H100-80GB")


def runs(*ratios: float) -> cal.Table:
    table = cal.EMPTY
    for i, ratio in enumerate(ratios):
        table = cal.record(table, KEY, Run(uid=f"u-{i}", job=f"team/j{i}", ratio=ratio))
    return table


# --------------------------------------------------------------------------- the rules


def test_the_factor_is_the_largest_recent_ratio():
    found = cal.factor(runs(1.02, 1.15, 0.97), KEY)
    assert found is not None
    assert (found.value, found.runs, found.largest_ratio) == (1.15, 3, 1.15)


def test_no_recorded_run_means_no_factor():
    assert cal.factor(cal.EMPTY, KEY) is None
    assert cal.factor(runs(1.2), Key("llama", "zero3", "H100-80GB")) is None


@pytest.mark.parametrize("ratio,value", [(5.0, cal.MAX_FACTOR), (0.3, cal.MIN_FACTOR),
                                         (0.85, 0.85)])
def test_the_factor_stays_within_its_bounds(ratio, value):
    found = cal.factor(runs(ratio), KEY)
    assert found is not None and found.value == value and found.largest_ratio == ratio


def test_only_the_last_runs_are_kept_and_all_are_counted():
    table = runs(1.9, 1.0, 1.01, 1.02, 1.03, 1.04)  # the 1.9 is the oldest of six
    entry = table[KEY.name]
    assert entry.runs == 6 and len(entry.recent) == cal.RECENT
    assert [r.uid for r in entry.recent] == ["u-1", "u-2", "u-3", "u-4", "u-5"]
    assert cal.factor(table, KEY).value == 1.04


def test_a_job_recorded_twice_counts_once():
    once = runs(1.1)
    again = cal.record(once, KEY, Run(uid="u-0", job="team/j0", ratio=1.1))
    assert again is once and again[KEY.name].runs == 1


def test_keys_are_valid_configmap_keys_and_stay_distinct_when_long():
    assert KEY.name == "llama.zero2.H100-80GB"
    assert Key("meta-llama/Llama-2.7b", "ddp", "cpu").name == "meta-llama_Llama-2_7b.ddp.cpu"
    long_a, long_b = Key("a" * 300, "ddp", "cpu"), Key("a" * 299 + "b", "ddp", "cpu")
    assert len(long_a.name) == cal.KEY_MAX and long_a.name != long_b.name


def test_two_families_with_one_name_do_not_share_their_runs():
    dotted, underscored = Key("a.b", "ddp", "cpu"), Key("a_b", "ddp", "cpu")
    assert dotted.name == underscored.name
    table = cal.record(cal.EMPTY, dotted, Run("u-1", "t/a", 1.5))
    assert cal.factor(table, underscored) is None
    table = cal.record(table, underscored, Run("u-2", "t/b", 1.1))
    assert table[dotted.name].key == underscored and table[dotted.name].runs == 1


def calibrated_plan(estimated: int = 3_000_000):
    """A plan of 3,350,000 bytes a rank, calibrated from an estimate of `estimated`."""
    return plan(gpus_per_node=2).model_copy(update={"calibration": PlanCalibration(
        key="llama.ddp.cpu", model_family="llama", factor=1.117, runs=1,
        estimated_bytes=estimated)})


def reading(measured: int = 3_600_000, planned: int = 3_350_000, ranks: int = 2) -> MemoryCheck:
    return MemoryCheck(planned_bytes=planned, measured_bytes=measured, largest_rank=1,
                       ratio=round(measured / planned, 3), ranks_read=ranks)


def test_a_finished_run_is_recorded_against_the_estimate_before_the_factor():
    key, run = cal.finished_run(calibrated_plan(), reading(), uid="u-9", job="team/chat",
                                ranks_readable=2)
    assert key == Key("llama", "ddp", "cpu")
    assert run == Run(uid="u-9", job="team/chat", ratio=1.2)  # 3.6 MB over 3.0, not 3.35


@pytest.mark.parametrize("why,the_plan,memory", [
    ("planned without calibration", plan(gpus_per_node=2), reading()),
    ("a reading of an earlier plan", calibrated_plan(), reading(planned=4_000_000)),
    ("one of two ranks read", calibrated_plan(), reading(ranks=1)),
])
def test_a_reading_that_cannot_calibrate_is_not_recorded(why, the_plan, memory):
    assert cal.finished_run(the_plan, memory, uid="u", job="t/j", ranks_readable=2) is None, why


# --------------------------------------------------------------------------- the ConfigMap


def test_the_configmap_data_reads_back_what_was_written():
    table = runs(1.05, 1.12)
    data = cal.dump(table)
    assert list(data) == ["llama.zero2.H100-80GB"]
    assert json.loads(data[KEY.name])["recent"][1] == {"uid": "u-1", "job": "team/j1",
                                                       "ratio": 1.12}
    assert cal.parse(data) == (table, [])
    assert cal.parse(None) == ({}, [])


def entry(**fields) -> str:
    value = {"family": "llama", "strategy": "zero2", "gpu": "H100-80GB", "runs": 1,
             "recent": [{"uid": "u-1", "job": "t/j", "ratio": 1.1}], **fields}
    return json.dumps(value)


@pytest.mark.parametrize("value,complaint", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (7, "must be a JSON object in a string"),
    (entry(family=""), "family must be a non-empty string"),
    (entry(recent="many"), "recent must be a list"),
    (entry(recent=[{"uid": "u-1", "ratio": -1}]), r"recent\[0\].ratio must be a positive"),
    (entry(recent=[{"uid": "u-1", "ratio": "1.1"}]), r"recent\[0\].ratio must be a positive"),
    (entry(recent=[{"ratio": 1.1}]), r"recent\[0\].uid must be"),
    (entry(recent=["u-1"]), r"recent\[0\] must be an object"),
    (entry(runs=0), "runs must be a whole number of at least the 1"),
    (entry(runs=True), "runs must be a whole number"),
    (entry(recent=[{"uid": "u", "ratio": 1.1}]).replace("1.1", "NaN"), "not valid JSON"),
])
def test_a_bad_entry_is_a_problem_naming_its_key_and_the_others_are_kept(value, complaint):
    good = runs(1.1)
    table, problems = cal.parse({**cal.dump(good), "llama.ddp.cpu": value})
    assert table == good
    (problem,) = problems
    assert problem.startswith("entry 'llama.ddp.cpu': ")
    assert re.search(complaint, problem), problem
    assert "delete the entry" in problem


def test_an_entry_under_another_keys_name_is_refused():
    table, problems = cal.parse({"llama.ddp.cpu": entry()})
    assert table == {}
    (problem,) = problems
    assert problem == ("entry 'llama.ddp.cpu': holds the runs of llama, zero2 on H100-80GB, "
                       "whose key is 'llama.zero2.H100-80GB': rename it, or delete it")


def test_an_entry_with_more_runs_than_kept_keeps_the_last_ones():
    recent = [{"uid": f"u-{i}", "job": "t/j", "ratio": 1.0 + i / 100} for i in range(8)]
    parsed = cal.parse_entry(entry(runs=8, recent=recent))
    assert [r.uid for r in parsed.recent] == [f"u-{i}" for i in range(3, 8)]
