"""`finetune run --local`: validate, plan for this machine, train with torchrun, report.

The thin shell around the pure parts (localize, report, display): it reads the file, starts the
ranks, follows rank 0's metrics while they train, and turns the outcome into an exit status.
Bad input raises `UserError` (one line, exit 1), never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from finetune_contract.api import FineTuneJob, FineTuneJobSpec, Plan
from finetune_contract.layout import FINAL_DIR, MERGED_DIR, SUMMARY_FILE
from finetune_operator.documents import DocumentError, read_documents, split_jobs
from finetune_operator.errors import UserError
from finetune_operator.local import answer, datastats, localize, report
from finetune_operator.local.display import ProgressDisplay, format_progress, format_waiting
from finetune_operator.local.launcher import (
    STOP_GRACE_SECONDS,
    TrainingProcess,
    free_port_block,
    rank_environment,
    torchrun_command,
)
from finetune_operator.local.machine import LocalHardware, detect_hardware, torch_installed
from finetune_operator.scrape import ProgressUnavailable, fetch_progress
from finetune_operator.validation import validate_job
from finetune_trainer.checkpoints import latest_complete

POLL_SECONDS = 1.0
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class LocalOptions:
    file: str
    nproc: int | None = None
    output: str | None = None
    cpu: bool = False  # ignore local GPUs
    sample: bool = True


class Stopped(Exception):
    """SIGINT or SIGTERM arrived while training."""


def run_local(options: LocalOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    job, job_dir = load_job(options.file)
    if not torch_installed():
        raise UserError("--local needs the trainer dependencies (torch, transformers, trl): "
                        "pip install 'finetune-operator[trainer]', or run `make demo`")
    hardware = LocalHardware() if options.cpu else detect_hardware()
    nproc = localize.rank_count(job.spec, hardware, options.nproc)
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1 (got {nproc})")
    spec = localize.local_spec(job.spec, hardware, nproc, localize.catalog_gpu(hardware))
    plan = plan_for_machine(spec, job_dir, options.file)
    output = localize.output_dir(job, job_dir, Path.cwd(), options.output)
    port = free_port_block(nproc)
    config = localize.trainer_config(job, spec, plan, data_root=job_dir, out=output,
                                   metrics_port=port, device=hardware.device)
    config_path = localize.write_trainer_config(config)
    log_path = output / localize.LOG_FILE

    device_label = "cpu" if hardware.device == "cpu" else hardware.gpus[0].name
    for line in report.plan_lines(plan, device_label):
        print(line, file=out)
    print(f"config:  {config_path}", file=out)
    print(f"logs:    {log_path}", file=out)
    print(f"metrics: http://{localize.METRICS_HOST}:{port}/metrics (Prometheus, rank 0)", file=out)
    checkpoint = latest_complete(output)
    if checkpoint:
        print(f"resuming from {checkpoint}", file=out)
    out.flush()

    grace = stop_grace(plan)
    command = torchrun_command(config_path, nproc, grace_seconds=grace)
    started = time.monotonic()
    process = TrainingProcess(command, rank_environment(os.environ, hardware.device), log_path)
    status = follow(process, f"http://{localize.METRICS_HOST}:{port}/metrics",
                    ProgressDisplay(out), grace=grace, err=err)
    wall = time.monotonic() - started
    if status == EXIT_INTERRUPTED:
        report_stop(log_path, output, err)
        return EXIT_INTERRUPTED
    if status != 0:
        explain_failure(log_path, status, err)
        return 1
    return finish(job, job_dir, output, wall, out, err, sample=options.sample)


def load_job(source: str) -> tuple[FineTuneJob, Path]:
    """The single FineTuneJob of a file, validated with `finetune validate`'s messages."""
    try:
        docs, _ = split_jobs(read_documents(source))
    except DocumentError as error:
        raise UserError(str(error)) from None
    if len(docs) != 1:
        raise UserError(f"{source}: holds {len(docs)} documents; --local runs exactly one "
                        "FineTuneJob per file")
    job, problems = validate_job(docs[0].body, plan=False)
    if problems or job is None:
        raise UserError("\n".join(f"{source}: {problem}" for problem in problems))
    return job, Path(source).resolve().parent


def plan_for_machine(spec: FineTuneJobSpec, data_root: Path, source: str) -> Plan:
    """The planner's plan for this machine, with the data measured for its estimate."""
    from finetune_operator import hub
    from finetune_operator.planner import PlanningError, plan_job
    from finetune_operator.sizing import SizingFailed

    stats = datastats.measure(spec.dataset, data_root)
    try:  # a model the catalog lacks: its config.json and safetensors headers
        sizing = hub.size_if_needed(spec, data_root)
    except SizingFailed as error:
        field = "spec.model.path" if spec.model.path else "spec.model.name"
        raise UserError(f"{source}: {field}: cannot size the model: {error.message}") from None
    try:
        plan = plan_job(spec, data_root=data_root, dataset_stats=stats, sizing=sizing)
    except PlanningError as error:
        raise UserError(f"{source}: {error.field}: {error.message}") from None
    if not plan.fits:
        hint = f"; {plan.suggestion}" if plan.suggestion else ""
        raise UserError(f"{source}: spec.resources: does not fit this machine: "
                        f"{plan.reason}{hint}")
    return plan


def stop_grace(plan: Plan) -> float:
    """How long a stop waits for the emergency checkpoint: the pods' grace period."""
    return float(plan.termination_grace_seconds or STOP_GRACE_SECONDS)


def report_stop(log_path: Path, output: Path, err: TextIO) -> None:
    """Where a stopped run will resume: rank 0's word on its emergency checkpoint."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    said = report.stop_report(text)
    if said:
        print(f"stopped: {said}", file=err)
    resume = latest_complete(output)
    where = f"from {resume.name}" if resume else "from the start: no checkpoint was complete"
    print(f"run the same command again to resume {where} (in {output})", file=err)


def follow(process: TrainingProcess, metrics_url: str, display: ProgressDisplay, *,
           grace: float = STOP_GRACE_SECONDS, err: TextIO = sys.stderr) -> int:
    """Show progress until the ranks exit; on SIGINT/SIGTERM pass the signal to the whole
    group, which writes a checkpoint at the current step, and wait up to `grace` seconds for
    it; a second signal stops at once."""
    started = time.monotonic()
    last_line = None
    with _stop_on_signals():
        try:
            while (status := process.poll()) is None:
                try:
                    last_line = format_progress(fetch_progress(metrics_url, timeout=1.0))
                except ProgressUnavailable:
                    if last_line is None:
                        display.show(format_waiting(time.monotonic() - started))
                else:
                    display.show(last_line)
                time.sleep(POLL_SECONDS)
        except (KeyboardInterrupt, Stopped) as stop:
            display.finish()
            first = signal.SIGTERM if isinstance(stop, Stopped) else signal.SIGINT
            print(f"{first.name}: writing a checkpoint at the current step (up to {grace:.0f} s; "
                  "Ctrl-C again stops at once and loses it)", file=err, flush=True)
            try:
                process.stop(grace=grace, first=first)
            except (KeyboardInterrupt, Stopped):
                process.stop(grace=0)  # asked twice: no more waiting
            return EXIT_INTERRUPTED
    display.finish(last_line)
    process.close()
    return status


class _stop_on_signals:
    """Turn SIGTERM into `Stopped` while training (SIGINT already raises KeyboardInterrupt)."""

    def __enter__(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signum).name)


def explain_failure(log_path: Path, status: int, err: TextIO) -> None:
    """The reason a rank gave; the end of the log only when no rank gave one."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    reason = report.failure_reason(text)
    if reason:
        print(f"training failed: {reason}", file=err)
    else:
        print(f"training failed: the ranks exited with status {status}; last lines of the "
              "log:", file=err)
        for line in report.log_tail(text):
            print(f"  {line}", file=err)
    print(f"full log: {log_path}", file=err)


def finish(job: FineTuneJob, job_dir: Path, output: Path, wall: float, out: TextIO,
           err: TextIO, *, sample: bool) -> int:
    summary_path = output / SUMMARY_FILE
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"training ended but {summary_path} is missing or unreadable: {error}", file=err)
        return 1
    model_dir = output / FINAL_DIR
    print(file=out)
    for line in report.summary_lines(summary, wall):
        print(line, file=out)
    if (model_dir / MERGED_DIR).is_dir():  # output.merge: a model that loads without peft
        model_dir = model_dir / MERGED_DIR
    if sample:
        show_sample_answer(job.spec, job_dir, model_dir, out, err)
    return 0


def show_sample_answer(spec: FineTuneJobSpec, data_root: Path, model_dir: Path, out: TextIO,
                       err: TextIO) -> None:
    prompt = answer.sample_prompt(spec.dataset, data_root)
    if prompt is None:
        return
    try:
        reply = answer.generate_answer(model_dir, prompt)
    except answer.AnswerError as error:
        print(f"sample answer: {error}", file=err)
        return
    print(file=out)
    print(f"sample ({prompt.source}):", file=out)
    print(f"  user:      {prompt.question}", file=out)
    print(f"  model:     {reply}", file=out)
    if prompt.expected is not None:
        print(f"  reference: {prompt.expected}", file=out)
