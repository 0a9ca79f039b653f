"""A Kubernetes API for tests: kmock's KubernetesEmulator on loopback, in its own thread.

The stock emulator (kmock 0.8) stores objects as given. Real API servers fill in metadata
that kopf and the operator rely on, so this test-only subclass adds what is missing:
- metadata.uid, resourceVersion (bumped on every write, deletion included), generation (bumped when the spec
  changes, never by a status write), creationTimestamp, and namespace taken from the URL;
- the resources the operator uses, declared up front (it does not serve a resource because a
  CRD object exists);
- 422 for a JSON patch whose resourceVersion `test` fails (kopf's optimistic concurrency);
- names for objects created with generateName (kopf's Events);
- a short request log: kmock scans the whole log on every request;
- named reads found through an index by (namespace, name): kmock checks every stored object
  on each one, which made a GET cost O(objects) (a sixth of the bench's CPU at 500 jobs).

What it still does not do (the tests work around it): label/field selectors are ignored,
no admission or schema checks, no garbage collection, no controllers (pods never start by
themselves: tests create pods and patch Job status to simulate the cluster).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import kmock
import yaml
from finetune_contract import api
from kmock import KubernetesEmulator, KubernetesError, Server
from kmock._internal import enums

REQUEST_LOG_KEPT = 200

# (group/version/plural, kind, namespaced, subresources)
RESOURCES = [
    (f"{api.GROUP}/{api.VERSION}/{api.PLURAL}", api.KIND, True, {"status"}),
    ("v1/configmaps", "ConfigMap", True, set()),
    ("v1/services", "Service", True, set()),
    ("v1/pods", "Pod", True, {"status"}),
    ("v1/events", "Event", True, set()),
    ("v1/namespaces", "Namespace", False, set()),
    ("batch/v1/jobs", "Job", True, {"status"}),
]
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}

T = TypeVar("T")


class ApiServerEmulator(KubernetesEmulator):
    """KubernetesEmulator plus the object metadata a real API server maintains."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        # (namespace, name) -> keys of self._objects, filled as objects are created
        self._by_name: dict[tuple[str | None, str], set[Any]] = {}
        for key, kind, namespaced, subresources in RESOURCES:
            self.resources[key] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs=VERBS, subresources=subresources,
                singular=kind.lower())

    async def _handle(self, request: Any) -> Any:
        del self._requests[:-REQUEST_LOG_KEPT]
        if request.resource is not None:
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                self._fill_new(request)
                self._index(request)
            elif request.action == enums.action.UPDATE:
                self._fill_update(request)
            elif request.action == enums.action.DELETE and request.name:
                self._bump_before_delete(request)
        return await super()._handle(request)

    def _fill_new(self, request: Any) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):  # kopf's Events use it
            # The API server answers a rare clash of its 5-character suffixes with 409 and the
            # client retries; kopf does not retry Events, so the emulator never clashes
            # (5 hex characters clashed in ~8 % of runs with 400 Events in one namespace).
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:16]
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1
        meta.setdefault("creationTimestamp", _now())

    def _index(self, request: Any) -> None:
        """The key kmock stores a created object under (before it stores it: its create
        reaction reads the object back by name)."""
        meta = request.data["metadata"]
        name, namespace = meta.get("name"), request.namespace or meta.get("namespace")
        self._by_name.setdefault((namespace, name), set()).add(
            (request.resource, namespace, name))

    def _KubernetesEmulator__get_obj(self, request: Any, strict: bool) -> Any:
        """kmock's lookup of one object by name, among the objects sharing that name only
        (checked with kmock's own criteria); cluster-wide requests scan as before."""
        if request.name is None or request.namespace is None:
            return super()._KubernetesEmulator__get_obj(request, strict)
        check = self._KubernetesEmulator__check
        found = [self._objects[key] for key in self._by_name.get((request.namespace,
                                                                  request.name), ())
                 if key in self._objects and check(request, *key, strict=strict)]
        if len(found) > 1:
            raise RuntimeError(f"more than one object matches {request.name}")
        return found[0] if found else None

    def _fill_update(self, request: Any) -> None:
        version = str(next(self._versions))
        data = request.data
        if isinstance(data, list):  # JSON patch (kopf's, guarded by a resourceVersion test)
            self._check_version_tests(request)
            data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            return
        if not isinstance(data, dict):
            return
        data.setdefault("metadata", {})
        if isinstance(data["metadata"], dict):
            data["metadata"]["resourceVersion"] = version
            if "spec" in data and request.subresource != "status":
                data["metadata"]["generation"] = self._generation(request) + 1

    def _bump_before_delete(self, request: Any) -> None:
        """Setting deletionTimestamp is a write: a new resourceVersion. kopf skips events that
        carry the version of its own last patch, so without it kopf may never see the
        deletion (and never release its finalizer)."""
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            self.objects[key].patch({"metadata": {"resourceVersion": str(next(self._versions))}})

    def _check_version_tests(self, request: Any) -> None:
        """A failed `test` of metadata.resourceVersion is a conflict: 422, as a real API
        server answers, so kopf re-reads and retries instead of failing."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects:
            return
        current = (self.objects[key].get("metadata") or {}).get("resourceVersion")
        for op in request.data:
            if op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion" \
                    and op.get("value") != current:
                raise KubernetesError(status=422, reason="Invalid",
                                      message="the object has been modified (resourceVersion "
                                      f"{op.get('value')} != {current})")

    def _generation(self, request: Any) -> int:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects:
            return 0
        return int((self.objects[key].get("metadata") or {}).get("generation") or 0)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EmulatorThread:
    """Runs the emulator's event loop in a daemon thread; tests talk to it over HTTP."""

    emulator_class: type[ApiServerEmulator] = ApiServerEmulator

    def __init__(self) -> None:
        self.url = ""
        self.emulator: ApiServerEmulator | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the API server emulator did not start in 30 s")
        if self._error:
            raise self._error
        return self

    def read(self, fn: Callable[[ApiServerEmulator], T]) -> T:
        """fn(emulator), run on the emulator's own loop while it serves. The stored objects
        change only there; iterating them from a test's thread raced the handlers
        ("dictionary changed size during iteration", seen once under 200 jobs). Once
        stopped, nothing changes them any more and fn runs here."""
        async def call() -> T:
            return fn(self.emulator)

        if not self._thread.is_alive() or self._loop is None or self._loop.is_closed():
            return fn(self.emulator)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # noqa: BLE001 (re-raised in the starting thread)
            self._error = err
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator_class() as emulator, Server(emulator) as server:
            self.emulator = emulator
            self.url = f"http://{server.host}:{server.port}"
            self._ready.set()
            await self._stop.wait()

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "emulator",
                          "context": {"cluster": "emulator", "user": "tester",
                                      "namespace": "default"}}],
            "current-context": "emulator",
        }
        path.write_text(yaml.safe_dump(config))
        return path


@contextmanager
def running_emulator() -> Iterator[EmulatorThread]:
    thread = EmulatorThread().start()
    try:
        yield thread
    finally:
        thread.stop()
