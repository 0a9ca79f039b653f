"""The search: which strategy, how many nodes, which micro-batch, whether to checkpoint.

Rules, in order of priority:
1. Fewest GPUs first (nodes x gpusPerNode within resources.maxNodes): GPUs cost money.
2. On that many GPUs, the least-sharded strategy that fits with HEADROOM left: less
   communication beats more sharding (ddp, zero1, zero2, zero3, fsdp).
3. zero3-offload only when nothing else fits within the bounds: it is bound by PCIe.
4. On the chosen layout, gradient checkpointing off if any micro-batch fits without it, and
   the largest micro-batch that fits and divides the per-rank share of the global batch, so
   micro x world x accumulation == globalBatchSize exactly.
A layout whose rank count does not divide globalBatchSize cannot reach the global batch and
is skipped (and named in the suggestion when it would have fit).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from finetune_contract import strategies

from finetune_operator.planner import memory as mem
from finetune_operator.planner.gpus import CATALOG, Gpu, node_host_memory
from finetune_operator.planner.parameters import ParameterCount
from finetune_operator.sizes import format_bytes

# The table's order, offloading last: it is bound by PCIe.
SEARCH_ORDER = tuple(s.name for s in strategies.TABLE if not s.offload)
(LAST_RESORT,) = (s.name for s in strategies.TABLE if s.offload)
# How far the nothing-fits suggestion looks for more nodes.
SUGGESTION_MAX_NODES = 64


@dataclass(frozen=True)
class Sizing:
    """Everything about the job that does not depend on the layout."""

    count: ParameterCount
    trainable: int
    layers_with_grad: int
    gpu: Gpu
    precision: str
    seq_len: int
    global_batch: int
    micro_batch: int | None = None  # forced by the user
    checkpointing: bool | None = None  # None: on only when needed to fit
    num_labels: int | None = None
    packing: str = "padding-free"
    host_limit: int | None = None  # pod memory per node, when given on GPU nodes
    adapters: mem.Adapters | None = None  # tuning lora or qlora
    refused: tuple[str, ...] = ()  # strategies the method cannot train under (rules.py)


@dataclass(frozen=True)
class Layout:
    strategy: str
    nodes: int
    gpus_per_node: int

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self, gpu: str) -> str:
        return f"{self.strategy} on {self.nodes} x {self.gpus_per_node} {gpu}"


@dataclass(frozen=True)
class Candidate:
    layout: Layout
    micro_batch: int
    accumulation: int
    checkpointing: bool
    memory: mem.Memory
    fits: bool


@dataclass(frozen=True)
class Bounds:
    """Where the search may look, from resources and overrides."""

    gpus_per_node: int
    max_nodes: int
    nodes: int | None = None
    strategy: str | None = None  # None: auto


@dataclass(frozen=True)
class Choice:
    chosen: Candidate
    alternatives: list[Candidate]
    reason: str
    suggestion: str | None


class Unreachable(Exception):
    """No layout within the bounds can reach the global batch exactly."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- one layout


def reachable(sizing: Sizing, layout: Layout) -> bool:
    """Whether micro x world x accumulation can equal the global batch on this layout."""
    if sizing.global_batch % layout.world:
        return False
    per_rank = sizing.global_batch // layout.world
    return sizing.micro_batch is None or per_rank % sizing.micro_batch == 0


def rank_memory(sizing: Sizing, layout: Layout, micro: int, checkpointing: bool) -> mem.Memory:
    return mem.rank_memory(
        sizing.count, trainable=sizing.trainable, strategy=layout.strategy,
        precision=sizing.precision, world=layout.world, gpus_per_node=layout.gpus_per_node,
        micro_batch=micro, seq_len=sizing.seq_len, checkpointing=checkpointing,
        layers_with_grad=sizing.layers_with_grad, on_cpu=sizing.gpu.is_cpu,
        num_labels=sizing.num_labels, packing=sizing.packing,
        accumulation=max(1, sizing.global_batch // (layout.world * micro)),
        adapters=sizing.adapters,
    )


def host_bound(sizing: Sizing, layout: Layout) -> tuple[int, str] | None:
    """Host RAM a node may use, and what says so: resources.memory when given; for
    offloading, where host RAM is the binding constraint, else the catalog's node shape with
    this many GPUs. Other strategies keep their states on the GPUs and are not held to a
    shape."""
    if sizing.host_limit is not None:
        return sizing.host_limit, "spec.resources.memory"
    if layout.strategy == LAST_RESORT:
        return node_host_memory(sizing.gpu, layout.gpus_per_node)
    return None


def host_limit(sizing: Sizing, layout: Layout) -> int | None:
    bound = host_bound(sizing, layout)
    return bound[0] if bound else None


def fits(sizing: Sizing, layout: Layout, memory: mem.Memory) -> bool:
    if memory.total > mem.usable(sizing.gpu.memory):
        return False
    limit = host_limit(sizing, layout)
    return limit is None or memory.host_per_node <= limit


def checkpoint_options(sizing: Sizing) -> list[bool]:
    return [False, True] if sizing.checkpointing is None else [sizing.checkpointing]


def evaluate(sizing: Sizing, layout: Layout, checkpoints: list[bool] | None = None) -> Candidate:
    """The best settings on a reachable layout, or its smallest footprint when none fits."""
    per_rank = sizing.global_batch // layout.world
    micros = [sizing.micro_batch] if sizing.micro_batch else _divisors_descending(per_rank)
    checkpoints = checkpoints or checkpoint_options(sizing)
    for checkpointing in checkpoints:
        for micro in micros:
            memory = rank_memory(sizing, layout, micro, checkpointing)
            if fits(sizing, layout, memory):
                return Candidate(layout, micro, per_rank // micro, checkpointing, memory, True)
    micro, checkpointing = micros[-1], checkpoints[-1]
    memory = rank_memory(sizing, layout, micro, checkpointing)
    return Candidate(layout, micro, per_rank // micro, checkpointing, memory, False)


def _divisors_descending(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


# --------------------------------------------------------------------------- the search


def strategies_for(sizing: Sizing, bounds: Bounds) -> tuple[list[str], list[str]]:
    """(strategies tried first, last resorts). What CPU ranks refuse (fsdp: accelerate
    silently trains plain DDP there) is never picked automatically on cpu."""
    if bounds.strategy:
        return [bounds.strategy], []
    first = [s for s in SEARCH_ORDER if not (sizing.gpu.is_cpu and _refused_on_cpu(s))
             and s not in sizing.refused]
    return first, [s for s in (LAST_RESORT,) if s not in sizing.refused]


def node_counts(bounds: Bounds) -> list[int]:
    return [bounds.nodes] if bounds.nodes else list(range(1, bounds.max_nodes + 1))


def search_order(sizing: Sizing, bounds: Bounds) -> list[tuple[Layout, list[bool]]]:
    """Layouts in the order they are tried, each with the checkpointing settings to try.

    Per node count, every strategy first without checkpointing, then with: recomputing
    every activation costs a third more compute, more than the extra communication of the
    next sharding stage within a node.
    """
    first, last = strategies_for(sizing, bounds)
    order = []
    for nodes in node_counts(bounds):
        for checkpointing in checkpoint_options(sizing):
            order += [(Layout(s, nodes, bounds.gpus_per_node), [checkpointing]) for s in first]
    for nodes in node_counts(bounds):
        order += [(Layout(s, nodes, bounds.gpus_per_node), checkpoint_options(sizing))
                  for s in last]
    return order


def choose(sizing: Sizing, bounds: Bounds) -> Choice:
    order = search_order(sizing, bounds)
    layouts = list(dict.fromkeys(layout for layout, _ in order))
    tried = [(layout, ckpt) for layout, ckpt in order if reachable(sizing, layout)]
    if not tried:
        raise _unreachable(sizing, bounds)
    evaluated: list[Candidate] = []
    for layout, checkpoints in tried:
        candidate = evaluate(sizing, layout, checkpoints)
        evaluated.append(candidate)
        if candidate.fits:
            chosen = candidate
            break
    else:
        chosen = min(evaluated, key=lambda c: c.memory.total)
    first, last = strategies_for(sizing, bounds)
    alternatives = alternatives_at(sizing, chosen, first + last)
    skipped = [layout for layout in layouts if not reachable(sizing, layout)]
    return Choice(chosen, alternatives, explain(sizing, chosen, evaluated, bounds),
                  suggest(sizing, bounds, chosen, skipped))


def alternatives_at(sizing: Sizing, chosen: Candidate, names: list[str]) -> list[Candidate]:
    """Every strategy on the chosen nodes with the chosen micro-batch and checkpointing, so
    the comparison table differs in the strategy only."""
    pinned = replace(sizing, micro_batch=chosen.micro_batch)
    out = []
    for strategy in dict.fromkeys([*names, chosen.layout.strategy]):
        layout = replace(chosen.layout, strategy=strategy)
        if layout == chosen.layout:
            out.append(chosen)
        else:
            out.append(evaluate(pinned, layout, [chosen.checkpointing]))
    return out


def _better_skipped(sizing: Sizing, chosen: Candidate, skipped: list[Layout]) -> list[Layout]:
    """Skipped layouts (global batch not divisible) that would avoid offloading."""
    if chosen.layout.strategy != LAST_RESORT:
        return []
    return [layout for layout in skipped if layout.strategy != LAST_RESORT
            and fits(sizing, layout,
                    rank_memory(sizing, layout, 1, sizing.checkpointing is not False))]


def _unreachable(sizing: Sizing, bounds: Bounds) -> Unreachable:
    worlds = sorted({n * bounds.gpus_per_node for n in node_counts(bounds)})
    shown = ", ".join(str(w) for w in worlds[:6])
    if sizing.micro_batch and any(sizing.global_batch % w == 0 for w in worlds):
        return Unreachable(
            "spec.training.microBatchSize",
            f"is {sizing.micro_batch}, which does not divide the per-rank share of "
            f"globalBatchSize {sizing.global_batch} on {shown} ranks; choose a divisor of "
            f"it or leave microBatchSize unset",
        )
    return Unreachable(
        "spec.training.globalBatchSize",
        f"is {sizing.global_batch}, not a multiple of the rank count ({shown} with "
        f"gpusPerNode {bounds.gpus_per_node}); every rank needs the same whole number of "
        f"sequences per step: use a multiple of {worlds[0]}, or change gpusPerNode",
    )


# --------------------------------------------------------------------------- explanations


def _gib(n: int) -> str:
    return format_bytes(n)


def _settings(c: Candidate) -> str:
    ckpt = "checkpointing" if c.checkpointing else "no checkpointing"
    return f"micro-batch {c.micro_batch}, {ckpt}"


def describe(sizing: Sizing, c: Candidate, *, short: bool = False) -> str:
    """What a candidate needs against what it has: its binding constraint when it fails.
    `short` names the strategy only (the layout is the chosen one's)."""
    usable = mem.usable(sizing.gpu.memory)
    per = "rank" if sizing.gpu.is_cpu else "GPU"
    where = c.layout.strategy if short else c.layout.describe(sizing.gpu.name)
    limit = host_limit(sizing, c.layout)
    if c.memory.total > usable:
        return (f"{where} needs {_gib(c.memory.total)}/{per} > {_gib(usable)} usable "
                f"({_settings(c)})")
    if limit is not None and c.memory.host_per_node > limit:
        return (f"{where} needs {_gib(c.memory.host_per_node)} host RAM per node > "
                f"{_gib(limit)} ({_settings(c)})")
    text = f"{where} needs {_gib(c.memory.total)}/{per} of {_gib(usable)} usable ({_settings(c)})"
    if c.layout.strategy == LAST_RESORT:
        text += f" and {_gib(c.memory.host_per_node)} host RAM per node"
    return text


def explain(sizing: Sizing, chosen: Candidate, evaluated: list[Candidate], bounds: Bounds) -> str:
    """One line: what did not fit and why the chosen layout was picked."""
    this = describe(sizing, chosen)
    if not chosen.fits:
        nodes = bounds.nodes or bounds.max_nodes
        return (f"nothing fits within {nodes} x {bounds.gpus_per_node} {sizing.gpu.name}; "
                f"smallest footprint: {this}")
    if bounds.strategy:
        return f"strategy {bounds.strategy} as requested: {this}"
    failed = [c for c in evaluated if not c.fits and c.layout.nodes == chosen.layout.nodes
              and c.layout.strategy != chosen.layout.strategy]
    parts = []
    if chosen.layout.nodes > 1 and not bounds.nodes:
        parts.append(f"nothing fits on fewer than {chosen.layout.nodes} nodes")
    if failed:
        parts.append(describe(sizing, failed[-1], short=True))
    parts.append(this)
    return "; ".join(parts)


def suggest(sizing: Sizing, bounds: Bounds, chosen: Candidate,
            skipped: list[Layout] | None = None) -> str | None:
    """The smallest configuration that would fit: more nodes, offload, then a bigger GPU."""
    better = _better_skipped(sizing, chosen, skipped or [])
    if chosen.fits:
        if not better:
            return None
        layout = better[0]
        multiple = layout.world
        return (f"{layout.describe(sizing.gpu.name)} would fit without offloading if "
                f"globalBatchSize were a multiple of {multiple} (e.g. {_round_up(sizing.global_batch, multiple)})")
    if sizing.gpu.is_cpu:
        need = -(-chosen.memory.total * 100 // int(100 * (1 - mem.HEADROOM)))
        return (f"give each rank at least {_gib(need)} (resources.memory = "
                f"{_gib(need * chosen.layout.gpus_per_node)} per pod with "
                f"{chosen.layout.gpus_per_node} ranks), or train a smaller model")
    candidates = [s for s in (*SEARCH_ORDER, LAST_RESORT)
                  if not (sizing.gpu.is_cpu and _refused_on_cpu(s)) and s not in sizing.refused]
    for nodes in range(1, SUGGESTION_MAX_NODES + 1):
        for strategy in candidates:
            layout = Layout(strategy, nodes, bounds.gpus_per_node)
            if fits(sizing, layout, rank_memory(sizing, layout, 1, True)):
                batch = _round_up(sizing.global_batch, layout.world)
                batch_note = ("" if batch == sizing.global_batch
                              else f" with globalBatchSize {batch}")
                return f"{layout.describe(sizing.gpu.name)} would fit{batch_note}"
    for gpu in sorted(CATALOG.values(), key=lambda g: g.memory):
        if gpu.is_cpu or gpu.memory <= sizing.gpu.memory:
            continue
        bigger = replace(sizing, gpu=gpu)
        for strategy in candidates:
            layout = Layout(strategy, bounds.max_nodes, bounds.gpus_per_node)
            if fits(bigger, layout, rank_memory(bigger, layout, 1, True)):
                return f"{layout.describe(gpu.name)} would fit"
    return "no catalog GPU fits it: train fewer parameters (tuning: freeze) or a smaller model"


def _refused_on_cpu(name: str) -> bool:
    return strategies.strategy(name).cpu_refusal is not None


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
