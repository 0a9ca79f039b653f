"""Section 1: trainer throughput, recipe A (plain TRL) against recipe B (finetune_trainer).

Same model directory, same tokenizer, same long-tailed chat data, same steps, global batch,
learning-rate schedule, seed and data order, 2 ranks over gloo with one thread each. Runs
alternate A, B, A, B, ... so slow drifts of a shared machine hit both recipes alike. Each run
reports real (non-pad) tokens per second over its steady steps and its loss curve; B's
fraction of the fp32 GEMM peak uses the peak measured in the same bench run.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import launch, trainer_recipe
from bench.workspace import Workspace

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Settings:
    steps: int = 12
    global_batch: int = 16
    micro_batch_a: int = 8  # TrainingArguments' default per-device batch
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 1024  # above the longest row: nothing is truncated in either recipe
    seed: int = 42
    runs: int = 3


@dataclass
class Run:
    recipe: str  # "A" or "B"
    index: int
    tokens_per_second: float
    steady_tokens: int
    steady_seconds: float
    final_loss: float
    losses: list[dict[str, float]]
    wall_seconds: float


@dataclass
class ThroughputResult:
    settings: dict[str, Any]
    parameters: int
    plan: dict[str, Any]
    command_a: str
    command_b: str
    runs: list[Run] = field(default_factory=list)
    gemm_peak_flops: float | None = None

    def of(self, recipe: str) -> list[Run]:
        return [r for r in self.runs if r.recipe == recipe]

    def summary(self) -> dict[str, Any]:
        a, b = self.of("A"), self.of("B")
        rate_a = statistics.median(r.tokens_per_second for r in a)
        rate_b = statistics.median(r.tokens_per_second for r in b)
        # Pair each B run with the A run right before it: the machine's load drifts.
        ratios = [rb.tokens_per_second / ra.tokens_per_second for ra, rb in zip(a, b)]
        loss_a = statistics.mean(r.final_loss for r in a)
        loss_b = statistics.mean(r.final_loss for r in b)
        out: dict[str, Any] = {
            "a_tokens_per_second": rate_a,
            "b_tokens_per_second": rate_b,
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "a_final_loss": loss_a,
            "b_final_loss": loss_b,
            "loss_difference": (loss_b - loss_a) / loss_a,
        }
        if self.gemm_peak_flops:
            flops_per_token = 6 * self.parameters
            out["b_peak_fraction"] = rate_b * flops_per_token / self.gemm_peak_flops
            out["a_peak_fraction"] = rate_a * flops_per_token / self.gemm_peak_flops
        return out


def spec_b(ws: Workspace, s: Settings) -> dict[str, Any]:
    """What a user would write for recipe B's run: everything left to the planner."""
    return {
        "model": {"name": "bench-llama-20m", "path": str(ws.model),
                  "tokenizer": {"path": str(ws.tokenizer)}},
        "dataset": {"format": "messages", "train": {"path": str(ws.data)}},
        "method": {"task": "sft", "tuning": "full", "assistantOnlyLoss": True},
        "training": {
            "maxSteps": s.steps, "learningRate": s.learning_rate, "scheduler": "cosine",
            "warmupRatio": s.warmup_ratio, "weightDecay": s.weight_decay,
            "globalBatchSize": s.global_batch, "maxSeqLength": s.max_length,
            "loggingSteps": 1, "saveSteps": 10**6, "seed": s.seed,
        },
        "resources": {"gpu": "cpu", "gpusPerNode": 2, "maxNodes": 1},
    }


def args_a(ws: Workspace, s: Settings, out: Path, result: Path) -> dict[str, Any]:
    return {"data": str(ws.data), "tokenizer": str(ws.tokenizer), "model": str(ws.model),
            "output": str(out), "result": str(result), "steps": s.steps,
            "global_batch": s.global_batch, "micro_batch": s.micro_batch_a,
            "learning_rate": s.learning_rate, "warmup_ratio": s.warmup_ratio,
            "weight_decay": s.weight_decay, "max_length": s.max_length, "seed": s.seed}


def run_a(ws: Workspace, s: Settings, work: Path, index: int) -> Run:
    out = work / f"a{index}"
    result = out / "clock.json"
    args_path = out / "args.json"
    out.mkdir(parents=True, exist_ok=True)
    args_path.write_text(json.dumps(args_a(ws, s, out, result)))
    wall = launch.run_ranks(launch.torchrun([str(BENCH_DIR / "plain_recipe.py"),
                                             str(args_path)]), out / "log.txt")
    return _run("A", index, result, wall)


def run_b(config: Path, work: Path, index: int) -> Run:
    out = work / f"b{index}"
    result = out / "clock.json"
    wall = launch.run_ranks(launch.torchrun([str(BENCH_DIR / "trainer_recipe.py"),
                                             "--config", str(config), "--clock", str(result)]),
                            out / "log.txt")
    return _run("B", index, result, wall)


def _run(recipe: str, index: int, result: Path, wall: float) -> Run:
    clock = json.loads(result.read_text())
    return Run(recipe=recipe, index=index, tokens_per_second=clock["tokens_per_second"],
               steady_tokens=clock["steady_tokens"], steady_seconds=clock["steady_seconds"],
               final_loss=clock["losses"][-1]["loss"], losses=clock["losses"],
               wall_seconds=wall)


def render_b(ws: Workspace, s: Settings, work: Path,
             peak_per_rank: float | None) -> tuple[Path, Any]:
    """B's trainer config; every B run writes into the same output directory, so the old
    checkpoint is removed first (a leftover would make the next run resume instead)."""
    import shutil

    out = work / "b-output"
    shutil.rmtree(out, ignore_errors=True)
    return trainer_recipe.render(trainer_recipe.job("bench-b", spec_b(ws, s)),
                                 data_root=ws.root, output=out,
                                 peak_flops_per_rank=peak_per_rank)


def measure(ws: Workspace, work: Path, settings: Settings | None = None,
            gemm_peak_flops: float | None = None, log=print) -> ThroughputResult:
    """Alternate A and B `settings.runs` times each."""
    s = settings or Settings()
    peak_per_rank = gemm_peak_flops / 2 if gemm_peak_flops else None
    config, plan = render_b(ws, s, work, peak_per_rank)
    result = ThroughputResult(
        settings=asdict(s), parameters=ws.parameters, plan=plan.to_wire(),
        command_a="torchrun --standalone --nproc-per-node 2 bench/plain_recipe.py ARGS.json",
        command_b="torchrun --standalone --nproc-per-node 2 bench/trainer_recipe.py "
                  "--config trainer-config.yaml --clock clock.json",
        gemm_peak_flops=gemm_peak_flops)
    for index in range(s.runs):
        a = run_a(ws, s, work, index)
        log(f"  A run {index + 1}: {a.tokens_per_second:7.1f} tokens/s, "
            f"final loss {a.final_loss:.4f} ({a.wall_seconds:.0f} s)")
        config, _ = render_b(ws, s, work, peak_per_rank)
        b = run_b(config, work, index)
        log(f"  B run {index + 1}: {b.tokens_per_second:7.1f} tokens/s, "
            f"final loss {b.final_loss:.4f} ({b.wall_seconds:.0f} s)")
        result.runs += [a, b]
    return result


def profile(ws: Workspace, work: Path, settings: Settings | None = None,
            gemm_peak_flops: float | None = None, steps: str = "2:4") -> dict[str, Any]:
    """One profiled run of each recipe (not counted in the throughput figures)."""
    s = settings or Settings()
    last = int(steps.split(":")[1])
    s = Settings(**{**asdict(s), "steps": max(s.steps, last)})
    peak_per_rank = gemm_peak_flops / 2 if gemm_peak_flops else None
    config, _ = render_b(ws, s, work, peak_per_rank)
    out = work / "profile"
    result_b = out / "b.json"
    launch.run_ranks(launch.torchrun([str(BENCH_DIR / "trainer_recipe.py"), "--config",
                                      str(config), "--profile", str(result_b),
                                      "--profile-steps", steps]), out / "b-log.txt")
    result_a = out / "a.json"
    args = {**args_a(ws, s, out / "a", out / "a-clock.json"), "profile": str(result_a),
            "profile_steps": steps}
    (out / "a-args.json").write_text(json.dumps(args))
    launch.run_ranks(launch.torchrun([str(BENCH_DIR / "plain_recipe.py"),
                                      str(out / "a-args.json")]), out / "a-log.txt")
    return {"A": json.loads(result_a.read_text()), "B": json.loads(result_b.read_text()),
            "steps": steps}
