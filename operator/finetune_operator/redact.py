"""The one place a user's value is rendered into an error or a warning: credentials never are.

A value is shown only when it is a short scalar that does not look like a credential; a list
or mapping is described by its shape, never its contents (a token may sit inside it). What
sits under `spec.secrets` is never shown at all, whatever its shape, and any message text
(YAML's own errors name tags, anchors and keys) is scrubbed of token-shaped words.
"""

from __future__ import annotations

import re
from typing import Any

# Shapes of the credentials a FineTuneJob's author is likely to paste: Hugging Face, GitHub,
# GitLab, OpenAI-style, Slack, AWS access key ids, JWTs (three base64url parts).
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])("
    r"hf_[A-Za-z0-9]{20,}"  # 34 in the tokens the Hub issues
    r"|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}"
    r"|glpat-[A-Za-z0-9_-]{16,}"
    r"|sk-[A-Za-z0-9_-]{16,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|(AKIA|ASIA)[A-Z0-9]{16}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r")"
)
REDACTED = "<redacted>"
SECRETS_PATH = "spec.secrets"
_SHOWN_MAX = 60  # longer strings are cut: a message stays one readable line


def looks_like_token(text: str) -> bool:
    return bool(_TOKEN.search(text))


def scrub(text: str) -> str:
    """`text` with every token-shaped word replaced: for messages that quote user input."""
    return _TOKEN.sub(REDACTED, text)


def is_secret_path(path: str) -> bool:
    return path == SECRETS_PATH or path.startswith(SECRETS_PATH + ".")


def show(value: Any, path: str = "") -> str:
    """`value`, found at field `path`, as a message may quote it."""
    if is_secret_path(path):
        return f"{REDACTED} {_shape(value)}"
    if isinstance(value, str):
        if looks_like_token(value):
            return f"{REDACTED} (a string that looks like a token)"
        text = repr(value)
        return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX - 3] + "..."
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    return _shape(value)


def key(part: Any) -> str:
    """A mapping key as a field path may name it (a token pasted as a key is not named)."""
    text = str(part)
    return REDACTED if looks_like_token(text) else text


def _shape(value: Any) -> str:
    if isinstance(value, str):
        return f"(a string of {len(value)} characters)"
    if isinstance(value, list | tuple):
        return f"(a list of {len(value)} items)"
    if isinstance(value, dict):
        return f"(a mapping of {len(value)} keys)"
    return f"(a {_type_name(value)})"


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__
