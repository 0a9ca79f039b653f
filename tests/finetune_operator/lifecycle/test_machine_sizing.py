"""The lifecycle of a job whose model the catalog lacks (lifecycle/sizing.py through
machine.decide): the sizing pod is created, waited for, read and deleted; its result is kept
in status.sizing and planned with; a failure fails the job in the pod's words."""

from __future__ import annotations

import copy
import json
from typing import Any

from finetune_contract.api import ModelSizing
from finetune_operator import names, sizing
from finetune_operator.controller.observe import observation
from finetune_operator.lifecycle.actions import Create, Decision, Delete, Emit
from finetune_operator.lifecycle.observation import Observed
from finetune_operator.settings import Settings

from tests.support.ftj_samples import OWNER
from tests.support.world import SETTINGS, World, two_node_spec

POD = ("Pod", names.sizing_pod_name(OWNER.name))
HUB = {"name": "acme/new-model"}
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 1024}


class SizingWorld(World):
    """The World, plus the sizing pod the shell reads while the job waits for it."""

    def observe(self) -> Observed:
        observed = super().observe()
        waiting = any(c.type == "Sized" and c.status == "Unknown"
                      for c in self.status.conditions)
        pod = self.objects.get(POD) if waiting else None
        body = {"metadata": {"name": OWNER.name, "namespace": OWNER.namespace,
                             "uid": OWNER.uid, "generation": self.generation},
                "spec": copy.deepcopy(self.spec)}
        if observed.started_config is None and not observed.attempts:
            return observation(body, self.status.model_copy(deep=True),
                               sizing_pod=copy.deepcopy(pod))
        return observed

    def finish_sizing(self, message: str, phase: str = "Succeeded") -> None:
        self.objects[POD]["status"] = {"phase": phase, "containerStatuses": [{
            "name": sizing.SIZING_CONTAINER, "state": {"terminated": {
                "exitCode": 0 if phase == "Succeeded" else 1, "message": message}}}]}


def world(**spec: Any) -> SizingWorld:
    return SizingWorld(two_node_spec(model=HUB, **spec),
                       settings=Settings(**{**SETTINGS.__dict__, "sizing_image": "op:7"}))


def result(parameters: int | None = 205_120) -> str:
    return sizing.result_message(ModelSizing(model="acme/new-model", revision="main",
                                             commit="c0ffee" * 6 + "abcd", config=TINY,
                                             parameters=parameters, safetensors_files=1))


def events(decision: Decision) -> list[tuple[str, str]]:
    return [(a.type, a.reason) for a in decision.actions if isinstance(a, Emit)]


def sized_condition(w: World):
    return next(c for c in w.status.conditions if c.type == "Sized")


def test_a_model_the_catalog_lacks_is_sized_by_a_pod_then_planned():
    w = world()
    first = w.step()
    (create,) = [a for a in first.actions if isinstance(a, Create)]
    assert create.obj["kind"] == "Pod" and create.obj["metadata"]["name"] == POD[1]
    assert create.obj["spec"]["containers"][0]["image"] == "op:7"
    assert w.status.phase == "Pending" and w.status.message == "sizing acme/new-model"
    assert (sized_condition(w).status, sized_condition(w).reason) == ("Unknown", "Sizing")
    assert events(first) == [("Normal", "Sizing")]
    assert w.status.plan is None

    waiting = w.step()  # the pod runs: nothing new, no second Event
    assert waiting.actions == [] and w.status.phase == "Pending"

    w.finish_sizing(result())
    done = w.step()
    assert Delete("Pod", POD[1]) in done.actions
    assert POD not in w.objects
    assert {f"{a.obj['kind']}" for a in done.actions if isinstance(a, Create)} == \
        {"ConfigMap", "Service", "Job"}
    assert w.status.plan.parameters == 205_120
    assert w.status.plan.parameter_source == "safetensors"
    assert w.status.sizing.parameters == 205_120 and w.status.sizing.key
    assert (sized_condition(w).status, sized_condition(w).reason) == ("True", "Sized")
    assert "205K parameters (safetensors headers)" in sized_condition(w).message


def test_the_kept_result_is_not_sized_again():
    w = world()
    w.step()
    w.finish_sizing(result())
    w.step()
    for _ in range(3):
        decision = w.step()
        assert not [a for a in decision.actions if isinstance(a, Create)
                    and a.obj["kind"] == "Pod"]
    assert w.status.sizing.parameters == 205_120


def test_the_token_reaches_the_pod_by_reference_only():
    w = world(secrets={"hfToken": {"name": "hf", "key": "token"}})
    (create,) = [a for a in w.step().actions if isinstance(a, Create)]
    env = {e["name"]: e for e in create.obj["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert "hf" not in json.dumps(w.status.to_wire())  # nothing of the Secret in the status


def test_a_sizing_failure_fails_the_job_in_the_users_words_and_an_edit_sizes_again():
    w = world()
    w.step()
    w.finish_sizing(sizing.SizingFailed(
        "GatedRepo", "model 'acme/new-model' (spec.model.name) is gated on the Hugging Face "
        "Hub and no token was given: set spec.secrets.hfToken").to_json(), phase="Failed")
    failed = w.step()
    assert w.status.phase == "Failed"
    assert Delete("Pod", POD[1]) in failed.actions
    failure = next(c for c in w.status.conditions if c.type == "Failed")
    assert failure.reason == "SizingFailed"
    assert "is gated" in failure.message and "spec.secrets.hfToken" in failure.message
    assert "Traceback" not in failure.message
    assert ("Warning", "SizingFailed") in events(failed)
    assert (sized_condition(w).status, sized_condition(w).reason) == ("False", "SizingFailed")
    assert w.step().actions == []  # failed: left alone until edited

    w.edit(secrets={"hfToken": {"name": "hf", "key": "token"}})
    again = w.step()
    assert [a.obj["kind"] for a in again.actions if isinstance(a, Create)] == ["Pod"]
    assert w.status.phase == "Pending"


def test_a_pod_that_ends_without_a_result_is_a_failure_not_a_traceback():
    w = world()
    w.step()
    w.finish_sizing("", phase="Failed")
    w.step()
    failure = next(c for c in w.status.conditions if c.type == "Failed")
    assert failure.reason == "SizingFailed" and "without a result" in failure.message


def test_a_pod_of_an_earlier_spec_is_replaced():
    w = world()
    w.step()
    w.edit(model={"name": "acme/other-model"})
    replaced = w.step()
    assert Delete("Pod", POD[1]) in replaced.actions and w.status.phase == "Pending"
    created = w.step()
    (pod,) = [a.obj for a in created.actions if isinstance(a, Create)]
    assert "acme/other-model" in pod["spec"]["containers"][0]["args"]


def test_a_pod_waiting_for_its_image_says_so():
    w = world()
    w.step()
    w.objects[POD]["status"] = {"phase": "Pending", "containerStatuses": [{
        "name": "size", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
    w.step()
    assert sized_condition(w).message == f"sizing pod {POD[1]} is Pending (ImagePullBackOff)"


def test_a_model_the_spec_sizes_never_gets_a_pod():
    w = SizingWorld(two_node_spec(model={"name": "acme/x", "parameters": "200K"}))
    decision = w.step()
    assert "Pod" not in {a.obj["kind"] for a in decision.actions if isinstance(a, Create)}
    assert w.status.sizing is None and w.status.plan is not None
