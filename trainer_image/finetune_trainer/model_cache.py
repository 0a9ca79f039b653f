"""The base model from the Hugging Face Hub, downloaded once per job into a cache directory.

In a cluster the operator gives a model downloaded by name (model.name, init: pretrained, no
model.path) a cache directory, `TrainerConfig.model_cache`: on model.cachePvc, or on the
output volume. Each pod's init container runs

    python -m finetune_trainer.model_cache --config /etc/finetune/trainer.yaml

which downloads the model there (HF_TOKEN is read from the environment by the hub client)
unless the cache holds it already, so a restarted gang downloads nothing again. The ranks
then load the model and its tokenizer from the cache without the network (`load_options`).
Not through HF_HUB_OFFLINE: that would cut off hf: datasets too, which are read over the
network. Importing this module needs no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from finetune_contract.rules import downloads_weights
from finetune_contract.trainer_config import TrainerConfig

from finetune_trainer.errors import exit_status
from finetune_trainer.hub_errors import hub_error

# Files transformers never loads for a PyTorch model: Meta's original/ checkpoints, Flax,
# TensorFlow, ONNX, GGUF, Core ML. With them a repository holds its weights several times.
NOT_LOADED = ["original/*", "*.pth", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "onnx/*",
              "*.gguf", "*.tflite", "*.ot", "*.mlmodel", "coreml/*"]
# PyTorch pickles: the weights of a repository without safetensors, a duplicate otherwise.
PICKLES = ["*.bin", "*.pt"]


def cache_of(config: TrainerConfig) -> str | None:
    """The cache the model is downloaded into and loaded from; None: nothing to download, or
    no cache given (local runs: the hub client's own cache)."""
    return config.model_cache if downloads_weights(config.spec.model) else None


def load_options(config: TrainerConfig, source: str) -> dict[str, Any]:
    """from_pretrained's arguments for `source`: from the cache, offline, when `source` is
    the model that was downloaded into it."""
    cache = cache_of(config)
    if cache is None or source != config.spec.model.name:
        return {}
    return {"cache_dir": cache, "local_files_only": True}


def download(config: TrainerConfig) -> Path | None:
    """Download the model into its cache, safetensors only where the repository has them;
    None when there is nothing to download. A cache that holds the model already costs one
    request, or none when the Hub cannot be reached."""
    cache = cache_of(config)
    if cache is None:
        return None
    name = config.spec.model.name
    assert name is not None  # downloads_weights
    folder = _snapshot(name, cache, NOT_LOADED + PICKLES)
    if not has_safetensors(folder):
        folder = _snapshot(name, cache, NOT_LOADED)
    return folder


def has_safetensors(folder: Path) -> bool:
    return any(folder.rglob("*.safetensors"))


def _snapshot(name: str, cache: str, ignore: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, cache_dir=cache, ignore_patterns=ignore))
    except (OSError, ValueError) as err:  # not found, gated, no token, Hub unreachable, ...
        raise hub_error(err, field="model.name", kind="model", repo=name,
                        doing=f"download {name!r} into {cache}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finetune_trainer.model_cache",
        description="Download the base model into the job's cache (the pods' init step).")
    parser.add_argument("--config", required=True, help="TrainerConfig YAML file")
    args = parser.parse_args(argv)

    def fetch() -> None:
        from finetune_trainer.config import load

        folder = download(load(args.config))
        print(f"finetune-trainer: model in {folder}" if folder else
              "finetune-trainer: nothing to download", flush=True)

    return exit_status(fetch)


if __name__ == "__main__":
    raise SystemExit(main())
