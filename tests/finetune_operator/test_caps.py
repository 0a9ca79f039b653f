"""What the operator writes back is shortened in one place: messages to MAX_MESSAGE, quoted
user values to MAX_ECHO, huge numbers in e-notation (str() of an int above 4300 digits
raises, float() of one above 1e308 overflows)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from finetune_operator.caps import MAX_ECHO, MAX_MESSAGE, echo, shorten

RNG = random.Random(3)
LENGTHS = sorted({0, 1, MAX_MESSAGE - 1, MAX_MESSAGE, MAX_MESSAGE + 1, 2 * MAX_MESSAGE,
                  10**6, *(RNG.randrange(1, 10**5) for _ in range(20))})


@pytest.mark.parametrize("length", LENGTHS)
def test_shorten_keeps_what_fits_and_cuts_the_rest_to_the_limit(length):
    text = "".join(RNG.choice("ab c") for _ in range(length))
    short = shorten(text)
    if length <= MAX_MESSAGE:
        assert short == text
    else:
        assert len(short) == MAX_MESSAGE
        assert short.endswith(f"... ({length} characters, cut)")
        assert text.startswith(short[:MAX_MESSAGE // 2])


@pytest.mark.parametrize("value", [10**15, -(10**15), 10**400, 10**5000, -(10**5000),
                                   Decimal("1e400"), Decimal(10) ** 100_000],
                         ids=["1e15", "-1e15", "1e400", "1e5000", "-1e5000", "decimal-1e400",
                              "decimal-1e100000"])
def test_echo_writes_huge_numbers_in_e_notation(value):
    shown = echo(value)
    assert "e+" in shown and len(shown) <= 16


@pytest.mark.parametrize("value", ["x" * n for n in (0, MAX_ECHO - 2, MAX_ECHO, 10**6)]
                         + [["a"] * 10**5, {"k": "v" * 10**5}, 10**15 - 1, 2.5, True, None],
                         ids=lambda v: f"{type(v).__name__}-{len(repr(v))}")
def test_echo_quotes_any_value_within_the_limit(value):
    shown = echo(value)
    assert len(shown) <= MAX_ECHO
    if len(repr(value)) <= MAX_ECHO:
        assert shown == repr(value)
