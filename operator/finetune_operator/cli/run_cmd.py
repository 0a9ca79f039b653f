"""`finetune run JOB.yaml`: on this machine with --local, else on the cluster."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a FineTuneJob here (--local) or on the cluster",
        description="Run a FineTuneJob. With --local: validate it, plan it for this machine "
        "(CPU ranks, or the local CUDA GPUs), train with torchrun showing live progress, "
        "then print a summary and one answer of the trained model. Paths in the YAML are "
        "relative to the YAML file. Running the same command again resumes from the last "
        "checkpoint. Without --local the job is submitted to the current Kubernetes context.",
    )
    p.add_argument("file", metavar="JOB.yaml", help="a FineTuneJob YAML file")
    p.add_argument("--local", action="store_true", help="train on this machine")
    p.add_argument("--detach", action="store_true", help="submit to the cluster and return")
    p.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="ranks to start (default: the spec's gpusPerNode on cpu, every "
                   "visible GPU with CUDA)")
    p.add_argument("--output", metavar="DIR",
                   help="checkpoints, final model and summary (default ./runs/<name>)")
    p.add_argument("--cpu", action="store_true",
                   help="train on CPU even when GPUs are present (--local)")
    p.add_argument("--no-sample", action="store_true",
                   help="skip the sample answer of the trained model (--local)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.local:
        from finetune_operator.remote import run_remote

        return run_remote(args)
    from finetune_operator.local.runner import LocalOptions, run_local

    return run_local(LocalOptions(file=args.file, nproc=args.nproc, output=args.output,
                                  cpu=args.cpu, sample=not args.no_sample))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value
