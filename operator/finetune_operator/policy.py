"""The operator's multi-tenant policy: what a FineTuneJob may ask the operator to run.

The operator creates the training pods with its own service account, so whoever may create a
FineTuneJob could otherwise pick any image, toleration, node and priority class through it.
The chart's `policy` value (FINETUNE_POLICY, read once in settings.py) limits that:

- allowedImagePrefixes: spec.image must start with one (at a name boundary);
- allowedTolerations ({key, effect}) and forcedTolerations (added to every pod);
- allowedNodeSelectors ("key" or "key=value") and forcedNodeSelector (added to every pod;
  a job may repeat a forced entry, never change it);
- allowedPriorityClasses;
- namespaceLimits: namespace (or "*") -> {maxGpus, maxNodes} of one job.

Every list left empty allows anything; the defaults limit nothing. Pure data and pure
functions: the lifecycle refuses a job with `violations` (before planning) and
`plan_violations` (after), and render.py adds the forced entries to the pods it renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import yaml
from finetune_contract.api import FineTuneJobSpec, Plan, Toleration
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from finetune_operator import apirules
from finetune_operator.caps import echo
from finetune_operator.problem import Problem, pydantic_problems

# The key of namespaceLimits that applies to every namespace without its own entry.
ANY_NAMESPACE = "*"
# The chart value every message names.
VALUE = "policy"
ASK = "ask your platform team"


class PolicyError(ValueError):
    """A policy the operator cannot use; the message names the field (policy.x.y)."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="forbid", frozen=True)


class TolerationRule(_Model):
    """A toleration a job may have: this taint key, with this effect (any when omitted)."""

    key: str = Field(min_length=1)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def allows(self, toleration: Toleration) -> bool:
        # A toleration without an effect tolerates every effect of the key: only a rule
        # without an effect covers that.
        return toleration.key == self.key and (self.effect is None
                                               or toleration.effect == self.effect)

    def __str__(self) -> str:
        return f"{self.key}:{self.effect}" if self.effect else f"{self.key} (any effect)"


class Limits(_Model):
    """The most one job of a namespace may use; None: no limit."""

    max_gpus: int | None = Field(None, ge=0)
    max_nodes: int | None = Field(None, ge=1)


class Policy(_Model):
    """The chart's `policy` value, in its camelCase; every empty list allows anything."""

    allowed_image_prefixes: tuple[str, ...] = ()
    allowed_tolerations: tuple[TolerationRule, ...] = ()
    forced_tolerations: tuple[Toleration, ...] = ()
    allowed_node_selectors: tuple[str, ...] = ()
    forced_node_selector: dict[str, str] = Field(default_factory=dict)
    allowed_priority_classes: tuple[str, ...] = ()
    namespace_limits: dict[str, Limits] = Field(default_factory=dict)

    @field_validator("allowed_image_prefixes")
    @classmethod
    def _prefixes(cls, prefixes: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in prefixes:
            if not prefix.strip() or prefix != prefix.strip():
                raise ValueError(f"{prefix!r} must be a non-empty image prefix without spaces, "
                                 "such as registry.corp/ml/")
        return prefixes

    @field_validator("allowed_node_selectors")
    @classmethod
    def _selectors(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            key, _, value = entry.partition("=")
            if apirules.label_key_errors(key) or apirules.label_value_errors(value):
                raise ValueError(f"{entry!r} must be a node label key or key=value")
        return entries

    @field_validator("forced_node_selector")
    @classmethod
    def _forced(cls, selector: dict[str, str]) -> dict[str, str]:
        for key, value in selector.items():
            if apirules.label_key_errors(key) or apirules.label_value_errors(value):
                raise ValueError(f"{key}: {value!r} must be a node label key and value")
        return selector

    def limits(self, namespace: str) -> Limits:
        """The namespace's own entry, each field falling back to the "*" entry's."""
        own = self.namespace_limits.get(namespace, Limits())
        default = self.namespace_limits.get(ANY_NAMESPACE, Limits())
        return Limits(max_gpus=default.max_gpus if own.max_gpus is None else own.max_gpus,
                      max_nodes=default.max_nodes if own.max_nodes is None else own.max_nodes)

    def limits_value(self, namespace: str, field: str) -> str:
        """The chart value a limit of this namespace comes from, for messages."""
        own = self.namespace_limits.get(namespace)
        key = namespace if own is not None and getattr(own, field) is not None \
            else ANY_NAMESPACE
        return f"{VALUE}.namespaceLimits.{json.dumps(key)}.{to_camel(field)}"


NO_POLICY = Policy()


# --------------------------------------------------------------------------- reading


def parse(text: str) -> Policy:
    """The policy from JSON or YAML text (the chart's `policy` value, or a values file that
    holds one under `policy:`); empty text: no policy. PolicyError names the field."""
    if not text.strip():
        return NO_POLICY
    try:
        raw = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as err:
        raise PolicyError(f"is neither JSON nor YAML ({_first_line(err)})") from None
    if isinstance(raw, dict) and isinstance(raw.get(VALUE), dict):
        raw = raw[VALUE]
    if raw is None:
        return NO_POLICY
    if not isinstance(raw, dict):
        raise PolicyError("must be a mapping (the chart's policy value)")
    try:
        return Policy.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as err:
        first = pydantic_problems(err, Policy)[0]
        # Its hint for an unknown field points at the FineTuneJob's schema, not this one.
        message = re.sub(r" \(kubectl explain [^)]*\)", "", str(first))
        raise PolicyError(f"{VALUE}.{message}") from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


# --------------------------------------------------------------------------- the checks


def violations(spec: FineTuneJobSpec, namespace: str, policy: Policy) -> list[Problem]:
    """Every rule of `policy` that the job breaks, before it is planned."""
    return [*_image(spec, policy), *_tolerations(spec, policy), *_node_selector(spec, policy),
            *_priority_class(spec, policy), *_requested_size(spec, namespace, policy)]


def within_limits(spec: FineTuneJobSpec, namespace: str, policy: Policy) -> FineTuneJobSpec | None:
    """The spec with resources.maxNodes lowered to what the namespace's limits allow, for a
    first plan within them (the planner picks the fastest layout, which may use more nodes
    than fewer would need); None when the limits lower nothing."""
    r = spec.resources
    limits = policy.limits(namespace)
    most = [r.max_nodes]
    if limits.max_nodes is not None:
        most.append(limits.max_nodes)
    if limits.max_gpus is not None and r.gpu != "cpu":
        most.append(max(1, limits.max_gpus // r.gpus_per_node))
    if r.nodes is not None or min(most) >= r.max_nodes:
        return None
    return spec.model_copy(update={"resources": r.model_copy(update={"max_nodes": min(most)})})


def plan_within_limits(plan_fn: Callable[..., Plan], spec: FineTuneJobSpec, namespace: str,
                       policy: Policy, **kwargs: Any) -> Plan:
    """The plan within the namespace's limits when one fits there, else the plan within the
    spec's own bounds (which plan_violations then names the limit it breaks for)."""
    from finetune_operator.planner import PlanningError

    capped = within_limits(spec, namespace, policy)
    if capped is not None:
        try:
            plan = plan_fn(capped, **kwargs)
        except PlanningError:  # e.g. a batch only the larger layouts divide
            plan = None
        if plan is not None and plan.fits:
            return plan
    return plan_fn(spec, **kwargs)


def plan_violations(plan: Plan, namespace: str, policy: Policy) -> list[Problem]:
    """The namespace's limits against what the plan uses (planned within them when a layout
    there fits: plan_within_limits)."""
    limits = policy.limits(namespace)
    gpus = 0 if plan.gpu == "cpu" else plan.nodes * plan.gpus_per_node
    hint = "a smaller model, fewer gpusPerNode or an adapter (method.tuning: lora) needs less"
    problems = []
    if limits.max_nodes is not None and plan.nodes > limits.max_nodes:
        problems.append(_over("spec.resources", f"the plan needs {plan.nodes} nodes", namespace,
                              limits.max_nodes, policy.limits_value(namespace, "max_nodes"),
                              hint))
    if limits.max_gpus is not None and gpus > limits.max_gpus:
        problems.append(_over("spec.resources", f"the plan needs {plan.nodes} x "
                              f"{plan.gpus_per_node} = {gpus} GPUs", namespace,
                              limits.max_gpus, policy.limits_value(namespace, "max_gpus"), hint))
    return problems


def image_allowed(image: str, prefixes: Sequence[str]) -> bool:
    """Whether the image starts with a prefix at a name boundary: registry.corp/ml allows
    registry.corp/ml/x and registry.corp/ml:1, never registry.corp/ml-evil/x. A name without
    a registry is Docker Hub's, so docker.io/library/ allows ubuntu:24.04 as well."""
    if not prefixes:
        return True
    names = {image, _docker_hub_name(image)}
    return any(_at_boundary(name, prefix) for name in names for prefix in prefixes)


def _at_boundary(image: str, prefix: str) -> bool:
    if not image.startswith(prefix):
        return False
    rest = image[len(prefix):]
    return prefix.endswith(("/", ":", "@")) or rest == "" or rest[0] in "/:@"


def _docker_hub_name(image: str) -> str:
    """The full name the runtime pulls: a first component without '.', ':' or 'localhost'
    is a Docker Hub repository (and a single one is under library/)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if slash else f"docker.io/library/{image}"


def _image(spec: FineTuneJobSpec, policy: Policy) -> list[Problem]:
    prefixes = policy.allowed_image_prefixes
    if not spec.image or image_allowed(spec.image, prefixes):
        return []
    return [_refused("spec.image", repr(spec.image), "allowedImagePrefixes", prefixes,
                     "use an allowed image")]


def _tolerations(spec: FineTuneJobSpec, policy: Policy) -> list[Problem]:
    rules = policy.allowed_tolerations
    if not rules:
        return []
    problems = []
    for i, toleration in enumerate(spec.resources.tolerations):
        if toleration in policy.forced_tolerations or any(r.allows(toleration) for r in rules):
            continue
        what = (f"key {echo(toleration.key)}, effect {toleration.effect or 'any'}"
                if toleration.key else "a toleration without a key (it tolerates every taint)")
        problems.append(_refused(f"spec.resources.tolerations[{i}]", what,
                                 "allowedTolerations", [str(r) for r in rules],
                                 "remove it or tolerate an allowed taint"))
    return problems


def _node_selector(spec: FineTuneJobSpec, policy: Policy) -> list[Problem]:
    problems = []
    allowed = policy.allowed_node_selectors
    forced = policy.forced_node_selector
    for key, value in spec.resources.node_selector.items():
        path = f"spec.resources.nodeSelector.{key}"
        if key in forced:
            if value != forced[key]:
                problems.append(Problem(path, f"{echo(value)} would change the operator's forced "
                                        f"node selector ({VALUE}.forcedNodeSelector: "
                                        f"{key}={forced[key]}); remove it (every pod "
                                        f"gets that one) or {ASK}"))
        elif allowed and key not in allowed and f"{key}={value}" not in allowed:
            problems.append(_refused(path, repr(f"{key}={value}"), "allowedNodeSelectors",
                                     allowed, "remove it or select allowed node labels"))
    return problems


def _priority_class(spec: FineTuneJobSpec, policy: Policy) -> list[Problem]:
    name = spec.resources.priority_class_name
    allowed = policy.allowed_priority_classes
    if not name or not allowed or name in allowed:
        return []
    return [_refused("spec.resources.priorityClassName", repr(name), "allowedPriorityClasses",
                     allowed, "use an allowed priority class")]


def _requested_size(spec: FineTuneJobSpec, namespace: str, policy: Policy) -> list[Problem]:
    """What the spec itself asks beyond the limits, before a plan (and a sizing pod)."""
    r = spec.resources
    limits = policy.limits(namespace)
    problems = []
    if limits.max_nodes is not None and r.nodes is not None and r.nodes > limits.max_nodes:
        problems.append(_over("spec.resources.nodes", f"{r.nodes} nodes", namespace,
                              limits.max_nodes, policy.limits_value(namespace, "max_nodes"),
                              "lower spec.resources.nodes"))
    least = r.nodes or 1
    if r.gpu != "cpu" and limits.max_gpus is not None \
            and least * r.gpus_per_node > limits.max_gpus:
        what = (f"{r.nodes} x {r.gpus_per_node} = {least * r.gpus_per_node} GPUs" if r.nodes
                else f"{r.gpus_per_node} GPUs on one node")
        problems.append(_over("spec.resources.gpusPerNode", what, namespace, limits.max_gpus,
                              policy.limits_value(namespace, "max_gpus"),
                              "lower spec.resources.gpusPerNode"
                              + (" or nodes" if r.nodes and r.nodes > 1 else "")))
    return problems


def _refused(path: str, what: str, value: str, allowed: Sequence[str], hint: str) -> Problem:
    return Problem(path, f"{what} is not allowed by the operator's policy ({VALUE}.{value}: "
                   f"{', '.join(allowed)}); {ASK} or {hint}")


def _over(path: str, what: str, namespace: str, limit: int, value: str, hint: str
          ) -> Problem:
    return Problem(path, f"{what}, more than a job of namespace {namespace!r} may use "
                   f"({value}: {limit}); {hint}, or {ASK}")


# --------------------------------------------------------------------------- the pods


def pod_tolerations(policy: Policy, tolerations: Sequence[Toleration]) -> list[dict[str, Any]]:
    """The job's tolerations, then the forced ones it does not have already."""
    extra = [t for t in policy.forced_tolerations if t not in tolerations]
    return [t.to_wire() for t in (*tolerations, *extra)]


def pod_node_selector(policy: Policy, selector: Mapping[str, str]) -> dict[str, str]:
    """The job's nodeSelector with the forced entries over it (`violations` refuses a job
    that sets one differently; here the forced value wins regardless)."""
    return {**selector, **policy.forced_node_selector}
