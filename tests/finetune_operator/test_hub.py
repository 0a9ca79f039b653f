"""Reading a model to size it (hub.py): the real huggingface_hub client against the Hub
stand-in on loopback, and model folders on disk."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest
from finetune_contract.api import FineTuneJobSpec
from finetune_operator import hub as sizer
from finetune_operator.sizing import SizingFailed

from tests.support.hub_standin import HubStandIn, go_online
from tests.support.tiny import TINY_LLAMA, save_tiny_model

QWEN3_TINY = {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("tiny")
    return folder, save_tiny_model(folder)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("sharded")
    return folder, save_tiny_model(folder, QWEN3_TINY, max_shard_size="300KB")


@pytest.fixture
def hub(monkeypatch, tmp_path, tiny, sharded):
    with HubStandIn() as server:
        server.add_repo("acme/tiny-llama", tiny[0])
        server.add_repo("acme/tiny-qwen3", sharded[0])
        server.add_repo("acme/gated-llama", tiny[0], gated=True, tokens={"hf_granted"})
        server.users.add("hf_other")
        server.add_repo("acme/no-config", {"README.md": b"# nothing to size\n"})
        go_online(monkeypatch, server.endpoint, tmp_path / "hf")
        yield server


def weights_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def test_a_hub_model_is_sized_exactly_from_its_safetensors_headers(hub, tiny):
    sizing = sizer.size_hub_model("acme/tiny-llama")
    assert sizing.parameters == tiny[1]
    assert sizing.config["model_type"] == "llama" and sizing.config["hidden_size"] == 64
    assert sizing.commit == hub.repos[("model", "acme/tiny-llama")].branches["main"]
    assert sizing.revision == "main" and sizing.safetensors_files == 1
    # Only the header: Range requests, far fewer bytes than the file.
    for weights in weights_of(tiny[0]):
        path = f"/acme/tiny-llama/resolve/{sizing.commit}/{weights.name}"
        gets = [r for r in hub.requests_to(path) if r.method == "GET"]
        assert len(gets) == 1 and gets[0].range == "bytes=0-100000"
        assert hub.bytes_sent[path] <= 100_001 < weights.stat().st_size


def test_a_sharded_model_reads_every_shard_header_and_nothing_else(hub, sharded):
    sizing = sizer.size_hub_model("acme/tiny-qwen3")
    assert sizing.parameters == sharded[1]
    assert sizing.safetensors_files == len(weights_of(sharded[0])) > 1
    for weights in weights_of(sharded[0]):
        path = f"/acme/tiny-qwen3/resolve/{sizing.commit}/{weights.name}"
        assert all(r.range for r in hub.requests_to(path) if r.method == "GET")
        assert hub.bytes_sent[path] < weights.stat().st_size


def test_a_revision_is_resolved_to_its_commit(hub, tiny):
    repo = hub.repos[("model", "acme/tiny-llama")]
    first = repo.branches["main"]
    repo.push({"config.json": json.dumps({**TINY_LLAMA, "num_hidden_layers": 3}).encode()})
    assert sizer.size_hub_model("acme/tiny-llama", first).commit == first
    newer = sizer.size_hub_model("acme/tiny-llama")
    assert newer.config["num_hidden_layers"] == 3 and newer.parameters is None  # no weights


def test_a_gated_model_without_a_token_names_the_model_and_the_token_field(hub):
    with pytest.raises(SizingFailed) as err:
        sizer.size_hub_model("acme/gated-llama")
    assert err.value.reason == "GatedRepo" and not err.value.here_only
    assert "'acme/gated-llama' (spec.model.name) is gated" in err.value.message
    assert "spec.secrets.hfToken" in err.value.message and "HF_TOKEN" in err.value.message


def test_a_refused_token_and_an_unknown_token_are_told_apart(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_other")
    with pytest.raises(SizingFailed) as refused:
        sizer.size_hub_model("acme/gated-llama")
    assert refused.value.reason == "TokenRefused" and "refused access" in refused.value.message
    with pytest.raises(SizingFailed) as invalid:
        sizer.size_hub_model("acme/gated-llama", token="hf_made_up")
    assert invalid.value.reason == "InvalidToken"


def test_the_granted_token_from_hf_token_reaches_the_hub(hub, tiny, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert sizer.size_hub_model("acme/gated-llama").parameters == tiny[1]
    assert {r.token for r in hub.requests} == {"hf_granted"}


def test_a_missing_model_and_a_model_without_config(hub):
    with pytest.raises(SizingFailed) as missing:
        sizer.size_hub_model("acme/nothing-here")
    assert missing.value.reason == "RepoNotFound"
    assert "'acme/nothing-here' (spec.model.name) was not found" in missing.value.message
    with pytest.raises(SizingFailed) as no_config:
        sizer.size_hub_model("acme/no-config")
    assert no_config.value.reason == "NoConfig" and "model.parameters" in no_config.value.message
    with pytest.raises(SizingFailed) as revision:
        sizer.size_hub_model("acme/tiny-llama", "f" * 40)
    assert revision.value.reason == "RevisionNotFound"


def test_an_unreachable_hub_and_offline_mode_fail_here_only(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    go_online(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "hf")
    with pytest.raises(SizingFailed) as unreachable:
        sizer.size_hub_model("acme/tiny-llama")
    assert unreachable.value.reason == "Unreachable" and unreachable.value.here_only
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SizingFailed) as offline:
        sizer.size_hub_model("acme/tiny-llama")
    assert offline.value.reason == "Offline" and offline.value.here_only


def test_a_folder_is_sized_from_its_files_without_reading_the_weights(tiny, sharded):
    assert sizer.size_folder(tiny[0]).parameters == tiny[1]
    local = sizer.size_folder(sharded[0], label="models/qwen3")
    assert local.parameters == sharded[1] and local.model == "models/qwen3"
    assert local.config["model_type"] == "qwen3"


def test_packed_integer_weights_give_no_exact_count(tmp_path):
    header = json.dumps({"w": {"dtype": "I32", "shape": [8, 4], "data_offsets": [0, 128]},
                         "s": {"dtype": "F16", "shape": [8], "data_offsets": [128, 144]}})
    (tmp_path / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header.encode() + bytes(144))
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    assert sizer.size_folder(tmp_path).parameters is None


def test_broken_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(SizingFailed) as absent:
        sizer.size_folder(tmp_path / "elsewhere", label="elsewhere")
    assert absent.value.here_only  # a path on the job's volume, not here
    with pytest.raises(SizingFailed) as no_config:
        sizer.size_folder(tmp_path)
    assert no_config.value.reason == "NoConfig" and not no_config.value.here_only
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(SizingFailed, match="no model_type"):
        sizer.size_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 8)
    with pytest.raises(SizingFailed) as broken:
        sizer.size_folder(tmp_path)
    assert broken.value.reason == "BadSafetensors"


def test_size_if_needed_leaves_what_the_spec_sizes_alone(tiny):
    catalog = FineTuneJobSpec.model_validate({
        "model": {"name": "meta-llama/Llama-3.1-8B"}, "dataset": {"train": {"path": "t.jsonl"}}})
    assert sizer.size_if_needed(catalog, None) is None
    local = FineTuneJobSpec.model_validate({
        "model": {"path": tiny[0].name}, "dataset": {"train": {"path": "t.jsonl"}}})
    assert sizer.size_if_needed(local, tiny[0].parent).parameters == tiny[1]
    with pytest.raises(SizingFailed) as elsewhere:
        sizer.size_if_needed(local, None)
    assert elsewhere.value.here_only
