"""Transient API failures are retried after a short exponential backoff.

A throttled or briefly unavailable API server deserves a retry within seconds (kopf's own
default for a failed handler was a flat 60 s), and a Retry-After header is honoured. Any
other failure waits for the job's next resync.
"""

from __future__ import annotations

import urllib3
from kubernetes.client.exceptions import ApiException

# API answers worth retrying soon: conflicts, throttling, server trouble.
RETRIABLE_STATUS = {409, 429, 500, 502, 503, 504}
MAX_RETRY_DELAY = 60.0


def retry_delay(retry: int, retry_after: str | None = None) -> float:
    """Exponential backoff from 1 s, or what the server asks."""
    if retry_after and retry_after.strip().isdigit():
        return min(float(retry_after), MAX_RETRY_DELAY)
    return min(2.0 ** retry, MAX_RETRY_DELAY)


def retry_in(error: BaseException, retry: int) -> float | None:
    """Seconds until a reconcile that failed with `error` for the `retry`+1-th time in a row
    is tried again; None when the error is not transient (the next resync tries again)."""
    if isinstance(error, ApiException):
        if error.status not in RETRIABLE_STATUS:
            return None
        return retry_delay(retry, (error.headers or {}).get("Retry-After"))
    if isinstance(error, urllib3.exceptions.HTTPError):  # timed out, connection reset, ...
        return retry_delay(retry)
    return None
