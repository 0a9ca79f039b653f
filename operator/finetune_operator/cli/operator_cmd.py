"""`finetune operator`: run the operator (kopf) in the current kube context or in-cluster."""

from __future__ import annotations

import argparse
import os

from finetune_operator.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "operator",
        help="run the FineTuneJob operator",
        description="Run the operator: reconcile FineTuneJobs into ConfigMaps, headless "
        "Services and Indexed Jobs, follow them to the end, serve Prometheus metrics and a "
        "liveness endpoint (http://0.0.0.0:8081/healthz). Settings come from FINETUNE_* "
        "environment variables (see docs/operator.md); these options override them.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", metavar="NS",
                       help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace (the default when FINETUNE_WATCH_NAMESPACES "
                       "is empty)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="Prometheus metrics port (default FINETUNE_METRICS_PORT or 8080)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Options become the environment main.py reads its settings from, so one place decides.
    if args.namespace:
        os.environ["FINETUNE_WATCH_NAMESPACES"] = ",".join(args.namespace)
    elif args.all_namespaces:
        os.environ["FINETUNE_WATCH_NAMESPACES"] = ""
    if args.metrics_port is not None:
        os.environ["FINETUNE_METRICS_PORT"] = str(args.metrics_port)
    from finetune_operator.settings import SettingsError, from_env

    try:
        settings = from_env()
    except SettingsError as err:
        raise UserError(str(err)) from None

    import kopf

    import finetune_operator.main  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=settings.log_level == "DEBUG")
    kopf.run(
        standalone=True,
        clusterwide=settings.all_namespaces,
        namespaces=list(settings.watch_namespaces),
        liveness_endpoint=settings.liveness_endpoint,
    )
    return 0
