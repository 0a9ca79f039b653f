"""How long what the operator writes back may be: a user value quoted in a message, a
message, the status as a whole. The one place that shortens them.

A job may hold a megabyte in one field (the API server stores objects up to ~1.5 MB). Quoted
whole in an error, and the error copied into status.message and three conditions, it made a
4 MB status patch, above the API server's request limit: the job never reached Failed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# A user value quoted back in a message: enough to recognize it.
MAX_ECHO = 80
# One message (status.message, a condition's, an Event's): an Event's note holds 1 KiB.
MAX_MESSAGE = 1024
# The serialized status as a whole: a dozen conditions and status.message at MAX_MESSAGE, a
# plan and a sizing result fit several times over, far below the API server's limits.
MAX_STATUS_BYTES = 64 * 1024
# Integers with more digits are shown in e-notation.
_MAX_DIGITS = 15


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` if it fits in `limit` characters, else its start and how much was cut."""
    if len(text) <= limit:
        return text
    marker = f"... ({len(text)} characters, cut)"
    return text[:max(0, limit - len(marker))] + marker


def echo(value: Any) -> str:
    """A user value as a message quotes it: repr, shortened; a huge number in e-notation
    (Python refuses str() of an int above 4300 digits, float() overflows above 1e308)."""
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool) \
            and abs(value) >= 10**_MAX_DIGITS:
        return f"{Decimal(value):.3e}"
    return shorten(repr(value), MAX_ECHO)
