"""The Kubernetes objects of one FineTuneJob attempt, as plain dicts.

Pure functions of (owner, spec, plan, settings, attempt): the ConfigMap with the resolved
trainer config, the headless Service that gives node rank 0 a stable DNS name, and the
batch/v1 Indexed Job whose pods form the training gang. Nothing here talks to the API server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from finetune_contract import api, rules
from finetune_contract.api import FineTuneJobSpec, Plan
from finetune_contract.layout import (
    DATA_ROOT,
    METRICS_PORT,
    OUTPUT_ROOT,
    RENDEZVOUS_PORT,
    TRAINER_LAUNCH_COMMAND,
    TRAINER_UID,
)
from finetune_contract.trainer_config import TrainerConfig

from finetune_operator import names, placement, policy
from finetune_operator.planner import storage
from finetune_operator.settings import Settings
from finetune_operator.sizes import format_gib, parse_quantity

CONFIG_DIR = "/etc/finetune"
CONFIG_PATH = f"{CONFIG_DIR}/{names.CONFIG_KEY}"
GPU_RESOURCE = "nvidia.com/gpu"
# The volume of model.cachePvc and where it is mounted; without one the cache is a folder of
# the output volume.
CACHE_VOLUME = "model-cache"
MODEL_CACHE_DIR = "/model-cache"
OUTPUT_CACHE_DIR = ".cache/huggingface"
# What torchrun keeps of the pod's grace period to exit after its ranks (_shutdown_timeout).
TORCHRUN_EXIT_SECONDS = 5
SHM_DIR = "/dev/shm"
SCRATCH_DIR = "/tmp"
# Where the pod mounts its volumes other than the output's (the data and the model cache only
# with their claims): the output may be mounted at none of them, nor inside or above one
# (apicheck.py refuses such an output.path).
FIXED_MOUNT_PATHS = (CONFIG_DIR, SHM_DIR, SCRATCH_DIR, DATA_ROOT, MODEL_CACHE_DIR)


@dataclass(frozen=True)
class Owner:
    """The FineTuneJob that owns the children: every child carries its ownerReference."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def trainer_config(owner: Owner, spec: FineTuneJobSpec, plan: Plan) -> TrainerConfig:
    """What every rank of every pod reads from /etc/finetune/trainer.yaml."""
    return TrainerConfig(
        name=owner.name,
        namespace=owner.namespace,
        spec=spec,
        plan=plan,
        data_root=DATA_ROOT,
        output_dir=pod_output_path(spec),
        model_cache=model_cache_path(spec),
        run_id=owner.uid,
        device="cpu" if plan.gpu == "cpu" else "cuda",
        metrics_port=METRICS_PORT,
    )


def config_map(owner: Owner, spec: FineTuneJobSpec, plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, names.config_map_name(owner.name)),
        "data": {names.CONFIG_KEY: trainer_config(owner, spec, plan).dump_yaml()},
    }


def service(owner: Owner) -> dict[str, Any]:
    """Headless, and publishing not-ready pods: ranks resolve rank 0 before it is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, names.service_name(owner.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {names.JOB_LABEL: owner.name, names.APP_LABEL: names.TRAINER_APP},
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT},
                {"name": "metrics", "port": METRICS_PORT,
                 "targetPort": METRICS_PORT},
            ],
        },
    }


def batch_job(owner: Owner, spec: FineTuneJobSpec, plan: Plan, settings: Settings,
              attempt: int) -> dict[str, Any]:
    """The Indexed Job of attempt `attempt` (0 for the first run, +1 per gang restart).

    Created suspended when the run is suspended or queued (Kueue admits the whole gang by
    unsuspending it). backoffLimit 0: one failed rank fails the Job, and the operator decides
    whether to restart the gang from the latest checkpoint.
    """
    name = names.batch_job_name(owner.name, attempt)
    queue = spec.resources.queue_name
    metadata = _metadata(owner, name, attempt)
    if queue:
        metadata["labels"][names.KUEUE_QUEUE_LABEL] = queue
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": plan.nodes,
            "parallelism": plan.nodes,
            "backoffLimit": 0,
            "suspend": spec.run_policy.suspend or bool(queue),
            "template": _pod_template(owner, spec, plan, settings, attempt),
        },
    }


def children(owner: Owner, spec: FineTuneJobSpec, plan: Plan, settings: Settings,
             attempt: int) -> list[dict[str, Any]]:
    """Every child of an attempt, in creation order (the Job last: it needs the others)."""
    return [config_map(owner, spec, plan), service(owner),
            batch_job(owner, spec, plan, settings, attempt)]


def pod_output_path(spec: FineTuneJobSpec) -> str:
    """spec.output.path inside the pod; a relative path (fine for local runs) goes under
    /output."""
    path = PurePosixPath(spec.output.path)
    return str(path if path.is_absolute() else PurePosixPath(OUTPUT_ROOT) / path)


def model_cache_path(spec: FineTuneJobSpec) -> str | None:
    """The Hugging Face cache that the init container fills with a model named by its Hub id
    and the ranks load it from: model.cachePvc, else a folder of the output volume (on an
    emptyDir, without output.pvc, every new pod downloads again). None: nothing to download."""
    if not rules.downloads_weights(spec.model):
        return None
    if spec.model.cache_pvc:
        return MODEL_CACHE_DIR
    return str(PurePosixPath(pod_output_path(spec)) / OUTPUT_CACHE_DIR)


def torchrun_args(owner: Owner, plan: Plan, attempt: int) -> list[str]:
    """torchrun's arguments as a list: no shell, no user text interpreted."""
    endpoint = f"{names.rendezvous_host(owner.name, attempt, owner.namespace)}:{RENDEZVOUS_PORT}"
    return [
        "--nnodes", str(plan.nodes),
        "--nproc-per-node", str(plan.gpus_per_node),
        # Kubernetes expands $(NODE_RANK) from the container's env (the completion index).
        "--node-rank", "$(NODE_RANK)",
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", f"{owner.uid}-{attempt}",
        # The operator restarts the whole gang; torchrun must not restart ranks by itself.
        "--max-restarts", "0",
        *_shutdown_timeout(plan),
        "-m", "finetune_trainer",
        "--config", CONFIG_PATH,
    ]


def _shutdown_timeout(plan: Plan) -> list[str]:
    """On SIGTERM torchrun passes the signal to its ranks and kills them after its shutdown
    timeout (30 s by default): it must wait as long as the pod's grace period allows, less
    a few seconds for its own exit, or it cuts the emergency checkpoint short."""
    if not plan.termination_grace_seconds:
        return []
    wait = plan.termination_grace_seconds - TORCHRUN_EXIT_SECONDS
    return ["--shutdown-timeout", str(wait)]


# --------------------------------------------------------------------------- pod


def _pod_template(owner: Owner, spec: FineTuneJobSpec, plan: Plan, settings: Settings,
                  attempt: int) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "subdomain": names.service_name(owner.name),
        "restartPolicy": "Never",
        # The trainer never talks to the API server: give it no credentials to leak.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            # The image's user; fsGroup makes the output volume writable for it.
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_trainer_container(owner, spec, plan, settings, attempt)],
        **_init_containers(spec, settings),
        "volumes": _volumes(owner, spec, plan),
    }
    if plan.termination_grace_seconds:
        pod_spec["terminationGracePeriodSeconds"] = plan.termination_grace_seconds
    resources = spec.resources
    # The GPU type the plan was made for, as node labels (placement.py).
    # The policy's forced entries are added to the job's own (policy.py).
    pod_spec.update(placement.node_constraints(
        settings.gpu_node_labels, plan.gpu,
        policy.pod_node_selector(settings.policy, resources.node_selector)))
    tolerations = policy.pod_tolerations(settings.policy, resources.tolerations)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if resources.priority_class_name:
        pod_spec["priorityClassName"] = resources.priority_class_name
    return {
        "metadata": {"labels": _labels(owner, attempt)},
        "spec": pod_spec,
    }


def _trainer_container(owner: Owner, spec: FineTuneJobSpec, plan: Plan, settings: Settings,
                       attempt: int) -> dict[str, Any]:
    return {
        "name": names.TRAINER_CONTAINER,
        "image": _image(spec, settings),
        "command": list(TRAINER_LAUNCH_COMMAND),
        "args": torchrun_args(owner, plan, attempt),
        "env": _env(owner, spec, plan, attempt) + _hub_env(settings),
        "ports": [
            *_metrics_ports(plan),
            {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(spec, plan),
        "volumeMounts": _volume_mounts(spec),
        "securityContext": container_security(),
    }


def _init_containers(spec: FineTuneJobSpec, settings: Settings) -> dict[str, Any]:
    """The download of a model named by its Hub id into the job's cache, before the ranks
    start (python -m finetune_trainer.model_cache, in the trainer image: the operator's has
    no Hub client). A cache that holds the model already is left as it is. {} when there is
    nothing to download."""
    volume = _cache_volume(spec)
    if volume is None:
        return {}
    mounts = [m for m in _volume_mounts(spec) if m["name"] in ("config", "scratch", volume)]
    return {"initContainers": [{
        "name": names.MODEL_CACHE_CONTAINER,
        "image": _image(spec, settings),
        "command": ["python", "-m", "finetune_trainer.model_cache"],
        "args": ["--config", CONFIG_PATH],
        "env": _scratch_env() + _token_env(spec) + _hub_env(settings),
        "volumeMounts": mounts,
        "securityContext": container_security(),
    }]}


def _image(spec: FineTuneJobSpec, settings: Settings) -> str:
    return spec.image or settings.default_image


def container_security() -> dict[str, Any]:
    """The restricted Pod Security Standard for one container (trainer, init, sizing)."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _metrics_ports(plan: Plan) -> list[dict[str, Any]]:
    """One named port per local rank: each rank serves its own samples on METRICS_PORT + its
    local rank, and the chart's PodMonitor scrapes every one of them by name."""
    return [{"name": names.metrics_port_name(rank), "containerPort": METRICS_PORT + rank,
             "protocol": "TCP"} for rank in range(plan.gpus_per_node)]


def _env(owner: Owner, spec: FineTuneJobSpec, plan: Plan, attempt: int) -> list[dict[str, Any]]:
    """PyTorchJob-style variables (WORLD_SIZE counts pods there, as here) and torchrun's PET_*."""
    master = names.rendezvous_host(owner.name, attempt, owner.namespace)
    node_rank = {"valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{names.COMPLETION_INDEX_ANNOTATION}']"}}}
    env: list[dict[str, Any]] = [
        {"name": "NODE_RANK", **node_rank},
        {"name": "PET_NODE_RANK", **node_rank},
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        {"name": "WORLD_SIZE", "value": str(plan.nodes)},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        {"name": "PET_NNODES", "value": str(plan.nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(plan.gpus_per_node)},
        {"name": "FINETUNE_ATTEMPT", "value": str(attempt)},
        *_scratch_env(),
    ]
    if plan.gpu == "cpu":
        # One thread per rank: two threads per rank collapse when the cores are shared.
        env += [{"name": "OMP_NUM_THREADS", "value": "1"},
                {"name": "DS_ACCELERATOR", "value": "cpu"}]
    elif plan.cpu_per_node:
        # CPU Adam (offloading) steps on OpenMP threads, and torchrun gives every rank one
        # unless OMP_NUM_THREADS is set: each rank gets its share of the pod's cores.
        env.append({"name": "OMP_NUM_THREADS", "value": str(_threads_per_rank(spec, plan))})
    return env + _token_env(spec) + _tracking_env(spec)


def _scratch_env() -> list[dict[str, Any]]:
    """The root filesystem is read-only: caches go to the scratch volume (hf: datasets to
    HF_HOME; a model named by its Hub id to its own cache, model_cache_path)."""
    return [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "TORCH_EXTENSIONS_DIR", "value": "/tmp/torch_extensions"},
        {"name": "TRITON_CACHE_DIR", "value": "/tmp/triton"},
    ]


def _hub_env(settings: Settings) -> list[dict[str, Any]]:
    """The Hub mirror the operator is configured with (FINETUNE_HF_ENDPOINT): the init
    container downloads the model from it and the ranks read hf: datasets from it, as the
    sizing pod sizes the model there. [] for the Hub itself."""
    return [{"name": "HF_ENDPOINT", "value": settings.hf_endpoint}] if settings.hf_endpoint \
        else []


def _token_env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    token = spec.secrets.hf_token
    if not token:
        return []
    return [{"name": "HF_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": token.name, "key": token.key}}}]


def _tracking_env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """The trackers' credentials, from their Secrets: the trainer config (a ConfigMap) says
    where to log, never with what key."""
    t = spec.training
    refs = {}
    if t.mlflow:
        refs |= {"MLFLOW_TRACKING_TOKEN": t.mlflow.token,
                 "MLFLOW_TRACKING_USERNAME": t.mlflow.username,
                 "MLFLOW_TRACKING_PASSWORD": t.mlflow.password}
    if t.wandb:
        refs["WANDB_API_KEY"] = t.wandb.api_key
    return [{"name": variable, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            for variable, ref in refs.items() if ref]


def _resources(spec: FineTuneJobSpec, plan: Plan) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if plan.gpu != "cpu":
        # Extended resources must be requested and limited alike.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(plan.gpus_per_node)
    cpu = _cpu_request(spec, plan)
    if cpu:
        requests["cpu"] = cpu
    if spec.resources.memory:
        requests["memory"] = spec.resources.memory
    elif plan.host_memory_per_node:
        requests["memory"] = format_gib(plan.host_memory_per_node)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _cpu_request(spec: FineTuneJobSpec, plan: Plan) -> str | None:
    """The user's resources.cpu, else the cores the planner sized (CPU ranks, CPU Adam)."""
    return spec.resources.cpu or (str(plan.cpu_per_node) if plan.cpu_per_node else None)


def _threads_per_rank(spec: FineTuneJobSpec, plan: Plan) -> int:
    cores = parse_quantity(spec.resources.cpu, "cpu") if spec.resources.cpu else plan.cpu_per_node
    return max(1, int(cores) // plan.gpus_per_node)


def _volumes(owner: Owner, spec: FineTuneJobSpec, plan: Plan) -> list[dict[str, Any]]:
    # Every emptyDir has a sizeLimit (the planner's sizes): a run that outgrows one is
    # evicted, saying so, instead of filling the node's disk or memory.
    sizes = storage.volume_sizes(spec, plan, model_on_output=_cache_volume(spec) == "output")
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config_map_name(owner.name)}},
        # NCCL and DeepSpeed's CPU collective share buffers through /dev/shm; the default
        # is 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory",
                                      "sizeLimit": format_gib(sizes.shared_memory)}},
        {"name": "scratch", "emptyDir": {"sizeLimit": format_gib(sizes.scratch)}},
    ]
    if spec.dataset.pvc:
        volumes.append({"name": "data", "persistentVolumeClaim": {
            "claimName": spec.dataset.pvc, "readOnly": True}})
    if _cache_volume(spec) == CACHE_VOLUME:
        volumes.append({"name": CACHE_VOLUME,
                        "persistentVolumeClaim": {"claimName": spec.model.cache_pvc}})
    if spec.output.pvc:
        volumes.append({"name": "output",
                        "persistentVolumeClaim": {"claimName": spec.output.pvc}})
    else:
        # Without a PVC checkpoints live as long as the pod: restarts start over.
        volumes.append({"name": "output", "emptyDir": {"sizeLimit": format_gib(sizes.output)}})
    return volumes


def _volume_mounts(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": SHM_DIR},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "output", "mountPath": pod_output_path(spec)},
    ]
    if spec.dataset.pvc:
        mounts.append({"name": "data", "mountPath": DATA_ROOT, "readOnly": True})
    if _cache_volume(spec) == CACHE_VOLUME:
        mounts.append({"name": CACHE_VOLUME, "mountPath": MODEL_CACHE_DIR})
    return mounts


def _cache_volume(spec: FineTuneJobSpec) -> str | None:
    """The volume holding the model cache, if there is one to fill."""
    if model_cache_path(spec) is None:
        return None
    return CACHE_VOLUME if spec.model.cache_pvc else "output"


# --------------------------------------------------------------------------- metadata


def _labels(owner: Owner, attempt: int | None = None) -> dict[str, str]:
    labels = {
        names.APP_LABEL: names.TRAINER_APP,
        names.MANAGED_BY_LABEL: names.MANAGER,
        names.JOB_LABEL: owner.name,
    }
    if attempt is not None:
        labels[names.ATTEMPT_LABEL] = str(attempt)
    return labels


def _metadata(owner: Owner, name: str, attempt: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": _labels(owner, attempt),
        "ownerReferences": [owner.reference()],
    }
