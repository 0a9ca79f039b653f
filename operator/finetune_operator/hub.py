"""Reading a model to size it: its config.json and the headers of its safetensors files, from
the Hugging Face Hub (through huggingface_hub) or from its folder.

    sizing = size_hub_model("meta-llama/Llama-3.3-70B-Instruct")   # HF_TOKEN, HF_ENDPOINT
    sizing = size_folder(Path("models/tiny"))

Only headers are read: a Range request for the first 100 kB of each safetensors file (two when
a header is larger), never the weights. `finetune plan` and `finetune validate` call it on a
laptop, `finetune size` in the operator's sizing pod (finetune_operator.sizing). Every failure
is a SizingFailed in the user's words; `here_only` marks those of this machine (offline, no
route to the Hub), after which the cluster may still size the job.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from finetune_contract.api import FineTuneJobSpec, ModelSizing

from finetune_operator.sizing import DEFAULT_REVISION, SizingFailed, planner_config

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Packed quantized weights (GPTQ, AWQ, bitsandbytes) hold several parameters per element:
# their element count is not the model's parameter count.
PACKED_DTYPES = frozenset({"I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64"})
HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own bound on a header


def size_if_needed(spec: FineTuneJobSpec, data_root: Path | None) -> ModelSizing | None:
    """What the planner needs to read about the job's model (size_for_spec), or None when
    the spec sizes it alone (the catalog, model.config, model.parameters)."""
    from finetune_operator.planner import needs_sizing

    return size_for_spec(spec, data_root) if needs_sizing(spec) else None


def size_for_spec(spec: FineTuneJobSpec, data_root: Path | None) -> ModelSizing:
    """Size the job's model where this process runs: model.path from its folder (relative
    to `data_root`), else model.name from the Hub with the local token (HF_TOKEN or the
    stored login)."""
    m = spec.model
    if m.path:
        path = Path(m.path)
        if not path.is_absolute():
            if data_root is None:
                raise SizingFailed("NoModelFolder", f"model.path {m.path!r} is on the job's "
                                   "volume, not readable here", here_only=True)
            path = data_root / path
        return size_folder(path, label=m.path)
    if not m.name:
        raise SizingFailed("NoModel", "give model.name or model.path")
    return size_hub_model(m.name)


# --------------------------------------------------------------------------- the Hub


def endpoint() -> str:
    """The Hub this process talks to: HF_ENDPOINT as it is now, else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def size_hub_model(name: str, revision: str = DEFAULT_REVISION, *,
                   token: str | None = None, hub: str | None = None) -> ModelSizing:
    """config.json and the safetensors headers of `name` at `revision` on the Hub."""
    try:
        import huggingface_hub
    except ImportError:
        raise SizingFailed("NoClient", "huggingface_hub is not installed here (pip install "
                           "finetune-operator[operator])", here_only=True) from None
    where = hub or endpoint()
    api = huggingface_hub.HfApi(endpoint=where, token=token)
    with _hub_errors(name, revision, where):
        info = api.model_info(name, revision=revision)
        commit = info.sha or revision
        config_file = api.hf_hub_download(name, "config.json", revision=commit)
        config = _read_json(Path(config_file), f"{name}/config.json")
        try:
            metadata = api.get_safetensors_metadata(name, revision=commit)
        except huggingface_hub.errors.NotASafetensorsRepoError:
            metadata = None
    parameters, files = None, 0
    if metadata is not None:
        counts = dict(metadata.parameter_count)
        files = len(metadata.files_metadata)
        parameters = _exact(counts)
    return ModelSizing(model=name, revision=revision, commit=commit,
                       config=_sizing_config(config, f"{name}/config.json"),
                       parameters=parameters, safetensors_files=files)


class _hub_errors:
    """Every huggingface_hub failure as a SizingFailed naming what the user can change."""

    def __init__(self, name: str, revision: str, where: str) -> None:
        self.name, self.revision, self.where = name, revision, where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: object) -> bool:
        if err is None or isinstance(err, SizingFailed):
            return False
        from huggingface_hub import errors

        name, token_hint = self.name, ("set spec.secrets.hfToken to a Secret holding a "
                                       "token (locally: HF_TOKEN or `hf auth login`)")
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(err, errors.GatedRepoError):
            if status == 403:
                raise SizingFailed("TokenRefused", f"model {name!r} (spec.model.name) is "
                                   "gated and the token was refused access: request access "
                                   "on the model's Hub page with the token's account, or "
                                   "use a token that has it (spec.secrets.hfToken)") from None
            raise SizingFailed("GatedRepo", f"model {name!r} (spec.model.name) is gated on "
                               f"the Hugging Face Hub and no token was given: {token_hint}, "
                               "of an account granted access") from None
        if isinstance(err, errors.RepositoryNotFoundError):
            raise SizingFailed("RepoNotFound", f"model {name!r} (spec.model.name) was not "
                               f"found on the Hugging Face Hub ({self.where}): check the name; "
                               f"a private model needs a token: {token_hint}") from None
        if isinstance(err, errors.RevisionNotFoundError):
            raise SizingFailed("RevisionNotFound", f"model {name!r} has no revision "
                               f"{self.revision!r} on the Hub") from None
        if isinstance(err, errors.EntryNotFoundError) and not isinstance(
                err, errors.LocalEntryNotFoundError):
            raise SizingFailed("NoConfig", f"model {name!r} has no config.json on the Hub: "
                               "give model.config (model_type, hidden_size, ...) or "
                               "model.parameters") from None
        if isinstance(err, errors.HfHubHTTPError):
            if status == 401:
                raise SizingFailed("InvalidToken", "the Hugging Face Hub refused the token "
                                   "as invalid credentials: check the token in "
                                   "spec.secrets.hfToken (locally: HF_TOKEN)") from None
            if status is not None and status < 500 and status != 429:
                raise SizingFailed("HubError", f"the Hugging Face Hub answered {status} for "
                                   f"model {name!r}: {_first_line(err)}") from None
            raise SizingFailed("Unreachable", f"the Hugging Face Hub ({self.where}) failed "
                               f"({status}): {_first_line(err)}", here_only=True) from None
        if isinstance(err, errors.OfflineModeIsEnabled):
            raise SizingFailed("Offline", "huggingface_hub is offline here (HF_HUB_OFFLINE "
                               "is set)", here_only=True) from None
        if isinstance(err, (errors.LocalEntryNotFoundError, *_network_errors())):
            raise SizingFailed("Unreachable", f"the Hugging Face Hub ({self.where}) cannot "
                               f"be reached from here: {_first_line(err)}",
                               here_only=True) from None
        if isinstance(err, errors.SafetensorsParsingError):
            raise SizingFailed("BadSafetensors", f"model {name!r}: {_first_line(err)}") from None
        return False


def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of whichever HTTP client this huggingface_hub uses."""
    found: list[type[BaseException]] = [OSError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        exceptions = getattr(mod, "exceptions", mod)
        found += [getattr(exceptions, n) for n in names if hasattr(exceptions, n)]
    return tuple(found)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# --------------------------------------------------------------------------- a folder


def size_folder(folder: Path, *, label: str | None = None) -> ModelSizing:
    """config.json and the safetensors headers under `folder` (model.safetensors, or the
    shards an index names, else every *.safetensors file)."""
    label = label or str(folder)
    if not folder.is_dir():
        raise SizingFailed("NoModelFolder", f"model.path {label!r}: no folder {folder} here",
                           here_only=True)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise SizingFailed("NoConfig", f"model.path {label!r}: no config.json in {folder}")
    config = _read_json(config_file, str(config_file))
    shards = _local_shards(folder)
    counts: dict[str, int] = {}
    for shard in shards:
        for dtype, count in _header_counts(shard).items():
            counts[dtype] = counts.get(dtype, 0) + count
    return ModelSizing(model=label, config=_sizing_config(config, str(config_file)),
                       parameters=_exact(counts) if shards else None,
                       safetensors_files=len(shards))


def _local_shards(folder: Path) -> list[Path]:
    single = folder / SAFETENSORS_FILE
    if single.is_file():
        return [single]
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = _read_json(index, str(index)).get("weight_map") or {}
        return [folder / name for name in sorted(set(weight_map.values()))]
    return sorted(folder.glob("*.safetensors"))


def _header_counts(path: Path) -> dict[str, int]:
    """Elements per dtype in one safetensors file, from its header alone."""
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > HEADER_LIMIT:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as err:
        raise SizingFailed("BadSafetensors", f"{path}: not a readable safetensors file "
                           f"({err})") from None
    counts: dict[str, int] = {}
    for name, tensor in header.items():
        if name == "__metadata__" or not isinstance(tensor, dict):
            continue
        elements = 1
        for dim in tensor.get("shape") or []:
            elements *= int(dim)
        dtype = str(tensor.get("dtype"))
        counts[dtype] = counts.get(dtype, 0) + elements
    return counts


# --------------------------------------------------------------------------- shared


def _exact(counts: dict[str, int]) -> int | None:
    """The parameter count of the tensors, unless packed integer weights hide it."""
    if not counts or PACKED_DTYPES & set(counts):
        return None
    return sum(counts.values())


def _read_json(path: Path, label: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SizingFailed("BadConfig", f"{label}: not readable JSON ({err})") from None
    if not isinstance(value, dict):
        raise SizingFailed("BadConfig", f"{label}: expected a JSON object")
    return value


def _sizing_config(config: dict[str, Any], label: str) -> dict[str, Any]:
    sizes = planner_config(config)
    if "model_type" not in sizes:
        raise SizingFailed("BadConfig", f"{label} has no model_type: give model.config "
                           "or model.parameters")
    return sizes
