"""Transient API failures are retried within seconds; other failures wait for the resync."""

from __future__ import annotations

import json

import pytest
import urllib3
from finetune_operator.controller.retry import (
    MAX_RETRY_DELAY,
    is_rejection,
    retry_delay,
    retry_in,
    server_message,
)
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


def status_error(status: int, message: str) -> ApiException:
    err = ApiException(status=status, reason="test")
    err.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return err


@pytest.mark.parametrize("status,message,rejected", [
    (422, 'Job.batch "chat-r0" is invalid: spec.template.spec.tolerations[0]', True),
    (400, "the object is malformed", True),
    (413, "request entity too large", True),
    (403, 'pods "x" is forbidden: violates PodSecurity "restricted:latest"', True),
    (403, 'admission webhook "policy.example.com" denied the request', True),
    # a full quota frees up, and missing RBAC is the operator's, not the job's
    (403, 'jobs.batch "chat-r0" is forbidden: exceeded quota: compute', False),
    (403, ('jobs.batch is forbidden: User "system:serviceaccount:x" cannot create resource '
          '"jobs"'), False),
    (409, "already exists", False), (429, "slow down", False), (500, "oops", False),
    (503, "unavailable", False), (404, "not found", False),
], ids=lambda v: str(v)[:24])
def test_only_an_object_the_api_server_refuses_for_what_it_is_is_a_rejection(status, message,
                                                                           rejected):
    assert is_rejection(status_error(status, message)) is rejected


def test_a_connection_error_is_never_a_rejection():
    assert not is_rejection(urllib3.exceptions.ProtocolError("reset"))
    assert not is_rejection(ValueError("x"))


def test_the_server_message_is_the_status_message_else_the_code_and_reason():
    assert server_message(status_error(422, "spec: Invalid value")) == "spec: Invalid value"
    err = ApiException(status=413, reason="Request Entity Too Large")
    err.body = "<html>too large</html>"
    assert server_message(err) == "413 Request Entity Too Large"


def test_a_create_in_a_namespace_gone_or_terminating_is_told_apart():
    from finetune_operator.controller.retry import is_namespace_gone, is_rejection
    terminating = ApiException(status=403, reason="Forbidden")
    terminating.body = json.dumps({"message": "unable to create new content in namespace a "
                                              "because it is being terminated"})
    policy = ApiException(status=403, reason="Forbidden")
    policy.body = json.dumps({"message": 'pods "x" is forbidden: violates PodSecurity'})
    assert is_namespace_gone(terminating) and is_namespace_gone(ApiException(status=404))
    assert not is_namespace_gone(policy) and is_rejection(policy)
    assert not is_namespace_gone(ApiException(status=503))
