"""Section 3: the real operator (kopf, in its own process) against the kmock API emulator.

For each count N, a fresh emulator (tests/support/emulator.py, plus request counting) and a
fresh `kopf run -m finetune_operator.main` process; the bench creates N FineTuneJobs as fast
as one client can, then waits until every job has all its children (ConfigMap, Service,
batch Job) and the operator has stopped writing. Reported:
- per-job latency from the job's creation to its last child's creation (p50, p95),
- total time from the first creation to the last child, and jobs/s over it,
- the operator process's peak RSS (VmHWM),
- the operator's API requests per job by verb and resource (the bench's own requests, sent
  with their own User-Agent, are not counted).

The emulator answers in microseconds and ignores selectors and pagination, so this measures
the operator's own cost per job, not a real API server's.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test emulator (tests/support), reused as is

from finetune_contract import api
from finetune_operator import names

from tests.support.emulator import ApiServerEmulator, EmulatorThread

BENCH_AGENT = "finetune-bench"
CHILD_KINDS = ("configmaps", "services", "jobs")
QUIET_SECONDS = 2.0
# kmock checks every request against its whole request log (by identity, to find which
# reaction matches), so each request costs O(log): with 32 entries that check was over half
# of the bench process's CPU at 500 jobs, and the bench process (one core at most: the
# emulator and the creating client share its GIL) bounded the rate. A short log is enough as
# long as it outlives the requests in flight at the same time (the operator's 8 reconcile
# threads, its 2 watches, the creating client); a request trimmed too early would get a 500,
# and those are counted (`server_errors`).
REQUEST_LOG_KEPT = 16
START_TIMEOUT = 60.0
VERBS = {"CREATE": "create", "DELETE": "delete", "FETCH": "get", "LIST": "list",
         "WATCH": "watch"}


def job_spec() -> dict[str, Any]:
    """A typical GPU job: the operator plans it (catalog model, 8 x H100 nodes)."""
    return {
        "model": {"name": "meta-llama/Llama-3.1-8B"},
        "dataset": {"format": "messages", "train": {"path": "chat/train.jsonl"}},
        "training": {"epochs": 1, "globalBatchSize": 64, "maxSeqLength": 4096},
        "resources": {"gpu": "H100-80GB", "gpusPerNode": 8, "maxNodes": 2},
        "output": {"pvc": "finetune-output"},
    }


class CountingEmulator(ApiServerEmulator):
    """The test emulator, counting every request and timing job and child creations."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.created: dict[str, float] = {}
        self.children: dict[str, dict[str, float]] = defaultdict(dict)
        self.last_write = 0.0
        self.server_errors = 0  # requests kmock found no reaction for (500)

    async def _handle(self, request: Any) -> Any:
        del self._requests[:-REQUEST_LOG_KEPT]
        now = time.monotonic()
        resource = self._resource(request)
        mine = request.headers.get("User-Agent", "").startswith(BENCH_AGENT)
        if resource is not None and not mine:
            verb = self._verb(request)
            what = resource + (f"/{request.subresource}" if request.subresource else "")
            self.requests[(verb, what)] += 1
            if verb not in ("get", "list", "watch"):
                self.last_write = now
        if request.action is not None and request.action.name == "CREATE" \
                and isinstance(request.data, dict):
            meta = request.data.get("metadata") or {}
            if resource == api.PLURAL:
                self.created[meta.get("name", "")] = now
            elif resource in CHILD_KINDS:
                owner = (meta.get("labels") or {}).get(names.JOB_LABEL)
                if owner:
                    self.children[owner].setdefault(resource, now)
        try:
            return await super()._handle(request)
        except NotImplementedError:
            self.server_errors += 1
            raise

    @staticmethod
    def _resource(request: Any) -> str | None:
        ref = request.resource
        if ref is None:
            return None
        if ref.plural is None:  # API discovery of a group/version
            return f"discovery {'/'.join(filter(None, [ref.group, ref.version]))}"
        return ref.plural

    @staticmethod
    def _verb(request: Any) -> str:
        name = request.action.name if request.action is not None else "?"
        if name == "UPDATE":
            return "patch" if str(request.method).upper().endswith("PATCH") else "update"
        return VERBS.get(name, name.lower())


class CountingEmulatorThread(EmulatorThread):
    emulator_class = CountingEmulator


@dataclass
class ScaleResult:
    jobs: int
    completed: int  # jobs with all their children when counting stopped
    timed_out: bool
    created_seconds: float  # the bench creating all jobs
    total_seconds: float  # first creation to last child
    jobs_per_second: float
    latency_p50: float
    latency_p95: float
    latency_max: float
    peak_rss: int
    requests_per_job: dict[str, float] = field(default_factory=dict)
    writes_per_job: float = 0.0
    window_seconds: float = 0.0  # how long requests were counted (timers add reads over time)
    operator_cpu_seconds: float = 0.0  # user+sys of the operator process over the window
    bench_cpu_seconds: float = 0.0  # user+sys of this process (emulator and creating client)
    server_errors: int = 0  # 500s from the emulator (none expected)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(kubeconfig: Path) -> Any:
    import kubernetes

    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig),
                                       client_configuration=config)
    client = kubernetes.client.ApiClient(config)
    client.user_agent = BENCH_AGENT
    return kubernetes.client.CustomObjectsApi(client)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_one(count: int, work: Path, namespace: str = "bench",
                timeout: float = 300.0) -> ScaleResult:
    work.mkdir(parents=True, exist_ok=True)
    emulator_thread = CountingEmulatorThread().start()
    log = (work / f"operator-{count}.log").open("wb")
    operator: subprocess.Popen | None = None
    try:
        emulator = emulator_thread.emulator
        kubeconfig = emulator_thread.write_kubeconfig(work / "kubeconfig.yaml")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig),
               "FINETUNE_METRICS_PORT": str(_free_port()), "PYTHONUNBUFFERED": "1"}
        operator = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--all-namespaces", "--standalone",
             "-m", "finetune_operator.main"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=ROOT)
        _wait(lambda: emulator.requests[("watch", api.PLURAL)] > 0, START_TIMEOUT,
              "the operator to watch FineTuneJobs", operator)
        custom = _client(kubeconfig)
        spec = job_spec()
        cpu_before = _cpu_seconds(operator.pid)
        own_before = _own_cpu_seconds()
        started = time.monotonic()
        for index in range(count):
            custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL,
                {"apiVersion": api.API_VERSION, "kind": api.KIND,
                 "metadata": {"name": f"job-{index:04d}", "namespace": namespace},
                 "spec": spec})
        created = time.monotonic() - started

        def complete() -> bool:
            return len(emulator.children) >= count and all(
                len(kinds) == len(CHILD_KINDS) for kinds in list(emulator.children.values()))

        try:
            _wait(complete, timeout, f"children of {count} jobs", operator)
            # Let the operator finish its status writes and events, then stop counting.
            _wait(lambda: time.monotonic() - emulator.last_write > QUIET_SECONDS, timeout,
                  "the operator to stop writing", operator)
            timed_out = False
        except TimeoutError:
            timed_out = True  # reported: how many jobs had all their children by then
        window = time.monotonic() - started
        operator_cpu = _cpu_seconds(operator.pid) - cpu_before
        bench_cpu = _own_cpu_seconds() - own_before
        peak = _peak_rss(operator.pid)
        requests = dict(emulator.requests)
        server_errors = emulator.server_errors
        done = [name for name in emulator.created
                if len(emulator.children.get(name, {})) == len(CHILD_KINDS)]
        latencies = [max(emulator.children[name].values()) - emulator.created[name]
                     for name in done] or [float("nan")]
        last_child = max((max(emulator.children[name].values()) for name in done),
                         default=time.monotonic())
        first = min(emulator.created.values())
    finally:
        if operator is not None:
            _stop(operator)
        log.close()
        emulator_thread.stop()
    per_job = {f"{verb} {what}": n / count for (verb, what), n in sorted(requests.items())}
    writes = sum(n for (verb, _), n in requests.items() if verb not in ("get", "list", "watch"))
    total = last_child - first
    return ScaleResult(
        jobs=count, completed=len(done), timed_out=timed_out,
        created_seconds=created, total_seconds=total,
        jobs_per_second=len(done) / total if total > 0 else float("inf"),
        latency_p50=statistics.median(latencies), latency_p95=_percentile(latencies, 0.95),
        latency_max=max(latencies), peak_rss=peak, requests_per_job=per_job,
        writes_per_job=writes / count, window_seconds=window,
        operator_cpu_seconds=operator_cpu, bench_cpu_seconds=bench_cpu,
        server_errors=server_errors)


def _wait(check: Any, timeout: float, what: str, operator: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited ({operator.returncode}) while waiting for "
                               f"{what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def measure(work: Path, counts: tuple[int, ...] = (10, 100, 500), timeout: float = 300.0,
            log=print) -> list[ScaleResult]:
    results = []
    for count in counts:
        result = measure_one(count, work / f"n{count}", timeout=timeout)
        log(f"  {count} jobs ({result.completed} complete): {result.total_seconds:.1f} s ({result.jobs_per_second:.1f} jobs/s),"
            f" p50 {result.latency_p50 * 1000:.0f} ms, p95 {result.latency_p95 * 1000:.0f} ms, "
            f"peak RSS {result.peak_rss / 2**20:.0f} MiB, {result.writes_per_job:.1f} writes/job, "
            f"operator CPU {result.operator_cpu_seconds / count * 1000:.1f} ms/job, "
            f"bench CPU {result.bench_cpu_seconds / count * 1000:.1f} ms/job")
        results.append(result)
    return results
