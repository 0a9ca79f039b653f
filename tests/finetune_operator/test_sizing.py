"""The sizing pod and its result (sizing.py): pure rendering, checked against Kubernetes'
schema, and the termination message both ways."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from finetune_contract.api import ModelSizing
from finetune_operator import names, sizing
from finetune_operator.policy import Policy

from tests.support.ftj_samples import OWNER, spec

K8S_VERSION = "1.33.0"
HUB_MODEL = {"name": "meta-llama/Llama-3.3-70B-Instruct"}
TOKEN = {"hfToken": {"name": "hf", "key": "token"}}


def pod(**sections):
    return sizing.sizing_pod(OWNER, spec(**sections), operator_image="op:1",
                             trainer_image="trainer:1", hf_endpoint=None)


def test_the_pod_is_valid_owned_and_named_after_the_job():
    obj = pod(model=HUB_MODEL, secrets=TOKEN)
    kubernetes_validate.validate(json.loads(json.dumps(obj)), K8S_VERSION, strict=True)
    meta = obj["metadata"]
    assert meta["name"] == names.sizing_pod_name(OWNER.name) == "chat-size"
    assert meta["namespace"] == OWNER.namespace
    assert meta["ownerReferences"] == [OWNER.reference()]
    assert meta["labels"][names.APP_LABEL] == sizing.SIZING_APP != names.TRAINER_APP
    assert meta["annotations"][names.SIZING_KEY_ANNOTATION] == \
        "name=meta-llama/Llama-3.3-70B-Instruct;revision=main;token=hf/token"


def test_it_runs_finetune_size_in_the_operator_image_with_the_token_by_reference():
    obj = pod(model=HUB_MODEL, secrets=TOKEN)
    container = obj["spec"]["containers"][0]
    assert container["image"] == "op:1" and container["command"] == ["finetune"]
    assert container["args"] == ["size", "--model", "meta-llama/Llama-3.3-70B-Instruct",
                                 "--revision", "main", "--termination-log",
                                 "/dev/termination-log"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "hf", "key": "token"}}}
    assert "value" not in env["HF_TOKEN"]  # the operator never holds the token
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_it_has_no_api_credentials_no_privileges_and_a_deadline():
    obj = pod(model=HUB_MODEL)
    pod_spec, container = obj["spec"], obj["spec"]["containers"][0]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["activeDeadlineSeconds"] == sizing.DEADLINE_SECONDS
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] == sizing.OPERATOR_UID
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "HF_TOKEN" not in {e["name"] for e in container["env"]}  # no Secret: no token
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])


def test_a_model_path_on_the_dataset_volume_is_mounted_read_only():
    obj = pod(model={"path": "models/base"},
              dataset={"train": {"path": "train.jsonl"}, "pvc": "datasets"})
    kubernetes_validate.validate(json.loads(json.dumps(obj)), K8S_VERSION, strict=True)
    container = obj["spec"]["containers"][0]
    assert container["args"][:2] == ["size", "--path"]
    assert container["args"][2] == "/data/models/base" and container["image"] == "op:1"
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "datasets",
                                                      "readOnly": True}} in obj["spec"]["volumes"]


def test_a_model_path_without_a_volume_is_sized_in_the_trainer_image():
    obj = pod(model={"path": "/opt/models/base"})
    container = obj["spec"]["containers"][0]
    assert container["image"] == "trainer:1" and container["args"][2] == "/opt/models/base"
    assert obj["spec"]["securityContext"]["runAsUser"] == 1000
    own = sizing.sizing_pod(OWNER, spec(model={"path": "/m"}, image="mine:2"),
                            operator_image="op:1", trainer_image="trainer:1")
    assert own["spec"]["containers"][0]["image"] == "mine:2"


def test_a_mirror_endpoint_and_tolerations_reach_the_pod():
    obj = sizing.sizing_pod(
        OWNER, spec(model=HUB_MODEL, resources={"gpu": "cpu", "tolerations": [
            {"key": "gpu", "operator": "Exists"}]}),
        operator_image="op:1", trainer_image="t", hf_endpoint="http://mirror.local")
    env = {e["name"]: e.get("value") for e in obj["spec"]["containers"][0]["env"]}
    assert env["HF_ENDPOINT"] == "http://mirror.local"
    assert obj["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]


def test_the_key_changes_with_what_the_result_depends_on():
    base = sizing.sizing_key(spec(model=HUB_MODEL))
    assert sizing.sizing_key(spec(model=HUB_MODEL, secrets=TOKEN)) != base
    assert sizing.sizing_key(spec(model={"name": "other/model"})) != base


def test_the_result_round_trips_through_a_termination_message():
    result = ModelSizing(model="a/b", revision="main", commit="c" * 40,
                         config={"model_type": "llama", "hidden_size": 8}, parameters=123,
                         safetensors_files=2)
    text = sizing.result_message(result)
    assert len(text.encode()) <= sizing.MESSAGE_LIMIT
    assert sizing.parse_result(text) == result
    # FallbackToLogsOnError: the message may be the log's tail; the result is its last line.
    assert sizing.parse_result("some warning\n" + text) == result


def test_a_failure_or_no_result_is_sizing_failed_in_the_pods_words():
    failed = sizing.SizingFailed("GatedRepo", "model 'a/b' (spec.model.name) is gated")
    with pytest.raises(sizing.SizingFailed) as err:
        sizing.parse_result(failed.to_json())
    assert err.value.reason == "GatedRepo" and "is gated" in err.value.message
    with pytest.raises(sizing.SizingFailed, match="without a result: Traceback"):
        sizing.parse_result("Traceback (most recent call last): ...")
    with pytest.raises(sizing.SizingFailed, match="no output"):
        sizing.parse_result("")


def test_planner_config_keeps_the_sizes_and_reads_a_language_models_text_config():
    big = {"model_type": "llama", "hidden_size": 8, "rope_scaling": {"type": "x" * 5000},
           "quantization_config": {}, "num_hidden_layers": 2}
    assert sizing.planner_config(big) == {"model_type": "llama", "hidden_size": 8,
                                          "num_hidden_layers": 2}
    vision = {"model_type": "mllama", "text_config": {"model_type": "mllama_text_model",
                                                      "hidden_size": 16,
                                                      "num_hidden_layers": 4},
              "vision_config": {"hidden_size": 1280}}
    assert sizing.planner_config(vision) == {"model_type": "mllama_text_model",
                                             "hidden_size": 16, "num_hidden_layers": 4}


def test_the_policys_forced_tolerations_and_node_selector_reach_the_pod():
    forced = Policy(forced_tolerations=({"key": "pool", "operator": "Exists"},),
                    forced_node_selector={"pool": "tenants"})
    obj = sizing.sizing_pod(
        OWNER, spec(model=HUB_MODEL, resources={"gpu": "cpu", "tolerations": [
            {"key": "gpu", "operator": "Exists"}]}),
        operator_image="op:1", trainer_image="t", policy=forced)
    assert obj["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"},
                                          {"key": "pool", "operator": "Exists"}]
    assert obj["spec"]["nodeSelector"] == {"pool": "tenants"}
    assert "nodeSelector" not in pod(model=HUB_MODEL)["spec"]
