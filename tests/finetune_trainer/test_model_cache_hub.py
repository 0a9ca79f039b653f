"""The job's model cache filled from the Hub (the stand-in, tests/support/hub_standin.py):
the init step downloads the model into the cache once, the ranks load it from there without
asking the Hub, and a second start of the trainer with the same cache and output (a
restarted gang) downloads nothing: no weights, no tokenizer, no data file again."""

from __future__ import annotations

from pathlib import Path

import pytest
from finetune_trainer import model_cache
from finetune_trainer.__main__ import main

from tests.support.hub_standin import chat_hub, chat_models, file_gets  # noqa: F401
from tests.support.tiny import tiny_config, tiny_spec

MODEL = "acme/chat-base"


def _config(tmp_path: Path, **dataset):
    spec = tiny_spec(model={"name": MODEL, "init": "pretrained", "config": None,
                            "tokenizer": None},
                     dataset=dataset or {"train": {"hf": "acme/chats-jsonl"}},
                     training={"maxSteps": 2})
    return tiny_config(tmp_path, spec=spec, model_cache=str(tmp_path / "cache"))


def test_the_init_step_downloads_into_the_cache_once(chat_hub, chat_models, tmp_path):  # noqa: F811
    config = _config(tmp_path)
    folder = model_cache.download(config)
    snapshots = tmp_path / "cache" / "models--acme--chat-base" / "snapshots"
    assert folder is not None and folder.parent == snapshots
    assert {p.name for p in folder.iterdir()} == {p.name for p in chat_models["base"].iterdir()}
    assert (folder / "model.safetensors").read_bytes() == \
        (chat_models["base"] / "model.safetensors").read_bytes()
    assert [r.method for r in chat_hub.requests_under(f"/{MODEL}/resolve/")
            if r.path.endswith("/model.safetensors")].count("GET") == 1
    assert not (tmp_path / "hf-home" / "hub" / "models--acme--chat-base").exists()
    downloaded = file_gets(chat_hub, MODEL)
    assert model_cache.download(config) == folder  # the next pod's init step
    assert file_gets(chat_hub, MODEL) == downloaded


@pytest.mark.slow
def test_ranks_and_a_restarted_gang_download_nothing_again(chat_hub, tmp_path):  # noqa: F811
    config = _config(tmp_path, train={"hf": "acme/chats-parquet"},
                     eval={"hf": "acme/chats-parquet", "split": "test"})
    path = tmp_path / "trainer.yaml"
    path.write_text(config.dump_yaml())
    model_cache.download(config)
    weights = file_gets(chat_hub, MODEL)
    asked = _gets_to_model_repo(chat_hub)

    assert main(["--config", str(path)]) == 0  # the gang
    data = file_gets(chat_hub, "acme/chats-parquet", "dataset")
    assert data >= 1  # the first start read the data files
    assert main(["--config", str(path)]) == 0  # the restarted gang: same cache and output
    assert file_gets(chat_hub, MODEL) == weights
    assert file_gets(chat_hub, "acme/chats-parquet", "dataset") == data
    # The ranks load the model from the cache alone: no GET reached its repository, not
    # even of its metadata. (One HEAD for adapter_config.json does, from the library, when
    # the final model is saved; it downloads nothing.)
    assert _gets_to_model_repo(chat_hub) == asked


def _gets_to_model_repo(hub) -> list:
    return [r for r in hub.requests_under(f"/{MODEL}/") + hub.requests_under(
        f"/api/models/{MODEL}") if r.method == "GET"]
