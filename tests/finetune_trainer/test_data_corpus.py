"""The bad-data corpus (tests/cases/bad-data, expectations in its manifest.yaml) through the
trainer's own data pipeline, and one file through a real `finetune run --local`.

With onError: fail every bad file stops with `file:line: problem`; with onError: skip every
bad row is counted under its reason, and rows read = rows trained + rows skipped: no row is
ever dropped without being counted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from finetune_contract.api import DatasetSpec
from finetune_trainer.data import prepare
from finetune_trainer.errors import TrainerError

from tests.support.bad_data import CORPUS, MANIFEST, assert_counted
from tests.support.local_run import finetune_command, run_cli, write_job

NUM_LABELS = 3


def _prepare(case: dict, on_error: str, folder: Path = CORPUS):
    dataset = DatasetSpec.model_validate({"format": case["format"], "onError": on_error,
                                          "train": {"path": case["file"]}})
    return prepare(dataset, resolve=lambda path: folder / path,
                   num_labels=NUM_LABELS if case["format"] == "classification" else None,
                   assistant_only_loss=True, seed=0)


def test_every_file_of_the_corpus_has_an_expectation():
    listed = {case["file"] for case in MANIFEST}
    present = {p.name for p in CORPUS.iterdir() if p.name != "manifest.yaml"}
    assert listed == present
    assert all("fail" in case or "skip" in case for case in MANIFEST)


@pytest.mark.parametrize("case", [c for c in MANIFEST if "fail" in c], ids=lambda c: c["file"])
def test_on_error_fail_names_file_line_and_problem(case):
    with pytest.raises(TrainerError) as raised:
        _prepare(case, "fail")
    expected = case["fail"].replace("FILE", str(CORPUS / case["file"]))
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)  # one line


@pytest.mark.parametrize("case", [c for c in MANIFEST if "skip" not in c],
                         ids=lambda c: c["file"])
def test_unreadable_files_fail_even_with_on_error_skip(case):
    with pytest.raises(TrainerError) as raised:
        _prepare(case, "skip")
    assert case["fail"].replace("FILE", str(CORPUS / case["file"])) in str(raised.value)


@pytest.mark.parametrize("case", [c for c in MANIFEST if "skip" in c and
                                  c.get("stage", "data") == "data"], ids=lambda c: c["file"])
def test_on_error_skip_counts_every_bad_row(case):
    prepared = _prepare(case, "skip")
    data = prepared.report.to_dict()
    assert_counted(data, case["skip"])
    # each skipped row is listed with its own file:line
    for example in data["skippedExamples"]:
        assert example.startswith(f"{CORPUS / case['file']}:")


def test_rows_cut_only_at_tokenization_pass_the_row_checks():
    """over-long.jsonl is well-formed: the row checks keep all of it; the tokenized length
    is what drops its rows (counted: see test_local_run.py)."""
    (case,) = [c for c in MANIFEST if c.get("stage") == "tokenize"]
    prepared = _prepare(case, "fail")
    assert prepared.report.train_rows == sum(prepared.report.read.values()) == 5


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.distributed
def test_latin1_row_fails_a_local_run_with_file_and_line(tmp_path):
    (case,) = [c for c in MANIFEST if c["file"] == "latin1.jsonl"]
    job = write_job(tmp_path / "job", max_steps=2, save_steps=2)
    train = tmp_path / "job" / "data" / "train.jsonl"
    shutil.copyfile(CORPUS / case["file"], train)
    result = run_cli(finetune_command(job, tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    expected = case["fail"].replace("FILE", str(train))
    assert f"training failed: {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "training_summary.json").exists()


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", ["deep-row.jsonl", "unclosed.json"])
def test_a_damaged_file_fails_a_local_run_in_one_line(tmp_path, name):
    """deep-row.jsonl raised RecursionError in `finetune run --local` itself, before any
    rank started; unclosed.json trained on the rows before the cut without a word."""
    (case,) = [c for c in MANIFEST if c["file"] == name]
    job = write_job(tmp_path / "job", max_steps=2, save_steps=2)
    train = tmp_path / "job" / "data" / f"train{Path(name).suffix}"
    shutil.copyfile(CORPUS / name, train)
    doc = yaml.safe_load(job.read_text())
    doc["spec"]["dataset"]["train"]["path"] = f"data/{train.name}"
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_cli(finetune_command(job, tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    expected = case["fail"].replace("FILE", str(train))
    (line,) = [line for line in result.stderr.splitlines() if str(train) in line]
    assert line.startswith(f"training failed: {expected}"), result.stderr
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert not (tmp_path / "out" / "training_summary.json").exists()
