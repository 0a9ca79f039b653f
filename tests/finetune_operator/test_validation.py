"""Validation (validation.py, through `finetune validate`): every invalid document of the corpus
fails naming its field and what is wrong; valid ones pass with their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from finetune_operator.cli import main
from finetune_operator.validation import validate_job

from tests.conftest import ROOT
from tests.support.ftj_samples import VALID

INVALID = sorted((ROOT / "tests" / "cases" / "invalid").glob("*.yaml"))

def expected_fragment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect: "):
            return line.removeprefix("# expect: ")
    raise AssertionError(f"{path} has no '# expect:' line")


def test_corpus_is_large_enough():
    assert len(INVALID) >= 40


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_document_fails_with_its_field_path(path, capsys):
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    assert f"{path}: doc 1: {expected_fragment(path)}" in err


def test_literal_token_is_never_echoed(tmp_path, capsys):
    token = "hf_SECRETSECRETSECRETSECRET123"
    job = tmp_path / "job.yaml"
    job.write_text(VALID + f"  secrets: {{hfToken: {token}}}\n")
    assert main(["validate", str(job)]) == 1
    assert token not in capsys.readouterr().err


def test_all_problems_of_a_document_are_listed(tmp_path, capsys):
    bad = VALID.replace("maxSteps: 10", "maxSteps: 0, learningRate: -1")
    job = tmp_path / "job.yaml"
    job.write_text(bad)
    main(["validate", str(job)])
    err = capsys.readouterr().err
    assert "spec.training.maxSteps" in err and "spec.training.learningRate" in err


def test_validate_job_returns_the_model_with_defaults():
    import yaml

    job, problems = validate_job(yaml.safe_load(VALID), plan=False)
    assert problems == []
    assert job.spec.training.scheduler == "cosine"
    assert job.spec.run_policy.backoff_limit == 3
    assert job.spec.training.gradient_checkpointing == "auto"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("true", True), (False, False), ("auto", "auto"), (None, "auto")],
)
def test_gradient_checkpointing_accepts_booleans_and_auto(given, expected):
    import yaml

    doc = yaml.safe_load(VALID)
    doc["spec"]["training"]["gradientCheckpointing"] = given
    job, problems = validate_job(doc, plan=False)
    assert problems == []
    assert job.spec.training.gradient_checkpointing == expected
