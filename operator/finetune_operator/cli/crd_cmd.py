"""`finetune crd`: print the CustomResourceDefinition generated from the API models."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "crd",
        help="print the FineTuneJob CRD",
        description="Print the CustomResourceDefinition generated from the pydantic API "
        "models (what crds/finetunejob.yaml holds).",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from finetune_operator.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0
