"""validate_job holds a spec to the API server's rules for what the children carry as given
(apirules.py through apicheck.py): over generated good and bad values of every rule, it
refuses exactly the bad ones, naming the field, and the good ones render objects that the
final check of rendered objects takes too."""

from __future__ import annotations

import pytest
from finetune_operator import apicheck, render
from finetune_operator.planner import plan_job
from finetune_operator.validation import validate_job

from tests.support.apiserver_cases import SpecCase, spec_cases
from tests.support.ftj_samples import OWNER
from tests.support.world import SETTINGS

CASES = spec_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_refuses_exactly_the_values_the_api_server_refuses_naming_the_field(
        case: SpecCase):
    job, problems = validate_job(case.document(), plan=False)
    paths = [p.path for p in problems]
    if case.field is None:
        assert job is not None, [str(p) for p in problems]
    else:
        assert job is None
        assert case.field in paths, [str(p) for p in problems]


def test_the_generated_cases_hold_good_and_bad_values_of_every_rule():
    rules = {c.id.rsplit("-", 2)[0] for c in CASES if not c.id.startswith("toleration")}
    assert rules == {"selector-value", "selector-key", "queue", "priority", "secret-key",
                     "secret-name", "output"}
    for rule in rules:
        verdicts = {c.field is None for c in CASES if c.id.startswith(f"{rule}-")}
        assert verdicts == {True, False}, rule
    tolerations = [c for c in CASES if c.id.startswith("toleration")]
    assert len(tolerations) == 4 * 3 * 3 * 4 * 3
    named = {c.field.rsplit(".", 1)[1] for c in tolerations if c.field}
    assert named == {"key", "operator", "value", "effect"}
    assert any(c.field is None for c in tolerations)


def test_the_message_says_what_is_wrong_and_what_to_do():
    doc = SpecCase("x", {"resources": {"tolerations": [
        {"key": "a", "operator": "Exists", "value": "v"}]}}, None).document()
    _, problems = validate_job(doc, plan=False)
    assert [str(p) for p in problems] == [
        ("spec.resources.tolerations[0].value: must be empty when operator is Exists "
        "(remove value, or set operator: Equal)")]
    _, problems = validate_job(SpecCase("x", {"output": {"path": "/tmp"}}, None).document(),
                               plan=False)
    assert str(problems[0]).startswith("spec.output.path: the pod would mount the output at "
                                       "'/tmp'")


ACCEPTED = [c for c in CASES if c.field is None]


@pytest.mark.parametrize("case", ACCEPTED[::7], ids=[c.id for c in ACCEPTED[::7]])
def test_an_accepted_spec_renders_children_the_final_check_takes(case: SpecCase):
    job, _ = validate_job(case.document(), plan=False)
    assert job is not None
    children = render.children(OWNER, job.spec, plan_job(job.spec), SETTINGS, 0)
    assert apicheck.children_problems(children) == []
