"""`python -m finetune_trainer --config FILE`: one training rank, started by torchrun.

Exit 0 on success. A mistake the user can fix (bad data, bad config, a refused strategy)
exits 2 with one line on stderr, `finetune-trainer: error: ...`, and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from finetune_trainer.errors import TrainerError

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_trainer",
                                     description="Run one fine-tuning rank.")
    parser.add_argument("--config", required=True, help="TrainerConfig YAML file")
    # The deepspeed launcher passes --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = _load(args.config)
        from finetune_trainer.run import run

        run(config)
    except TrainerError as err:
        print(f"finetune-trainer: error: {err}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return 0


def _load(path: str):
    import yaml

    from finetune_trainer.config import TrainerConfig

    try:
        return TrainerConfig.load(path)
    except FileNotFoundError:
        raise TrainerError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise TrainerError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise TrainerError(f"{path}: {field}: {first['msg']} "
                           f"({err.error_count()} problem(s))") from None


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
