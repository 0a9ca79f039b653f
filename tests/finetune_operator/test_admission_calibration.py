"""The fit check at admission plans with the operator's calibration table, as the start of
the job will: a job that only fits by the planner's own estimate is refused once its key
measured higher, saying so."""

from __future__ import annotations

from finetune_operator import calibration as cal
from finetune_operator.admission import refusals

from tests.finetune_operator.test_admission import SETTINGS, job

# The tiny model on 2 CPU ranks of 900 MiB each (810 MiB usable): it fits by the estimate
# (571 MiB a rank), not at 1.6 times it.
TIGHT = {"resources": {"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 1, "strategy": "ddp",
                       "memory": "1800Mi"}}


def test_a_job_that_measured_high_under_its_key_is_refused_at_admission():
    assert refusals(job(**TIGHT), "team-a", SETTINGS, calibration=cal.EMPTY) == []
    high = cal.record(cal.EMPTY, cal.Key("llama", "ddp", "cpu"), cal.Run("u-1", "t/j", 1.6))
    (why,) = refusals(job(**TIGHT), "team-a", SETTINGS, calibration=high)
    assert why.startswith("spec.resources: does not fit: nothing fits within 1 x 2 cpu")
    assert "memory calibrated x1.6 from 1 recent run(s) of llama, ddp on cpu" in why
