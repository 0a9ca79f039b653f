"""The operator restarted in the middle of a run picks up where it was: no duplicate
children, no second restart of a gang that was already restarted."""

from __future__ import annotations

from tests.support.ftj_samples import spec_dict
from tests.support.wiring import Kube, emulated_cluster, running_operator, wait_for

TWO_NODES = {"gpu": "cpu", "gpusPerNode": 2, "nodes": 2, "maxNodes": 2, "strategy": "ddp"}
NS = "restart"


def stored(emulator, plural: str) -> list[str]:
    """Names of the live objects of one resource in the test namespace."""
    return emulator.read(lambda e: sorted(
        name for (res, ns, name), obj in e.objects.items()
        if res.plural == plural and ns == NS and not obj.deleted))


def test_operator_restart_mid_run_creates_no_duplicates(tmp_path):
    with emulated_cluster(tmp_path) as emulator:
        kube = Kube()
        with running_operator():
            kube.apply(NS, "chat", spec_dict(resources=TWO_NODES))
            job = wait_for("job r0", lambda: kube.job(NS, "chat-r0"))
            pods = kube.start_pods(NS, job)
            kube.wait_phase(NS, "chat", "Running")
        # operator down: a rank fails meanwhile
        kube.fail_pod(NS, pods[0], "Error", 1)
        with running_operator():
            wait_for("one restart", lambda: kube.status(NS, "chat").get("restarts") == 1)
            new = wait_for("job r1", lambda: kube.job(NS, "chat-r1"))
            wait_for("r0 gone", lambda: kube.job(NS, "chat-r0") is None)
        # and once more, with nothing changed: the restart is not repeated
        with running_operator():
            kube.start_pods(NS, new)
            kube.wait_phase(NS, "chat", "Running")
        assert kube.status(NS, "chat")["restarts"] == 1
        assert stored(emulator, "jobs") == ["chat-r1"]
        assert stored(emulator, "configmaps") == ["chat-trainer"]
        assert stored(emulator, "services") == ["chat"]
        # every child was created exactly once: each has a single creation in its history
        for plural, name in (("configmaps", "chat-trainer"), ("services", "chat"),
                             ("jobs", "chat-r1")):
            key = next(k for k in emulator.emulator.objects
                       if k[0].plural == plural and k[1] == NS and k[2] == name)
            uids = {v["metadata"]["uid"] for v in emulator.emulator.objects[key].history if v}
            assert len(uids) == 1, (plural, name, uids)
