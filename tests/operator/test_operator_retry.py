"""Transient API failures are retried within seconds, not after kopf's flat 60 s."""

from __future__ import annotations

import kopf
import pytest
import urllib3
from finetune_operator.handlers.retry import MAX_RETRY_DELAY, retry_delay, retrying
from kubernetes.client.exceptions import ApiException


def fail_with(status: int, headers: dict[str, str] | None = None):
    def work() -> None:
        err = ApiException(status=status, reason="test")
        err.headers = headers
        raise err
    return work


def test_backoff_doubles_from_one_second_and_is_capped():
    assert [retry_delay(r) for r in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(30) == MAX_RETRY_DELAY


def test_retry_after_header_wins():
    assert retry_delay(5, "1") == 1.0
    assert retry_delay(0, "3600") == MAX_RETRY_DELAY
    assert retry_delay(2, "soon") == 4.0


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_transient_api_errors_become_temporary_errors(status):
    with pytest.raises(kopf.TemporaryError) as caught:
        retrying(fail_with(status, {"Retry-After": "2"} if status == 429 else None), retry=3)
    # a throttled request waits what the server asked; the others back off (2^3 s)
    assert caught.value.delay == (2.0 if status == 429 else 8.0)


def test_a_timeout_becomes_a_temporary_error():
    def hang() -> None:
        raise urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out")

    with pytest.raises(kopf.TemporaryError) as caught:
        retrying(hang, retry=3)
    assert caught.value.delay == 8.0


@pytest.mark.parametrize("status", [400, 403, 422])
def test_permanent_errors_are_not_retried_early(status):
    with pytest.raises(ApiException):
        retrying(fail_with(status), retry=0)
