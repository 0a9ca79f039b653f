"""`finetune validate` on every generated hostile job (tests/support/hostile_jobs.py): exit 1,
the field named, no traceback, the planted token nowhere in what it prints."""

from __future__ import annotations

import pytest
import yaml
from finetune_operator.cli import main

from tests.support.hostile_jobs import TOKEN, all_cases, k8s_name

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_validate_refuses_the_hostile_job_naming_its_field(tmp_path, capsys, case):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": k8s_name(case.id)}, "spec": case.spec}, width=2**20))
    assert main(["validate", str(job)]) == 1
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert case.field in captured.err, captured.err[:2000]
    assert "Traceback" not in printed
    assert TOKEN not in printed
    # every echoed value is shortened: a megabyte input never comes back whole
    assert len(printed) < 16 * 1024
