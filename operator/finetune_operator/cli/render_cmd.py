"""`finetune render JOB.yaml`: the objects the operator would create for a job, as YAML.

For GitOps reviews and policy engines (OPA, Kyverno) that check what will run before anything
is applied. The objects come from the operator's own steps: its defaults (lifecycle/spec.py),
validate_spec, plan_job, layout_problems and render.children, with the operator's settings
read from the same FINETUNE_* variables. Only what the API server assigns differs: the
owner's uid is a placeholder unless --uid gives it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from finetune_operator.errors import UserError

# Stands in for the uid the API server gives the FineTuneJob when it is created.
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render",
        help="print the ConfigMap, Service and Job the operator would create",
        description="Validate and plan a FineTuneJob as the operator does, then print the "
        "objects it would create for the first attempt (ConfigMap, Service, Job) as YAML. "
        "The operator's settings come from FINETUNE_DEFAULT_IMAGE, FINETUNE_DEFAULT_GPU, ...",
    )
    p.add_argument("file", metavar="JOB.yaml", help="a FineTuneJob ('-' for stdin)")
    p.add_argument("-n", "--namespace", help="namespace when metadata.namespace is absent "
                   "(default: default)")
    p.add_argument("--uid", default=PLACEHOLDER_UID,
                   help="the FineTuneJob's uid, for the children's ownerReferences")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from finetune_operator.validation import read_checked_job

    objects = render_job(read_checked_job(args.file), args.namespace, args.uid)
    sys.stdout.write(to_yaml(objects))
    return 0


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """The objects as YAML documents, multi-line strings (the ConfigMap's trainer.yaml) as
    literal blocks so that a reviewer reads them as the trainer will."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(objects, Dumper=Dumper, sort_keys=False)


def render_job(body: dict[str, Any], namespace: str | None, uid: str) -> list[dict[str, Any]]:
    """The children of attempt 0, by the steps lifecycle/start.py takes; UserError when the
    operator would fail the job instead."""
    from finetune_operator import apicheck, render, settings
    from finetune_operator.lifecycle import spec as specs
    from finetune_operator.planner import PlanningError, plan_job
    from finetune_operator.validation import layout_problems, validate_spec

    try:
        operator_settings = settings.from_env()
    except settings.SettingsError as err:
        raise UserError(str(err)) from None
    meta = body["metadata"]
    spec, problems = validate_spec(specs.with_defaults(body["spec"], operator_settings),
                                   meta["name"], plan=False)
    if spec is None:
        raise UserError("; ".join(str(p) for p in problems))
    from finetune_operator import hub
    from finetune_operator.sizing import SizingFailed

    try:  # a model the catalog lacks: read here what the operator's sizing pod would read
        sizing = hub.size_if_needed(spec, None)
    except SizingFailed as err:
        raise UserError(f"spec.model: {err.message}") from None
    try:
        plan = plan_job(spec, sizing=sizing)
    except PlanningError as err:
        raise UserError(f"{err.field}: {err.message}") from None
    if not plan.fits:
        raise UserError(f"spec.resources: does not fit: {plan.reason}")
    layout = layout_problems(spec, plan)
    if layout:
        raise UserError("; ".join(str(p) for p in layout))
    owner = render.Owner(meta["name"], meta.get("namespace") or namespace or "default", uid)
    children = render.children(owner, spec, plan, operator_settings, attempt=0)
    refused = apicheck.children_problems(children)  # the operator fails the job on these
    if refused:
        raise UserError("the API server would refuse " + "; ".join(refused))
    return children
