"""The search: which strategy, how many nodes, which micro-batch, whether to checkpoint.

1. Every layout within the bounds (strategy x nodes x gpusPerNode up to resources.maxNodes)
   is evaluated: gradient checkpointing off if any micro-batch fits without it, and the
   largest micro-batch that fits with HEADROOM left and divides the per-rank share of the
   global batch, so micro x world x accumulation == globalBatchSize exactly.
2. Of those that fit, the fastest predicted (throughput.py: tokens per second) is chosen,
   provided each of its GPUs keeps SCALING_EFFICIENCY_FLOOR of the tokens/s per GPU of the
   fastest layout on the fewest GPUs that fit: more GPUs must pay for themselves, as GPUs
   cost money. Ties (to 3 significant figures) go to fewer GPUs, then less sharding.
3. Without a globalBatchSize from the user, each layout trains the default rounded up to a
   multiple of its ranks; with one, a layout whose rank count does not divide it cannot reach
   it and is skipped, and named in the suggestion when it would have been faster.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from finetune_contract import strategies

from finetune_operator import calibration as cal
from finetune_operator.planner import memory as mem
from finetune_operator.planner import throughput as tp
from finetune_operator.planner.gpus import CATALOG, Gpu, Links, links_of, node_host_memory
from finetune_operator.planner.parameters import ParameterCount
from finetune_operator.sizes import format_bytes

# The table's order, offloading last: it is bound by PCIe.
SEARCH_ORDER = tuple(s.name for s in strategies.TABLE if not s.offload)
(LAST_RESORT,) = (s.name for s in strategies.TABLE if s.offload)
# How far the nothing-fits suggestion looks for more nodes.
SUGGESTION_MAX_NODES = 64
# A layout on more GPUs is chosen only when each GPU keeps this much of the tokens/s per GPU
# of the fastest layout on the fewest GPUs that fit: a 4x bigger layout must be at least
# 2.4x faster. Below it the run would cost much more GPU-hours (over 1.7x) for its speed.
SCALING_EFFICIENCY_FLOOR = 0.6


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
    batch_set: bool = True  # False: globalBatchSize is the default, the planner may round it
    backward_through: int = 0  # parameters backward propagates through; 0: all active
    links: Links | None = None  # bandwidths; None: the catalog's for the GPU (gpus.LINKS)
    # The measured runs each layout's memory is scaled by (finetune_operator/calibration.py),
    # looked up under (family, the layout's strategy, the GPU); None: not calibrated.
    calibration: cal.Table | None = None
    family: str = ""


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
    global_batch: int = 0
    step: tp.Step | None = None  # predicted by throughput.py


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
    found = calibration_of(sizing, layout.strategy)
    return mem.rank_memory(
        sizing.count, trainable=sizing.trainable, strategy=layout.strategy,
        precision=sizing.precision, world=layout.world, gpus_per_node=layout.gpus_per_node,
        micro_batch=micro, seq_len=sizing.seq_len, checkpointing=checkpointing,
        layers_with_grad=sizing.layers_with_grad, on_cpu=sizing.gpu.is_cpu,
        num_labels=sizing.num_labels, packing=sizing.packing,
        accumulation=max(1, sizing.global_batch // (layout.world * micro)),
        adapters=sizing.adapters, calibration=found.value if found else 1.0,
    )


def calibration_key(sizing: Sizing, strategy: str) -> cal.Key:
    return cal.Key(sizing.family, strategy, sizing.gpu.name)


def calibration_of(sizing: Sizing, strategy: str) -> cal.Factor | None:
    """The calibration factor of a layout of `strategy`; None without recorded runs."""
    if sizing.calibration is None:
        return None
    return cal.factor(sizing.calibration, calibration_key(sizing, strategy))


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
                return Candidate(layout, micro, per_rank // micro, checkpointing, memory, True,
                                 sizing.global_batch)
    micro, checkpointing = micros[-1], checkpoints[-1]
    memory = rank_memory(sizing, layout, micro, checkpointing)
    return Candidate(layout, micro, per_rank // micro, checkpointing, memory, False,
                     sizing.global_batch)


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


def layouts_within(sizing: Sizing, bounds: Bounds) -> list[Layout]:
    """Every layout the bounds allow, fewest GPUs first, least sharded first: the order
    that breaks ties between equally fast layouts."""
    first, last = strategies_for(sizing, bounds)
    return [Layout(s, nodes, bounds.gpus_per_node)
            for nodes in node_counts(bounds) for s in (*first, *last)]


def batch_for(sizing: Sizing, layout: Layout) -> int:
    """The global batch on this layout: the user's, else the default rounded up to a
    multiple of the ranks (times a forced micro-batch), so every layout can reach it."""
    if sizing.batch_set:
        return sizing.global_batch
    return _round_up(sizing.global_batch, layout.world * (sizing.micro_batch or 1))


def at_batch(sizing: Sizing, layout: Layout) -> Sizing:
    return replace(sizing, global_batch=batch_for(sizing, layout))


def with_step(sizing: Sizing, c: Candidate) -> Candidate:
    """The candidate with its predicted step (throughput.py)."""
    work = tp.Work(count=sizing.count, trainable=sizing.trainable,
                   backward_through=sizing.backward_through or sizing.count.active,
                   layers_with_grad=sizing.layers_with_grad, precision=sizing.precision,
                   seq_len=sizing.seq_len, micro_batch=c.micro_batch,
                   accumulation=c.accumulation, checkpointing=c.checkpointing)
    step = tp.step(work, strategy=c.layout.strategy, nodes=c.layout.nodes,
                   gpus_per_node=c.layout.gpus_per_node, gpu=sizing.gpu,
                   links=sizing.links or links_of(sizing.gpu))
    return replace(c, step=step)


def speed(c: Candidate) -> float:
    return c.step.tokens_per_second if c.step else 0.0


def efficiency(c: Candidate, base: Candidate) -> float:
    """Tokens/s per GPU of `c` against `base`'s: how much of each GPU a bigger layout keeps."""
    if not speed(base):
        return 1.0
    return (speed(c) / c.layout.world) / (speed(base) / base.layout.world)


def rank_fitting(fitting: list[Candidate], order: list[Layout]) -> list[Candidate]:
    """Fastest first; among equally fast ones (to 0.1 %), fewer GPUs and less sharding."""
    return sorted(fitting, key=lambda c: (-float(f"{speed(c):.3g}"), order.index(c.layout)))


def eligible(ranked: list[Candidate]) -> list[Candidate]:
    """The fitting layouts (fastest first) whose GPUs each keep SCALING_EFFICIENCY_FLOOR of
    the throughput they have on the fewest GPUs that fit: more GPUs must pay for themselves."""
    fewest = min(c.layout.world for c in ranked)
    base = next(c for c in ranked if c.layout.world == fewest)
    return [c for c in ranked if efficiency(c, base) >= SCALING_EFFICIENCY_FLOOR]


def choose(sizing: Sizing, bounds: Bounds) -> Choice:
    order = layouts_within(sizing, bounds)
    tried = [layout for layout in order if reachable(at_batch(sizing, layout), layout)]
    if not tried:
        raise _unreachable(sizing, bounds)
    evaluated = [with_step(at_batch(sizing, layout), evaluate(at_batch(sizing, layout), layout))
                 for layout in tried]
    ranked = rank_fitting([c for c in evaluated if c.fits], order)
    chosen = eligible(ranked)[0] if ranked else min(evaluated, key=lambda c: c.memory.total)
    first, last = strategies_for(sizing, bounds)
    chosen_sizing = at_batch(sizing, chosen.layout)
    second = runner_up(chosen, ranked)
    alternatives = alternatives_at(chosen_sizing, chosen, first + last)
    if second and second.layout not in [c.layout for c in alternatives]:
        alternatives.append(second)
    skipped = [layout for layout in order if layout not in tried]
    return Choice(chosen, alternatives,
                  explain(sizing, chosen, evaluated, bounds, ranked),
                  suggest(sizing, bounds, chosen, skipped))


def runner_up(chosen: Candidate, ranked: list[Candidate]) -> Candidate | None:
    """The fastest eligible layout slower than the chosen one (else the fastest slower
    one). Layouts predicted as fast (zero3 and fsdp send the same bytes) say nothing about
    the choice and are passed over."""
    if not chosen.fits:
        return None
    slower = [c for c in ranked if speed(c) < 0.999 * speed(chosen)]
    preferred = [c for c in eligible(ranked) if c in slower]
    return (preferred or slower or [None])[0]


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
            out.append(with_step(pinned, evaluate(pinned, layout, [chosen.checkpointing])))
    return out


def _faster_skipped(sizing: Sizing, chosen: Candidate,
                    skipped: list[Layout]) -> tuple[Candidate, Sizing] | None:
    """The fastest layout the user's globalBatchSize does not divide that would fit at the
    nearest batch it divides and beat the chosen one, with that batch's sizing."""
    if not chosen.fits or not sizing.batch_set:
        return None
    best = None
    for layout in skipped:
        rounded = replace(sizing, global_batch=_round_up(
            sizing.global_batch, layout.world * (sizing.micro_batch or 1)))
        c = with_step(rounded, evaluate(rounded, layout))
        if c.fits and speed(c) > speed(chosen) and (best is None or speed(c) > speed(best[0])):
            best = (c, rounded)
    return best


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


def explain(sizing: Sizing, chosen: Candidate, evaluated: list[Candidate], bounds: Bounds,
            ranked: list[Candidate]) -> str:
    """One line: why the chosen layout was picked (its speed against the runner-up's), what
    it needs, and the batch when the planner chose it."""
    this = describe(sizing, chosen)
    if not chosen.fits:
        nodes = bounds.nodes or bounds.max_nodes
        return (f"nothing fits within {nodes} x {bounds.gpus_per_node} {sizing.gpu.name}; "
                f"smallest footprint: {this}")
    parts = [f"strategy {bounds.strategy} as requested" if bounds.strategy else None,
             _versus(sizing, chosen, ranked), _batch_note(sizing, chosen),
             _less_sharded_failed(sizing, chosen, evaluated), this]
    return "; ".join(p for p in parts if p)


def _less_sharded_failed(sizing: Sizing, chosen: Candidate,
                         evaluated: list[Candidate]) -> str | None:
    """Why not less sharding: the next less-sharded strategy on these nodes that does not
    fit, and what it needs."""
    order = [*SEARCH_ORDER, LAST_RESORT]
    failed = [c for c in evaluated if not c.fits and c.layout.nodes == chosen.layout.nodes
              and order.index(c.layout.strategy) < order.index(chosen.layout.strategy)]
    return describe(sizing, failed[-1], short=True) if failed else None


def _speed_text(c: Candidate) -> str:
    assert c.step is not None
    return f"{c.step.tokens_per_second:,.0f} tokens/s, {c.step.seconds:.3g} s/step"


def _versus(sizing: Sizing, chosen: Candidate, ranked: list[Candidate]) -> str:
    """`zero3 on 4 x 8 H100-80GB: 1.9x faster than zero3-offload on 1 x 8 (runner-up)`, and a
    faster layout left out because its GPUs would scale too poorly."""
    gpu = sizing.gpu.name
    head = f"{chosen.layout.describe(gpu)}: {_speed_text(chosen)} predicted"
    others = [c for c in ranked if c is not chosen]
    if not others:
        return f"{head}, the only layout that fits"
    slower = runner_up(chosen, ranked)
    if slower is not None:
        ratio = speed(chosen) / speed(slower) if speed(slower) else float("inf")
        # Within 1 %, the table's order decided (fewer GPUs, less sharding), not speed.
        how = "about as fast as" if ratio < 1.01 else f"{ratio:.2f}x faster than"
        head += (f", {how} {slower.layout.describe(gpu)} (runner-up, "
                 f"{_speed_text(slower)})")
    faster = next((c for c in others if speed(c) > speed(chosen)), None)
    if faster is not None:
        head += (f"; {faster.layout.describe(gpu)} would be {speed(faster) / speed(chosen):.2f}x "
                 f"faster on {faster.layout.world / chosen.layout.world:.2g}x the GPUs, below "
                 f"the {SCALING_EFFICIENCY_FLOOR:.0%} scaling floor")
    return head


def _batch_note(sizing: Sizing, chosen: Candidate) -> str | None:
    if chosen.global_batch == sizing.global_batch:
        return None
    return (f"globalBatchSize {chosen.global_batch}: unset, the default {sizing.global_batch} "
            f"rounded up to a multiple of {chosen.layout.world} ranks"
            + (f" x micro-batch {sizing.micro_batch}" if sizing.micro_batch else ""))


def suggest(sizing: Sizing, bounds: Bounds, chosen: Candidate,
            skipped: list[Layout] | None = None) -> str | None:
    """A faster layout a divisible globalBatchSize would allow; when nothing fits, the
    smallest configuration that would: more nodes, offload, then a bigger GPU."""
    faster = _faster_skipped(sizing, chosen, skipped or [])
    if chosen.fits:
        if faster is None:
            return None
        better, rounded = faster
        multiple = better.layout.world * (sizing.micro_batch or 1)
        what = ("would fit without offloading" if chosen.layout.strategy == LAST_RESORT
                and better.layout.strategy != LAST_RESORT else "would fit")
        return (f"{better.layout.describe(sizing.gpu.name)} {what} and be "
                f"{speed(better) / speed(chosen):.2f}x faster ({_speed_text(better)}) if "
                f"globalBatchSize were a multiple of {multiple} (e.g. {rounded.global_batch})")
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
