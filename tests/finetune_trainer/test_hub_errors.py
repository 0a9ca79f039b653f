"""What the Hub refuses reaches the user as one line naming the field, from the trainer's
entry point (`python -m finetune_trainer`, run here in-process through its main, and as a
real process for one model and one dataset case), against the Hub stand-in: a missing
repository, a gated one without a token, a token refused access, a token the Hub does not
know, and a split the dataset lacks. No traceback, and never the token."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_trainer.__main__ import main
from finetune_trainer.errors import EXIT_USER_ERROR

from tests.support.hub_standin import tiny_hub, tiny_model  # noqa: F401  (fixtures)
from tests.support.tiny import chat_rows, tiny_config, tiny_spec, trainer_env, write_jsonl

KNOWN_TOKEN = "hf_someone"  # a user of the Hub, not granted the gated repos
# Made-up tokens, generated (fixed seed), so that no message can hold one by accident.
_RNG = random.Random(17)
UNKNOWN_TOKENS = ["hf_" + "".join(_RNG.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=30))
                  for _ in range(3)]

# (case, repo, token, what the line must say). {kind} is model or dataset.
CASES = [
    ("missing", "acme/nothing", None,
     "{kind} 'acme/nothing' was not found on the Hugging Face Hub"),
    ("gated-without-token", "acme/gated", None,
     "is gated on the Hugging Face Hub and no token was given: set spec.secrets.hfToken"),
    ("token-refused-access", "acme/gated", KNOWN_TOKEN,
     "is gated and the Hub refused the token access"),
    *[(f"unknown-token-{i}", "acme/tiny", token, "refused the token as invalid credentials")
      for i, token in enumerate(UNKNOWN_TOKENS)],
]


@pytest.fixture
def hub(tiny_hub):  # noqa: F811
    """The stand-in with a dataset repository beside the models: public, and gated."""
    rows = "".join(f"{line}\n" for line in _jsonl(chat_rows(8))).encode()
    tiny_hub.add_repo("acme/tiny", {"train.jsonl": rows}, repo_type="dataset")
    tiny_hub.add_repo("acme/gated", {"train.jsonl": rows}, repo_type="dataset", gated=True,
                      tokens={"hf_granted"})
    tiny_hub.users.add(KNOWN_TOKEN)
    return tiny_hub


def _jsonl(rows: list[dict]) -> list[str]:
    import json

    return [json.dumps(r) for r in rows]


def _model_config(tmp_path: Path, repo: str) -> Path:
    write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    spec = tiny_spec(model={"name": repo, "init": "pretrained", "config": None,
                            "tokenizer": None, "chatTemplate": "chatml"})
    return _write(tmp_path, spec)


def _dataset_config(tmp_path: Path, source: dict, where: str = "train") -> Path:
    write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    dataset = {"train": {"path": "train.jsonl"}, where: source} if where != "train" else \
        {"train": source}
    return _write(tmp_path, tiny_spec(dataset=dataset))


def _write(tmp_path: Path, spec) -> Path:
    path = tmp_path / "trainer.yaml"
    path.write_text(tiny_config(tmp_path, spec=spec).dump_yaml())
    return path


def _one_line(capsys, token: str | None) -> str:
    """The one error line (progress bars of `datasets` may come before it)."""
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == captured.err.strip().splitlines()[-1], captured.err
    assert errors[0].startswith("finetune-trainer: error: "), captured.err
    assert "Traceback" not in captured.err
    if token:
        assert token not in captured.err + captured.out
    return errors[0].removeprefix("finetune-trainer: error: ")


@pytest.mark.parametrize(("case", "repo", "token", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_model_the_hub_refuses_names_model_name(hub, tmp_path, monkeypatch, capsys,
                                                  case, repo, token, says):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    assert main(["--config", str(_model_config(tmp_path, repo))]) == EXIT_USER_ERROR
    line = _one_line(capsys, token)
    assert line.startswith("model.name: "), line
    assert says.format(kind="model") in line


@pytest.mark.parametrize("where", ["train", "eval"])
@pytest.mark.parametrize(("case", "repo", "token", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_dataset_the_hub_refuses_names_its_hf_field(hub, tmp_path, monkeypatch, capsys,
                                                      case, repo, token, says, where):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    config = _dataset_config(tmp_path, {"hf": repo}, where)
    assert main(["--config", str(config)]) == EXIT_USER_ERROR
    line = _one_line(capsys, token)
    assert line.startswith(f"dataset.{where}.hf: "), line
    assert says.format(kind="dataset") in line


@pytest.mark.parametrize(("split", "says"), [
    ("validation", "dataset 'acme/tiny' has no split 'validation'; its splits: ['train']"),
    ("test", "dataset 'acme/tiny' has no split 'test'; its splits: ['train']"),
    ("train[:5]x", "not a split of dataset 'acme/tiny' nor a slice of one"),
])
def test_a_split_the_dataset_lacks_names_its_split_field(hub, tmp_path, capsys, split, says):
    config = _dataset_config(tmp_path, {"hf": "acme/tiny", "split": split})
    assert main(["--config", str(config)]) == EXIT_USER_ERROR
    line = _one_line(capsys, None)
    assert line.startswith(f"dataset.train.split: {says}"), line


def test_a_granted_token_reads_the_gated_dataset(hub, tmp_path, monkeypatch):
    from finetune_contract.api import DataSource
    from finetune_trainer.data import read_hf

    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    rows = list(read_hf(DataSource(hf="acme/gated")))
    assert len(rows) == 8 and rows[0][0] == "hf:acme/gated[train] row 1"


@pytest.mark.slow
@pytest.mark.parametrize("field", ["model", "dataset"])
def test_the_trainer_process_prints_one_line_and_not_the_token(hub, tmp_path, field):
    token = UNKNOWN_TOKENS[0]
    config = (_model_config(tmp_path, "acme/gated") if field == "model" else
              _dataset_config(tmp_path, {"hf": "acme/gated"}))
    env = {k: v for k, v in trainer_env().items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"), HF_TOKEN=token)
    done = subprocess.run([sys.executable, "-m", "finetune_trainer", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    named = "model.name" if field == "model" else "dataset.train.hf"
    assert errors == [(f"finetune-trainer: error: {named}: the Hugging Face Hub refused the "
                       f"token as invalid credentials while loading {field} 'acme/gated': "
                       "check the token in spec.secrets.hfToken (locally: HF_TOKEN or `hf "
                       "auth login`)")]
    assert "Traceback" not in done.stderr and token not in done.stderr + done.stdout
