"""The API server misbehaves, rank 0's metrics endpoint is unreachable: the operator (a real
process, `kopf run`) retries, counts the errors in its metrics and the job proceeds.

Faults are injected in front of the emulated API server (kube_faults.Faults): the matching
request is answered with the error and not applied. Each test works in its own namespace.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from finetune_operator.controller.kube import REQUEST_TIMEOUT

from tests.support.ftj_samples import spec_dict
from tests.support.kube_faults import (
    HANG,
    Faults,
    creations,
    finetunejobs,
    operator_against_emulator,
    stored,
)
from tests.support.wiring import Kube, wait_for

TWO_NODES = {"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2, "strategy": "ddp"}
# A short resync so a failed reconcile is retried within a second or two in the test.
FAST = {"FINETUNE_RESYNC_INTERVAL": "1", "FINETUNE_PROGRESS_INTERVAL": "0.5"}
WAIT = 30.0
API = "/apis/finetune.dev/v1alpha1/namespaces"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    with operator_against_emulator(tmp_path_factory.mktemp("kube"), FAST) as (cluster,
                                                                             operator):
        faults = Faults(cluster)
        operator.wait_metrics()
        try:
            yield {"cluster": cluster, "operator": operator, "faults": faults, "kube": Kube()}
        finally:
            faults.release()


def api_errors(operator) -> float:
    return operator.metrics()[("finetune_operator_api_errors_total", ())]


def children_created_once(cluster, ns: str, name: str = "chat") -> bool:
    return all(creations(cluster, plural, ns, child) == 1 for plural, child in (
        ("configmaps", f"{name}-trainer"), ("services", name), ("jobs", f"{name}-r0")))


def pending_with_children(cluster, ns: str, name: str = "chat") -> bool:
    job = finetunejobs(cluster, ns).get(name) or {}
    return ((job.get("status") or {}).get("phase") == "Pending"
            and children_created_once(cluster, ns, name))


def hang_service_creation(env: dict, ns: str) -> Any:
    """Create job `chat` in `ns` with its Service creation hanging; the hanging rule."""
    hang = env["faults"].add("POST", f"/api/v1/namespaces/{ns}/services", HANG, times=1)
    env["kube"].apply(ns, "chat", spec_dict(resources=TWO_NODES))
    wait_for("the Service creation to hang", lambda: hang.served, timeout=WAIT)
    return hang


@pytest.mark.reliability
@pytest.mark.parametrize("method,path,code", [
    ("POST", "/api/v1/namespaces/{ns}/configmaps", 429),
    ("POST", "/api/v1/namespaces/{ns}/services", 500),
    ("POST", "/apis/batch/v1/namespaces/{ns}/jobs", 503),
], ids=["429-configmap", "500-service", "503-job"])
def test_an_api_error_is_counted_and_does_not_fail_the_job(env, method, path, code):
    ns = f"api-error-{code}"
    faults, operator = env["faults"], env["operator"]
    before = api_errors(operator)
    rule = faults.add(method, path.format(ns=ns), code, times=1)
    env["kube"].apply(ns, "chat", spec_dict(resources=TWO_NODES))
    wait_for("the injected error", lambda: rule.served, timeout=WAIT)
    wait_for("the error counted", lambda: api_errors(operator) - before == 1, timeout=10,
             detail=lambda: api_errors(operator) - before)
    phase = (finetunejobs(env["cluster"], ns)["chat"].get("status") or {}).get("phase")
    assert phase in (None, "Pending"), phase  # a transient error never fails the job
    assert "Failed" not in str(finetunejobs(env["cluster"], ns)["chat"].get("status"))


@pytest.mark.reliability
def test_api_errors_of_every_kind_are_retried_and_the_job_proceeds_within_seconds(env):
    ns, faults = "api-errors", env["faults"]
    injected = [
        faults.add("POST", f"/api/v1/namespaces/{ns}/configmaps", 429, times=2),
        faults.add("POST", f"/api/v1/namespaces/{ns}/services", 500, times=2),
        faults.add("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", 500, times=1),
        faults.add("PATCH", f"{API}/{ns}/finetunejobs/chat/status", 409, times=1),
    ]
    env["kube"].apply(ns, "chat", spec_dict(resources=TWO_NODES))
    try:
        # 5 errors, each retried after a second or two, would be through in about 10 s
        # (the operator writes only the status: it never patches the object itself)
        wait_for("the job planned with its children despite the errors",
                 lambda: pending_with_children(env["cluster"], ns), timeout=15,
                 detail=lambda: [(r.method, r.path, len(r.served)) for r in injected])
    finally:
        served = [(r.method, r.path.rsplit("/", 1)[-1], r.status,
                   [round(t - r.served[0], 1) for t in r.served]) for r in injected]
        print(f"FIGURE injected answers and when (s after the first of each): {served}")


@pytest.mark.reliability
def test_failed_reconciles_back_off_exponentially_or_as_the_server_asks(tmp_path):
    """With the resync far away, only the retry brings a failed reconcile back: after the
    1st and the 2nd failure in a row it waits 1 s and 2 s (controller/retry.py), after a 429
    what its Retry-After says (1 s, not the 4 s the 3rd failure in a row would wait); after
    the 4th failure, a 429 again, the job proceeds."""
    slow = {"FINETUNE_RESYNC_INTERVAL": "120", "FINETUNE_PROGRESS_INTERVAL": "120"}
    ns = "backoff"
    with operator_against_emulator(tmp_path, slow) as (cluster, operator):
        faults = Faults(cluster)
        operator.wait_metrics()
        injected = [faults.add("POST", f"/api/v1/namespaces/{ns}/configmaps", 500, times=2),
                    faults.add("POST", f"/api/v1/namespaces/{ns}/services", 429, times=1),
                    faults.add("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", 429, times=1)]
        Kube().apply(ns, "chat", spec_dict(resources=TWO_NODES))
        try:
            wait_for("the job planned with its children after the errors",
                     lambda: pending_with_children(cluster, ns), timeout=WAIT)
        finally:
            faults.release()
        answered = [t for rule in injected for t in rule.served]
        waits = [later - earlier for earlier, later in itertools.pairwise(answered)]
        print(f"FIGURE waits between the failed attempts (s): {[round(w, 2) for w in waits]}")
        first, second, after_429 = waits
        assert 0.9 <= first < 5  # 1 s after the first failure: short, not kopf's 60 s
        assert 1.9 <= second < 6 and second >= first + 0.5  # doubled after the second
        assert 0.9 <= after_429 < 3.5  # the server's Retry-After, not 4 s
        assert len(injected[-1].served) == 1  # ... and the job went through after the last


@pytest.mark.reliability
def test_a_job_the_api_server_refuses_fails_once_saying_why_and_leaves_no_child(env):
    """A 422 on the Job create is no transient error: Failed (ChildRejected) with the
    server's message, one Warning Event, the ConfigMap and Service created before it deleted,
    one warning line and no traceback, and the Job never sent again at later resyncs."""
    ns, cluster, operator = "api-refused", env["cluster"], env["operator"]
    message = ('Job.batch "chat-r0" is invalid: spec.template.spec.tolerations[0].operator: '
               "Invalid value: \"Equal\": operator must be Exists when `key` is empty")
    rule = env["faults"].add("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", 422, times=50,
                             message=message)
    log_start = len(operator.output())
    env["kube"].apply(ns, "chat", spec_dict(resources=TWO_NODES))
    status = wait_for("the refused job Failed", lambda: (
        s := (finetunejobs(cluster, ns)["chat"].get("status") or {})).get("phase") == "Failed"
        and s, timeout=WAIT)
    assert message in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ChildRejected"
    assert creations(cluster, "configmaps", ns, "chat-trainer") == 1  # made, then taken back
    assert creations(cluster, "services", ns, "chat") == 1
    assert stored(cluster, "configmaps", ns) == [] and stored(cluster, "services", ns) == []
    time.sleep(3)  # resyncs every second: none sends the Job again
    assert len(rule.served) == 1
    events = [e for e in stored(cluster, "events", ns) if e["involvedObject"]["name"] == "chat"]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "ChildRejected")]
    assert message in events[0]["message"]
    log = operator.output()[log_start:]
    assert "Traceback" not in log
    assert log.count("the API server refused Job chat-r0") == 1


@pytest.mark.reliability
def test_a_hung_api_call_holds_up_only_its_own_job(env):
    ns, faults = "api-hang", env["faults"]
    hang = hang_service_creation(env, ns)
    # another job meanwhile is not held up
    env["kube"].apply(f"{ns}-other", "chat", spec_dict(resources=TWO_NODES))
    wait_for("the other job planned with its children",
             lambda: pending_with_children(env["cluster"], f"{ns}-other"), timeout=WAIT)
    # ... while the hung one is: its request still hangs (the client gives up only after its
    # read timeout), so it has no Service and no recorded plan yet.
    assert time.monotonic() - hang.served[0] < REQUEST_TIMEOUT[1]
    assert creations(env["cluster"], "services", ns, "chat") == 0
    assert not (finetunejobs(env["cluster"], ns)["chat"].get("status") or {}).get("plan")
    faults.release()  # the hung request answers 504 now
    wait_for("the held-up job planned with its children after the 504",
             lambda: pending_with_children(env["cluster"], ns), timeout=WAIT)


@pytest.mark.reliability
def test_a_request_the_api_never_answers_times_out_and_is_retried(env):
    ns, faults = "api-timeout", env["faults"]
    hang_service_creation(env, ns)
    try:
        wait_for("the job to proceed although one request never got an answer",
                 lambda: pending_with_children(env["cluster"], ns), timeout=15)
    finally:
        faults.release()


# --------------------------------------------------------------------------- rank 0 metrics


class _Garbage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>not prometheus</html>\x00\xff"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _refused() -> tuple[int, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port, lambda: None  # nothing listens there any more


def _blackhole() -> tuple[int, Any]:
    """Accepts TCP connections (the kernel's backlog) but never answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s.getsockname()[1], s.close


def _garbage() -> tuple[int, Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return server.server_address[1], stop


@pytest.mark.reliability
@pytest.mark.parametrize("endpoint", [
    _refused, _blackhole, _garbage,
], ids=["refused", "never-answers", "not-metrics"])
def test_unreachable_rank0_metrics_mark_progress_stale_and_leave_the_job_alone(env, endpoint):
    ns = f"metrics-{endpoint.__name__.strip('_')}"
    kube, cluster = env["kube"], env["cluster"]
    port, stop = endpoint()
    try:
        kube.apply(ns, "chat", spec_dict(resources=TWO_NODES))
        job = wait_for("job r0", lambda: kube.job(ns, "chat-r0"), timeout=WAIT)
        kube.start_pods(ns, job, pod_ip="127.0.0.1", metrics_port=port)
        status = wait_for("stale progress", lambda: (
            s := finetunejobs(cluster, ns)["chat"].get("status") or {}).get(
            "progress", {}).get("stale") and s, timeout=10)
        available = next(c for c in status["conditions"] if c["type"] == "ProgressAvailable")
        assert (available["status"], available["reason"]) == ("False", "MetricsUnreachable")
        assert status["phase"] == "Running"
        assert status["restarts"] == 0
        # the job is untouched: its one Job stays, nothing is restarted or deleted
        assert creations(cluster, "jobs", ns, "chat-r0") == 1
        assert kube.job(ns, "chat-r0") is not None and kube.job(ns, "chat-r1") is None
        kube.set_job_status(ns, "chat-r0", {"succeeded": 2, "conditions": [
            {"type": "Complete", "status": "True"}]})
        wait_for("success", lambda: finetunejobs(cluster, ns)["chat"]["status"]["phase"]
                 == "Succeeded", timeout=WAIT)
    finally:
        stop()
