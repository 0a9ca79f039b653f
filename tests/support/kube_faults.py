"""Fault injection into the emulated API server, and the operator as a real process.

`Faults` sits in front of the emulator (tests/support/emulator.py): a request matching a rule
gets the rule's HTTP error (a Kubernetes Status body, Retry-After on 429) or hangs until the
test releases it, before the emulator applies it (nothing is stored). Every injected answer is
recorded with its time, so the tests can count what the operator really received and report
how it retried.

`OperatorProcess` runs the operator with `kopf run` in a process of its own, pointed at the
emulator, so it can be killed with SIGKILL and its memory measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
from prometheus_client.parser import text_string_to_metric_families

from tests.support import emulator as emulator_module
from tests.support.emulator import EmulatorThread
from tests.support.wiring import emulated_cluster

HANG = "hang"


@dataclass
class Rule:
    """Answer `times` requests of `method` whose path ends with `path` with `status`."""

    method: str
    path: str
    status: int | str
    times: int
    committed: bool = False  # hang after the emulator applied the request (response lost)
    released: bool = False  # a hung request answers 504 once this is set
    served: list[float] = field(default_factory=list)  # monotonic times of injected answers
    message: str = "injected by the test"  # the Status message of the answer

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path.endswith(self.path) and len(self.served) < self.times


class Faults:
    """Rules in front of one emulator; thread-safe to add, read and release from tests."""

    def __init__(self, cluster: EmulatorThread) -> None:
        self.cluster = cluster
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        emulator = cluster.emulator
        original = emulator._handle

        async def handle(request: Any) -> Any:
            rule = self._match(request)
            if rule is None:
                return await original(request)
            if rule.status == HANG:
                if rule.committed:  # applied, then the answer never comes (a lost response)
                    await original(request)
                while not rule.released:
                    await asyncio.sleep(0.05)
                return _status(504, "Timeout", "released by the test")
            return _status(int(rule.status), _REASONS.get(int(rule.status), "Error"),
                           rule.message)

        emulator._handle = handle  # the subclass has a __dict__: the instance attribute wins

    def add(self, method: str, path: str, status: int | str, times: int = 1, *,
            committed: bool = False, message: str | None = None) -> Rule:
        rule = Rule(method.upper(), path, status, times, committed)
        if message is not None:
            rule.message = message
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget every rule; requests still hanging answer 504."""
        self.release()
        with self._lock:
            self.rules.clear()

    def release(self) -> None:
        """Let every hung request answer (504)."""
        with self._lock:
            for rule in self.rules:
                rule.released = True

    def _match(self, request: Any) -> Rule | None:
        method, path = str(request.method.value).upper(), request.url.path
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.served.append(time.monotonic())
                    return rule
        return None


_REASONS = {409: "Conflict", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            504: "Timeout"}


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    headers = {"Retry-After": "1"} if code == 429 else {}
    return aiohttp.web.json_response(body, status=code, headers=headers)


# --------------------------------------------------------------------------- stored objects


def stored(cluster: EmulatorThread, plural: str, namespace: str | None = None) -> list[dict]:
    """Live objects of one resource (optionally one namespace), as dicts."""
    return cluster.read(lambda emulator: [
        _plain(obj.raw) for (res, ns, _), obj in emulator.objects.items()
        if res.plural == plural and (namespace is None or ns == namespace)
        and not obj.deleted])


def _plain(value: Any) -> Any:
    """kmock's views as plain dicts and lists (JSON-serializable, safe to keep)."""
    if hasattr(value, "keys"):
        return {k: _plain(value[k]) for k in value.keys()}  # noqa: SIM118 (a kmock view)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def creations(cluster: EmulatorThread, plural: str, namespace: str, name: str) -> int:
    """How many distinct objects (uids) ever existed under this name."""
    def count(emulator: Any) -> int:
        for (res, ns, obj_name), obj in emulator.objects.items():
            if res.plural == plural and ns == namespace and obj_name == name:
                return len({v["metadata"]["uid"] for v in obj.history if v})
        return 0

    return cluster.read(count)


# --------------------------------------------------------------------------- operator process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`kopf run -m finetune_operator.main` against the emulator, in its own process."""

    def __init__(self, kubeconfig: Path, log: Path, extra_env: dict[str, str] | None = None):
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig),
               "FINETUNE_METRICS_PORT": str(self.metrics_port), **(extra_env or {})}
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--all-namespaces", "--standalone",
             "-m", "finetune_operator.main"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics(self) -> dict[tuple[str, tuple], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def wait_metrics(self, timeout: float = 60) -> dict[tuple[str, tuple], float]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.metrics()
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.2)

    def rss_bytes(self) -> tuple[int, int]:
        """(current, peak) resident memory of the operator process."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last writes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")



def finetunejobs(cluster: EmulatorThread, namespace: str) -> dict[str, dict]:
    """name -> the stored FineTuneJob, read from the emulator's memory (no API request)."""
    return {obj["metadata"]["name"]: obj for obj in stored(cluster, "finetunejobs", namespace)}


def phases(cluster: EmulatorThread, namespace: str) -> dict[str, str | None]:
    return {name: (obj.get("status") or {}).get("phase")
            for name, obj in finetunejobs(cluster, namespace).items()}


@contextlib.contextmanager
def operator_against_emulator(tmp: Path, env: dict[str, str] | None = None,
                              ) -> Iterator[tuple[EmulatorThread, OperatorProcess]]:
    """An emulated API server and the operator as a process of its own watching it."""
    with short_request_log(), emulated_cluster(tmp) as cluster:
        operator = OperatorProcess(tmp / "kubeconfig.yaml", tmp / "operator.log", env)
        try:
            yield cluster, operator
        finally:
            operator.stop()


@contextlib.contextmanager
def short_request_log(keep: int = 2) -> Iterator[None]:
    """kmock matches every request against its whole kept log (identity scans per payload):
    with the emulator's 200 kept requests a GET takes ~22 ms here, with 2 about 4.5 ms. These
    tests read no request history, so they keep 2 (the current request stays)."""
    previous = emulator_module.REQUEST_LOG_KEPT
    emulator_module.REQUEST_LOG_KEPT = keep
    try:
        yield
    finally:
        emulator_module.REQUEST_LOG_KEPT = previous
