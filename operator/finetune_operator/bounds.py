"""Upper bounds on every size a job gives: model.config's integer sizes, model.parameters
and the resource quantities. The one table of them.

A job is checked against these before anything is planned (validation.py, and the planner
for a config read from a file or a sizing pod), so that one tenant's typo or hostile number
cannot make the shared operator spend its memory or time: without them 40 million layers
took 660 MB in one reconcile and OOM-killed the operator, again after every restart.

Each bound sits far above the largest published model, so no real job meets one; the
`largest` text says what that model is and goes into the message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from finetune_operator.caps import echo


@dataclass(frozen=True)
class Bound:
    limit: int
    largest: str  # the largest real value, for the message

    def problem(self, value: int | Decimal, show: Callable[[int], str] = str,
                fix: str = "give the model's real size") -> str | None:
        """The message for a value above the bound, else None. `show` writes the bound the
        way the field is written (70B, 16Gi)."""
        if value <= self.limit:
            return None
        return (f"is {echo(value)}, above the bound of {show(self.limit)} ({self.largest}); "
                f"{fix}")


# model.config's integer sizes (and gpt2's names for them), by key.
_LAYERS = Bound(4096, "the deepest published models have about 1000 layers")
_HIDDEN = Bound(131_072, "the widest published models have a hidden size of about 25000")
_INTERMEDIATE = Bound(1_048_576, "the largest published MLPs are about 75000 wide")
_HEADS = Bound(4096, "published models have at most 128 attention heads")
_HEAD_DIM = Bound(4096, "published models have heads of at most 256 dimensions")
_VOCAB = Bound(4_194_304, "the largest published vocabularies have about 260000 tokens")
_POSITIONS = Bound(67_108_864, "the longest published context is about 10 million tokens")
_EXPERTS = Bound(16_384, "the most experts a published model has is 2048")

CONFIG_BOUNDS: dict[str, Bound] = {
    "num_hidden_layers": _LAYERS, "n_layer": _LAYERS,
    "hidden_size": _HIDDEN, "n_embd": _HIDDEN,
    "intermediate_size": _INTERMEDIATE, "n_inner": _INTERMEDIATE,
    "num_attention_heads": _HEADS, "n_head": _HEADS, "num_key_value_heads": _HEADS,
    "head_dim": _HEAD_DIM,
    "vocab_size": _VOCAB,
    "max_position_embeddings": _POSITIONS, "n_positions": _POSITIONS,
    "num_local_experts": _EXPERTS, "num_experts_per_tok": _EXPERTS,
}

# A model's total (model.parameters, or what its config counts): 10x the largest
# published models (Switch-C 1.6T, Kimi K2 1T parameters).
PARAMETERS = Bound(20 * 10**12, "the largest published models have about 2T parameters")
# resources.memory per pod: 1 PiB, 32x the largest single machines (about 32 TiB of RAM).
MEMORY_BYTES = Bound(2**50, "the largest machines have about 32 TiB of memory")
# resources.cpu per pod: the largest machines have about 2000 vCPUs.
CPUS = Bound(65_536, "the largest machines have about 2000 CPUs")
# spec.resources.<field> -> its bound, and how the bound is written for that field.
QUANTITIES: dict[str, tuple[Bound, Callable[[int], str]]] = {
    "cpu": (CPUS, str),
    "memory": (MEMORY_BYTES, lambda n: f"{n // 2**40}Ti"),
}
QUANTITY_FIX = "ask for what one node of the cluster has"


def config_problems(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each of model.config's sizes that is not a positive integer or is
    above its bound. Keys this table does not know, and null values, are left alone."""
    problems = []
    for key, bound in CONFIG_BOUNDS.items():
        value = config.get(key)
        if value is None:
            continue
        message = config_value_problem(key, value, bound)
        if message:
            problems.append((key, message))
    return problems


def config_value_problem(key: str, value: Any, bound: Bound | None = None) -> str | None:
    """What is wrong with one of model.config's sizes, or None."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return f"must be a positive integer (got {echo(value)})"
    bound = bound or CONFIG_BOUNDS.get(key)
    return bound.problem(value) if bound else None
