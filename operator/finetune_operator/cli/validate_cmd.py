"""`finetune validate FILE...`: one line per problem, exit 1 when any job is invalid; one
`warning:` line for each risk of a valid job (validation.spec_warnings), which fails nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune_contract.api import FineTuneJobSpec

from finetune_operator import policy
from finetune_operator.documents import DocumentError, describe, read_file, split_jobs
from finetune_operator.errors import UserError
from finetune_operator.sizing import SizingFailed
from finetune_operator.validation import Problem, plan_problems, spec_warnings, validate_job


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check FineTuneJob YAML files",
        description="Validate FineTuneJobs (multi-document YAML, '-' for stdin): the schema, "
        "cross-field rules, and that the planner can place the job. Documents of other "
        "APIs (a Secret next to the job) are skipped and named.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--no-plan", action="store_true", help="skip the feasibility check")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print problems and warnings only")
    p.add_argument("--policy", metavar="FILE",
                   help="also check the jobs against an operator's tenant policy: the chart's "
                   "policy value (YAML or JSON), or a values file with one under policy:")
    p.add_argument("--namespace", default="default",
                   help="the namespace whose policy.namespaceLimits apply (default: default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        rules = _read_policy(args.policy) if args.policy else None
    except UserError as err:
        print(err, file=sys.stderr)
        return 1
    bad = 0
    checked = 0
    for source in args.files:
        try:
            docs, empty = read_file(source)
        except DocumentError as err:
            print(err, file=sys.stderr)
            bad += 1
            continue
        for warning in empty:
            print(f"warning: {warning}", file=sys.stderr)
        jobs, others = split_jobs(docs)
        for other in others if not args.quiet else ():
            print(f"{source}: {describe(other)}: skipped, not a FineTuneJob")
        for doc in jobs:
            checked += 1
            job, problems = validate_job(doc.body, plan=not args.no_plan)
            note = ""
            if job is not None and not args.no_plan:
                problems, note = _read_model(job.spec, _data_root(source))
            if job is not None and rules is not None and not problems:
                problems = _policy_problems(job.spec, args.namespace, rules,
                                            plan=not args.no_plan)
            if job is not None and not args.no_plan and not problems and not note \
                    and job.spec.model.path is None:
                problems = _render_problems(doc.body)
            for problem in problems:
                print(f"{source}: doc {doc.index}: {problem}", file=sys.stderr)
            bad += bool(problems)
            if not problems and not args.quiet:
                print(f"{source}: doc {doc.index}: valid{note}")
            # Printed even with --quiet: each says how the job could lose its result.
            for warning in spec_warnings(job.spec) if job else ():
                print(f"{source}: doc {doc.index}: warning: {warning}", file=sys.stderr)
    if checked == 0 and bad == 0:
        print("no FineTuneJob documents found", file=sys.stderr)
        return 1
    return 1 if bad else 0


def _read_model(spec: FineTuneJobSpec, data_root: Path) -> tuple[list[Problem], str]:
    """A model the catalog lacks: read it (config.json, safetensors headers) and plan with
    it. Where it cannot be read (offline, no route to the Hub, a model.path on the job's
    volume), the job is valid with a note: the operator sizes it in the cluster."""
    from finetune_operator import hub

    try:
        sizing = hub.size_if_needed(spec, data_root)
    except SizingFailed as err:
        if err.here_only:
            return [], (f" (note: not sized here: {err.message}; the operator sizes "
                        f"{spec.model.name or spec.model.path!r} in the cluster with a sizing "
                        "pod that reads its config.json and safetensors headers)")
        field = "spec.model.path" if spec.model.path else "spec.model.name"
        return [Problem(field, err.message)], ""
    if sizing is None:
        return [], ""
    return plan_problems(spec, sizing), ""


def _render_problems(body: dict) -> list[Problem]:
    """What the operator would still refuse once it renders the children: an object the API
    server would refuse as a whole (a trainer config over a ConfigMap's 1 MiB). Rendered
    with this machine's settings, the chart's defaults unless FINETUNE_* say otherwise."""
    from finetune_operator.cli.render_cmd import PLACEHOLDER_UID, render_job

    try:
        render_job(body, None, uid=PLACEHOLDER_UID)
    except UserError as err:
        return [Problem("", str(err))]
    return []


def _read_policy(path: str) -> policy.Policy:
    try:
        return policy.parse(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{path}: cannot read the policy ({err.strerror})") from None
    except policy.PolicyError as err:
        raise UserError(f"{path}: {err}") from None


def _policy_problems(spec: FineTuneJobSpec, namespace: str, rules: policy.Policy, *,
                     plan: bool) -> list[Problem]:
    """What the operator would refuse as PolicyViolation: the spec's fields, then the plan's
    GPUs and nodes (not for a model only a sizing pod can size: the operator checks those)."""
    from finetune_operator.planner import NeedsSizing, PlanningError, plan_job

    problems = policy.violations(spec, namespace, rules)
    if problems or not plan:
        return problems
    try:
        planned = policy.plan_within_limits(plan_job, spec, namespace, rules)
    except (NeedsSizing, PlanningError):
        return []
    return policy.plan_violations(planned, namespace, rules) if planned.fits else []


def _data_root(source: str) -> Path:
    """Where a job's relative paths resolve locally: the file's folder (stdin: here)."""
    return Path.cwd() if source == "-" else Path(source).resolve().parent
