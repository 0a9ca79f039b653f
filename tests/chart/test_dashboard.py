"""The Grafana dashboard's queries, evaluated by a real Prometheus that scrapes a real 2-node run
the way the chart's PodMonitor and ServiceMonitor describe it.

Two torchrun "nodes" of 2 CPU ranks each train the tiny model on this machine (static
rendezvous: node k's local rank r is global rank 2k + r). Each node plays one training pod:
its ranks bind their metrics ports (metricsPort + local rank, as in a pod) on a loopback
address of its own (127.a.b.1, 127.a.b.2 stand for the pod IPs). The pods the operator renders
for the job (`render.batch_job`), given those IPs, are what `monitors.Discovery` lists; the
scrape jobs are the chart's monitors translated as tests/e2e/monitors.py translates them for
the real cluster. A real `OperatorMetrics` serves on a third address behind the chart's
metrics Service, fed by the operator's own rank-0 read (`rank0_metrics_url`,
`fetch_progress`), plus known restarts and reconciles.

After the run, every query of the dashboard JSON is evaluated through Prometheus's HTTP API at
one instant when all four ranks had reported, and checked against what the ranks themselves
reported at that instant: tokens/s is the rate rank 0 reported (every rank reports the rate of
all ranks, so a sum would show 4 times it), peak memory has one series per rank, and so on.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_contract.api import Goodput, LostTime, Plan, Progress
from finetune_operator import goodput, render
from finetune_operator.controller.progress import rank0_metrics_url
from finetune_operator.local.launcher import (
    TrainingProcess,
    free_port_block,
    rank_environment,
    torchrun_command,
)
from finetune_operator.local.runner import load_job, plan_for_machine
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.planner.gpus import CATALOG
from finetune_operator.scrape import ProgressUnavailable, fetch_progress
from finetune_operator.settings import Settings
from prometheus_client import CollectorRegistry

from tests.chart.helpers import NAMESPACE as RELEASE_NAMESPACE
from tests.chart.helpers import dashboard, helm_template, metrics_service, one
from tests.conftest import require_tool
from tests.e2e import monitors
from tests.support.local_run import write_job
from tests.support.prometheus import start_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

JOB = "dash-2x2"
JOB_NAMESPACE = "team-a"
NODES, RANKS_PER_NODE = 2, 2
WORLD = NODES * RANKS_PER_NODE
MAX_STEPS = 30
EVAL_STEPS = 10
RESTARTS = 1  # what the stand-in operator counts for the job
RUN_TIMEOUT = 420


# --------------------------------------------------------------------------- addresses


def _free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _node_addresses() -> list[str]:
    """Loopback addresses for the two pods and the operator: 127.a.b.1..3, a and b random
    so that two runs of this test on one machine do not meet."""
    a, b = random.randrange(1, 255), random.randrange(1, 255)
    return [f"127.{a}.{b}.{i}" for i in (1, 2, 3)]


def _metrics_base(hosts: list[str], wanted: int) -> int:
    """The pods' port (9400, what the operator renders) when it is free on every address;
    otherwise a free block, the rendered container ports shifted to it."""
    def block_free(base: int) -> bool:
        return all(_free(h, base + r) for h in hosts for r in range(RANKS_PER_NODE))

    if block_free(wanted):
        return wanted
    for _ in range(50):
        base = free_port_block(RANKS_PER_NODE, host=hosts[0])
        if block_free(base):
            return base
    pytest.fail("no free block of metrics ports on the loopback addresses")


# --------------------------------------------------------------------------- the run


def _job_file(folder: Path) -> Path:
    path = write_job(folder, max_steps=MAX_STEPS, save_steps=MAX_STEPS, name=JOB)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["training"]["evalSteps"] = EVAL_STEPS
    doc["spec"]["resources"].update(gpu="cpu", gpusPerNode=RANKS_PER_NODE, nodes=NODES,
                                    maxNodes=NODES, strategy="ddp")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _pods(template: dict[str, Any], batch_job: str, ips: list[str],
          shift: int) -> list[dict[str, Any]]:
    """The Job's pods as the API server would list them: the rendered template, the Job
    controller's label and completion index, the pod IPs."""
    pods = []
    for index, ip in enumerate(ips):
        spec = json.loads(json.dumps(template["spec"]))
        for container in spec["containers"]:
            for port in container.get("ports", []):
                if port["name"] != "rendezvous":
                    port["containerPort"] += shift
        meta = template["metadata"]
        pods.append({
            "metadata": {"name": f"{batch_job}-{index}-abcde", "namespace": JOB_NAMESPACE,
                         "labels": {**meta["labels"], "batch.kubernetes.io/job-name": batch_job},
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "spec": spec,
            "status": {"podIP": ip, "phase": "Running"},
        })
    return pods


def _node_command(config: Path, node: int, master_port: int) -> list[str]:
    """torchrun for node `node` of the gang: the local launcher's command, its standalone
    rendezvous replaced by the static one of a multi-node run (node 0 hosts the store)."""
    command = [a for a in torchrun_command(config, RANKS_PER_NODE)
               if a != "--standalone" and not a.startswith("--max-restarts")]
    module = command.index("finetune_trainer") - 1  # "-m finetune_trainer"
    return [*command[:module], f"--nnodes={NODES}", f"--node-rank={node}",
            "--master-addr=127.0.0.1", f"--master-port={master_port}", "--max-restarts=0",
            *command[module:]]


# --------------------------------------------------------------------------- the operator


def _operator_objects(helm: str, metrics_port: int, ip: str) -> tuple[list[dict], list[dict],
                                                                       list[dict]]:
    """The chart's monitors (1 s scrapes), its metrics Service and an EndpointSlice that puts
    the stand-in operator's address behind it."""
    objects = helm_template(
        helm, "--set", "podMonitor.enabled=true", "--set", "serviceMonitor.enabled=true",
        "--set", "podMonitor.interval=1s", "--set", "podMonitor.scrapeTimeout=1s",
        "--set", "serviceMonitor.interval=1s", "--set", "serviceMonitor.scrapeTimeout=1s",
        "--set", f"metricsPort={metrics_port}")
    monitors_ = [o for o in objects if o["kind"] in ("PodMonitor", "ServiceMonitor")]
    service = metrics_service(objects)
    deployment = one(objects, "Deployment")
    container_ports = {p["name"]: p["containerPort"] for c in
                       deployment["spec"]["template"]["spec"]["containers"]
                       for p in c.get("ports", [])}
    slice_ = {
        "metadata": {"name": f"{service['metadata']['name']}-x1", "namespace": RELEASE_NAMESPACE,
                     "labels": {"kubernetes.io/service-name": service["metadata"]["name"]}},
        "endpoints": [{"addresses": [ip], "targetRef": {"kind": "Pod",
                                                         "name": "ft-operator-0"}}],
        "ports": [{"name": p["name"], "port": container_ports[p["targetPort"]]}
                  for p in service["spec"]["ports"]],
    }
    return monitors_, [service], [slice_]


class StandInOperator:
    """The operator's metrics registry, fed each second the way the operator feeds it: phase
    Running, a reconcile, and the progress read from node rank 0 with the operator's own
    functions."""

    def __init__(self, pods: list[dict[str, Any]], batch_job: str, plan: Plan) -> None:
        self.metrics = OperatorMetrics(CollectorRegistry())
        self.pods, self.batch_job, self.plan = pods, batch_job, plan
        self.started = datetime.now(UTC)  # the job's status.startTime
        # (the goodput published, the progress read it came from), in order
        self.published: list[tuple[Goodput, Progress]] = []
        self.urls: set[str] = set()
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, ip: str, port: int) -> None:
        self.metrics.serve(port, addr=ip)
        self.metrics.observe_phase(JOB_NAMESPACE, JOB, "Running")
        self.metrics.restarts.labels(JOB_NAMESPACE, JOB).inc(RESTARTS)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            started = time.monotonic()
            url = rank0_metrics_url(self.pods, self.batch_job)
            if url:
                self.urls.add(url)
                try:
                    progress = fetch_progress(url, timeout=1.0)
                except ProgressUnavailable:
                    pass
                else:
                    self.reads += progress.step is not None
                    self.metrics.observe_progress(JOB_NAMESPACE, JOB, progress)
                    self._observe_goodput(progress)
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)

    def _observe_goodput(self, progress: Progress) -> None:
        previous = self.published[-1][0] if self.published else None
        new = goodput.observe(previous, progress, None, self.plan, self.started,
                              datetime.now(UTC))
        if new is not None:
            self.metrics.observe_goodput(JOB_NAMESPACE, JOB, new)
            self.published.append((new, progress))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


# --------------------------------------------------------------------------- Prometheus


def _start_prometheus(folder: Path, config: dict[str, Any]) -> tuple[subprocess.Popen, str]:
    (folder / "prometheus.yml").write_text(yaml.safe_dump(monitors.prometheus_config(config)))
    return start_prometheus(folder, f"127.0.0.1:{free_port_block(1)}")


def _api(url: str, path: str, **params: Any) -> Any:
    query = urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        pytest.fail(f"Prometheus refused {path} {params}: {error.read().decode()}")
    assert body["status"] == "success", body
    return body["data"]


def query(url: str, promql: str, at: float) -> list[dict[str, Any]]:
    data = _api(url, "query", query=promql, time=f"{at:.3f}")
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def _value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


def _by_rank(url: str, metric: str, at: float) -> dict[str, float]:
    selector = f'{metric}{{namespace="{JOB_NAMESPACE}",finetunejob="{JOB}"}}'
    rows = query(url, selector, at)
    ranks = [r["metric"]["rank"] for r in rows]
    assert len(ranks) == len(set(ranks)), f"{metric}: a rank scraped twice: {rows}"
    return {r["metric"]["rank"]: _value(r) for r in rows}


def _most_ranks_reported(url: str, start: float, end: float) -> tuple[float, float, int]:
    """(first, last instant, count): the span in which the most ranks had a tokens/s sample
    in Prometheus (all of them, when every rank is scraped)."""
    promql = (f'count(finetune_train_tokens_per_second{{namespace="{JOB_NAMESPACE}",'
              f'finetunejob="{JOB}"}} >= 0)')
    data = _api(url, "query_range", query=promql, start=f"{start:.3f}", end=f"{end:.3f}",
                step="0.5")
    counts = [(float(t), int(v)) for row in data["result"] for t, v in row["values"]]
    if not counts:
        targets = _api(url, "targets")["activeTargets"]
        pytest.fail("Prometheus holds no tokens/s of the run; targets: "
                    f"{[(t['scrapeUrl'], t['health'], t['lastError']) for t in targets]}")
    most = max(c for _, c in counts)
    times = [t for t, c in counts if c == most]
    return min(times), max(times), most


# --------------------------------------------------------------------------- the dashboard


def _variables() -> dict[str, str]:
    """Grafana's value of each template variable with this job selected: the name itself
    (a regex matching only it: the names hold no regex syntax but `-`)."""
    return {"namespace": JOB_NAMESPACE, "finetunejob": JOB}


def _expand(expr: str) -> str:
    for name, value in _variables().items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, f"a dashboard variable is left in {expr}"
    return expr


def _label_values(url: str, definition: str, at: float) -> set[str]:
    """Grafana's label_values(selector, label), through the series API."""
    match = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]+)\)", definition)
    assert match, definition
    selector, label = _expand(match.group(1)), match.group(2)
    series = _api(url, "series", **{"match[]": selector, "start": f"{at - 60:.3f}",
                                    "end": f"{at:.3f}"})
    return {s[label] for s in series if label in s}


def _legends(target: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Each series' legend; every label the legend names must be on the series."""
    fmt = target.get("legendFormat", "")
    legends = []
    for row in rows:
        names = [n.strip() for n in re.findall(r"\{\{([^}]+)\}\}", fmt)]
        missing = [n for n in names if n not in row["metric"]]
        assert not missing, f"legend {fmt!r} names {missing}, not on {row['metric']}"
        legends.append(re.sub(r"\{\{([^}]+)\}\}",
                              lambda m, labels=row["metric"]: labels[m.group(1).strip()], fmt))
    return legends


class Truth:
    """What the ranks and the stand-in operator reported, read at instant `at`."""

    def __init__(self, url: str, at: float, window_start: float,
                 published: list[tuple[Goodput, Progress]], job_started: float) -> None:
        self.url, self.at, self.published, self.job_started = url, at, published, job_started
        self.eta = _by_rank(url, "finetune_train_eta_seconds", at)
        self.tokens_per_second = _by_rank(url, "finetune_train_tokens_per_second", at)
        self.peak_memory = _by_rank(url, "finetune_train_peak_memory_bytes", at)
        self.loss = _by_rank(url, "finetune_train_loss", at)
        self.eval_loss = _by_rank(url, "finetune_eval_loss", at)
        self.step = _by_rank(url, "finetune_train_step", at)
        self.total_steps = _by_rank(url, "finetune_train_total_steps", at)
        self.tokens_total = _by_rank(url, "finetune_train_tokens_total", at)
        self.tokens_total_before = _by_rank(url, "finetune_train_tokens_total", window_start)
        self.window = (window_start, at)


def _one_value(rows: list[dict[str, Any]], title: str) -> float:
    assert len(rows) == 1, f"{title}: expected one series for the job, got {rows}"
    return _value(rows[0])


def _check_panel(title: str, refid: str, expr: str, rows: list[dict[str, Any]],
                 truth: Truth) -> None:
    """The rows one panel query returned (`expr`, its variables filled in), against what the
    ranks and the stand-in operator reported."""
    ranks = {str(r) for r in range(WORLD)}
    if title == "Tokens per second":
        value = _one_value(rows, title)
        reported = truth.tokens_per_second
        assert value == pytest.approx(reported["0"]), (
            f"the panel shows {value} tokens/s, rank 0 reported {reported['0']} "
            f"(ranks scraped: {reported}, their sum {sum(reported.values())})")
        # Every rank reports the rate of all ranks: a sum over ranks would read ~WORLD times it.
        for rank, rate in reported.items():
            assert 0.5 < rate / reported["0"] < 2.0, (rank, reported)
        # ... and that is the job's real throughput: tokens of all ranks over wall time.
        start, end = truth.window
        if end - start >= 5:
            done = truth.tokens_total["0"] - truth.tokens_total_before["0"]
            # `>= 0` drops the samples from before a rank's first logged rate: the gauge
            # starts as NaN, and one NaN makes the whole average NaN.
            average = _one_value(query(truth.url, f"avg_over_time((({expr}) >= 0)"
                                       f"[{end - start:.0f}s:500ms])", end), title)
            assert 0.5 < average / (done / (end - start)) < 2.0, (average, done, end - start)
    elif title == "Step progress":
        value = _one_value(rows, title)
        assert value == pytest.approx(truth.step["0"] / truth.total_steps["0"])
        assert 0 < value <= 1
    elif title == "Training loss":
        assert _one_value(rows, title) == pytest.approx(truth.loss["0"])
    elif title == "Eval loss":
        assert _one_value(rows, title) == pytest.approx(truth.eval_loss["0"])
    elif title == "Peak GPU memory per rank":
        got = {r["metric"]["rank"]: _value(r) for r in rows}
        assert len(got) == len(rows), f"a rank has two series: {rows}"
        assert got == truth.peak_memory, got
        assert set(got) == ranks, f"peak memory of ranks {sorted(got)} only, not of {ranks}"
        assert all(v > 0 for v in got.values()), got
    elif title == "Restarts per job":
        assert _one_value(rows, title) == RESTARTS
    elif title == "Jobs by phase":
        phases = {r["metric"]["phase"]: _value(r) for r in rows}
        assert phases["Running"] == 1 and sum(phases.values()) == 1, phases
    elif title == "Reconcile latency (p50, p95)":
        value = _one_value(rows, f"{title} {refid}")
        assert math.isfinite(value) and 0 < value < 5, value
    elif title == "Kubernetes API errors":
        assert _one_value(rows, title) == 0
    elif title in GOODPUT_PANELS:
        _check_goodput_panel(title, rows, truth)
    elif title == "ETA":
        value = _one_value(rows, title)
        assert value == pytest.approx(truth.eta["0"]) and value >= 0, (value, truth.eta)
    else:
        pytest.fail(f"panel {title!r} has no expectation in {__file__}: add one")


GOODPUT_PANELS = ("Goodput", "Time lost, by cause", "Tokens per second per GPU", "MFU",
                  "GPU-hours so far", "Cost so far")


def _check_goodput_panel(title: str, rows: list[dict[str, Any]], truth: Truth) -> None:
    """A panel of the operator's goodput series shows one goodput the stand-in operator
    published (which one depends on when Prometheus last scraped it), drawn right."""
    assert truth.published, "the stand-in operator never published a goodput"
    if title == "Time lost, by cause":
        shown = {r["metric"]["cause"]: _value(r) for r in rows}
        assert set(shown) == set(LostTime.model_fields), shown
        matches = [g for g, _ in truth.published if g.lost_seconds.model_dump() == shown]
    elif title == "Cost so far":
        shown = {r["metric"]["bound"]: _value(r) for r in rows}
        matches = [g for g, _ in truth.published if g.cost_usd and g.cost_usd.model_dump() == shown]
        price = CATALOG["cpu"]
        for g in matches:
            assert shown["low"] == pytest.approx(g.gpu_hours * price.price_low, abs=0.01)
            assert shown["high"] == pytest.approx(g.gpu_hours * price.price_high, abs=0.01)
    else:
        value = _one_value(rows, title)
        field = {"Goodput": "ratio", "Tokens per second per GPU": "tokens_per_second_per_gpu",
                 "MFU": "mfu", "GPU-hours so far": "gpu_hours"}[title]
        matches = [g for g, _ in truth.published if getattr(g, field) == pytest.approx(value)]
        if title == "Goodput":
            assert 0 < value <= 1, value
        elif title == "Tokens per second per GPU":
            # Per rank: the job's all-ranks rate over its ranks, never a sum of ranks.
            assert any(value == pytest.approx(p.tokens_per_second / WORLD, abs=0.05)
                       for g, p in truth.published if g.tokens_per_second_per_gpu == value)
        elif title == "MFU":
            assert 0 < value < 1, value
        else:  # the ranks' hours: never more than WORLD ranks held since the job started
            assert 0 < value <= WORLD * (truth.at - truth.job_started) / 3600, value
    assert matches, f"{title}: {rows} is none of the {len(truth.published)} goodputs published"


def _check_dashboard(url: str, truth: Truth) -> tuple[int, list[str]]:
    """(queries checked, what is wrong with them): every panel is checked, not just up to
    the first wrong one."""
    at, problems, checked = truth.at, [], 0
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            values = _label_values(url, var["definition"], at)
            expected = {JOB_NAMESPACE if var["name"] == "namespace" else JOB}
            if values != expected:
                problems.append(f"variable {var['name']}: {values}, not {expected}")
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = _expand(target["expr"])
            rows = query(url, expr, at)
            try:
                assert rows, f"no data for {target['expr']}"
                legends = _legends(target, rows)
                assert len(legends) == len(set(legends)), (
                    f"two series draw as one legend: {legends}")
                _check_panel(panel["title"], target["refId"], expr, rows, truth)
            except AssertionError as error:
                problems.append(f"{panel['title']} ({target['refId']}): {error}")
            checked += 1
    return checked, problems


# --------------------------------------------------------------------------- the test


def test_every_dashboard_query_counts_a_real_two_node_run_right(tmp_path: Path) -> None:
    helm = require_tool("helm")
    require_tool("prometheus")
    job_file = _job_file(tmp_path / "job")
    job, job_dir = load_job(str(job_file))
    plan = plan_for_machine(job.spec, job_dir, str(job_file))
    assert (plan.nodes, plan.gpus_per_node) == (NODES, RANKS_PER_NODE), plan

    owner = render.Owner(name=JOB, namespace=JOB_NAMESPACE, uid="5f0c1d2e-dash")
    rendered = render.trainer_config(owner, job.spec, plan)
    *node_ips, operator_ip = _node_addresses()
    base = _metrics_base(node_ips, rendered.metrics_port)
    batch = render.batch_job(owner, job.spec, plan, Settings(), 0)
    pods = _pods(batch["spec"]["template"], batch["metadata"]["name"], node_ips,
                 base - rendered.metrics_port)

    operator_port = free_port_block(1, host=operator_ip)
    monitor_docs, services, slices = _operator_objects(helm, operator_port, operator_ip)
    config = monitors.scrape_config(monitor_docs, tmp_path)
    assert {j["x-discovery"]["role"] for j in config["scrape_configs"]} == {"pod", "endpoints"}
    listed = {"pods": pods, "services": services, "endpointslices": slices}
    discovery = monitors.Discovery(config, lambda kind: listed[kind])

    output = tmp_path / "out"
    output.mkdir()
    master_port = free_port_block(1)
    nodes: list[TrainingProcess] = []
    stand_in = StandInOperator(pods, batch["metadata"]["name"], plan)
    server = None
    started = time.time()
    try:
        with discovery:
            server, url = _start_prometheus(tmp_path, config)
            stand_in.start(operator_ip, operator_port)
            env = rank_environment(os.environ, "cpu")
            for node, ip in enumerate(node_ips):
                node_config = rendered.model_copy(update={
                    "data_root": str(job_dir), "output_dir": str(output),
                    "metrics_host": ip, "metrics_port": base})
                path = tmp_path / f"node{node}.yaml"
                path.write_text(node_config.dump_yaml())
                nodes.append(TrainingProcess(_node_command(path, node, master_port), env,
                                             tmp_path / f"node{node}.log"))
            deadline = time.monotonic() + RUN_TIMEOUT
            while any(n.poll() is None for n in nodes) and time.monotonic() < deadline:
                time.sleep(0.5)
            logs = {n.log_path.name: n.log_path.read_text(errors="replace")[-3000:]
                    for n in nodes}
            assert all(n.poll() == 0 for n in nodes), logs
            time.sleep(1.5)  # the last scrapes land
            stand_in.stop()

            first, last, most = _most_ranks_reported(url, started, time.time())
            truth = Truth(url, last, first, stand_in.published, stand_in.started.timestamp())
            checked, problems = _check_dashboard(url, truth)
            if most != WORLD:
                problems.insert(0, f"Prometheus never held tokens/s of more than {most} of "
                                   f"the {WORLD} ranks")
            assert not problems, "\n".join(problems)
            assert checked >= 10, checked
        # The operator read progress from node rank 0's `metrics` port, local rank 0.
        assert stand_in.urls == {f"http://{node_ips[0]}:{base}/metrics"}, stand_in.urls
        assert stand_in.reads > 0
    finally:
        stand_in.stop()
        for n in nodes:
            if n.poll() is None:
                n.stop(grace=5)
            else:
                n.close()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
