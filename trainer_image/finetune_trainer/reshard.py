"""Resuming a DeepSpeed ZeRO checkpoint on another number of ranks.

ZeRO (stages 1-3) saves its optimizer states, and at stage 3 its parameters, as one shard per
rank (`checkpoint-N/global_stepN/zero_pp_rank_R_mp_rank_00_optim_states.pt`), and DeepSpeed's
loader refuses shards written by another data-parallel world size. DeepSpeed's universal
checkpoint is the way across: `ds_to_universal` merges the shards into one file per parameter
(`checkpoint-N/global_stepN_universal/zero/<name>/{fp32,exp_avg,exp_avg_sq}.pt`) and writes
`checkpoint-N/latest_universal` last, and an engine configured with
`checkpoint: {load_universal: true}` re-partitions those for its own ranks while it loads.

`decide` is pure (it only reads the checkpoint's files): every rank calls it before the trainer
is built, because the flag must be in the DeepSpeed config the engine is built from. Rank 0
alone converts (`prepare`), once: the converted folder stays inside the checkpoint, so a later
resume of the same checkpoint loads it without converting again. DDP checkpoints hold whole
optimizer states and FSDP is left to its own loader: neither is converted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from finetune_trainer import checkpoints

LATEST = "latest"  # DeepSpeed's file naming the tag (global_stepN) of its newest save
LATEST_UNIVERSAL = "latest_universal"  # the same for the converted folder; written last
UNIVERSAL_SUFFIX = "_universal"


@dataclass(frozen=True)
class Reshard:
    """A resume that goes through the universal checkpoint."""

    checkpoint: Path
    tag: str  # DeepSpeed's folder inside the checkpoint: global_stepN
    written_by: int
    world_size: int
    convert: bool  # False: a complete conversion is already in the checkpoint

    @property
    def source(self) -> Path:
        return self.checkpoint / self.tag

    @property
    def target(self) -> Path:
        return self.checkpoint / universal_tag(self.tag)


def universal_tag(tag: str) -> str:
    return f"{tag}{UNIVERSAL_SUFFIX}"


def deepspeed_tag(checkpoint: Path) -> str | None:
    """The tag DeepSpeed saved this checkpoint under (its `latest` file), if it holds one."""
    try:
        tag = (checkpoint / LATEST).read_text().strip()
    except OSError:
        return None
    return tag if tag and (checkpoint / tag).is_dir() else None


def universal_ready(checkpoint: Path, tag: str) -> bool:
    """A finished conversion: ds_to_universal writes `latest_universal` after everything else,
    so a folder without it (a conversion cut short) does not count."""
    try:
        named = (checkpoint / LATEST_UNIVERSAL).read_text().strip()
    except OSError:
        return False
    return named == universal_tag(tag) and (checkpoint / named).is_dir()


def decide(checkpoint: Path | None, *, uses_zero: bool, world_size: int) -> Reshard | None:
    """Whether resuming `checkpoint` on `world_size` ranks needs the universal checkpoint;
    None when it resumes as it is: no checkpoint, no DeepSpeed ZeRO, a marker that does not
    say how many ranks wrote it, the same number of ranks, or no DeepSpeed folder in it."""
    if checkpoint is None or not uses_zero:
        return None
    written_by = checkpoints.written_world_size(checkpoint)
    if written_by is None or written_by == world_size:
        return None
    tag = deepspeed_tag(checkpoint)
    if tag is None:
        return None
    return Reshard(checkpoint, tag, written_by, world_size,
                   convert=not universal_ready(checkpoint, tag))


def conversion_args(reshard: Reshard) -> argparse.Namespace:
    """The arguments ds_to_universal.main reads (its parse_arguments, without a command line).
    One worker each: its worker pools fork the whole trainer process, and a tiny-to-medium
    checkpoint converts in seconds anyway."""
    return argparse.Namespace(
        input_folder=str(reshard.source), output_folder=str(reshard.target),
        num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
        inject_missing_state=True,
    )


def convert(reshard: Reshard) -> None:
    """Write the universal checkpoint beside the sharded one (and `latest_universal`, which
    ds_to_universal writes itself, last)."""
    from deepspeed.checkpoint import ds_to_universal

    ds_to_universal.main(conversion_args(reshard))


def message(reshard: Reshard) -> str:
    """The line rank 0 prints about the resume."""
    done = ("converted its ZeRO states to DeepSpeed's universal checkpoint" if reshard.convert
            else "loading the universal checkpoint converted before")
    return (f"resuming {reshard.checkpoint.name} (written by {_ranks(reshard.written_by)}) on "
            f"{_ranks(reshard.world_size)}: {done}")


def _ranks(count: int) -> str:
    return f"{count} rank" if count == 1 else f"{count} ranks"


def prepare(reshard: Reshard, rank: int) -> None:
    """Rank 0 converts (when the checkpoint holds no finished conversion yet) and says so;
    every rank waits for it before any engine reads the checkpoint."""
    if rank == 0:
        if reshard.convert:
            convert(reshard)
        print(f"finetune-trainer: {message(reshard)}", flush=True)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
