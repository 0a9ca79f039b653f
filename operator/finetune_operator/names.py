"""Deterministic names of the Kubernetes objects derived from a FineTuneJob, and the labels
and annotations the operator puts on them or reads from them.

The operator finds its children by these names, never by label selectors, so that a restart at
any point finds exactly what it created before. Validation uses the same functions to reject a
FineTuneJob name that would make any derived name or pod hostname too long.
"""

from __future__ import annotations

from finetune_operator.apirules import DNS_LABEL_MAX

# Labels of every child (and of the training pods): which app, who manages it, which job.
APP_LABEL = "app.kubernetes.io/name"
TRAINER_APP = "finetune-trainer"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "finetune-operator"
JOB_LABEL = "finetune.dev/job"
ATTEMPT_LABEL = "finetune.dev/attempt"  # on the batch Job and pods of one attempt
# Kueue's queue label: the batch Job of a job with resources.queueName carries it.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# What the Job controller puts on its pods (Kubernetes >= 1.27): their Job, their index.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# The key of the trainer config in the ConfigMap, and the container that runs the launcher (torchrun).
CONFIG_KEY = "trainer.yaml"
TRAINER_CONTAINER = "trainer"
# The init container that downloads a model named by its Hub id into the job's cache.
MODEL_CACHE_CONTAINER = "model-cache"
# The trainer container's metrics port of local rank 0; local rank r's is metrics_port_name(r).
METRICS_PORT_NAME = "metrics"
# On the sizing pod: what its result depends on (finetune_operator.sizing.sizing_key).
SIZING_KEY_ANNOTATION = "finetune.dev/sizing-key"

def metrics_port_name(local_rank: int) -> str:
    """The container port name of local rank `local_rank`'s metrics: `metrics`, `metrics-1`,
    `metrics-2`... The chart's PodMonitor lists the same names, one endpoint each (a port
    name is an IANA service name: at most 15 characters, `metrics-63` is 10)."""
    return METRICS_PORT_NAME if local_rank == 0 else f"{METRICS_PORT_NAME}-{local_rank}"


def config_map_name(job: str) -> str:
    """The ConfigMap holding the resolved trainer config."""
    return f"{job}-trainer"


def service_name(job: str) -> str:
    """The headless Service: pods' subdomain, rendezvous and metrics."""
    return job


def batch_job_name(job: str, restart: int) -> str:
    """The batch/v1 Job of attempt `restart` (0 for the first run)."""
    return f"{job}-r{restart}"


def sizing_pod_name(job: str) -> str:
    """The pod that reads a model the catalog lacks (finetune_operator.sizing)."""
    return f"{job}-size"


def pod_hostname(job: str, restart: int, index: int) -> str:
    """Hostname of the pod with completion index `index` (Indexed Job convention)."""
    return f"{batch_job_name(job, restart)}-{index}"


def rendezvous_host(job: str, restart: int, namespace: str) -> str:
    """Stable DNS name of node rank 0, the torchrun rendezvous endpoint."""
    return f"{pod_hostname(job, restart, 0)}.{service_name(job)}.{namespace}.svc"


def longest_derived_name(job: str, max_restarts: int, max_nodes: int) -> str:
    """The longest derived name that must fit a DNS label (Service name, pod hostname).

    ConfigMap and pod names are DNS subdomains (253 characters) and never the limit.
    """
    candidates = [service_name(job), pod_hostname(job, max_restarts, max_nodes - 1)]
    return max(candidates, key=len)


def max_job_name_length(max_restarts: int, max_nodes: int) -> int:
    """The longest FineTuneJob name whose derived names all fit in a DNS label."""
    overhead = len(longest_derived_name("", max_restarts, max_nodes))
    return DNS_LABEL_MAX - overhead


# The operator's memory calibration table (calibration.py): a ConfigMap of its own namespace,
# kept across jobs and releases (the chart's -calibration Role may write this one only).
CALIBRATION_CONFIG_MAP = "finetune-calibration"


# The validating webhook's handler id, and so its path (/<id>) on kopf's webhook server: the
# chart's ValidatingWebhookConfiguration calls it there.
WEBHOOK_ID = "validate-finetunejob"
