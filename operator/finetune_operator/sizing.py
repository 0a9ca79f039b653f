"""Sizing a model the catalog lacks, in the cluster: the sizing pod and what it reports.

Pure, like render.py. When the planner needs the model itself (planner.needs_sizing), the
operator creates one short pod in the job's namespace, owned by the FineTuneJob, that runs

    finetune size --model NAME [--revision R] --termination-log /dev/termination-log
    finetune size --path /data/PATH ...          (a model on the dataset's volume)

with the job's Hugging Face token from its Secret by secretKeyRef: the token stays in the
job's namespace, the operator never reads the Secret, and the pod has no service account
token (it needs no RBAC). It writes one JSON object to its termination message, which the
operator reads from the pod's status: a `ModelSizing` (the config keys that size the model
and the exact parameter count of its safetensors headers), or `{"error": REASON, "message":
...}` in the user's words. The result is kept in status.sizing, so the pod runs once.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from finetune_contract.api import FineTuneJobSpec, ModelSizing
from finetune_contract.layout import DATA_ROOT, TRAINER_UID
from pydantic import ValidationError

from finetune_operator import names
from finetune_operator import policy as policies
from finetune_operator.render import container_security

# The app label of the sizing pod: not the trainer's, so no PodMonitor scrapes it.
SIZING_APP = "finetune-sizing"
SIZING_CONTAINER = "size"
# The kubelet keeps at most 4096 bytes of a termination message.
TERMINATION_LOG = "/dev/termination-log"
MESSAGE_LIMIT = 4096
# A sizing pod reads a few KB: longer than this, something hangs (the Hub, DNS, a proxy).
DEADLINE_SECONDS = 300
# The user the operator image runs as (operator/Dockerfile).
OPERATOR_UID = 65532
DEFAULT_REVISION = "main"

# The config.json keys the planner reads (planner/parameters.py), so that the result fits in
# a termination message whatever else a config holds.
PLANNER_KEYS = frozenset({
    "model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "tie_word_embeddings", "attention_bias", "mlp_bias", "num_local_experts",
    "num_experts_per_tok", "max_position_embeddings", "torch_dtype", "dtype",
    "n_embd", "n_layer", "n_head", "n_positions", "n_inner",
})


class SizingFailed(Exception):
    """The model could not be sized: `reason` (RepoNotFound, GatedRepo, TokenRefused,
    InvalidToken, RevisionNotFound, NoConfig, Unreachable, ...) and a message in the user's
    words. `here_only`: a failure of this machine (no network, offline), not of the job."""

    def __init__(self, reason: str, message: str, *, here_only: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.here_only = here_only

    def to_json(self) -> str:
        return json.dumps({"error": self.reason, "message": self.message[:3000]})


def planner_config(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a config.json that size the model. A multimodal config keeps its language
    model's under text_config: those are read when the top level has no sizes."""
    text = config.get("text_config")
    if isinstance(text, dict) and "hidden_size" not in config and "n_embd" not in config:
        config = {**text, "model_type": text.get("model_type") or config.get("model_type")}
    return {k: v for k, v in config.items() if k in PLANNER_KEYS and v is not None}


def sizing_key(spec: FineTuneJobSpec) -> str:
    """What a sizing result depends on: the model, the revision, the token's Secret (a job
    edited to name another Secret may now see a gated model), the data volume of a path."""
    m, token = spec.model, spec.secrets.hf_token
    parts = [f"name={m.name}" if m.name else f"path={m.path}", f"revision={DEFAULT_REVISION}"]
    if token:
        parts.append(f"token={token.name}/{token.key}")
    if m.path and spec.dataset.pvc:
        parts.append(f"pvc={spec.dataset.pvc}")
    return ";".join(parts)


def model_path_in_pod(spec: FineTuneJobSpec) -> str | None:
    """Where the sizing pod (like the trainer) sees model.path."""
    path = spec.model.path
    if not path:
        return None
    return path if PurePosixPath(path).is_absolute() else str(PurePosixPath(DATA_ROOT) / path)


def size_args(spec: FineTuneJobSpec) -> list[str]:
    """The `finetune size` arguments for the job's model."""
    if spec.model.name and not spec.model.path:
        source = ["--model", spec.model.name, "--revision", DEFAULT_REVISION]
    else:
        source = ["--path", model_path_in_pod(spec) or ""]
    return ["size", *source, "--termination-log", TERMINATION_LOG]


def sizing_pod(owner: Any, spec: FineTuneJobSpec, *, operator_image: str,
               trainer_image: str, hf_endpoint: str | None = None,
               policy: policies.Policy = policies.NO_POLICY) -> dict[str, Any]:
    """The pod that sizes the job's model. `owner` is a render.Owner.

    The operator image (huggingface_hub, no torch) sizes a Hub model, or a model.path on the
    dataset's volume, mounted read-only at /data as in the trainer's pods. A model.path
    without that volume is inside the trainer image: the trainer image sizes it."""
    on_image = bool(spec.model.path) and not spec.dataset.pvc
    env: list[dict[str, Any]] = [
        # The root filesystem is read-only: huggingface_hub's cache goes to the scratch volume.
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "HF_HUB_DISABLE_PROGRESS_BARS", "value": "1"},
    ]
    if hf_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": hf_endpoint})
    token = spec.secrets.hf_token
    if token:
        env.append({"name": "HF_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": token.name, "key": token.key}}})
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": "/tmp"}]
    if spec.model.path and spec.dataset.pvc:
        volumes.append({"name": "data", "persistentVolumeClaim": {
            "claimName": spec.dataset.pvc, "readOnly": True}})
        mounts.append({"name": "data", "mountPath": DATA_ROOT, "readOnly": True})
    uid = TRAINER_UID if on_image else OPERATOR_UID  # each image's own user
    security: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
                                "seccompProfile": {"type": "RuntimeDefault"}}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": DEADLINE_SECONDS,
        # It reads the Hub or a volume, never the API server.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security,
        "containers": [{
            "name": SIZING_CONTAINER,
            "image": (spec.image or trainer_image) if on_image else operator_image,
            "command": ["finetune"],
            "args": size_args(spec),
            "env": env,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"memory": "512Mi"}},
            "volumeMounts": mounts,
            "terminationMessagePath": TERMINATION_LOG,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": container_security(),
        }],
        "volumes": volumes,
    }
    # Nodes a cluster reserves for training may be the only ones; the policy's forced
    # tolerations and node selector hold for every pod of a tenant's job.
    tolerations = policies.pod_tolerations(policy, spec.resources.tolerations)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if policy.forced_node_selector:
        pod_spec["nodeSelector"] = dict(policy.forced_node_selector)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.sizing_pod_name(owner.name),
            "namespace": owner.namespace,
            "labels": {names.APP_LABEL: SIZING_APP, names.MANAGED_BY_LABEL: names.MANAGER,
                       names.JOB_LABEL: owner.name},
            "annotations": {names.SIZING_KEY_ANNOTATION: sizing_key(spec)},
            "ownerReferences": [owner.reference()],
        },
        "spec": pod_spec,
    }


# --------------------------------------------------------------------------- the result


def result_message(sizing: ModelSizing) -> str:
    """What `finetune size` writes to its termination message (at most MESSAGE_LIMIT)."""
    text = json.dumps(sizing.to_wire(), separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > MESSAGE_LIMIT:  # an unusual config: the sizes alone
        slim = sizing.model_copy(update={"config": {
            k: v for k, v in sizing.config.items() if k != "architectures"}})
        text = json.dumps(slim.to_wire(), separators=(",", ":"), sort_keys=True)
    return text


def parse_result(message: str) -> ModelSizing:
    """A sizing pod's termination message: the ModelSizing, or SizingFailed with the
    pod's own words (its last log lines when it wrote no message)."""
    text = (message or "").strip()
    try:
        value = json.loads(text.splitlines()[-1] if text else "")
    except ValueError:
        value = None
    if isinstance(value, dict) and "error" in value:
        raise SizingFailed(str(value.get("error") or "Failed"), str(value.get("message") or ""))
    if isinstance(value, dict):
        try:
            return ModelSizing.model_validate(value)
        except ValidationError:
            pass
    tail = text[-500:] if text else "no output"
    raise SizingFailed("Failed", f"the sizing pod ended without a result: {tail}")
