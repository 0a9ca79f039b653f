"""The API server's rules, value by value, over the generated good and bad values of
tests/support/apiserver_cases.py (validate_job's use of them: test_validation_apirules.py)."""

from __future__ import annotations

import pytest
from finetune_operator import apirules, render

from tests.support import apiserver_cases as cases

RULES = [
    ("label-value", apirules.label_value_errors, cases.label_values()),
    ("label-key", apirules.label_key_errors, cases.label_keys()),
    ("dns-subdomain", apirules.dns_1123_subdomain_errors, cases.dns_subdomains()),
    ("secret-key", apirules.config_map_key_errors, cases.secret_keys()),
]
VALUES = [(rule, fn, value, good) for rule, fn, (goods, bads) in RULES
          for good, values in ((True, goods), (False, bads)) for value in values]


@pytest.mark.parametrize("rule,fn,value,good", VALUES,
                         ids=[f"{r}-{'good' if g else 'bad'}-{i}"
                              for i, (r, _, _, g) in enumerate(VALUES)])
def test_each_rule_takes_the_good_values_and_refuses_the_bad(rule, fn, value, good):
    assert (fn(value) == []) is good, (rule, value, fn(value))


@pytest.mark.parametrize("fn", [apirules.label_value_errors, apirules.label_key_errors,
                                apirules.dns_1123_subdomain_errors,
                                apirules.dns_1035_label_errors,
                                apirules.config_map_key_errors])
def test_a_trailing_newline_is_refused_as_the_api_server_does(fn):
    assert fn("abc") == []
    assert fn("abc\n") != []


@pytest.mark.parametrize("toleration", cases.tolerations(), ids=str)
def test_tolerations_are_refused_at_the_field_validate_tolerations_names(toleration):
    fields = [field for field, _ in apirules.toleration_errors(toleration)]
    verdict = cases.toleration_verdict(toleration)
    assert (verdict in fields) if verdict else fields == []


def test_an_unknown_operator_or_effect_is_refused_in_a_rendered_toleration():
    assert [f for f, _ in apirules.toleration_errors({"operator": "Lt", "key": "a"})] == [
        "operator"]
    assert [f for f, _ in apirules.toleration_errors({"operator": "Exists",
                                                      "effect": "Evict"})] == ["effect"]


@pytest.mark.parametrize("path", cases.output_paths()[0] + cases.output_paths()[1])
def test_a_path_overlaps_a_mount_when_it_is_inside_above_or_on_it(path):
    absolute = path if path.startswith("/") else f"/output/{path}"
    bad = path in cases.output_paths()[1]
    assert any(apirules.overlaps(absolute, m) for m in render.FIXED_MOUNT_PATHS) is bad


def test_duplicate_mount_paths_are_each_reported_once_per_repeat():
    assert apirules.duplicate_mount_paths(["/a", "/b", "/a", "/c", "/a"]) == ["/a", "/a"]
    assert apirules.duplicate_mount_paths(["/a", "/b"]) == []
