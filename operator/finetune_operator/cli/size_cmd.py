"""`finetune size`: read a model's config.json and safetensors headers, print what sizes it.

    finetune size --model NAME [--revision main] [--termination-log PATH]
    finetune size --path DIR [--termination-log PATH]

Prints one JSON object: a ModelSizing (`model`, `revision`, `commit`, `config`: the keys that
size the model, `parameters`: the exact count of the safetensors headers), or on failure
`{"error": REASON, "message": ...}` and exit status 1. The operator's sizing pod runs it with
the job's token in HF_TOKEN and `--termination-log /dev/termination-log`, and reads the same
object from the pod's status (finetune_operator.sizing). Only headers are read, never weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune_operator.sizing import DEFAULT_REVISION, SizingFailed, result_message


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "size",
        help="read a model's config and exact parameter count (the operator's sizing pod)",
        description="Read the config.json and the safetensors headers (never the weights) "
        "of a model on the Hugging Face Hub (HF_TOKEN, HF_ENDPOINT) or in a folder, and "
        "print the keys that size it and its exact parameter count as JSON.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face model id")
    source.add_argument("--path", help="a folder with config.json and *.safetensors")
    p.add_argument("--revision", default=DEFAULT_REVISION, help="Hub revision (default main)")
    p.add_argument("--termination-log", metavar="PATH",
                   help="also write the JSON here (a pod's terminationMessagePath)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from finetune_operator import hub

    try:
        if args.model:
            sizing = hub.size_hub_model(args.model, args.revision)
        else:
            sizing = hub.size_folder(Path(args.path), label=args.path)
        text, code = result_message(sizing), 0
    except SizingFailed as err:
        text, code = err.to_json(), 1
    print(text)
    if args.termination_log:
        try:
            Path(args.termination_log).write_text(text, encoding="utf-8")
        except OSError as err:
            print(f"finetune size: cannot write {args.termination_log}: {err}", file=sys.stderr)
    return code
