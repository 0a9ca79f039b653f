"""The job's model cache (model_cache.py): the ranks load a model downloaded by name, and its
tokenizer, from the cache and never from the Hub; the init step finds a cache that holds the
model complete without the Hub, and says in one line what it cannot download.

The tests run with HF_HUB_OFFLINE=1 (tests/conftest.py), which the hub client treats like an
unreachable Hub. A download over the network needs a Hub stand-in (issue 17). The caches are
written in the hub client's layout (models--org--name/refs/main, snapshots/<commit>/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from finetune_trainer import model_cache
from finetune_trainer.errors import EXIT_USER_ERROR, TrainerError

from tests.support.tiny import TINY_LLAMA, chat_rows, tiny_config, tiny_spec

REPO = "org/tiny-chat"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _config(tmp_path: Path, cache: Path | None, **model):
    spec = tiny_spec(model={"name": REPO, "init": "pretrained", "tokenizer": None,
                            "config": None, **model})
    return tiny_config(tmp_path, spec=spec, model_cache=str(cache) if cache else None)


def _hub_cache(cache: Path) -> tuple[Path, Any]:
    """A cache holding REPO, a tiny Llama and a tokenizer, as the hub client leaves them:
    the snapshot folder and the model saved there."""
    from finetune_trainer.tokenizer import train_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    tokenizer = train_tokenizer([str(r) for r in chat_rows(64)], 300)
    keys = {k: v for k, v in TINY_LLAMA.items() if k != "model_type"}
    hf_config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), **keys)
    model = AutoModelForCausalLM.from_config(hf_config)
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot, model


def test_only_the_model_downloaded_by_name_is_loaded_from_the_cache(tmp_path):
    config = _config(tmp_path, tmp_path / "cache")
    assert model_cache.load_options(config, REPO) == {
        "cache_dir": str(tmp_path / "cache"), "local_files_only": True}
    assert model_cache.load_options(config, "/data/tokenizer") == {}  # tokenizer.path
    assert model_cache.load_options(_config(tmp_path, None), REPO) == {}  # local runs
    local = _config(tmp_path, tmp_path / "cache", name=None, path="base")
    assert model_cache.cache_of(local) is None
    assert model_cache.download(local) is None  # model.path: nothing to download


def test_ranks_load_the_model_and_its_tokenizer_from_the_cache_alone(tmp_path):
    import torch
    from finetune_trainer.model import build_model
    from finetune_trainer.tokenizer import load_tokenizer

    _, saved = _hub_cache(tmp_path / "cache")
    config = _config(tmp_path, tmp_path / "cache")
    tokenizer = load_tokenizer(config, [])
    model = build_model(config, tokenizer)
    assert len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight)
    # with another cache the same name is not found: nothing came from elsewhere
    with pytest.raises(TrainerError, match="model"):
        load_tokenizer(_config(tmp_path, tmp_path / "other-cache"), [])


def test_a_cache_that_holds_the_model_needs_no_hub(tmp_path, capsys):
    snapshot, _ = _hub_cache(tmp_path / "cache")
    config = _config(tmp_path, tmp_path / "cache")
    assert model_cache.download(config) == snapshot
    path = tmp_path / "trainer.yaml"
    path.write_text(config.dump_yaml())
    assert model_cache.main(["--config", str(path)]) == 0
    assert f"model in {snapshot}" in capsys.readouterr().out


def test_what_cannot_be_downloaded_is_one_line_naming_model_name(tmp_path, capsys):
    path = tmp_path / "trainer.yaml"
    path.write_text(_config(tmp_path, tmp_path / "empty-cache").dump_yaml())
    assert model_cache.main(["--config", str(path)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"finetune-trainer: error: model.name: cannot download {REPO!r} "
                          f"into {tmp_path / 'empty-cache'} (")
    assert err.count("\n") == 1 and "Traceback" not in err
