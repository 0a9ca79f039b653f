"""The training strategies, in one table: every list of strategies elsewhere derives from it.

A strategy says how the data-parallel ranks hold the model states (weights, gradients and the
optimizer's states). The API offers the strategies by these names (api.py), the planner sizes
each one (finetune_operator/planner/memory.py) and tries them in this order, and the trainer
turns the planned one into its DeepSpeed or FSDP settings (finetune_trainer/strategy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Strategy:
    """One row of the table."""

    name: str
    # The DeepSpeed ZeRO stage it runs as; None: not DeepSpeed.
    zero_stage: int | None
    # Whether the ranks split model states among them (every strategy but DDP).
    sharded: bool
    # Whether the states live in host memory: slow (PCIe-bound), so the planner's last resort.
    offload: bool = False
    # Why CPU ranks refuse it; None: it runs on CPU ranks.
    cpu_refusal: str | None = None

    @property
    def deepspeed(self) -> bool:
        return self.zero_stage is not None


# In the order the planner tries them: less sharding means less communication.
TABLE: tuple[Strategy, ...] = (
    Strategy("ddp", zero_stage=None, sharded=False),
    Strategy("zero1", zero_stage=1, sharded=True),
    Strategy("zero2", zero_stage=2, sharded=True),
    Strategy("zero3", zero_stage=3, sharded=True),
    Strategy("fsdp", zero_stage=None, sharded=True,
             cpu_refusal="accelerate silently falls back to DDP there"),
    Strategy("zero3-offload", zero_stage=3, sharded=True, offload=True),
)
NAMES: tuple[str, ...] = tuple(s.name for s in TABLE)
BY_NAME: dict[str, Strategy] = {s.name: s for s in TABLE}
# What a FineTuneJob asks for instead of a name to let the planner choose.
AUTO = "auto"

StrategyName = Literal[NAMES]  # type: ignore[valid-type]  # the table's names, in its order
RequestedStrategy = Literal[(AUTO, *NAMES)]  # type: ignore[valid-type]

# ZeRO-3 parameter retention. DeepSpeed keeps a gathered parameter instead of releasing it
# when the module trace shows it used again within `stage3_max_reuse_distance` elements, and
# prefetches at most `stage3_max_live_parameters` elements. These are DeepSpeed's defaults:
# the trainer writes them into its DeepSpeed config and the planner counts what they keep
# gathered (planner/memory.py: zero3_retained_elements), so the plan and the run agree.
ZERO3_MAX_REUSE_DISTANCE = 1_000_000_000
ZERO3_MAX_LIVE_PARAMETERS = 1_000_000_000


def strategy(name: str) -> Strategy:
    """The row of `name`; KeyError for a name the table lacks."""
    return BY_NAME[name]
