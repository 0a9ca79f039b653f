"""`finetune validate --policy FILE [--namespace NS]`: a job checked against an operator's
tenant policy as the operator would refuse it (PolicyViolation), from the chart's policy
value or a whole values file; a policy file it cannot use is one line naming it."""

from __future__ import annotations

import pytest
import yaml
from finetune_operator.cli import main

from tests.support.ftj_samples import VALID

POLICY = {"allowedImagePrefixes": ["registry.corp/ml/"],
          "namespaceLimits": {"*": {"maxNodes": 1}, "research": {"maxNodes": 4}}}


def job_file(tmp_path, **resources):
    doc = yaml.safe_load(VALID)
    doc["spec"]["resources"].update(resources)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_job_the_policy_refuses_fails_validation_naming_the_value(tmp_path, capsys, wrapped):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"policy": POLICY} if wrapped else POLICY))
    job = job_file(tmp_path, nodes=2, maxNodes=2)
    assert main(["validate", "--policy", str(policy_file), str(job)]) == 1
    err = capsys.readouterr().err
    assert f"{job}: doc 1: spec.resources.nodes: 2 nodes" in err
    assert 'policy.namespaceLimits."*".maxNodes: 1' in err
    # the namespace picks its own entry
    assert main(["validate", "--policy", str(policy_file), "--namespace", "research",
                 str(job)]) == 0


def test_without_a_policy_the_same_job_is_valid(tmp_path, capsys):
    assert main(["validate", str(job_file(tmp_path, nodes=2, maxNodes=2))]) == 0


def test_a_policy_file_it_cannot_use_is_one_line_naming_it(tmp_path, capsys):
    bad = tmp_path / "policy.yaml"
    bad.write_text("allowedImagePrefixes: registry.corp/ml/\nnamespaceLimit: {}\n")
    assert main(["validate", "--policy", str(bad), str(job_file(tmp_path))]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{bad}: policy.") and "\n" not in err
    missing = tmp_path / "missing.yaml"
    assert main(["validate", "--policy", str(missing), str(job_file(tmp_path))]) == 1
    assert f"{missing}: cannot read the policy" in capsys.readouterr().err
