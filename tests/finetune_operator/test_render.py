"""Rendering of the ConfigMap, headless Service and Indexed Job of a FineTuneJob."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml
from finetune_contract.api import FineTuneJob, OutputSpec
from finetune_contract.trainer_config import TrainerConfig
from finetune_operator import names, render
from finetune_operator.placement import GpuNodeLabels
from finetune_operator.planner import plan_job, storage
from finetune_operator.settings import Settings
from finetune_operator.sizes import format_gib

from tests.conftest import ROOT
from tests.support.ftj_samples import OWNER, TINY_MODEL, gpu_spec, plan, spec

K8S_VERSION = "1.33.0"
SETTINGS = Settings(default_image="registry.example/trainer:1")

LAYOUTS = {
    "cpu-ddp": (spec(), plan()),
    "cpu-zero2-2-nodes": (
        spec(resources={"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 2, "strategy": "zero2"}),
        plan(strategy="zero2", nodes=2)),
    "gpu-ddp": (gpu_spec(), plan(gpu="H100-80GB", gpus_per_node=8, host_memory=64 * 2**30)),
    "gpu-zero3-4-nodes": (
        gpu_spec(strategy="zero3", nodeSelector={"pool": "h100"}, queueName="research",
                 tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                               "effect": "NoSchedule"}],
                 priorityClassName="training", memory="900Gi"),
        plan(strategy="zero3", gpu="H100-80GB", nodes=4, gpus_per_node=8)),
    "gpu-offload": (
        gpu_spec(gpu="L4-24GB", strategy="zero3-offload", gpusPerNode=4,
                 nodeSelector={"pool": "big"}),
        plan(strategy="zero3-offload", gpu="L4-24GB", gpus_per_node=4, cpu_per_node=32,
             host_memory=150 * 2**30)),
}


def _objects(layout: str) -> list[dict]:
    job_spec, job_plan = LAYOUTS[layout]
    return render.children(OWNER, job_spec, job_plan, SETTINGS, attempt=0)


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def _container(job: dict) -> dict:
    (container,) = _pod(job)["containers"]
    return container


def _env(job: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(job)["env"]}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_object_validates_against_the_kubernetes_schemas(layout):
    for obj in _objects(layout):
        # round-trip through JSON: exactly what the API server would receive
        kubernetes_validate.validate(json.loads(json.dumps(obj)), K8S_VERSION, strict=True)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_children_have_deterministic_names_and_an_owner_reference(layout):
    objs = _objects(layout)
    assert [o["metadata"]["name"] for o in objs] == [
        names.config_map_name("chat"), names.service_name("chat"),
        names.batch_job_name("chat", 0)]
    for obj in objs:
        assert obj["metadata"]["namespace"] == "research"
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
                       "name": "chat", "uid": OWNER.uid, "controller": True,
                       "blockOwnerDeletion": True}


def test_config_map_holds_the_trainer_config_for_the_pods():
    job_spec, job_plan = LAYOUTS["cpu-ddp"]
    cm = render.config_map(OWNER, job_spec, job_plan)
    config = TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"]))
    assert config.spec == job_spec
    assert config.plan == job_plan
    assert (config.name, config.namespace) == ("chat", "research")
    assert config.data_root == "/data"
    assert config.output_dir == "/output"
    assert config.device == "cpu"
    assert config.metrics_port == 9400


def test_service_is_headless_and_publishes_not_ready_pods():
    svc = render.service(OWNER)["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["publishNotReadyAddresses"] is True
    assert svc["selector"] == {"finetune.dev/job": "chat",
                               "app.kubernetes.io/name": "finetune-trainer"}
    assert {p["name"]: p["port"] for p in svc["ports"]} == {"rendezvous": 29500,
                                                            "metrics": 9400}


@pytest.mark.parametrize("layout,nodes,ranks", [("cpu-ddp", 1, 2), ("cpu-zero2-2-nodes", 2, 2),
                                                ("gpu-ddp", 1, 8), ("gpu-zero3-4-nodes", 4, 8)])
def test_job_is_an_indexed_gang_running_torchrun(layout, nodes, ranks):
    job = _objects(layout)[2]
    assert job["apiVersion"] == "batch/v1"
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    assert job["spec"]["backoffLimit"] == 0
    pod = _pod(job)
    assert pod["subdomain"] == "chat"
    assert pod["restartPolicy"] == "Never"
    container = _container(job)
    assert container["command"] == ["python", "-m", "finetune_trainer.launch"]
    host = "chat-r0-0.chat.research.svc"
    assert container["args"] == [
        "--nnodes", str(nodes), "--nproc-per-node", str(ranks), "--node-rank", "$(NODE_RANK)",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{host}:29500",
        "--rdzv-id", f"{OWNER.uid}-0", "--max-restarts", "0",
        "-m", "finetune_trainer", "--config", "/etc/finetune/trainer.yaml"]
    env = _env(job)
    index_ref = {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["NODE_RANK"] == env["PET_NODE_RANK"] == index_ref
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == host
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29500"
    assert env["WORLD_SIZE"] == env["PET_NNODES"] == str(nodes)
    assert env["PET_NPROC_PER_NODE"] == str(ranks)


def test_the_pods_get_the_planned_grace_period_and_torchrun_waits_nearly_as_long():
    job_plan = plan().model_copy(update={"termination_grace_seconds": 120})
    job = render.children(OWNER, spec(), job_plan, SETTINGS, attempt=0)[2]
    assert _pod(job)["terminationGracePeriodSeconds"] == 120
    args = _container(job)["args"]
    wait = args[args.index("--shutdown-timeout") + 1]
    assert int(wait) == 120 - render.TORCHRUN_EXIT_SECONDS
    assert args.index("--shutdown-timeout") < args.index("-m")  # torchrun's, not the trainer's


def test_a_plan_without_a_grace_period_keeps_kubernetes_default():
    job = _objects("cpu-ddp")[2]  # a plan written before the planner chose one
    assert "terminationGracePeriodSeconds" not in _pod(job)
    assert "--shutdown-timeout" not in _container(job)["args"]


def test_a_planned_job_renders_the_grace_period_of_its_plan():
    job_spec = gpu_spec()
    job_plan = plan_job(job_spec)
    job = render.children(OWNER, job_spec, job_plan, SETTINGS, attempt=0)[2]
    assert _pod(job)["terminationGracePeriodSeconds"] == job_plan.termination_grace_seconds
    assert job_plan.termination_grace_seconds >= storage.GRACE_MIN_SECONDS


def test_pods_carry_the_labels_and_port_the_pod_monitor_selects():
    job = _objects("cpu-ddp")[2]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "finetune-trainer"
    assert labels["finetune.dev/job"] == "chat"
    ports = {p["name"]: p["containerPort"] for p in _container(job)["ports"]}
    # One metrics port per local rank (2 here): the PodMonitor scrapes each by name.
    assert ports == {"metrics": 9400, "metrics-1": 9401, "rendezvous": 29500}


# Kubernetes' IANA_SVC_NAME: what a container port name must be.
_PORT_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("ranks", [1, 8, 64])
def test_every_local_rank_has_a_named_metrics_port_at_its_own_number(ranks):
    job = render.batch_job(OWNER, spec(), plan(gpus_per_node=ranks), SETTINGS, attempt=0)
    ports = _container(job)["ports"]
    metrics = [p for p in ports if p["name"] != "rendezvous"]
    assert [(p["name"], p["containerPort"]) for p in metrics] == [
        (names.metrics_port_name(r), 9400 + r) for r in range(ranks)]
    assert metrics[0]["name"] == "metrics"  # what the operator reads progress from
    assert len({p["name"] for p in ports}) == len({p["containerPort"] for p in ports}) == \
        len(ports)
    for port in ports:
        assert len(port["name"]) <= 15 and _PORT_NAME.match(port["name"]), port["name"]


def test_cpu_pods_request_no_gpu_and_one_core_per_rank():
    job = _objects("cpu-ddp")[2]
    resources = _container(job)["resources"]
    assert resources == {"requests": {"cpu": "2"}}
    env = _env(job)
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["DS_ACCELERATOR"] == "cpu"


def test_gpu_pods_request_and_limit_gpus_and_the_planned_host_memory():
    job = _objects("gpu-ddp")[2]
    resources = _container(job)["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "8"}
    assert resources["requests"] == {"nvidia.com/gpu": "8", "memory": "64Gi"}
    assert "OMP_NUM_THREADS" not in _env(job)
    assert yaml.safe_load(_objects("gpu-ddp")[0]["data"]["trainer.yaml"])["device"] == "cuda"


def test_gpu_pods_require_nodes_with_the_planned_gpu_type():
    # H100-80GB has several GPU Feature Discovery product names: any of them will do.
    pod = _pod(_objects("gpu-ddp")[2])
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"] == [{"matchExpressions": [
        {"key": "nvidia.com/gpu.product", "operator": "In",
         "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB", "NVIDIA-H100-PCIe"]}]}]
    # L4-24GB has one: a nodeSelector entry, beside the user's own labels.
    assert _pod(_objects("gpu-offload")[2])["nodeSelector"] == {
        "pool": "big", "nvidia.com/gpu.product": "NVIDIA-L4"}
    assert "affinity" not in _pod(_objects("cpu-ddp")[2])


def test_gpu_node_labels_follow_the_operator_settings():
    job_spec, job_plan = LAYOUTS["gpu-ddp"]
    off = Settings(gpu_node_labels=None)
    assert "affinity" not in _pod(render.batch_job(OWNER, job_spec, job_plan, off, 0))
    own = Settings(gpu_node_labels=GpuNodeLabels("node.example.com/gpu", {"H100-80GB": ("h100",)}))
    pod = _pod(render.batch_job(OWNER, job_spec, job_plan, own, 0))
    assert pod["nodeSelector"] == {"node.example.com/gpu": "h100"}


def test_offload_pods_request_the_planned_cpus_and_use_them_for_cpu_adam():
    job = _objects("gpu-offload")[2]
    assert _container(job)["resources"]["requests"] == {
        "nvidia.com/gpu": "4", "cpu": "32", "memory": "150Gi"}
    # torchrun would give each rank one OpenMP thread
    assert _env(job)["OMP_NUM_THREADS"] == "8"
    assert "OMP_NUM_THREADS" not in _env(_objects("gpu-ddp")[2])


def test_the_users_cpu_request_wins_over_the_plans():
    _, job_plan = LAYOUTS["gpu-offload"]
    job_spec = gpu_spec(gpu="L4-24GB", strategy="zero3-offload", gpusPerNode=4, cpu="12")
    job = render.batch_job(OWNER, job_spec, job_plan, SETTINGS, 0)
    assert _container(job)["resources"]["requests"]["cpu"] == "12"
    assert _env(job)["OMP_NUM_THREADS"] == "3"


def test_user_resources_scheduling_and_kueue_are_copied():
    job = _objects("gpu-zero3-4-nodes")[2]
    pod = _pod(job)
    assert pod["nodeSelector"] == {"pool": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "training"
    assert _container(job)["resources"]["requests"]["memory"] == "900Gi"
    # Kueue admits the whole gang by unsuspending the Job it was given suspended
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    assert job["spec"]["suspend"] is True


def test_unqueued_job_starts_unsuspended_unless_run_policy_suspends_it():
    assert _objects("cpu-ddp")[2]["spec"]["suspend"] is False
    suspended = spec(runPolicy={"suspend": True})
    job = render.batch_job(OWNER, suspended, plan(), SETTINGS, attempt=0)
    assert job["spec"]["suspend"] is True


def test_restricted_security_context():
    job = _objects("gpu-ddp")[2]
    pod_sc = _pod(job)["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _container(job)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True


def test_volumes_shm_config_and_output():
    job_spec = spec(output={"pvc": "checkpoints", "path": "/mnt/out"})
    job = render.batch_job(OWNER, job_spec, plan(), SETTINGS, attempt=0)
    volumes = {v["name"]: v for v in _pod(job)["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}  # 2 ranks
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "checkpoints"}
    assert volumes["config"]["configMap"] == {"name": "chat-trainer"}
    mounts = {m["name"]: m["mountPath"] for m in _container(job)["volumeMounts"]}
    assert mounts == {"config": "/etc/finetune", "dshm": "/dev/shm", "scratch": "/tmp",
                      "output": "/mnt/out"}


def test_data_pvc_is_mounted_read_only_at_the_data_root():
    job_spec = spec(dataset={"train": {"path": "train.jsonl"}, "pvc": "corpus"})
    job = render.batch_job(OWNER, job_spec, plan(), SETTINGS, attempt=0)
    volumes = {v["name"]: v for v in _pod(job)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "corpus", "readOnly": True}
    data = next(m for m in _container(job)["volumeMounts"] if m["name"] == "data")
    assert data == {"name": "data", "mountPath": render.DATA_ROOT, "readOnly": True}
    kubernetes_validate.validate(job, "1.33.0", strict=True)


def test_hf_token_comes_from_its_secret_by_reference():
    job_spec = spec(secrets={"hfToken": {"name": "hf", "key": "token"}})
    job = render.batch_job(OWNER, job_spec, plan(), SETTINGS, attempt=0)
    assert _env(job)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}


def test_tracker_credentials_come_from_their_secrets_and_never_reach_the_config():
    mlflow = {"trackingUri": "https://mlflow.mlops:5000", "experiment": "chat",
              "username": {"name": "mlflow", "key": "user"},
              "password": {"name": "mlflow", "key": "password"}}
    wandb = {"project": "chat", "apiKey": {"name": "wandb", "key": "apiKey"}}
    job_spec = spec(training={"reportTo": ["mlflow", "wandb"], "mlflow": mlflow, "wandb": wandb})
    job = render.batch_job(OWNER, job_spec, plan(), SETTINGS, attempt=0)
    env = _env(job)
    assert env["MLFLOW_TRACKING_USERNAME"] == {"secretKeyRef": {"name": "mlflow", "key": "user"}}
    assert env["MLFLOW_TRACKING_PASSWORD"] == {
        "secretKeyRef": {"name": "mlflow", "key": "password"}}
    assert env["WANDB_API_KEY"] == {"secretKeyRef": {"name": "wandb", "key": "apiKey"}}
    assert "MLFLOW_TRACKING_TOKEN" not in env
    config = render.config_map(OWNER, job_spec, plan())["data"][names.CONFIG_KEY]
    assert TrainerConfig.parse(config).run_id == OWNER.uid
    kubernetes_validate.validate(job, "1.33.0", strict=True)


def test_image_from_spec_else_the_operator_default():
    assert _container(_objects("cpu-ddp")[2])["image"] == "registry.example/trainer:1"
    own = spec(image="me/trainer:dev")
    job = render.batch_job(OWNER, own, plan(), SETTINGS, attempt=0)
    assert _container(job)["image"] == "me/trainer:dev"


def test_user_text_never_reaches_a_shell():
    hostile = spec(output={"path": "/out/$(rm -rf /); echo"})
    job = render.batch_job(OWNER, hostile, plan(), SETTINGS, attempt=0)
    container = _container(job)
    assert container["command"] == ["python", "-m", "finetune_trainer.launch"]
    assert all("rm -rf" not in arg for arg in container["args"])


def test_next_attempt_has_its_own_name_and_rendezvous_host():
    job = render.batch_job(OWNER, spec(), plan(), SETTINGS, attempt=2)
    assert job["metadata"]["name"] == "chat-r2"
    assert "chat-r2-0.chat.research.svc:29500" in _container(job)["args"]
    assert _env(job)["FINETUNE_ATTEMPT"] == "2"


def test_schema_check_really_rejects_a_broken_job():
    job = _objects("cpu-ddp")[2]
    job["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9400"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def _example_jobs() -> list:
    jobs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        job = FineTuneJob.model_validate(yaml.safe_load(path.read_text()))
        jobs.append(pytest.param(job.spec, plan_job(job.spec), id=path.stem))
    return jobs


@pytest.mark.parametrize("job_spec,job_plan", [pytest.param(*LAYOUTS[k], id=k)
                                               for k in sorted(LAYOUTS)] + _example_jobs())
@pytest.mark.parametrize("output", [{}, {"pvc": "checkpoints", "path": "/mnt/out"}],
                         ids=["emptydir-output", "pvc-output"])
def test_every_empty_dir_has_a_size_limit(job_spec, job_plan, output):
    job_spec = job_spec.model_copy(update={"output": OutputSpec.model_validate(output)})
    job = render.batch_job(OWNER, job_spec, job_plan, SETTINGS, attempt=0)
    empty_dirs = [v for v in _pod(job)["volumes"] if "emptyDir" in v]
    assert len(empty_dirs) == (2 if output else 3)
    for volume in empty_dirs:
        assert volume["emptyDir"]["sizeLimit"].endswith("Gi"), volume


def test_an_output_empty_dir_is_sized_by_the_planner_and_shm_by_the_ranks():
    job_spec, job_plan = LAYOUTS["gpu-ddp"]
    job_plan = job_plan.model_copy(update={"parameters": 8_000_000_000,
                                           "trainable_parameters": 8_000_000_000})
    job = render.batch_job(OWNER, job_spec, job_plan, SETTINGS, attempt=0)
    volumes = {v["name"]: v["emptyDir"] for v in _pod(job)["volumes"] if "emptyDir" in v}
    assert volumes["output"]["sizeLimit"] == format_gib(
        storage.output_bytes(job_spec, job_plan, model_on_output=False))
    # 8B parameters: 4 checkpoints of 96 GB (fp32 weights, Adam's two states; saveTotalLimit
    # 3 and the next), the 32 GB model, 1 GiB of small files
    assert volumes["output"]["sizeLimit"] == "389Gi"
    assert volumes["dshm"] == {"medium": "Memory", "sizeLimit": "8Gi"}  # 8 ranks
    assert volumes["scratch"] == {"sizeLimit": "32Gi"}


HUB_MODEL = {"name": "meta-llama/Llama-3.1-8B"}


def _init_container(job: dict) -> dict:
    (init,) = _pod(job)["initContainers"]
    return init


def test_a_model_named_by_its_hub_id_is_downloaded_once_into_the_output_volume():
    job_spec = spec(model=HUB_MODEL, output={"pvc": "checkpoints", "path": "/mnt/out"},
                    secrets={"hfToken": {"name": "hf", "key": "token"}})
    job = render.batch_job(OWNER, job_spec, plan(), SETTINGS, attempt=0)
    init = _init_container(job)
    assert init["name"] == "model-cache"
    assert init["image"] == _container(job)["image"]
    assert init["command"] == ["python", "-m", "finetune_trainer.model_cache"]
    assert init["args"] == ["--config", "/etc/finetune/trainer.yaml"]
    assert init["securityContext"] == _container(job)["securityContext"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in init["env"]}
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env["HOME"] == "/tmp"  # the root filesystem is read-only
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]} == {
        "config": "/etc/finetune", "scratch": "/tmp", "output": "/mnt/out"}
    config = TrainerConfig.parse(render.config_map(OWNER, job_spec, plan())["data"][
        "trainer.yaml"])
    assert config.model_cache == "/mnt/out/.cache/huggingface"
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_a_cache_pvc_holds_the_download_for_the_init_step_and_the_ranks():
    job_spec = spec(model={**HUB_MODEL, "cachePvc": "hub-cache"})
    job = render.batch_job(OWNER, job_spec, plan(), SETTINGS, attempt=0)
    volumes = {v["name"]: v for v in _pod(job)["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hub-cache"}
    for container in (_init_container(job), _container(job)):
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["model-cache"] == "/model-cache"
    assert "output" not in {m["name"] for m in _init_container(job)["volumeMounts"]}
    config = TrainerConfig.parse(render.config_map(OWNER, job_spec, plan())["data"][
        "trainer.yaml"])
    assert config.model_cache == "/model-cache"
    # the output emptyDir holds no download then
    assert volumes["output"]["emptyDir"]["sizeLimit"] == format_gib(
        storage.output_bytes(job_spec, plan(), model_on_output=False))


def test_the_output_empty_dir_of_a_downloaded_model_has_room_for_the_download():
    job = render.batch_job(OWNER, spec(model=HUB_MODEL), plan(), SETTINGS, attempt=0)
    output = next(v for v in _pod(job)["volumes"] if v["name"] == "output")
    assert output["emptyDir"]["sizeLimit"] == format_gib(
        storage.output_bytes(spec(model=HUB_MODEL), plan(), model_on_output=True))


@pytest.mark.parametrize("model", [TINY_MODEL, {"path": "models/base"}],
                         ids=["init-random", "model-path"])
def test_random_weights_and_a_model_path_download_nothing(model):
    job_spec = spec(model=model)
    job = render.batch_job(OWNER, job_spec, plan(), SETTINGS, attempt=0)
    assert "initContainers" not in _pod(job)
    assert "model-cache" not in {v["name"] for v in _pod(job)["volumes"]}
    config = TrainerConfig.parse(render.config_map(OWNER, job_spec, plan())["data"][
        "trainer.yaml"])
    assert config.model_cache is None


@pytest.mark.parametrize("endpoint", [None, "http://hub-mirror.internal:8080",
                                      "https://hf.example.com/mirror"])
def test_the_operators_hub_endpoint_reaches_the_model_download_and_the_ranks(endpoint):
    job_spec = spec(model=HUB_MODEL, dataset={"train": {"hf": "org/chats"}})
    settings = Settings(default_image="registry.example/trainer:1", hf_endpoint=endpoint)
    job = render.batch_job(OWNER, job_spec, plan(), settings, attempt=0)
    init_env = {e["name"]: e.get("value") for e in _init_container(job)["env"]}
    for env in (_env(job), init_env):
        assert env.get("HF_ENDPOINT") == endpoint
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
