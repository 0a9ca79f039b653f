"""What the Hugging Face Hub refused, in the user's words, naming the field to change.

transformers wraps the hub client's errors in an OSError and `datasets` in its own
DatasetNotFoundError (sometimes with no hub error left underneath, only a sentence), so the
kind is found by walking the exception's causes. The token is never part of a message: the
hub client does not put it in its errors, and these messages name only where it comes from.
Importing this module needs neither torch nor the hub client.
"""

from __future__ import annotations

import os
import re

from finetune_trainer.errors import TrainerError

TOKEN_SOURCE = "spec.secrets.hfToken (locally: HF_TOKEN or `hf auth login`)"
DEFAULT_ENDPOINT = "https://huggingface.co"
_BAD_SLICE = "Unrecognized instruction format"  # datasets' words for a split like train[x
_UNKNOWN_SPLIT = re.compile(r'Unknown split "(?P<split>[^"]*)"\. Should be one of (?P<known>.*)\.')


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_error(err: BaseException, *, field: str, kind: str, repo: str,
              split_field: str | None = None, doing: str | None = None) -> TrainerError:
    """The TrainerError for `err`, raised while loading `repo` (a `kind`: model, tokenizer
    or dataset) that `field` names; `split_field` names the split of a dataset source.
    Anything else reads `{field}: cannot {doing} ({first line of err})`, `doing` being
    "load {kind} {repo!r}" unless given."""
    what = f"{kind} {repo!r}"
    reason = classify(err)
    if reason == "missing":
        return TrainerError(f"{field}: {kind} {repo!r} was not found on the Hugging Face Hub "
                            f"({endpoint()}): check the name; a private {kind} needs a token "
                            f"in {TOKEN_SOURCE}")
    if reason == "gated":
        return TrainerError(f"{field}: {what} is gated on the Hugging Face Hub and no token "
                            f"was given: set {TOKEN_SOURCE} to a token of an account granted "
                            "access")
    if reason == "refused":
        return TrainerError(f"{field}: {what} is gated and the Hub refused the token access: "
                            "request access on its Hub page with the token's account, or use "
                            f"a token that has it ({TOKEN_SOURCE})")
    if reason == "invalid-token":
        return TrainerError(f"{field}: the Hugging Face Hub refused the token as invalid "
                            f"credentials while loading {kind} {repo!r}: check the token in "
                            f"{TOKEN_SOURCE}")
    if reason == "revision":
        return TrainerError(f"{field}: {what} has no such revision on the Hub: "
                            f"{_first_line(err)}")
    split = _UNKNOWN_SPLIT.search(str(err))
    if split and split_field:
        return TrainerError(f"{split_field}: {kind} {repo!r} has no split "
                            f"{split['split']!r}; its splits: {split['known']}")
    if split_field and str(err).startswith(_BAD_SLICE):
        return TrainerError(f"{split_field}: not a split of {kind} {repo!r} nor a slice of "
                            f"one ({_first_line(err)}); e.g. train, or train[:1000]")
    doing = doing or f"load {kind} {repo!r}"
    return TrainerError(f"{field}: cannot {doing} ({_first_line(err)})")


def classify(err: BaseException) -> str | None:
    """missing, gated, refused, invalid-token, revision, or None (something else)."""
    for cause in _causes(err):
        name = type(cause).__name__
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if name == "GatedRepoError":
            return "refused" if status == 403 else "gated"
        if name == "RepositoryNotFoundError":
            return "missing"
        if name == "RevisionNotFoundError":
            return "revision"
        if name == "HfHubHTTPError" and status == 401:
            return "invalid-token"
        if name == "DatasetNotFoundError":
            return _dataset_not_found(str(cause))
    return None


def _dataset_not_found(message: str) -> str:
    # datasets says it in a sentence only (datasets/load.py), the hub error dropped.
    if "gated dataset" in message:
        return "gated" if "must be authenticated" in message else "refused"
    if message.startswith("Revision "):
        return "revision"
    return "missing"


def _causes(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__
