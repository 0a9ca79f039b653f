"""redact: credentials of the usual shapes, and anything under spec.secrets, are never shown;
other values are, short, and collections only by their shape."""

from __future__ import annotations

import random
import string

import pytest
from finetune_operator.redact import REDACTED, key, looks_like_token, scrub, show

_RNG = random.Random(4)


def _chars(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
TOKENS = (
    [f"hf_{_chars(ALNUM, 34)}" for _ in range(5)]
    + [f"ghp_{_chars(ALNUM, 36)}", f"gho_{_chars(ALNUM, 36)}",
       f"github_pat_{_chars(ALNUM + '_', 60)}", f"glpat-{_chars(ALNUM, 20)}",
       f"sk-{_chars(ALNUM, 48)}", f"sk-proj-{_chars(ALNUM, 40)}",
       f"xoxb-{_chars(string.digits, 12)}-{_chars(ALNUM, 24)}",
       f"AKIA{_chars(string.ascii_uppercase + string.digits, 16)}",
       f"eyJ{_chars(ALNUM, 20)}.eyJ{_chars(ALNUM, 30)}.{_chars(ALNUM, 40)}"]
)
PLAIN = ["meta-llama/Llama-3.1-8B", "tiny-chat", "train.jsonl", "H100-80GB", "hf_internal",
         "/output", "sk-", "cosine", "500m"]


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("wrap", ["{}", " {} ", "prefix {} suffix", "'{}'", "({})", "x={}"])
def test_a_token_in_any_text_is_scrubbed(token, wrap):
    text = wrap.format(token)
    assert looks_like_token(text)
    assert token not in scrub(text) and REDACTED in scrub(text)
    assert token not in show(text) and token not in key(text)


@pytest.mark.parametrize("text", PLAIN)
def test_plain_values_are_shown(text):
    assert not looks_like_token(text)
    assert show(text) == repr(text) and key(text) == text and scrub(text) == text


@pytest.mark.parametrize("value", ["plain", "x" * 200, 3, 2.5, True, None, ["a"], {"a": 1},
                                   [["deep"]], TOKENS[0]])
@pytest.mark.parametrize("path", ["spec.secrets", "spec.secrets.hfToken",
                                  "spec.secrets.hfToken.name"])
def test_nothing_under_spec_secrets_is_shown(value, path):
    shown = show(value, path)
    assert shown.startswith(REDACTED)
    if isinstance(value, str) and value:
        assert value not in shown


@pytest.mark.parametrize("value", [[TOKENS[0]], {"k": TOKENS[1]}, {TOKENS[2]: 1},
                                   [[TOKENS[3]]], (TOKENS[4],), ["plain", "values"]])
def test_collections_are_shown_by_their_shape_only(value):
    shown = show(value)
    assert shown.startswith("(a ") and "plain" not in shown
    assert all(t not in shown for t in TOKENS)


def test_long_values_are_cut():
    assert len(show("x" * 500)) <= 60
