"""Recipe B: `finetune_trainer` with what the planner chose, exactly as `finetune run --local`
renders it (the local runner's own `local_spec`, `plan_job` with the measured data stats and
`trainer_config`), launched by torchrun with one process per rank:

    torchrun --standalone --nproc-per-node 2 bench/trainer_recipe.py --config CONFIG.yaml \
        [--clock OUT.json] [--profile OUT.json] [--memory OUT.json]

The trainer itself is not modified: this entry point only attaches measuring callbacks to the
trainer that `finetune_trainer.build.trainer_for` returns, then runs
`finetune_trainer.training_run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script

from finetune_contract.api import FineTuneJob, FineTuneJobSpec, Plan
from finetune_operator.local.machine import LocalHardware


def render(job: dict[str, Any], *, data_root: Path, output: Path, nproc: int = 2,
           peak_flops_per_rank: float | None = None,
           hardware: LocalHardware | None = None) -> tuple[Path, Plan]:
    """Plan `job` (a FineTuneJob as a dict) for `nproc` local ranks and write the trainer
    config the ranks read; returns its path and the plan. The ranks are CPU ranks unless
    `hardware` has GPUs: then they are those GPUs, planned as their catalog type, as
    `finetune run --local` plans them."""
    from finetune_operator.local import datastats, localize
    from finetune_operator.planner import plan_job

    parsed = FineTuneJob.model_validate(job)
    hardware = hardware or LocalHardware()
    spec = localize.local_spec(parsed.spec, hardware, nproc, localize.catalog_gpu(hardware))
    plan = plan_job(spec, data_root=data_root,
                    dataset_stats=datastats.measure(spec.dataset, data_root))
    if not plan.fits:
        raise RuntimeError(f"the planner says it does not fit: {plan.reason}")
    config = localize.trainer_config(parsed, spec, plan, data_root=data_root, out=output,
                                     metrics_port=0, device=hardware.device)
    if peak_flops_per_rank:
        # The bench measures the GEMM peak itself; skip the trainer's own matmul probe.
        config = config.model_copy(update={"peak_flops_per_rank": peak_flops_per_rank})
    return localize.write_trainer_config(config), plan


def job(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A FineTuneJob document around `spec` (validated on the way, camelCase keys)."""
    FineTuneJobSpec.model_validate(spec)
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name}, "spec": spec}


def run_with_callbacks(config_path: str, callbacks: list[Any],
                       on_built: Callable[[Any, Any], None] | None = None) -> Any:
    """`finetune_trainer.training_run.run` with extra callbacks on the trainer it builds."""
    from finetune_contract.trainer_config import TrainerConfig
    from finetune_trainer import build
    from finetune_trainer.training_run import run

    original = build.trainer_for

    def instrumented(config: Any, data: Any, ranks: Any, **options: Any) -> tuple[Any, Any]:
        trainer, parts = original(config, data, ranks, **options)
        for callback in callbacks:
            trainer.add_callback(callback)
        if on_built:
            on_built(trainer, parts)
        return trainer, parts

    build.trainer_for = instrumented
    try:
        return run(TrainerConfig.load(config_path))
    finally:
        build.trainer_for = original


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--clock", help="write StepClock results here (rank 0)")
    parser.add_argument("--profile", help="profile steps and write the summary here")
    parser.add_argument("--profile-steps", default="2:5",
                        help="first:last optimizer step to profile (1-based, inclusive)")
    parser.add_argument("--memory", help="write model-state bytes and peak RSS here")
    args = parser.parse_args(argv)
    callbacks: list[Any] = []
    on_built = None
    if args.clock:
        from bench.step_clock import StepClock

        callbacks.append(StepClock(args.clock))
    if args.profile:
        from bench.profiling import ProfileSteps

        first, last = (int(v) for v in args.profile_steps.split(":"))
        callbacks.append(ProfileSteps(args.profile, first, last))
    if args.memory:
        from bench import memory_probe

        probe = memory_probe.MemoryProbe(args.memory, baselines=memory_probe.begin())
        callbacks.append(probe)
        on_built = lambda trainer, parts: probe.attach(trainer)
    run_with_callbacks(args.config, callbacks, on_built)
    _close_process_group()


def _close_process_group() -> None:
    """Leave the gloo group explicitly. Without it a rank once aborted at interpreter exit
    ("terminate called without an active exception") after a complete run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
