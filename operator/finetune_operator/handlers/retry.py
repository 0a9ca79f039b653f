"""Transient API failures become kopf.TemporaryError with a short exponential backoff.

kopf retries a failed handler after a flat 60 s by default, whatever went wrong; a throttled
or briefly unavailable API server deserves a retry within seconds, and a Retry-After header
is honoured.
"""

from __future__ import annotations

from collections.abc import Callable

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

# API answers worth retrying soon: conflicts, throttling, server trouble.
RETRIABLE_STATUS = {409, 429, 500, 502, 503, 504}
MAX_RETRY_DELAY = 60.0


def retry_delay(retry: int, retry_after: str | None = None) -> float:
    """Exponential backoff from 1 s (kopf's default is a flat 60 s), or what the server asks."""
    if retry_after and retry_after.strip().isdigit():
        return min(float(retry_after), MAX_RETRY_DELAY)
    return min(2.0 ** retry, MAX_RETRY_DELAY)


def retrying(work: Callable[[], None], retry: int) -> None:
    """Run a reconcile; a transient API failure becomes kopf.TemporaryError with backoff."""
    try:
        work()
    except ApiException as err:
        if err.status not in RETRIABLE_STATUS:
            raise
        after = (err.headers or {}).get("Retry-After")
        raise kopf.TemporaryError(f"the API answered {err.status} {err.reason}",
                                  delay=retry_delay(retry, after)) from err
    except urllib3.exceptions.HTTPError as err:
        raise kopf.TemporaryError(f"the API request failed: {err}",
                                  delay=retry_delay(retry)) from err
