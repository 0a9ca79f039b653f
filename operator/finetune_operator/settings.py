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
| FINETUNE_LOG_LEVEL            | INFO                   | DEBUG, INFO, WARNING or ERROR                |
| FINETUNE_SIZING_IMAGE         | DEFAULT_OPERATOR_IMAGE | image of the sizing pod (the operator's own) |
| FINETUNE_HF_ENDPOINT          | (empty: the Hub)       | HF_ENDPOINT of the sizing pod (a mirror)     |

A bad value is reported naming the variable, never as a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

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
class Settings:
    """Everything the operator is configured with besides the FineTuneJobs themselves."""

    default_image: str = DEFAULT_TRAINER_IMAGE
    default_gpu: str | None = None
    watch_namespaces: tuple[str, ...] = ()
    metrics_port: int = DEFAULT_METRICS_PORT
    progress_interval: float = 15.0
    resync_interval: float = 10.0
    unschedulable_after: float = 300.0
    log_level: str = "INFO"
    sizing_image: str = DEFAULT_OPERATOR_IMAGE
    hf_endpoint: str | None = None

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
        log_level=_log_level(env.get("FINETUNE_LOG_LEVEL", "")),
        sizing_image=env.get("FINETUNE_SIZING_IMAGE", "").strip() or defaults.sizing_image,
        hf_endpoint=env.get("FINETUNE_HF_ENDPOINT", "").strip() or None,
    )


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ns.strip() for ns in text.split(",") if ns.strip()))


def _port(env: Mapping[str, str], var: str, default: int) -> int:
    text = env.get(var, "").strip()
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SettingsError(f"{var} must be a port number 1-65535 (got {text!r})")
    return int(text)


def _seconds(env: Mapping[str, str], var: str, default: float) -> float:
    text = env.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{var} must be a number of seconds (got {text!r})") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{var} must be a positive number of seconds (got {text!r})")
    return value


def _log_level(text: str) -> str:
    level = text.strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise SettingsError(f"FINETUNE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} "
                            f"(got {text!r})")
    return level
