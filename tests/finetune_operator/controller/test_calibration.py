"""The calibration table in its ConfigMap (controller/calibration.py), against an in-memory
stand-in for the ConfigMaps API with resourceVersions: created when absent, a lost race read
again, an unreadable or corrupt ConfigMap read as what it can give, never raised."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from finetune_operator import calibration as cal
from finetune_operator import names
from finetune_operator.controller.calibration import (
    ATTEMPTS,
    CACHE_SECONDS,
    CalibrationConflict,
    CalibrationStore,
)
from finetune_operator.settings import CalibrationSettings
from kubernetes.client.exceptions import ApiException

SETTINGS = CalibrationSettings(namespace="ops")
KEY = cal.Key("llama", "zero2", "H100-80GB")
OTHER = cal.Key("qwen2", "ddp", "cpu")


class ConfigMaps:
    """ConfigMaps as the API server keeps them: a create of an existing one, or a replace
    with a stale resourceVersion, answers 409."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0
        self.reads = 0
        self.before_write = lambda: None  # what another writer does meanwhile
        self.read_error: Exception | None = None
        self.write_error: Exception | None = None

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.read_error is not None:
            raise self.read_error
        return copy.deepcopy(self.stored.get((namespace, name)))

    def store_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.before_write()
        if self.write_error is not None:
            raise self.write_error
        key = (namespace, body["metadata"]["name"])
        current = self.stored.get(key)
        version = body["metadata"].get("resourceVersion")
        if (version is None and current is not None) or (
                version is not None and (current is None
                                         or current["metadata"]["resourceVersion"] != version)):
            raise ApiException(status=409, reason="Conflict")
        self.writes += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.writes)
        self.stored[key] = stored
        return copy.deepcopy(stored)

    def data(self) -> dict[str, str]:
        return self.stored[("ops", names.CALIBRATION_CONFIG_MAP)]["data"]

    def put(self, data: dict[str, Any], **metadata: Any) -> None:
        self.writes += 1
        self.stored[("ops", names.CALIBRATION_CONFIG_MAP)] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": names.CALIBRATION_CONFIG_MAP, "namespace": "ops",
                         "resourceVersion": str(self.writes), **metadata}, "data": data}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(uid: str, ratio: float = 1.1) -> cal.Run:
    return cal.Run(uid=uid, job=f"team/{uid}", ratio=ratio)


def test_an_absent_configmap_is_an_empty_table_and_the_first_run_creates_it():
    api = ConfigMaps()
    store = CalibrationStore(api, SETTINGS)
    assert store.table() == {}
    assert store.record(KEY, run("u-1")) is True
    stored = api.stored[("ops", "finetune-calibration")]
    assert stored["metadata"]["labels"] == {names.MANAGED_BY_LABEL: names.MANAGER}
    assert cal.parse(stored["data"]) == (cal.record(cal.EMPTY, KEY, run("u-1")), [])
    assert cal.factor(store.table(), KEY).value == 1.1  # its own write, without a read


def test_a_job_recorded_again_writes_nothing():
    api = ConfigMaps()
    store = CalibrationStore(api, SETTINGS)
    store.record(KEY, run("u-1"))
    assert store.record(KEY, run("u-1")) is False
    assert api.writes == 1


def test_a_write_that_lost_the_race_reads_again_and_keeps_the_winners_run():
    api = ConfigMaps()
    ours, theirs = CalibrationStore(api, SETTINGS), CalibrationStore(api, SETTINGS)

    def other_writer_first() -> None:
        api.before_write = lambda: None
        theirs.record(OTHER, run("u-2"))

    api.before_write = other_writer_first
    assert ours.record(KEY, run("u-1")) is True
    table, problems = cal.parse(api.data())
    assert problems == [] and sorted(table) == sorted([OTHER.name, KEY.name])


def test_a_configmap_that_changes_under_every_write_gives_up_saying_so():
    api = ConfigMaps()
    store = CalibrationStore(api, SETTINGS)
    api.put({})
    api.before_write = lambda: api.put({})  # someone rewrites it each time
    with pytest.raises(CalibrationConflict, match=f"changed under each of {ATTEMPTS} writes"):
        store.record(KEY, run("u-1"))


def test_an_unreadable_configmap_plans_uncalibrated_for_a_while(caplog):
    api = ConfigMaps()
    api.put(cal.dump(cal.record(cal.EMPTY, KEY, run("u-1"))))
    api.read_error = ApiException(status=403, reason="Forbidden")
    clock = Clock()
    store = CalibrationStore(api, SETTINGS, clock=clock)
    with caplog.at_level(logging.WARNING):
        assert store.table() == {}
    assert "cannot read the calibration ConfigMap ops/finetune-calibration (403)" in caplog.text
    api.read_error = None
    clock.now += CACHE_SECONDS / 2
    assert store.table() == {} and api.reads == 1  # not asked again before its time
    clock.now += CACHE_SECONDS
    assert cal.factor(store.table(), KEY).value == 1.1


def test_a_corrupt_entry_is_left_out_and_told_once_and_the_others_plan(caplog):
    api = ConfigMaps()
    good = cal.dump(cal.record(cal.EMPTY, KEY, run("u-1", 1.2)))
    api.put({**good, OTHER.name: "{oops"})
    clock = Clock()
    store = CalibrationStore(api, SETTINGS, clock=clock)
    with caplog.at_level(logging.WARNING):
        assert list(store.table()) == [KEY.name]
        clock.now += CACHE_SECONDS
        store.table()
    warnings = [r.getMessage() for r in caplog.records if "qwen2.ddp.cpu" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "entry 'qwen2.ddp.cpu': is not valid JSON" in warnings[0]
    assert "plans of its key are made without it" in warnings[0]


def test_recording_rewrites_its_own_entry_only():
    api = ConfigMaps()
    api.put({OTHER.name: "{oops", "notes": "kept by hand"},
            annotations={"team": "ml-platform"}, labels={"owner": "ml"})
    store = CalibrationStore(api, SETTINGS)
    store.record(KEY, run("u-1"))
    data = api.data()
    assert data[OTHER.name] == "{oops" and data["notes"] == "kept by hand"
    meta = api.stored[("ops", "finetune-calibration")]["metadata"]
    assert meta["annotations"] == {"team": "ml-platform"}
    assert meta["labels"] == {"owner": "ml", names.MANAGED_BY_LABEL: names.MANAGER}


def test_a_corrupt_entry_of_the_key_recorded_starts_afresh(caplog):
    api = ConfigMaps()
    api.put({KEY.name: json.dumps({"family": "llama"})})
    store = CalibrationStore(api, SETTINGS)
    with caplog.at_level(logging.WARNING):
        store.record(KEY, run("u-1"))
    assert "it starts afresh with this run" in caplog.text
    entry = cal.parse(api.data())[0][KEY.name]
    assert (entry.runs, [r.uid for r in entry.recent]) == (1, ["u-1"])
