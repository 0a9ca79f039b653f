"""Operator settings, read once from environment variables (the Helm chart sets them).

| Variable                      | Default                | Meaning                                      |
|-------------------------------|------------------------|----------------------------------------------|
| FINETUNE_DEFAULT_IMAGE        | DEFAULT_TRAINER_IMAGE  | trainer image when spec.image is empty       |
| FINETUNE_DEFAULT_GPU          | (the API's default)    | GPU type when spec.resources.gpu is omitted  |
| FINETUNE_WATCH_NAMESPACES     | (empty: all)           | comma-separated namespaces to watch          |
| FINETUNE_METRICS_PORT         | 8080                   | operator Prometheus metrics port             |
| FINETUNE_PROGRESS_INTERVAL    | 15                     | seconds between reads of rank 0's metrics    |
| FINETUNE_RESYNC_INTERVAL      | 10                     | seconds between periodic reconciles of a job |
| FINETUNE_UNSCHEDULABLE_AFTER  | 300                    | seconds a pod may stay Pending before the    |
|                               |                        | job gets an Unschedulable condition          |
| FINETUNE_STUCK_PODS_FAIL_AFTER| 0 (never)              | seconds a job may wait on an image or config |
|                               |                        | error (PodsStuck) before it fails            |
| FINETUNE_LOG_LEVEL            | INFO                   | DEBUG, INFO, WARNING or ERROR                |
| FINETUNE_GPU_NODE_LABELS      | (empty: GFD's label)   | JSON {enabled, key, values}: the node label  |
|                               |                        | training pods of a GPU type require          |
|                               |                        | (placement.py; the chart's                   |
|                               |                        | trainer.gpuNodeLabels)                       |
| FINETUNE_SIZING_IMAGE         | DEFAULT_OPERATOR_IMAGE | image of the sizing pod (the operator's own) |
| FINETUNE_HF_ENDPOINT          | (empty: the Hub)       | HF_ENDPOINT of the sizing pod, the model     |
|                               |                        | download and the ranks (a mirror)            |
| FINETUNE_POLICY               | (empty: no limits)     | JSON: the multi-tenant policy (policy.py;    |
|                               |                        | the chart's policy)                          |
| FINETUNE_WEBHOOK_PORT         | 0 (off)                | port of the validating admission webhook     |
|                               |                        | (admission.py; the chart's webhook)          |
| FINETUNE_WEBHOOK_SERVICE      | (empty)                | DNS name of the webhook's Service: the       |
|                               |                        | serving certificate is made for it           |
| FINETUNE_WEBHOOK_SECRET       | (empty)                | Secret (in the operator's namespace) that    |
|                               |                        | keeps the self-signed CA and certificate     |
| FINETUNE_WEBHOOK_CONFIGURATION| (empty)                | ValidatingWebhookConfiguration to put the CA |
|                               |                        | in                                           |
| FINETUNE_WEBHOOK_CERT_DIR     | (empty: self-signed)   | tls.crt, tls.key and ca.crt made by          |
|                               |                        | cert-manager, mounted: used as they are      |
| FINETUNE_NAMESPACE            | (empty)                | the operator's own namespace (the chart's    |
|                               |                        | release namespace): the webhook Secret and   |
|                               |                        | the calibration ConfigMap live there         |
| FINETUNE_CALIBRATION          | (empty: on with a      | true or false: keep the measured memory of   |
|                               | FINETUNE_NAMESPACE)    | finished jobs and plan with it               |
|                               |                        | (calibration.py; the chart's                 |
|                               |                        | calibration.enabled)                         |

A bad value is reported naming the variable, never as a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from finetune_operator import names, placement
from finetune_operator import policy as policies
from finetune_operator.placement import GpuNodeLabels
from finetune_operator.policy import NO_POLICY, Policy

DEFAULT_TRAINER_IMAGE = "ghcr.io/finetune-dev/finetune-trainer:0.1.0"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/finetune-dev/finetune-operator:0.1.0"
DEFAULT_METRICS_PORT = 8080
# kopf's liveness endpoint; the chart's livenessProbe points here.
LIVENESS_PORT = 8081
LIVENESS_PATH = "/healthz"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """An environment variable with a value the operator cannot use."""


@dataclass(frozen=True)
class WebhookSettings:
    """The validating admission webhook (admission.py, controller/webhook_tls.py)."""

    port: int
    service: str  # <service>.<namespace>.svc: the name the API server calls
    namespace: str = ""  # the operator's, where the certificate Secret lives
    secret: str = ""  # the Secret that keeps the self-signed CA and serving certificate
    configuration: str = ""  # the ValidatingWebhookConfiguration its CA goes into
    cert_dir: str = ""  # cert-manager's tls.crt, tls.key and ca.crt, mounted; "": self-signed


@dataclass(frozen=True)
class CalibrationSettings:
    """The memory calibration table (calibration.py, controller/calibration.py)."""

    namespace: str  # the operator's, where the ConfigMap lives
    config_map: str = names.CALIBRATION_CONFIG_MAP


@dataclass(frozen=True)
class Settings:
    """Everything the operator is configured with besides the FineTuneJobs themselves."""

    default_image: str = DEFAULT_TRAINER_IMAGE
    default_gpu: str | None = None
    watch_namespaces: tuple[str, ...] = ()
    metrics_port: int = DEFAULT_METRICS_PORT
    progress_interval: float = 15.0
    resync_interval: float = 10.0
    unschedulable_after: float = 300.0
    # Seconds a job may be PodsStuck (an image or config error) before it fails; 0: never.
    stuck_pods_fail_after: float = 0.0
    log_level: str = "INFO"
    # None: the pods get no GPU-type node constraint.
    gpu_node_labels: GpuNodeLabels | None = field(default_factory=GpuNodeLabels)
    sizing_image: str = DEFAULT_OPERATOR_IMAGE
    hf_endpoint: str | None = None
    # What tenants' jobs may ask for (images, tolerations, nodes, sizes); none: anything.
    policy: Policy = NO_POLICY
    webhook: WebhookSettings | None = None  # None: no admission webhook
    calibration: CalibrationSettings | None = None  # None: plans are the planner's own


    @property
    def all_namespaces(self) -> bool:
        return not self.watch_namespaces

    @property
    def liveness_endpoint(self) -> str:
        return f"http://0.0.0.0:{LIVENESS_PORT}{LIVENESS_PATH}"


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (os.environ by default); raises SettingsError naming the variable."""
    env = os.environ if env is None else env
    defaults = Settings()
    return Settings(
        default_image=env.get("FINETUNE_DEFAULT_IMAGE", "").strip() or defaults.default_image,
        default_gpu=env.get("FINETUNE_DEFAULT_GPU", "").strip() or None,
        watch_namespaces=_namespaces(env.get("FINETUNE_WATCH_NAMESPACES", "")),
        metrics_port=_port(env, "FINETUNE_METRICS_PORT", defaults.metrics_port),
        progress_interval=_seconds(env, "FINETUNE_PROGRESS_INTERVAL", defaults.progress_interval),
        resync_interval=_seconds(env, "FINETUNE_RESYNC_INTERVAL", defaults.resync_interval),
        unschedulable_after=_seconds(
            env, "FINETUNE_UNSCHEDULABLE_AFTER", defaults.unschedulable_after
        ),
        stuck_pods_fail_after=_seconds(
            env, "FINETUNE_STUCK_PODS_FAIL_AFTER", defaults.stuck_pods_fail_after,
            zero_means="never"
        ),
        log_level=_log_level(env.get("FINETUNE_LOG_LEVEL", "")),
        gpu_node_labels=_gpu_node_labels(env.get("FINETUNE_GPU_NODE_LABELS", "")),
        sizing_image=env.get("FINETUNE_SIZING_IMAGE", "").strip() or defaults.sizing_image,
        hf_endpoint=env.get("FINETUNE_HF_ENDPOINT", "").strip() or None,
        policy=_policy(env.get("FINETUNE_POLICY", "")),
        webhook=_webhook(env),
        calibration=_calibration(env),
    )


def _calibration(env: Mapping[str, str]) -> CalibrationSettings | None:
    """On by default where the operator knows its namespace (the chart says it); an operator
    run from a laptop (`finetune operator`) has none of its own, and plans uncalibrated."""
    raw = env.get("FINETUNE_CALIBRATION", "")
    text = raw.strip().lower()
    if text not in ("", "true", "false"):
        raise SettingsError(f"FINETUNE_CALIBRATION (the chart's calibration.enabled) must be "
                            f"true or false (got {raw!r})")
    namespace = env.get("FINETUNE_NAMESPACE", "").strip()
    if text == "false" or (text == "" and not namespace):
        return None
    if not namespace:
        raise SettingsError("FINETUNE_CALIBRATION is true, so FINETUNE_NAMESPACE must be set "
                            "too: the calibration ConfigMap lives in the operator's namespace "
                            "(the chart sets it)")
    return CalibrationSettings(namespace=namespace)


def _webhook(env: Mapping[str, str]) -> WebhookSettings | None:
    if env.get("FINETUNE_WEBHOOK_PORT", "").strip() in ("", "0"):
        return None
    port = _port(env, "FINETUNE_WEBHOOK_PORT", 0)
    values = {var: env.get(var, "").strip() for var in (
        "FINETUNE_WEBHOOK_SERVICE", "FINETUNE_WEBHOOK_SECRET", "FINETUNE_WEBHOOK_CONFIGURATION",
        "FINETUNE_WEBHOOK_CERT_DIR", "FINETUNE_NAMESPACE")}
    needed = ["FINETUNE_WEBHOOK_SERVICE"]
    if not values["FINETUNE_WEBHOOK_CERT_DIR"]:  # self-signed: kept in a Secret, injected
        needed += ["FINETUNE_WEBHOOK_SECRET", "FINETUNE_WEBHOOK_CONFIGURATION",
                   "FINETUNE_NAMESPACE"]
    missing = [var for var in needed if not values[var]]
    if missing:
        raise SettingsError(f"FINETUNE_WEBHOOK_PORT is set, so {' and '.join(missing)} must be "
                            "too (the chart sets them all)")
    return WebhookSettings(
        port=port, service=values["FINETUNE_WEBHOOK_SERVICE"],
        namespace=values["FINETUNE_NAMESPACE"], secret=values["FINETUNE_WEBHOOK_SECRET"],
        configuration=values["FINETUNE_WEBHOOK_CONFIGURATION"],
        cert_dir=values["FINETUNE_WEBHOOK_CERT_DIR"])


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ns.strip() for ns in text.split(",") if ns.strip()))


def _port(env: Mapping[str, str], var: str, default: int) -> int:
    text = env.get(var, "").strip()
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SettingsError(f"{var} must be a port number 1-65535 (got {text!r})")
    return int(text)


def _seconds(env: Mapping[str, str], var: str, default: float,
             zero_means: str | None = None) -> float:
    """A positive number of seconds; 0 too where it has a meaning (`zero_means`)."""
    text = env.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{var} must be a number of seconds (got {text!r})") from None
    if zero_means is not None and value == 0:
        return 0.0
    if not value > 0 or value == float("inf"):
        zero = f", or 0 for {zero_means}" if zero_means else ""
        raise SettingsError(f"{var} must be a positive number of seconds{zero} "
                            f"(got {text!r})")
    return value


def _log_level(text: str) -> str:
    level = text.strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise SettingsError(f"FINETUNE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} "
                            f"(got {text!r})")
    return level


def _gpu_node_labels(text: str) -> GpuNodeLabels | None:
    try:
        return placement.parse(text)
    except placement.LabelsError as err:
        raise SettingsError(f"FINETUNE_GPU_NODE_LABELS (the chart's trainer.gpuNodeLabels) "
                            f"{err}") from None


def _policy(text: str) -> Policy:
    try:
        return policies.parse(text)
    except policies.PolicyError as err:
        raise SettingsError(f"FINETUNE_POLICY (the chart's policy) {err}") from None
