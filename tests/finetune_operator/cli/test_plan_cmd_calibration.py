"""`finetune plan --calibration FILE`: the operator's ConfigMap as kubectl prints it, or just
its data, scales the plan's memory and the plan says by what; nothing matching says so; a bad
file is one line naming the file and the entry."""

from __future__ import annotations

import json

import pytest
import yaml
from finetune_operator import calibration as cal
from finetune_operator.cli import main

from tests.finetune_operator.cli.test_plan_cmd import JOB, plan_json

KEY = cal.Key("llama", "ddp", "cpu")  # what the tiny job of JOB plans as
TABLE = cal.record(cal.record(cal.EMPTY, KEY, cal.Run("u-1", "team/a", 1.2)),
                   KEY, cal.Run("u-2", "team/b", 1.31))
# As `kubectl get configmap finetune-calibration -o yaml` prints it.
MANIFEST = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "finetune-calibration", "namespace": "finetune-system",
                         "resourceVersion": "4711", "uid": "c0ffee",
                         "creationTimestamp": "2026-11-01T12:00:00Z",
                         "labels": {"app.kubernetes.io/managed-by": "finetune-operator"}},
            "data": cal.dump(TABLE)}


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    return path


def write(tmp_path, content) -> str:
    path = tmp_path / "calibration.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


@pytest.mark.parametrize("content", [MANIFEST, cal.dump(TABLE)], ids=["configmap", "data"])
def test_the_configmap_or_its_data_scales_the_plan_and_the_plan_says_so(tmp_path, job,
                                                                       capsys, content):
    _, own = plan_json(capsys, str(job))
    code, out = plan_json(capsys, str(job), "--calibration", write(tmp_path, content))
    assert code == 0
    assert out["calibration"] == {"key": "llama.ddp.cpu", "modelFamily": "llama",
                                  "factor": 1.31, "runs": 2, "largestRatio": 1.31,
                                  "estimatedBytes": own["memoryPerGpu"]["total"]}
    assert out["memoryPerGpu"]["total"] > own["memoryPerGpu"]["total"]
    assert "calibration" not in own
    assert main(["plan", str(job), "--calibration", write(tmp_path, content)]) == 0
    table = capsys.readouterr().out
    assert "  calibration x1.31 from 2 recent run(s) of llama.ddp.cpu; the planner's " \
           "estimate was 649.8 MiB/rank" in table


def test_a_file_without_the_jobs_key_says_none_matched(tmp_path, job, capsys):
    other = cal.dump(cal.record(cal.EMPTY, cal.Key("qwen2", "ddp", "cpu"),
                                cal.Run("u-1", "team/a", 1.5)))
    assert main(["plan", str(job), "--calibration", write(tmp_path, other)]) == 0
    assert "  calibration none recorded for llama.ddp.cpu: memory is the planner's own " \
           "estimate" in capsys.readouterr().out
    empty = {**MANIFEST, "data": None}  # the ConfigMap before any job finished
    _, out = plan_json(capsys, str(job), "--calibration", write(tmp_path, empty))
    assert out["calibration"]["runs"] == 0


@pytest.mark.parametrize("content,expected", [
    ({"llama.ddp.cpu": "{bad"}, "entry 'llama.ddp.cpu': is not valid JSON"),
    ({**MANIFEST, "data": {"llama.ddp.cpu": json.dumps({"family": "llama"})}},
     "entry 'llama.ddp.cpu': strategy must be a non-empty string"),
    ({"apiVersion": "v1", "kind": "Secret", "data": {}}, "is a Secret, expected the ConfigMap"),
    ("- llama.ddp.cpu\n", "expected the ConfigMap finetune-calibration"),
    ("a: [1\n", "calibration.yaml:2: not valid YAML"),
    ("", "expected one document"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_entry(tmp_path, job, capsys, content,
                                                              expected):
    path = write(tmp_path, content)
    assert main(["plan", str(job), "--calibration", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"finetune plan: --calibration {path}")
    assert expected in err and "Traceback" not in err


def test_a_missing_file_is_named(job, capsys):
    assert main(["plan", str(job), "--calibration", "/nonexistent/cal.yaml"]) == 1
    assert "--calibration /nonexistent/cal.yaml: no such file" in capsys.readouterr().err
