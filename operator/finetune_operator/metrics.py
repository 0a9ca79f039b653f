"""The operator's own Prometheus metrics, in a registry of their own.

Label names avoid `job` (Prometheus renames a scraped `job` label to `exported_job`): per-job
series are labelled `namespace` and `finetunejob`.
"""

from __future__ import annotations

import threading

from finetune_contract.api import PHASES, Goodput, LostTime, Progress
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

JOB_LABELS = ("namespace", "finetunejob")
COST_BOUNDS = ("low", "high")  # the fields of CostRange: label `bound` of finetune_job_cost_usd


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.jobs = Gauge("finetune_operator_jobs", "FineTuneJobs by phase.", ["phase"],
                          registry=self.registry)
        self.reconcile_seconds = Histogram(
            "finetune_operator_reconcile_seconds", "Time to reconcile one FineTuneJob.",
            registry=self.registry)
        self.restarts = Counter("finetune_operator_restarts_total",
                                "Whole-gang restarts started by the operator, per job.",
                                JOB_LABELS, registry=self.registry)
        self.api_errors = Counter("finetune_operator_api_errors_total",
                                  "Failed Kubernetes API calls (not counting 404 on read "
                                  "and 409 on create).", registry=self.registry)
        self.tokens_per_second = Gauge("finetune_job_tokens_per_second",
                                       "Training throughput of a job, from its rank 0.",
                                       JOB_LABELS, registry=self.registry)
        self.loss = Gauge("finetune_job_loss", "Latest training loss of a job.", JOB_LABELS,
                          registry=self.registry)
        self.progress_ratio = Gauge("finetune_job_progress_ratio",
                                    "Optimizer steps done / planned, 0 to 1.", JOB_LABELS,
                                    registry=self.registry)
        self.steps_redone = Counter(
            "finetune_job_steps_redone_total", "Optimizer steps trained again after an "
            "interruption (restart, preemption, suspension), per job.", JOB_LABELS,
            registry=self.registry)
        self.goodput = Gauge("finetune_job_goodput_ratio", "Productive step time over wall "
                             "time since the job's pods first ran, 0 to 1.", JOB_LABELS,
                             registry=self.registry)
        self.tokens_per_second_per_gpu = Gauge(
            "finetune_job_tokens_per_second_per_gpu", "Training throughput per rank (per GPU; "
            "per CPU rank on cpu).", JOB_LABELS, registry=self.registry)
        self.mfu = Gauge("finetune_job_mfu", "Model FLOPs utilization: 6 x parameters x "
                         "tokens/s over the ranks' catalog peak, 0 to 1.", JOB_LABELS,
                         registry=self.registry)
        self.gpu_hours = Gauge("finetune_job_gpu_hours", "GPU-hours (rank-hours on cpu) the "
                               "job's runs held so far.", JOB_LABELS, registry=self.registry)
        self.lost_seconds = Gauge("finetune_job_lost_seconds", "Seconds since the job first ran "
                                  "that trained nothing new, by cause.", [*JOB_LABELS, "cause"],
                                  registry=self.registry)
        self.cost_usd = Gauge("finetune_job_cost_usd", "What those GPU-hours cost at the low "
                              "and high end of the GPU catalog's hourly price range.",
                              [*JOB_LABELS, "bound"], registry=self.registry)
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        for phase in PHASES:
            self.jobs.labels(phase=phase).set(0)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def observe_phase(self, namespace: str, name: str, phase: str) -> None:
        with self._lock:
            self._phases[(namespace, name)] = phase
            self._publish_phases()

    def forget(self, namespace: str, name: str) -> None:
        """A deleted job: drop its phase and its per-job series."""
        with self._lock:
            self._phases.pop((namespace, name), None)
            self._publish_phases()
        for gauge in (self.tokens_per_second, self.loss, self.progress_ratio, self.restarts,
                      self.steps_redone, self.goodput, self.tokens_per_second_per_gpu,
                      self.mfu, self.gpu_hours):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass
        for gauge, labels in ((self.lost_seconds, LostTime.model_fields),
                              (self.cost_usd, COST_BOUNDS)):
            for label in labels:
                try:
                    gauge.remove(namespace, name, label)
                except KeyError:
                    pass

    def tracked_jobs(self) -> set[tuple[str, str]]:
        """(namespace, name) of the jobs counted in finetune_operator_jobs."""
        with self._lock:
            return set(self._phases)

    def observe_progress(self, namespace: str, name: str, progress: Progress) -> None:
        if progress.tokens_per_second is not None:
            self.tokens_per_second.labels(namespace, name).set(progress.tokens_per_second)
        if progress.loss is not None:
            self.loss.labels(namespace, name).set(progress.loss)
        if progress.step is not None and progress.total_steps:
            self.progress_ratio.labels(namespace, name).set(
                min(1.0, progress.step / progress.total_steps))

    def observe_steps_redone(self, namespace: str, name: str, steps: int) -> None:
        """Count steps found redone; the series exists (at 0) from a job's first progress."""
        self.steps_redone.labels(namespace, name).inc(max(0, steps))

    def _publish_phases(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.jobs.labels(phase=phase).set(count)

    def observe_goodput(self, namespace: str, name: str, goodput: Goodput) -> None:
        for gauge, value in ((self.goodput, goodput.ratio),
                             (self.tokens_per_second_per_gpu, goodput.tokens_per_second_per_gpu),
                             (self.mfu, goodput.mfu), (self.gpu_hours, goodput.gpu_hours)):
            if value is not None:
                gauge.labels(namespace, name).set(value)
        for cause, seconds in goodput.lost_seconds.model_dump().items():
            self.lost_seconds.labels(namespace, name, cause).set(seconds)
        if goodput.cost_usd is not None:
            for bound in COST_BOUNDS:
                self.cost_usd.labels(namespace, name, bound).set(getattr(goodput.cost_usd, bound))
