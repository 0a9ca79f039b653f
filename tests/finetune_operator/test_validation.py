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
    [(True, True), (False, False), ("auto", "auto"), (None, "auto")],
)
def test_gradient_checkpointing_accepts_booleans_and_auto(given, expected):
    import yaml

    doc = yaml.safe_load(VALID)
    doc["spec"]["training"]["gradientCheckpointing"] = given
    job, problems = validate_job(doc, plan=False)
    assert problems == []
    assert job.spec.training.gradient_checkpointing == expected


def _doc(**training: object) -> dict:
    import yaml

    doc = yaml.safe_load(VALID)
    doc["spec"]["training"].update(training)
    return doc


@pytest.mark.parametrize("key", ["learning_rate", "max_steps", "global_batch_size"])
def test_python_field_names_are_unknown_fields(key):
    # The CRD knows only the wire names: a server would drop learning_rate silently.
    _, problems = validate_job(_doc(**{key: 5}), plan=False)
    assert [p.path for p in problems] == [f"spec.training.{key}"]
    assert "unknown field" in problems[0].message


def test_python_field_names_are_unknown_in_the_operator_path():
    from finetune_operator.validation import validate_spec

    spec = _doc(learning_rate=5e-4)["spec"]
    valid, problems = validate_spec(spec, "tiny", plan=False)
    assert valid is None and problems[0].path == "spec.training.learning_rate"


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("learning_rate", "learningRate"), ("learningrate", "learningRate"),
     ("globalBatchsize", "globalBatchSize"), ("warmupRatoi", "warmupRatio")],
)
def test_a_misspelled_field_is_told_the_closest_name(key, suggestion):
    _, problems = validate_job(_doc(**{key: 1}), plan=False)
    assert f"(did you mean {suggestion}?)" in problems[0].message


def test_a_misspelled_field_deep_in_a_list_is_told_the_closest_name():
    doc = _doc()
    doc["spec"]["dataset"]["mix"] = [{"path": "m.jsonl", "wieght": 0.1}]
    _, problems = validate_job(doc, plan=False)
    assert problems[0].path == "spec.dataset.mix[0].wieght"
    assert "(did you mean weight?)" in problems[0].message


def test_a_misspelled_enum_value_is_told_the_closest_value():
    _, problems = validate_job(_doc(scheduler="cosin"), plan=False)
    assert "(did you mean cosine?)" in problems[0].message


def test_a_far_off_field_gets_no_suggestion():
    _, problems = validate_job(_doc(zzzzzz=1), plan=False)
    assert "did you mean" not in problems[0].message


def test_a_misspelled_field_and_a_bad_gpu_are_reported_in_one_pass():
    doc = _doc(learningRat=1e-4)
    doc["spec"]["resources"]["gpu"] = "H100-80G"
    _, problems = validate_job(doc)
    by_path = {p.path: p.message for p in problems}
    assert "unknown field" in by_path["spec.training.learningRat"]
    assert "unknown GPU type 'H100-80G' (did you mean H100-80GB?)" in by_path[
        "spec.resources.gpu"]


def test_header_and_schema_problems_are_reported_in_one_pass():
    doc = _doc(epochs="many")
    doc["kind"] = "FinetuneJob"
    _, problems = validate_job(doc, plan=False)
    assert {"kind", "spec.training.epochs"} <= {p.path for p in problems}


@pytest.mark.parametrize(
    ("product", "catalog"),
    [("NVIDIA-H100-80GB-HBM3", "H100-80GB"), ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
     ("NVIDIA-L4", "L4-24GB"), ("NVIDIA-A10G", "A10G-24GB"), ("Tesla-T4", "T4-16GB"),
     ("Tesla-V100-SXM2-32GB", "V100-32GB")],
)
def test_gpu_feature_discovery_product_names_plan_as_their_catalog_gpu(product, catalog):
    import yaml

    doc = yaml.safe_load(VALID)
    doc["spec"]["model"] = {"name": "org/model", "parameters": "125M"}
    doc["spec"]["resources"] = {"gpu": product, "gpusPerNode": 1, "maxNodes": 1}
    job, problems = validate_job(doc)
    assert problems == []
    from finetune_operator.planner import plan_job

    assert plan_job(job.spec).gpu == catalog


def test_a_long_well_formed_name_is_told_it_is_too_long():
    doc = _doc()
    doc["metadata"]["name"] = "a" * 70
    _, problems = validate_job(doc, plan=False)
    assert [p.message.split(":")[0] for p in problems] == ["is 70 characters, too long"]


def test_the_operator_refuses_a_cpu_that_is_no_quantity():
    from finetune_operator.validation import validate_spec

    spec = _doc()["spec"]
    spec["resources"]["cpu"] = "96 cores"
    valid, problems = validate_spec(spec, "tiny", plan=False)
    assert valid is None
    assert [p.path for p in problems] == ["spec.resources.cpu"]


def test_warnings_name_each_path_read_from_the_image_and_spare_hub_sources():
    from finetune_operator.validation import spec_warnings

    from tests.support.ftj_samples import spec

    job_spec = spec(dataset={"train": {"hf": "org/chat"},
                             "mix": [{"path": "general.jsonl", "weight": 0.2}]},
                    output={"pvc": "checkpoints"})
    assert [w.path for w in spec_warnings(job_spec)] == ["spec.dataset.mix[0].path"]
    assert "use dataset.mix[0].hf instead" in spec_warnings(job_spec)[0].message
    assert [w.path for w in spec_warnings(spec())] == ["spec.output.pvc",
                                                      "spec.dataset.train.path"]


# --------------------------------------------------------------------------- tokens

def _token_placements(token: str) -> list[str]:
    """Documents with `token` wherever a user may paste one: each must fail (or warn)
    without showing it."""
    head, body = VALID.split("spec:\n", 1)
    dataset = "  dataset: {train: {path: data/train.jsonl}}\n"
    return [
        VALID + f"  secrets: {token}\n",
        VALID + f"  secrets: {{hfToken: {token}}}\n",
        VALID + f"  secrets: {{hfToken: [{token}]}}\n",
        VALID + f"  secrets: {{hfToken: {{name: s, key: [{token}]}}}}\n",
        VALID + f"  secrets: {{hfToken: {{{token}: x}}}}\n",
        VALID + f"  secrets: {{{token}: {{name: s, key: k}}}}\n",
        VALID + f"  secrets: [{token}]\n",
        VALID + f"  secrets: {{hfToken: !!str {token}}}\n",
        VALID + f"  secrets: {{hfToken: !{token} x}}\n",
        VALID + f"  image: &t {token}\n  secrets: {{hfToken: *t}}\n",
        VALID + f"  {token}: 1\n",
        VALID + f"  {token}: 1\n  {token}: 2\n",
        VALID + f"  output: {{path: ../{token}}}\n",
        VALID + f"  runPolicy: {{backoffLimit: [{token}], suspend: {token}}}\n",
        VALID.replace("maxSteps: 10", f"maxSteps: {token}"),
        VALID.replace("model_type: llama", f"model_type: [{token}]"),
        VALID.replace("gpu: cpu", f"gpu: {token}"),
        VALID.replace(dataset, f"  dataset: {{train: {{path: {token}}}}}\n"),
        head.replace("finetune.dev/v1alpha1", token) + "spec:\n" + body,
        head.replace("FineTuneJob", f"[{token}]") + "spec:\n" + body,
    ]


def _token_cases() -> list[str]:
    from tests.finetune_operator.test_redact import TOKENS

    return [doc for token in TOKENS for doc in _token_placements(token)]


@pytest.mark.parametrize("text", _token_cases())
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_token_is_never_echoed_wherever_it_is_placed(tmp_path, capsys, text, command):
    from tests.finetune_operator.test_redact import TOKENS

    job = tmp_path / "job.yaml"
    job.write_text(text)
    main([command, str(job)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    for token in TOKENS:
        assert token not in out.out + out.err


@pytest.mark.parametrize(("field", "value"), [("dedupe", "yes"), ("dedupe", 1)])
def test_a_boolean_is_not_coerced(field, value):
    import yaml

    doc = yaml.safe_load(VALID)
    doc["spec"]["dataset"][field] = value
    _, problems = validate_job(doc, plan=False)
    assert [p.path for p in problems] == [f"spec.dataset.{field}"]


def _config_type_cases() -> list[tuple[str, object, bool]]:
    from finetune_contract.api import CONFIG_VALUE_TYPES

    values = ["llama", "64", 64, 64.5, True, ["llama"], {"a": 1}]
    cases = []
    for key, (kind, _) in CONFIG_VALUE_TYPES.items():
        for value in values:
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            cases.append((key, value, ok))
    return cases


@pytest.mark.parametrize(("key", "value", "ok"), _config_type_cases())
def test_model_config_values_have_the_types_transformers_expects(key, value, ok):
    import yaml

    doc = yaml.safe_load(VALID)
    doc["spec"]["model"]["config"][key] = value
    _, problems = validate_job(doc, plan=False)
    assert (f"spec.model.config.{key}" not in [p.path for p in problems]) == ok


@pytest.mark.parametrize("name", ["tiny", "a", "tiny-chat-2"])
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n\n", " ", "\t"])
def test_a_name_with_a_trailing_newline_or_space_is_refused(name, tail):
    import yaml

    doc = yaml.safe_load(VALID)
    doc["metadata"]["name"] = name
    assert validate_job(doc, plan=False)[1] == []
    doc["metadata"]["name"] = name + tail
    assert [p.path for p in validate_job(doc, plan=False)[1]] == ["metadata.name"]
