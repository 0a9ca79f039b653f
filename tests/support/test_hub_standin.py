"""The Hub stand-in (hub_standin.py) against the real huggingface_hub client, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub as hf
import pytest
from huggingface_hub import errors

from tests.support.hub_standin import HubStandIn, go_online
from tests.support.tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("tiny-model")
    return folder, save_tiny_model(folder)


@pytest.fixture(scope="module")
def sharded_folder(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("tiny-sharded")
    return folder, save_tiny_model(folder, max_shard_size="500KB")


@pytest.fixture
def hub(monkeypatch, tmp_path, model_folder, sharded_folder):
    with HubStandIn() as server:
        server.add_repo("acme/tiny", model_folder[0])
        server.add_repo("acme/sharded", sharded_folder[0])
        server.add_repo("acme/gated", model_folder[0], gated=True, tokens={"hf_granted"})
        server.users.add("hf_someone")
        server.add_repo("acme/rows", {"train.jsonl": b'{"text": "hi"}\n'}, repo_type="dataset")
        go_online(monkeypatch, server.endpoint, tmp_path / "hf")
        yield server


def api(hub: HubStandIn, token: str | bool | None = False) -> hf.HfApi:
    return hf.HfApi(endpoint=hub.endpoint, token=token)


def test_hf_hub_download_gets_the_file_once_and_then_uses_the_cache(hub, model_folder):
    first = hf.hf_hub_download("acme/tiny", "config.json", endpoint=hub.endpoint)
    again = hf.hf_hub_download("acme/tiny", "config.json", endpoint=hub.endpoint)
    assert first == again
    assert json.loads(Path(first).read_text()) == json.loads(
        (model_folder[0] / "config.json").read_text())
    path = "/acme/tiny/resolve/main/config.json"
    assert hub.count(path, method="GET") == 1  # the second call only checked the ETag
    assert hub.count(path, method="HEAD") == 2


def test_revisions_resolve_by_branch_and_by_commit(hub, tmp_path):
    repo = hub.repos[("model", "acme/tiny")]
    old = repo.branches["main"]
    new = repo.push({"config.json": b'{"model_type": "llama", "hidden_size": 8}'})
    assert new != old and repo.branches["main"] == new
    assert api(hub).model_info("acme/tiny").sha == new
    assert api(hub).model_info("acme/tiny", revision=old).sha == old
    at_old = hf.hf_hub_download("acme/tiny", "model.safetensors", revision=old,
                                endpoint=hub.endpoint)
    assert Path(at_old).stat().st_size > 100_000
    with pytest.raises(errors.EntryNotFoundError):  # gone in the new commit
        hf.hf_hub_download("acme/tiny", "model.safetensors", endpoint=hub.endpoint)
    with pytest.raises(errors.RevisionNotFoundError):
        api(hub).model_info("acme/tiny", revision="0" * 40)


def test_model_info_lists_the_siblings_with_their_blobs(hub, model_folder):
    info = api(hub).model_info("acme/tiny", files_metadata=True)
    files = {s.rfilename: s for s in info.siblings}
    assert set(files) == {p.name for p in model_folder[0].iterdir()}
    weights = files["model.safetensors"]
    assert weights.size == (model_folder[0] / "model.safetensors").stat().st_size
    assert weights.lfs is not None and weights.lfs.size == weights.size
    assert files["config.json"].lfs is None
    assert len(info.sha) == 40


def test_snapshot_download_fetches_every_file_of_the_tree(hub, model_folder, tmp_path):
    local = hf.snapshot_download("acme/sharded", endpoint=hub.endpoint,
                                 local_dir=tmp_path / "snap")
    names = {p.name for p in Path(local).iterdir() if p.is_file()}
    assert "model.safetensors.index.json" in names
    assert len([n for n in names if n.endswith(".safetensors")]) > 1
    assert hub.count("/api/models/acme/sharded/tree/" + hub.repos[
        ("model", "acme/sharded")].branches["main"]) == 1


def test_safetensors_metadata_reads_headers_only(hub, model_folder, sharded_folder):
    single = api(hub).get_safetensors_metadata("acme/tiny")
    assert sum(single.parameter_count.values()) == model_folder[1]
    sharded = api(hub).get_safetensors_metadata("acme/sharded")
    assert sharded.sharded and sum(sharded.parameter_count.values()) == sharded_folder[1]
    for folder, repo in ((model_folder[0], "acme/tiny"), (sharded_folder[0], "acme/sharded")):
        for weights in folder.glob("*.safetensors"):
            path = f"/{repo}/resolve/main/{weights.name}"
            gets = [r for r in hub.requests_to(path) if r.method == "GET"]
            assert gets and all(r.range for r in gets), path
            assert hub.bytes_sent[path] < weights.stat().st_size


def test_a_range_past_the_end_is_refused_and_a_suffix_range_served(hub):
    import urllib.error
    import urllib.request

    url = f"{hub.endpoint}/acme/tiny/resolve/main/config.json"
    size = len(hub.repos[("model", "acme/tiny")].resolve("main").files["config.json"])
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-10"})
                                ) as tail:
        assert tail.status == 206 and len(tail.read()) == 10
        assert tail.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
    with pytest.raises(urllib.error.HTTPError) as past:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={size}-"}))
    assert past.value.code == 416


def test_gated_repo_without_a_token_with_a_refused_token_and_with_a_granted_one(hub):
    with pytest.raises(errors.GatedRepoError) as without:
        api(hub).model_info("acme/gated")
    assert without.value.response.status_code == 401
    with pytest.raises(errors.GatedRepoError) as refused:
        hf.hf_hub_download("acme/gated", "config.json", endpoint=hub.endpoint,
                           token="hf_someone")
    assert refused.value.response.status_code == 403
    assert api(hub, token="hf_granted").model_info("acme/gated").id == "acme/gated"
    assert hub.requests[-1].token == "hf_granted"


def test_an_unknown_token_is_invalid_credentials(hub):
    with pytest.raises(errors.HfHubHTTPError) as err:
        api(hub, token="hf_made_up").model_info("acme/tiny")
    assert err.value.response.status_code == 401
    assert not isinstance(err.value, errors.RepositoryNotFoundError)


def test_missing_repo_and_missing_file(hub):
    with pytest.raises(errors.RepositoryNotFoundError):
        api(hub).model_info("acme/nothing")
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.hf_hub_download("acme/nothing", "config.json", endpoint=hub.endpoint)
    with pytest.raises(errors.EntryNotFoundError):
        hf.hf_hub_download("acme/tiny", "nope.json", endpoint=hub.endpoint)
    assert not api(hub).file_exists("acme/tiny", "nope.json")


def test_datasets_live_under_their_own_prefix(hub):
    info = api(hub).dataset_info("acme/rows")
    assert [s.rfilename for s in info.siblings] == ["train.jsonl"]
    path = hf.hf_hub_download("acme/rows", "train.jsonl", repo_type="dataset",
                              endpoint=hub.endpoint)
    assert Path(path).read_text() == '{"text": "hi"}\n'
    assert hub.count("/datasets/acme/rows/resolve/main/train.jsonl", method="GET") == 1
    with pytest.raises(errors.RepositoryNotFoundError):
        api(hub).model_info("acme/rows")  # a dataset, not a model


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_datasets_load_dataset_reads_a_dataset_repository(hub, file_format):
    import datasets

    from tests.support.hub_standin import chat_dataset_files

    rows = [{"text": f"row {i}"} for i in range(5)]
    hub.add_repo("acme/texts", chat_dataset_files(rows, rows[:2], file_format),
                 repo_type="dataset")
    train = datasets.load_dataset("acme/texts", split="train")
    assert [r["text"] for r in train] == [r["text"] for r in rows]
    assert len(datasets.load_dataset("acme/texts", split="test")) == 2
    assert hub.downloads("/datasets/acme/texts/resolve/") >= 1
    assert hub.count("/api/datasets/acme/texts/revision/" + hub.repos[
        ("dataset", "acme/texts")].branches["main"]) >= 1


def test_downloads_count_whole_files_not_header_reads(hub):
    hf.hf_hub_download("acme/tiny", "config.json", endpoint=hub.endpoint)
    api(hub).get_safetensors_metadata("acme/tiny")  # Range reads of the header only
    assert hub.downloads("/acme/tiny/resolve/") == 1
    assert hub.requests_under("/acme/tiny/resolve/main/model.safetensors")
