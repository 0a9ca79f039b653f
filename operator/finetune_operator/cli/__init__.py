"""`finetune`: validate, plan and run fine-tuning jobs, print the CRD, run the operator.

Each subcommand lives in its own module, `<command>_cmd.py`, with `register(subparsers)`; heavy
imports (kopf, torch) happen inside the command, so `finetune validate` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from finetune_operator import __version__
from finetune_operator.errors import UserError

# Subcommand modules, in the order `finetune --help` lists them.
COMMANDS = ("validate_cmd", "plan_cmd", "size_cmd", "render_cmd", "run_cmd", "crd_cmd",
            "operator_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune",
        description="Plan, validate and run fine-tuning of language models, locally or on "
        "Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"finetune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"finetune_operator.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"finetune_operator.cli.{name}":
                continue  # a command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"finetune {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`finetune plan ... | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
