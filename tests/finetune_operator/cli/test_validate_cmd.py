"""`finetune validate FILE...`: one line per document, standard input, and files that are no
FineTuneJobs at all."""

from __future__ import annotations

import io

import pytest
from finetune_operator.cli import main

from tests.support.ftj_samples import VALID


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


SECRET = """\
apiVersion: v1
kind: Secret
metadata: {name: hf-token}
stringData: {token: hf_x}
"""


def test_other_resources_in_the_file_are_skipped_and_named(tmp_path, capsys):
    job = tmp_path / "bundle.yaml"
    job.write_text(SECRET + "---\n" + VALID)
    assert main(["validate", str(job)]) == 0
    out = capsys.readouterr().out
    assert f"{job}: doc 1 (Secret hf-token): skipped, not a FineTuneJob" in out
    assert f"{job}: doc 2: valid" in out


def test_a_file_of_other_resources_only_has_no_job(tmp_path, capsys):
    job = tmp_path / "secret.yaml"
    job.write_text(SECRET)
    assert main(["validate", str(job)]) == 1
    assert "no FineTuneJob documents found" in capsys.readouterr().err


def test_a_wrong_kind_of_our_api_is_an_error_not_a_skip(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(SECRET + "---\n" + VALID.replace("kind: FineTuneJob", "kind: FinetuneJob"))
    assert main(["validate", str(job)]) == 1
    assert f"{job}: doc 2: kind: must be FineTuneJob" in capsys.readouterr().err


def test_a_valid_job_without_output_pvc_passes_with_a_warning_naming_the_field(tmp_path,
                                                                                capsys):
    job = tmp_path / "job.yaml"
    job.write_text(VALID)
    assert main(["validate", "-q", str(job)]) == 0
    err = capsys.readouterr().err
    assert (f"{job}: doc 1: warning: spec.output.pvc: is not set: in a cluster the "
            "checkpoints and the final model go to an emptyDir and are deleted with the pods"
            in err)
    assert "set output.pvc to a PersistentVolumeClaim" in err


def test_dataset_paths_without_a_dataset_pvc_are_warned_about_one_by_one(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(VALID.replace("dataset: {train: {path: data/train.jsonl}}",
                                 "dataset: {train: {path: data/train.jsonl}, "
                                 "eval: {path: data/eval.jsonl}}"))
    assert main(["validate", str(job)]) == 0
    err = capsys.readouterr().err
    for where, path in (("train", "data/train.jsonl"), ("eval", "data/eval.jsonl")):
        assert (f"{job}: doc 1: warning: spec.dataset.{where}.path: '{path}' is read from "
                "inside the trainer image in a cluster (dataset.pvc is not set); set "
                f"dataset.pvc to the claim that holds it, use dataset.{where}.hf instead" in err)
    assert "build one with it under /data and set spec.image" in err


def test_a_job_with_its_volumes_gets_no_warning(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(VALID.replace("dataset: {train: {path: data/train.jsonl}}",
                                 "dataset: {train: {path: data/train.jsonl}, pvc: corpus}")
                   + "  output: {pvc: checkpoints}\n")
    assert main(["validate", str(job)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    assert f"{job}: doc 1: valid" in captured.out


def test_an_empty_document_between_jobs_is_a_warning_naming_it(tmp_path, capsys):
    job = tmp_path / "jobs.yaml"
    job.write_text(VALID + "---\n---\n" + VALID)
    assert main(["validate", "--no-plan", str(job)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {job}:" in captured.err and "doc 2 is empty" in captured.err
    assert f"{job}: doc 1: valid" in captured.out and f"{job}: doc 3: valid" in captured.out


@pytest.mark.parametrize("twice", ["apiVersion", "kind", "metadata", "spec", "init",
                                   "maxSteps", "gpu", "vocabSize"])
def test_a_key_given_twice_fails_naming_file_line_and_key(tmp_path, capsys, twice):
    lines = VALID.splitlines()
    at = next(i for i, line in enumerate(lines) if f"{twice}:" in line)
    if "{" in lines[at].split(f"{twice}:")[0]:  # inside a flow mapping: given twice there
        lines[at] = lines[at].replace(f"{twice}:", f"{twice}: 1, {twice}:", 1)
        line = at + 1
    elif not lines[at].startswith(" "):  # a top-level key: again at the end
        lines.append(f"{twice}: again")
        line = len(lines)
    else:  # a scalar's line: again right below it
        lines.insert(at + 1, lines[at])
        line = at + 2
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(job)]) == 1
    err = capsys.readouterr().err
    assert f"{job}:" in err and f"key '{twice}' is given twice" in err
    assert str(line) in err.split(":")[1] and "Traceback" not in err


@pytest.mark.parametrize("text", ["a: " + "[" * 70 + "]" * 70,
                                  "x: &x [1]\n" + "".join(f"k{i}: *x\n" for i in range(300))])
def test_a_hostile_file_fails_in_one_line(tmp_path, capsys, text):
    job = tmp_path / "job.yaml"
    job.write_text(text)
    assert main(["validate", str(job)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{job}:") and "Traceback" not in err


def test_dev_zero_fails_naming_the_limit(capsys):
    from finetune_operator.bounded_yaml import MAX_INPUT_BYTES

    assert main(["validate", "/dev/zero"]) == 1
    assert f"/dev/zero: larger than {MAX_INPUT_BYTES} bytes" in capsys.readouterr().err
