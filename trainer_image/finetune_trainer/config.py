"""This rank's TrainerConfig (finetune_contract/trainer_config.py): reading its file, with every
way it can be unreadable turned into one user-fixable TrainerError, and what it implies for the
run. Importing it needs no torch.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from finetune_contract.trainer_config import TrainerConfig
from pydantic import ValidationError

from finetune_trainer.errors import TrainerError


def load(path: str | Path) -> TrainerConfig:
    """The config at `path`; a missing file, bad YAML or a bad field raises TrainerError."""
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


def assistant_only(config: TrainerConfig) -> bool:
    """Whether the loss covers assistant tokens only (messages rows, the method's choice)."""
    return config.spec.dataset.format == "messages" and config.spec.method.assistant_only_loss
