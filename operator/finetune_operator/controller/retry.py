"""Transient API failures are retried after a short exponential backoff; a refused object
is not retried at all.

A throttled or briefly unavailable API server deserves a retry within seconds (kopf's own
default for a failed handler was a flat 60 s), and a Retry-After header is honoured. An
object the API server refuses (`is_rejection`) would be refused again: the reconcile fails
the job instead (Reconciler). Any other failure waits for the job's next resync.
"""

from __future__ import annotations

import json

import urllib3
from kubernetes.client.exceptions import ApiException

# API answers worth retrying soon: conflicts, throttling, server trouble.
RETRIABLE_STATUS = {409, 429, 500, 502, 503, 504}
MAX_RETRY_DELAY = 60.0
# API answers to a create that refuse the object itself: invalid (422), malformed (400), too
# large (413), forbidden by admission (403: PodSecurity, a policy webhook).
REJECTED_STATUS = {400, 413, 422}
# ... but a 403 with these words is the operator's RBAC or a full quota: not the job's fault,
# and a quota frees up.
NOT_A_REJECTION = ("exceeded quota", "cannot create resource")


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


# What the API server answers a create in a namespace being deleted (NamespaceLifecycle).
NAMESPACE_TERMINATING = "because it is being terminated"


def is_namespace_gone(error: BaseException) -> bool:
    """Whether a create failed because its namespace is gone (404) or being deleted (403):
    the job goes with it, and nothing is to be created or retried."""
    if not isinstance(error, ApiException):
        return False
    return error.status == 404 or (
        error.status == 403 and NAMESPACE_TERMINATING in server_message(error))


def is_rejection(error: BaseException) -> bool:
    """Whether the API server refused an object for what it is, so that sending it again can
    never succeed."""
    if not isinstance(error, ApiException):
        return False
    if error.status in REJECTED_STATUS:
        return True
    return error.status == 403 and not any(
        words in server_message(error) for words in NOT_A_REJECTION)


def server_message(error: ApiException) -> str:
    """The API server's own words: the message of the Status it answered, else the reason."""
    try:
        status = json.loads(error.body or "")
    except (TypeError, ValueError):
        status = None
    message = status.get("message") if isinstance(status, dict) else None
    return str(message or f"{error.status} {error.reason or ''}".strip())
