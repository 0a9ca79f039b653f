"""What makes a reconcile cheap, and stays correct: the parse caches (hit on the same content,
miss on new content), the watch's body used only while its status is current, and the resync
timer skipping finished jobs whose clock cannot change anything."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from finetune_contract.api import FineTuneJobStatus
from finetune_operator import names
from finetune_operator.controller.caches import ParseCache, spec_caches
from finetune_operator.controller.kube import Cluster
from finetune_operator.controller.observe import observation
from finetune_operator.controller.reconcile import Reconciler
from finetune_operator.lifecycle import machine
from finetune_operator.lifecycle import spec as specs
from finetune_operator.lifecycle.actions import Delete
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.metrics import OperatorMetrics
from prometheus_client import CollectorRegistry
from test_operator_lifecycle import SETTINGS, T0, World, two_node_spec


def started_world(**spec: Any) -> World:
    """A job planned with its children, by a World that keeps the operator's caches."""
    world = World(two_node_spec(**spec), caches=spec_caches())
    world.step()  # planned: ConfigMap, Service and Job created
    return world


def config_text(config_map: dict[str, Any]) -> str | None:
    """The started config as the shell hands it to the lifecycle."""
    return observation(ftj(), FineTuneJobStatus(), config_map=config_map).started_config


# --------------------------------------------------------------------------- ParseCache


def test_parse_cache_parses_a_key_once_and_a_new_key_again():
    calls: list[str] = []
    cache: ParseCache[int] = ParseCache(size=8)

    def parse(text: str) -> int:
        calls.append(text)
        return len(text)

    assert cache.get("abc", parse) == 3
    assert cache.get("abc", parse) == 3
    assert calls == ["abc"]
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.get("abcd", parse) == 4
    assert calls == ["abc", "abcd"]
    assert (cache.hits, cache.misses) == (1, 2)


def test_parse_cache_is_bounded_and_evicts_the_least_recently_used():
    cache: ParseCache[str] = ParseCache(size=2)
    cache.get("a", str.upper)
    cache.get("b", str.upper)
    cache.get("a", str.upper)  # a is now the most recent
    cache.get("c", str.upper)  # evicts b
    assert len(cache) == 2
    misses = cache.misses
    cache.get("a", str.upper)
    assert cache.misses == misses
    cache.get("b", str.upper)
    assert cache.misses == misses + 1


# --------------------------------------------------------------------------- started spec


def test_started_spec_is_parsed_once_per_configmap_content(monkeypatch):
    world = started_world()
    config_map = world.objects[("ConfigMap", "chat-trainer")]
    caches = spec_caches()  # as in an operator process that did not create it
    parses: list[str] = []
    real = specs.parse_started
    monkeypatch.setattr(specs, "parse_started", lambda text: parses.append(text) or real(text))

    first = specs.started(config_text(config_map), caches)
    # the same ConfigMap read again: another dict, another resourceVersion, the same data
    again = copy.deepcopy(config_map)
    again.setdefault("metadata", {})["resourceVersion"] = "99"
    assert specs.started(config_text(again), caches) is first
    assert len(parses) == 1

    # a new version with other content is parsed again, and gives the new spec
    changed = copy.deepcopy(config_map)
    text = changed["data"]["trainer.yaml"]
    changed["data"]["trainer.yaml"] = text.replace("maxSeqLength: 64", "maxSeqLength: 32")
    assert changed["data"]["trainer.yaml"] != text
    updated = specs.started(config_text(changed), caches)
    assert len(parses) == 2
    assert updated is not None and first is not None
    assert (first.training.max_seq_length, updated.training.max_seq_length) == (64, 32)


def test_a_damaged_configmap_is_remembered_as_damaged():
    caches = spec_caches()
    bad = {"data": {"trainer.yaml": "spec: [not, a, spec"}}
    assert specs.started(config_text(bad), caches) is None
    assert specs.started(config_text(copy.deepcopy(bad)), caches) is None
    assert (caches.started.hits, caches.started.misses) == (1, 1)


def test_reconciles_of_an_unchanged_job_parse_nothing_again():
    world = started_world()
    world.step()
    caches = world.caches
    started, current = caches.started.misses, caches.current.misses
    for _ in range(3):
        world.step()
    assert (caches.started.misses, caches.current.misses) == (started, current)
    assert caches.started.hits >= 3 and caches.current.hits >= 3


def test_an_edited_spec_is_validated_again_and_still_rejected():
    world = started_world()
    world.step()
    misses = world.caches.current.misses
    world.edit(training={"epochs": 1, "globalBatchSize": 8, "maxSeqLength": 64,
                         "precision": "fp32", "learningRate": 0.5})
    decision = world.step()
    assert world.caches.current.misses == misses + 1
    assert "SpecChangeRejected" in [getattr(a, "reason", None) for a in decision.actions]


# --------------------------------------------------------------------------- resync_due


def finished(world: World) -> World:
    world.start_pods()
    world.step()
    world.complete()
    world.step()
    assert world.status.phase == "Succeeded"
    return world


def due(world: World) -> bool:
    return machine.resync_due(world.spec, world.status, world.generation, "chat", world.now,
                              world.settings, world.caches)


def test_resync_is_due_for_active_jobs_whatever_the_clock():
    world = started_world()
    assert world.status.phase == "Pending"
    assert due(world)


def test_resync_of_a_finished_job_is_due_exactly_when_its_ttl_is():
    world = finished(started_world(runPolicy={"ttlSecondsAfterFinished": 60}))
    world.now += timedelta(seconds=59)
    assert not due(world)
    assert world.step().actions == []  # what the skipped reconcile would have decided
    world.now += timedelta(seconds=1)
    assert due(world)
    assert world.step().actions != []  # the cleanup


def test_resync_of_a_finished_job_without_ttl_is_never_due():
    world = finished(started_world())
    world.now += timedelta(days=30)
    assert not due(world)
    assert world.step().actions == []


def test_resync_of_a_job_rejected_before_starting_waits_for_an_edit():
    world = World(two_node_spec(training={"learningRate": -1}))
    world.step()
    assert world.status.phase == "Failed"
    assert not due(world)
    world.edit(training={"epochs": 1, "globalBatchSize": 8, "maxSeqLength": 64,
                         "precision": "fp32"})
    assert due(world)  # edited: observedGeneration is behind


# --------------------------------------------------------------------------- the watch's body


class FakeResponse:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj).encode()


class FakeCustomApi:
    """The FineTuneJob endpoints: GET and PATCH of the status subresource."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.gets = 0

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> FakeResponse:
        self.gets += 1
        return FakeResponse(self.obj)

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> FakeResponse:
        body = args[-1]
        self.obj = {**self.obj, "status": {**(self.obj.get("status") or {}),
                                           **body["status"]}}
        self.obj["status"] = {k: v for k, v in self.obj["status"].items() if v is not None}
        self.obj["metadata"] = {**self.obj["metadata"],
                                "resourceVersion": str(int(self.obj["metadata"]
                                                           ["resourceVersion"]) + 1)}
        return FakeResponse(self.obj)


def ftj(status: dict[str, Any] | None = None, version: str = "1") -> dict[str, Any]:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "chat", "namespace": "research", "uid": "u-1",
                         "resourceVersion": version, "generation": 1},
            "spec": two_node_spec(), "status": status or {}}


def fake_cluster(stored: dict[str, Any]) -> tuple[Cluster, FakeCustomApi]:
    cluster = Cluster()
    fake = FakeCustomApi(stored)
    cluster.custom = fake  # type: ignore[assignment]
    return cluster, fake


def test_the_watched_body_is_used_without_a_get():
    cluster, fake = fake_cluster(ftj())
    cluster.remember(ftj())
    assert cluster.current_finetunejob("research", "chat") == ftj()
    assert fake.gets == 0


def test_a_watched_body_older_than_our_own_status_write_is_not_used():
    cluster, fake = fake_cluster(ftj())
    cluster.remember(ftj())
    cluster.write_status("research", "chat", {}, FineTuneJobStatus(phase="Pending"))
    # the watch has not delivered our write yet: the body it gave is stale, so GET
    body = cluster.current_finetunejob("research", "chat")
    assert fake.gets == 1
    assert body is not None and body["status"]["phase"] == "Pending"
    # once the watch delivers the written status, its body is used again
    cluster.remember(fake.obj)
    assert cluster.current_finetunejob("research", "chat")["status"]["phase"] == "Pending"
    assert fake.gets == 1


def test_without_a_watched_body_the_job_is_read():
    cluster, fake = fake_cluster(ftj({"phase": "Running"}))
    assert cluster.current_finetunejob("research", "chat")["status"] == {"phase": "Running"}
    assert fake.gets == 1
    cluster.forget("research", "chat")
    cluster.current_finetunejob("research", "chat")
    assert fake.gets == 2


# --------------------------------------------------------------------------- the resync timer


class CountingCluster:
    """Serves one job from a World; counts the reads a reconcile makes."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.observes = 0

    def current_finetunejob(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace, "uid": "u-1",
                             "generation": self.world.generation},
                "spec": self.world.spec, "status": self.world.status.to_wire()}

    def observe(self, body: dict[str, Any], **_: Any) -> Observed:
        self.observes += 1
        return self.world.observe()

    def apply(self, namespace: str, action: Any) -> None:
        if isinstance(action, Delete):
            self.world.objects.pop((action.kind, action.name), None)

    def write_status(self, namespace: str, name: str, old: Any, new: FineTuneJobStatus,
                     **_: Any) -> None:
        self.world.status = new

    def post_event(self, body: dict[str, Any], emit: Any, now: Any) -> None:
        pass

    def forget(self, namespace: str, name: str) -> None:
        pass


def test_the_resync_timer_reads_nothing_for_a_finished_job_until_its_ttl_is_due():
    world = finished(started_world(runPolicy={"ttlSecondsAfterFinished": 60}))
    cluster = CountingCluster(world)
    reconciler = Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                            clock=lambda: world.now)
    world.now = T0 + timedelta(seconds=10)
    reconciler.resync("research", "chat")
    assert cluster.observes == 0
    world.now = (world.status.completion_time or T0) + timedelta(seconds=60)
    reconciler.resync("research", "chat")  # due: the children are deleted
    assert cluster.observes == 1
    assert not any(kind == "Job" for kind, _ in world.objects)
    reconciler.resync("research", "chat")  # nothing was left: settled
    reconciler.resync("research", "chat")
    assert cluster.observes == 2
    assert names.config_map_name("chat") not in {n for _, n in world.objects}


# --------------------------------------------------------------------------- observe


class FakeReads:
    """CoreV1Api and BatchV1Api reads of named children, recording what was read."""

    def __init__(self, present: dict[str, dict[str, Any]]) -> None:
        self.present = present
        self.reads: list[str] = []

    def _get(self, kind: str, name: str) -> FakeResponse:
        from kubernetes.client.exceptions import ApiException

        self.reads.append(f"{kind}/{name}")
        if f"{kind}/{name}" not in self.present:
            raise ApiException(status=404)
        return FakeResponse(self.present[f"{kind}/{name}"])

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        return self._get("ConfigMap", name)

    def read_namespaced_service(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        return self._get("Service", name)

    def read_namespaced_job(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        return self._get("Job", name)

    def list_namespaced_pod(self, namespace: str, **_: Any) -> FakeResponse:
        self.reads.append("pods")
        return FakeResponse({"items": []})


def observing_cluster(present: dict[str, dict[str, Any]]) -> tuple[Cluster, FakeReads]:
    cluster = Cluster()
    fake = FakeReads(present)
    cluster.core = fake  # type: ignore[assignment]
    cluster.batch = fake  # type: ignore[assignment]
    return cluster, fake


def test_a_job_that_never_started_reads_only_its_configmap():
    cluster, fake = observing_cluster({})
    observed = cluster.observe(ftj())
    assert fake.reads == ["ConfigMap/chat-trainer"]
    assert (observed.started_config, observed.has_service, observed.attempts) == (None, False,
                                                                                  {})


def test_a_configmap_left_by_a_crash_before_the_plan_was_recorded_means_a_full_read():
    world = started_world()  # what the crashed reconcile created
    present = {f"{kind}/{name}": obj for (kind, name), obj in world.objects.items()}
    cluster, fake = observing_cluster(present)
    observed = cluster.observe(ftj())  # the status never got the plan
    assert fake.reads == ["ConfigMap/chat-trainer", "Job/chat-r0", "Job/chat-r1",
                          "Service/chat", "pods"]
    assert observed.started_config is not None and observed.has_service
    assert list(observed.attempts) == [0]


def test_a_started_job_reads_every_child():
    world = started_world()
    cluster, fake = observing_cluster({})
    observed = cluster.observe(ftj(world.status.to_wire()))
    assert fake.reads == ["ConfigMap/chat-trainer", "Job/chat-r0", "Job/chat-r1",
                          "Service/chat"]
    assert observed.attempts == {}


# --------------------------------------------------------------------------- YAML parsing


def test_the_trainer_config_goes_through_libyaml_and_equals_the_pure_python_round_trip():
    import yaml
    from finetune_contract import trainer_config
    from finetune_contract.trainer_config import TrainerConfig

    world = started_world()
    text = world.objects[("ConfigMap", "chat-trainer")]["data"]["trainer.yaml"]
    assert yaml.__with_libyaml__  # the operator image's PyYAML wheel carries libyaml
    assert trainer_config.SAFE_LOADER is yaml.CSafeLoader
    assert trainer_config.SAFE_DUMPER is yaml.CSafeDumper
    pure = TrainerConfig.model_validate(yaml.safe_load(text))
    assert specs.parse_started(text) == pure.spec
    assert text == yaml.safe_dump(pure.to_wire(), sort_keys=False)  # dumped the same way


def test_a_configmap_the_operator_created_is_not_parsed_when_read_back(monkeypatch):
    parses: list[str] = []
    real = specs.parse_started
    monkeypatch.setattr(specs, "parse_started", lambda text: parses.append(text) or real(text))
    world = started_world()  # renders the ConfigMap and creates it
    world.step()  # reads it back
    assert parses == []
    config_map = world.objects[("ConfigMap", "chat-trainer")]
    assert specs.started(config_text(config_map), world.caches) == real(
        config_map["data"]["trainer.yaml"])


@pytest.mark.parametrize("example", ["llama-8b-sft.yaml", "tiny-chat-k8s.yaml"])
def test_the_seeded_started_spec_is_what_parsing_the_configmap_gives(example):
    """The seed is only sound if the round trip through the ConfigMap's YAML is lossless."""
    import yaml
    from finetune_operator import render
    from finetune_operator.planner import plan_job
    from finetune_operator.validation import validate_spec

    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    spec, problems = validate_spec(doc["spec"], doc["metadata"]["name"], plan=False)
    assert spec is not None, problems
    owner = render.Owner(name=doc["metadata"]["name"], namespace="research", uid="u-1")
    text = render.config_map(owner, spec, plan_job(spec))["data"]["trainer.yaml"]
    assert specs.parse_started(text) == spec


def test_after_a_complete_reconcile_only_the_current_attempts_job_is_read():
    world = started_world()
    cluster, fake = observing_cluster({})
    cluster.observe(ftj(world.status.to_wire()), last_complete=True)
    assert fake.reads == ["ConfigMap/chat-trainer", "Job/chat-r0", "Service/chat"]


def test_attempts_read_around_a_restart_unless_the_last_reconcile_completed():
    from finetune_operator.controller.kube import attempts_to_read

    assert attempts_to_read(0, last_complete=False) == [0, 1]
    assert attempts_to_read(2, last_complete=False) == [1, 2, 3]
    assert attempts_to_read(2, last_complete=True) == [2]


class RecordingCluster(CountingCluster):
    """Records what each observe was told about the last reconcile; can fail a status write."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.told: list[bool] = []
        self.fail_write = False

    def observe(self, body: dict[str, Any], **kwargs: Any) -> Observed:
        self.told.append(kwargs["last_complete"])
        return super().observe(body)

    def write_status(self, *args: Any, **kwargs: Any) -> None:
        if self.fail_write:
            raise RuntimeError("the API failed")
        super().write_status(*args, **kwargs)


def test_a_reconcile_that_failed_makes_the_next_one_look_for_left_over_jobs():
    world = started_world()
    cluster = RecordingCluster(world)
    reconciler = Reconciler(cluster, SETTINGS, OperatorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                            clock=lambda: world.now)
    reconciler.reconcile("research", "chat")  # a new process: nothing known
    reconciler.reconcile("research", "chat")  # the last one completed
    cluster.fail_write = True
    with pytest.raises(RuntimeError):
        reconciler.reconcile("research", "chat")
    cluster.fail_write = False
    reconciler.reconcile("research", "chat")  # after the failure: look again
    assert cluster.told == [False, True, True, False]
