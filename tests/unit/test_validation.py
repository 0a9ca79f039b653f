"""`finetune validate`: every invalid document names its field; valid ones pass."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from finetune_operator import names
from finetune_operator.cli import main
from finetune_operator.sizes import format_size, parse_size
from finetune_operator.validation import validate_job

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests" / "cases" / "invalid").glob("*.yaml"))

VALID = textwrap.dedent(
    """\
    apiVersion: finetune.dev/v1alpha1
    kind: FineTuneJob
    metadata: {name: tiny}
    spec:
      model:
        init: random
        config: {model_type: llama, hidden_size: 64, intermediate_size: 128,
                 num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2}
        tokenizer: {train: {vocabSize: 512}}
      dataset: {train: {path: data/train.jsonl}}
      training: {maxSteps: 10, globalBatchSize: 4, maxSeqLength: 128}
      resources: {gpu: cpu, gpusPerNode: 2, maxNodes: 1}
    """
)


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


def test_valid_document_passes(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(VALID)
    assert main(["validate", str(job)]) == 0
    assert f"{job}: doc 1: valid" in capsys.readouterr().out


def test_multi_document_file_numbers_each_document(tmp_path, capsys):
    job = tmp_path / "jobs.yaml"
    job.write_text(VALID + "---\n" + VALID.replace("maxSteps: 10", "maxSteps: -5"))
    assert main(["validate", str(job)]) == 1
    captured = capsys.readouterr()
    assert f"{job}: doc 1: valid" in captured.out
    assert f"{job}: doc 2: spec.training.maxSteps: must be >= 1 (got -5)" in captured.err


def test_reads_standard_input(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(VALID.replace("tiny", "Bad_Name")))
    assert main(["validate", "-"]) == 1
    assert "-: doc 1: metadata.name: must be lower case" in capsys.readouterr().err


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    job = tmp_path / "broken.yaml"
    job.write_text("apiVersion: finetune.dev/v1alpha1\nkind: FineTuneJob\nspec: [unclosed\n")
    assert main(["validate", str(job)]) == 1
    err = capsys.readouterr().err
    assert f"{job}:" in err and "not valid YAML" in err and "Traceback" not in err


def test_missing_file_is_reported(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml: no such file" in capsys.readouterr().err


def test_empty_file_is_an_error(tmp_path, capsys):
    job = tmp_path / "empty.yaml"
    job.write_text("# nothing here\n")
    assert main(["validate", str(job)]) == 1
    assert "no FineTuneJob documents" in capsys.readouterr().err


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


def test_longest_allowed_name_fits_every_derived_hostname():
    limit = names.max_job_name_length(max_restarts=3, max_nodes=4)
    name = "a" * limit
    for derived in (names.service_name(name), names.pod_hostname(name, 3, 3)):
        assert names.is_dns_1035_label(derived)
    assert len(names.pod_hostname("a" * (limit + 1), 3, 3)) > names.DNS_LABEL_MAX


@pytest.mark.parametrize(
    ("text", "count"),
    [("125M", 125_000_000), ("7.5B", 7_500_000_000), ("70b", 70_000_000_000),
     (1234, 1234), ("1T", 10**12), (" 8B ", 8 * 10**9)],
)
def test_parse_size(text, count):
    assert parse_size(text) == count


@pytest.mark.parametrize("text", ["huge", "-7B", "0", "7X", "", True])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(ValueError, match="must be"):
        parse_size(text)


def test_format_size_round_trips_common_sizes():
    assert format_size(7_500_000_000) == "7.5B"
    assert format_size(125_000_000) == "125M"
