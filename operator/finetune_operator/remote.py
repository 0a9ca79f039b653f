"""`finetune run JOB.yaml` without --local: submit to the current kube context and follow.

Creates the FineTuneJob (or updates its spec when it exists), then shows its phase and the
same progress line as a local run until it succeeds or fails; `--detach` returns at once.
`follow_line` and `outcome` are pure; the loop only polls the status.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from finetune_contract import api
from finetune_contract.api import FineTuneJobStatus

from finetune_operator.documents import DocumentError, one_job
from finetune_operator.errors import UserError
from finetune_operator.local.display import ProgressDisplay, format_progress
from finetune_operator.validation import spec_warnings, validate_job

POLL_SECONDS = 2.0


def run_remote(args: argparse.Namespace, *, out: TextIO = sys.stdout,
               poll_seconds: float = POLL_SECONDS) -> int:
    body = _read_job(args.file)
    custom = _client()
    namespace = body["metadata"].get("namespace") or _context_namespace()
    name = body["metadata"]["name"]
    action = submit(custom, namespace, body)
    out.write(f"{action} finetunejob {namespace}/{name}\n")
    if getattr(args, "detach", False):
        out.write(f"follow it with: kubectl get finetunejob {name} -n {namespace} -w\n")
        return 0
    return follow(lambda: _status(custom, namespace, name), out, poll_seconds=poll_seconds)


def submit(custom: Any, namespace: str, body: dict[str, Any]) -> str:
    """Create the FineTuneJob, or patch the spec of the existing one: 'created'/'updated'."""
    from kubernetes.client.exceptions import ApiException

    body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
    try:
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL,
                                               body)
        return "created"
    except ApiException as err:
        if err.status != 409:
            raise UserError(_api_message(err, "create")) from None
    try:
        custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL,
                                              body["metadata"]["name"], {"spec": body["spec"]})
    except ApiException as err:
        raise UserError(_api_message(err, "update")) from None
    return "updated"


def follow(read_status: Callable[[], FineTuneJobStatus | None], out: TextIO, *,
           poll_seconds: float = POLL_SECONDS) -> int:
    """Poll until the job ends; 0 when it succeeded, 1 when it failed or vanished."""
    display = ProgressDisplay(out)
    last_phase = None
    while True:
        status = read_status()
        if status is None:
            display.finish()
            out.write("the FineTuneJob was deleted\n")
            return 1
        if status.phase != last_phase:
            display.finish()
            out.write(f"phase {status.phase}: {status.message or ''}".rstrip(": ") + "\n")
            last_phase = status.phase
        display.show(follow_line(status))
        result = outcome(status)
        if result is not None:
            display.finish()
            return result
        time.sleep(poll_seconds)


def follow_line(status: FineTuneJobStatus) -> str:
    """The live line: the progress bar while running, else the phase and its message."""
    if status.phase == "Running" and status.progress is not None:
        stale = "  (stale)" if status.progress.stale else ""
        return format_progress(status.progress) + stale
    counts = [f"{label}: {n}" for label, n in (("restarts", status.restarts),
                                               ("re-plans", status.replans)) if n]
    counted = f" ({', '.join(counts)})" if counts else ""
    return f"{status.phase}{counted}: {status.message or ''}".rstrip(": ")


def outcome(status: FineTuneJobStatus) -> int | None:
    """Exit code once the job has ended; None while it goes on."""
    if status.phase == "Succeeded":
        return 0
    if status.phase == "Failed":
        return 1
    return None


# --------------------------------------------------------------------------- plumbing


def _read_job(path: str) -> dict[str, Any]:
    try:
        doc = one_job(path)
    except DocumentError as err:
        raise UserError(str(err)) from None
    job, problems = validate_job(doc.body)
    if job is None:
        raise UserError(f"{path}: invalid FineTuneJob:\n  " +
                        "\n  ".join(str(p) for p in problems))
    for warning in spec_warnings(job.spec):  # what `finetune validate` would warn about
        print(f"{path}: warning: {warning}", file=sys.stderr)
    return doc.body


def _client() -> Any:
    import kubernetes

    from finetune_operator.controller.kube import load_client_config

    try:
        load_client_config()
    except (kubernetes.config.ConfigException, OSError) as err:
        raise UserError(f"no Kubernetes context to submit to ({err}); use --local to run on "
                        "this machine") from None
    return kubernetes.client.CustomObjectsApi()


def _context_namespace() -> str:
    import kubernetes

    try:
        _, context = kubernetes.config.list_kube_config_contexts()
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return (context or {}).get("context", {}).get("namespace") or "default"


def _status(custom: Any, namespace: str, name: str) -> FineTuneJobStatus | None:
    from kubernetes.client.exceptions import ApiException

    try:
        body = custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                                   api.PLURAL, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise UserError(_api_message(err, "read")) from None
    return FineTuneJobStatus.model_validate(body.get("status") or {})


def _api_message(err: Any, verb: str) -> str:
    import json

    try:
        message = json.loads(err.body).get("message") or err.reason
    except (TypeError, ValueError):
        message = err.reason
    hint = " (is the CRD installed? `finetune crd | kubectl apply -f -`)" if err.status == 404 \
        else ""
    return f"cannot {verb} the FineTuneJob: {err.status} {message}{hint}"
