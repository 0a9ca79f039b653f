"""Section 1b: recipe B (finetune_trainer) with tuning full, lora and qlora on the same model.

The workspace's model directory (random weights saved as a pretrained model, which qlora can
quantize), tokenizer, data and throughput settings are section 1's; only `method.tuning`
changes, and the planner plans each run as `finetune run --local` would (lora and qlora:
rank 16 on every linear layer, the planner's defaults). Runs alternate full, lora, qlora,
full, ... so a shared machine's drift hits all three alike. Tokens/s counts the same real
tokens over the same steady steps (bench/step_clock.py) as section 1.
"""

from __future__ import annotations

import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import throughput, trainer_recipe
from bench.workspace import Workspace

TUNINGS = ("full", "lora", "qlora")


@dataclass
class AdapterResult:
    settings: dict[str, Any]
    parameters: int
    plans: dict[str, dict[str, Any]]  # per tuning, the plan's wire form
    runs: dict[str, list[throughput.Run]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Per tuning: median tokens/s, its ratio to full fine-tuning's median and the mean
        final loss."""
        full = statistics.median(r.tokens_per_second for r in self.runs["full"])
        out = {}
        for tuning, runs in self.runs.items():
            rate = statistics.median(r.tokens_per_second for r in runs)
            out[tuning] = {"tokens_per_second": rate, "vs_full": rate / full,
                           "final_loss": statistics.mean(r.final_loss for r in runs)}
        return out


def render(ws: Workspace, s: throughput.Settings, work: Path, tuning: str) -> tuple[Path, Any]:
    """The trainer config of one tuning; its output directory is emptied first (a leftover
    checkpoint would make the run resume instead of train)."""
    out = work / f"{tuning}-output"
    shutil.rmtree(out, ignore_errors=True)
    spec = throughput.spec_b(ws, s)
    spec["method"] = {**spec["method"], "tuning": tuning}
    return trainer_recipe.render(trainer_recipe.job(f"bench-{tuning}", spec),
                                 data_root=ws.root, output=out)


def measure(ws: Workspace, work: Path, settings: throughput.Settings | None = None,
            tunings: tuple[str, ...] = TUNINGS, log=print) -> AdapterResult:
    """Alternate the tunings `settings.runs` times each."""
    s = settings or throughput.Settings()
    result = AdapterResult(settings=asdict(s), parameters=ws.parameters, plans={},
                           runs={t: [] for t in tunings})
    for index in range(s.runs):
        for tuning in tunings:
            config, plan = render(ws, s, work, tuning)
            result.plans[tuning] = plan.to_wire()
            run = throughput.run_b(config, work / tuning, index)
            log(f"  {tuning} run {index + 1}: {run.tokens_per_second:7.1f} tokens/s, "
                f"final loss {run.final_loss:.4f} ({run.wall_seconds:.0f} s)")
            result.runs[tuning].append(run)
    return result
