"""The API server's rules (apirules.py) applied to a FineTuneJob: to the spec fields that are
copied into the children, naming the field the user wrote, and to every rendered child before
it is created.

The spec check runs in validate_job, so `finetune validate` and the operator refuse the job
with the field named. The check of rendered objects catches what only exists once rendered
(the ConfigMap's size, the derived names and labels): the lifecycle fails the job with it
instead of creating some children and having the API server refuse the next with 422.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finetune_contract.api import FineTuneJobSpec

from finetune_operator import apirules, render
from finetune_operator.caps import echo

Finding = tuple[str, str]  # (field path, what is wrong)


# --------------------------------------------------------------------------- the spec


def spec_problems(spec: FineTuneJobSpec) -> list[Finding]:
    """Fields the children carry as they are, checked as the API server will check them."""
    r = spec.resources
    out = _labels("spec.resources.nodeSelector", r.node_selector)
    for i, toleration in enumerate(r.tolerations):
        out += [(f"spec.resources.tolerations[{i}].{field}", msg)
                for field, msg in apirules.toleration_errors(toleration.to_wire())]
    if r.queue_name:  # the Job's kueue.x-k8s.io/queue-name label: a label value
        out += _field("spec.resources.queueName", r.queue_name, apirules.label_value_errors)
    if r.priority_class_name:
        out += _field("spec.resources.priorityClassName", r.priority_class_name,
                      apirules.dns_1123_subdomain_errors)
    token = spec.secrets.hf_token
    if token is not None:
        out += _field("spec.secrets.hfToken.name", token.name,
                      apirules.dns_1123_subdomain_errors)
        out += _field("spec.secrets.hfToken.key", token.key, apirules.config_map_key_errors)
    if spec.image is not None:
        out += _field("spec.image", spec.image, apirules.image_errors)
    return out + _output_mount_problems(spec)


def _field(path: str, value: str, rule: Callable[[str], list[str]]) -> list[Finding]:
    shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    return [(path, f"{msg} (got {shown})") for msg in rule(value)]


def _output_mount_problems(spec: FineTuneJobSpec) -> list[Finding]:
    """The output volume is mounted at output.path: on a fixed mount's path the API server
    refuses the pod (mount paths are unique), inside or above one the pod breaks."""
    mounted = render.pod_output_path(spec)
    clashes = [fixed for fixed in render.FIXED_MOUNT_PATHS if apirules.overlaps(mounted, fixed)]
    if not clashes:
        return []
    return [("spec.output.path", (f"the pod would mount the output at {echo(mounted)}, on top of, "
             f"inside or above {', '.join(clashes)}; the pod mounts its own volumes at "
             f"{', '.join(render.FIXED_MOUNT_PATHS)}: choose another folder, such as "
             "/output/model"))]


# --------------------------------------------------------------------------- rendered objects


def children_problems(objects: list[dict[str, Any]]) -> list[str]:
    """What the API server would refuse of the rendered `objects`, as 'Kind name: field:
    reason'."""
    return [f"{obj['kind']} {obj['metadata']['name']}: {field}: {msg}"
            for obj in objects for field, msg in object_problems(obj)]


def object_problems(obj: dict[str, Any]) -> list[Finding]:
    meta = obj["metadata"]
    naming = (apirules.dns_1035_label_errors if obj["kind"] == "Service"
              else apirules.dns_1123_subdomain_errors)
    out = [("metadata.name", msg) for msg in naming(meta["name"])]
    out += _labels("metadata.labels", meta.get("labels") or {})
    if obj["kind"] == "ConfigMap":
        out += _config_map_problems(obj.get("data") or {})
    elif obj["kind"] == "Job":
        template = obj["spec"]["template"]
        out += _labels("spec.template.metadata.labels",
                       (template.get("metadata") or {}).get("labels") or {})
        out += _pod_problems("spec.template.spec", template["spec"])
    elif obj["kind"] == "Pod":
        out += _pod_problems("spec", obj["spec"])
    return out


def _labels(path: str, labels: dict[str, str]) -> list[Finding]:
    """A bad key is told at the map, a bad value at its key."""
    out = [(path, f"key {echo(key)}: {msg}") for key in labels
           for msg in apirules.label_key_errors(key)]
    for key, value in labels.items():
        out += _field(f"{path}.{key}", value, apirules.label_value_errors)
    return out


def _config_map_problems(data: dict[str, str]) -> list[Finding]:
    out = [(f"data.{key}", msg) for key in data for msg in apirules.config_map_key_errors(key)]
    size = apirules.config_map_size(data)
    if size > apirules.CONFIG_MAP_DATA_MAX:
        out.append(("data", (f"is {size} bytes, over the API server's limit of "
                    f"{apirules.CONFIG_MAP_DATA_MAX} (1 MiB); the trainer config holds the "
                    "spec: make the large fields of it (model.config, ...) smaller")))
    return out


def _pod_problems(path: str, pod: dict[str, Any]) -> list[Finding]:
    out = _labels(f"{path}.nodeSelector", pod.get("nodeSelector") or {})
    for i, toleration in enumerate(pod.get("tolerations") or []):
        out += [(f"{path}.tolerations[{i}].{field}", msg)
                for field, msg in apirules.toleration_errors(toleration)]
    if pod.get("priorityClassName"):
        out += [(f"{path}.priorityClassName", msg)
                for msg in apirules.dns_1123_subdomain_errors(pod["priorityClassName"])]
    for group in ("initContainers", "containers"):
        for i, container in enumerate(pod.get(group) or []):
            out += _container_problems(f"{path}.{group}[{i}]", container)
    return out


def _container_problems(path: str, container: dict[str, Any]) -> list[Finding]:
    out = [(f"{path}.image", msg) for msg in apirules.image_errors(container.get("image", ""))]
    mounts = [m["mountPath"] for m in container.get("volumeMounts") or []]
    out += [(f"{path}.volumeMounts", f"mountPath {echo(p)} is used twice (they must be unique)")
            for p in apirules.duplicate_mount_paths(mounts)]
    for i, env in enumerate(container.get("env") or []):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            where = f"{path}.env[{i}].valueFrom.secretKeyRef"
            out += [(f"{where}.name", m) for m in apirules.dns_1123_subdomain_errors(ref["name"])]
            out += [(f"{where}.key", m) for m in apirules.config_map_key_errors(ref["key"])]
    return out
