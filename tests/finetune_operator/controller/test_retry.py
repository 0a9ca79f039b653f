"""Transient API failures are retried within seconds; other failures wait for the resync."""

from __future__ import annotations

import pytest
import urllib3
from finetune_operator.controller.retry import MAX_RETRY_DELAY, retry_delay, retry_in
from kubernetes.client.exceptions import ApiException


def api_error(status: int, headers: dict[str, str] | None = None) -> ApiException:
    err = ApiException(status=status, reason="test")
    err.headers = headers
    return err


def test_backoff_doubles_from_one_second_and_is_capped():
    assert [retry_delay(r) for r in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(30) == MAX_RETRY_DELAY


def test_retry_after_header_wins():
    assert retry_delay(5, "1") == 1.0
    assert retry_delay(0, "3600") == MAX_RETRY_DELAY
    assert retry_delay(2, "soon") == 4.0


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_transient_api_errors_are_retried_after_a_backoff(status):
    headers = {"Retry-After": "2"} if status == 429 else None
    # a throttled request waits what the server asked; the others back off (2^3 s)
    assert retry_in(api_error(status, headers), retry=3) == (2.0 if status == 429 else 8.0)


def test_a_timeout_is_retried_after_a_backoff():
    err = urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out")
    assert retry_in(err, retry=3) == 8.0
    assert retry_in(err, retry=0) == 1.0


@pytest.mark.parametrize("status", [400, 403, 422])
def test_permanent_errors_are_not_retried_early(status):
    assert retry_in(api_error(status), retry=0) is None


def test_a_bug_is_not_retried_early():
    assert retry_in(ValueError("a bug"), retry=0) is None
