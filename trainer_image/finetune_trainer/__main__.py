"""`python -m finetune_trainer --config FILE`: one training rank, started by torchrun.

Exit 0 on success. A mistake the user can fix (bad data, bad config, a refused strategy)
exits 2 with one line on stderr, `finetune-trainer: error: ...`, and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from finetune_trainer.errors import exit_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_trainer",
                                     description="Run one fine-tuning rank.")
    parser.add_argument("--config", required=True, help="TrainerConfig YAML file")
    # The deepspeed launcher passes --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def train() -> None:
        from finetune_trainer.config import load
        from finetune_trainer.training_run import run

        run(load(args.config))

    return exit_status(train)


def leave(code: int) -> None:
    """End the rank without the interpreter's teardown. C++ threads of gloo and DeepSpeed
    that are still joinable when static objects are destroyed abort the process ("terminate
    called without an active exception", seen after complete ZeRO-3 runs), and torchrun then
    fails the whole gang for a run that finished. Everything the run writes is closed by
    now; what is buffered is flushed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
