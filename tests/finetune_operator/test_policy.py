"""The multi-tenant policy (policy.py): what each rule allows and refuses, the messages that
name the field and the chart value, the namespace limits, the forced pod entries, and how a
policy is read. Cases are generated (fixed seeds) around each rule's boundary."""

from __future__ import annotations

import itertools
import json
import random
import string

import pytest
from finetune_contract.api import FineTuneJobSpec, Toleration
from finetune_operator import policy
from finetune_operator.policy import NO_POLICY, Policy, PolicyError

from tests.support.ftj_samples import gpu_spec, plan, spec, spec_dict

RNG = random.Random(15)


def _word(rng: random.Random, length: int = 6) -> str:
    return rng.choice(string.ascii_lowercase) + "".join(
        rng.choice(string.ascii_lowercase + string.digits) for _ in range(length - 1))


def _tail(rng: random.Random) -> str:
    """What may follow an allowed prefix's name: a path, a tag or a digest."""
    kind = rng.choice(["path", "tag", "digest", "path+tag"])
    if kind == "path":
        return f"/{_word(rng)}"
    if kind == "tag":
        return f":{rng.randint(0, 9)}.{rng.randint(0, 9)}"
    if kind == "digest":
        return "@sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))
    return f"/{_word(rng)}/{_word(rng)}:v{rng.randint(1, 99)}"


PREFIXES = ["registry.corp/ml/", "registry.corp/ml", "ghcr.io/org/trainer",
            "registry.corp:5000/team/", "docker.io/library/"]


def _allowed_images(prefix: str, rng: random.Random) -> list[str]:
    """A prefix that ends in '/' allows what is under it; one without, the name itself with
    a tag or digest, and what is under it."""
    if prefix.endswith("/"):
        return [prefix + _word(rng) + rng.choice(["", _tail(rng)]) for _ in range(8)]
    return [prefix + _tail(rng) for _ in range(8)]


def _tricks(prefix: str, rng: random.Random) -> list[str]:
    """Names that start like the prefix, or contain it, without being under it."""
    bare = prefix.rstrip("/")
    under_only = [f"{bare}:1", bare] if prefix.endswith("/") else []  # not under it
    return under_only + [
        f"{bare}-evil/{_word(rng)}:1",  # registry.corp/ml vs registry.corp/ml-evil/
        f"{bare}{_word(rng, 3)}/x:1",
        f"{bare}.evil.io/{_word(rng)}",
        f"evil.io/{bare}/{_word(rng)}",  # the prefix as a path on another registry
        f"{bare[:-1]}/{_word(rng)}",  # one character short
        f"{bare.upper()}/{_word(rng)}",  # registry names match as written
    ]


IMAGE_CASES = [(prefix, image, True) for prefix in PREFIXES
               for image in _allowed_images(prefix, RNG)] + \
              [(prefix, image, False) for prefix in PREFIXES for image in _tricks(prefix, RNG)]


def test_the_generated_image_cases_cover_both_outcomes_for_every_prefix():
    for prefix in PREFIXES:
        outcomes = {allowed for p, _, allowed in IMAGE_CASES if p == prefix}
        assert outcomes == {True, False}
    assert len(IMAGE_CASES) > 60


@pytest.mark.parametrize("prefix,image,allowed", IMAGE_CASES)
def test_an_image_is_allowed_only_under_a_prefix_at_a_name_boundary(prefix, image, allowed):
    assert policy.image_allowed(image, [prefix]) is allowed


@pytest.mark.parametrize("image,allowed", [
    ("ubuntu:24.04", True), ("library/ubuntu", True), ("python", True),
    ("evil/ubuntu:1", False), ("localhost/ubuntu", False), ("localhost:5000/ubuntu", False),
    ("docker.io/library/ubuntu", True), ("quay.io/library/ubuntu", False),
])
def test_a_name_without_a_registry_is_docker_hubs(image, allowed):
    assert policy.image_allowed(image, ["docker.io/library/"]) is allowed


@pytest.mark.parametrize("image", ["evil.io/x:1", "registry.corp/ml-evil/x", "anything"])
def test_no_prefixes_allow_any_image(image):
    assert policy.image_allowed(image, [])
    assert policy.violations(spec(image=image), "team-a", NO_POLICY) == []


def test_a_refused_image_is_named_with_the_chart_value_and_what_to_do():
    rules = Policy(allowed_image_prefixes=("registry.corp/ml/",))
    (problem,) = policy.violations(spec(image="evil.io/x:1"), "team-a", rules)
    assert str(problem) == (
        "spec.image: 'evil.io/x:1' is not allowed by the operator's policy "
        "(policy.allowedImagePrefixes: registry.corp/ml/); ask your platform team or use an "
        "allowed image")


def test_a_job_without_an_image_gets_the_operators_default_and_is_not_checked():
    rules = Policy(allowed_image_prefixes=("registry.corp/ml/",))
    assert policy.violations(spec(), "team-a", rules) == []


# --------------------------------------------------------------------------- tolerations


TOLERATION_RULES = Policy(
    allowed_tolerations=({"key": "nvidia.com/gpu", "effect": "NoSchedule"}, {"key": "spot"}),
    forced_tolerations=({"key": "pool", "operator": "Equal", "value": "tenants",
                         "effect": "NoSchedule"},),
)
EFFECTS = [None, "NoSchedule", "PreferNoSchedule", "NoExecute"]
TOLERATION_CASES = [
    (key, effect, operator, key == "spot" or (key == "nvidia.com/gpu" and effect == "NoSchedule"))
    for key, effect, operator in itertools.product(
        ["nvidia.com/gpu", "spot", "dedicated", None], EFFECTS, ["Exists", "Equal"])
]


def _toleration(key, effect, operator):
    out = {"operator": operator}
    if key is not None:
        out["key"] = key
    if effect is not None:
        out["effect"] = effect
    if operator == "Equal":
        out["value"] = "true"
    return out


@pytest.mark.parametrize("key,effect,operator,allowed", TOLERATION_CASES)
def test_a_toleration_is_allowed_by_its_key_and_effect(key, effect, operator, allowed):
    filler = {"key": "spot", "operator": "Exists"}  # allowed: the index must be the case's
    job = spec(resources={"gpu": "cpu", "tolerations": [filler, _toleration(key, effect,
                                                                            operator)]})
    problems = policy.violations(job, "team-a", TOLERATION_RULES)
    if allowed:
        assert problems == []
    else:
        (problem,) = problems
        assert problem.path == "spec.resources.tolerations[1]"
        assert "policy.allowedTolerations: nvidia.com/gpu:NoSchedule, spot (any effect)" \
            in problem.message


def test_a_toleration_without_a_key_is_told_it_tolerates_every_taint():
    job = spec(resources={"gpu": "cpu", "tolerations": [{"operator": "Exists"}]})
    (problem,) = policy.violations(job, "team-a", TOLERATION_RULES)
    assert "tolerates every taint" in problem.message


def test_a_job_may_repeat_a_forced_toleration():
    forced = TOLERATION_RULES.forced_tolerations[0].to_wire()
    job = spec(resources={"gpu": "cpu", "tolerations": [forced]})
    assert policy.violations(job, "team-a", TOLERATION_RULES) == []


@pytest.mark.parametrize("key,effect,operator,_", TOLERATION_CASES)
def test_no_allowed_tolerations_allow_any(key, effect, operator, _):
    job = spec(resources={"gpu": "cpu", "tolerations": [_toleration(key, effect, operator)]})
    assert policy.violations(job, "team-a", NO_POLICY) == []


def test_forced_tolerations_are_added_once():
    forced = TOLERATION_RULES.forced_tolerations
    own = [Toleration(key="spot", operator="Exists")]
    assert policy.pod_tolerations(TOLERATION_RULES, own) == [
        {"key": "spot", "operator": "Exists"}, forced[0].to_wire()]
    assert policy.pod_tolerations(TOLERATION_RULES, [*own, forced[0]]) == [
        {"key": "spot", "operator": "Exists"}, forced[0].to_wire()]
    assert policy.pod_tolerations(NO_POLICY, []) == []


# --------------------------------------------------------------------------- node selectors


SELECTOR_RULES = Policy(allowed_node_selectors=("topology.kubernetes.io/zone", "tier=standard"),
                        forced_node_selector={"pool": "tenants"})
SELECTOR_CASES = (
    [("topology.kubernetes.io/zone", _word(RNG), None) for _ in range(4)]
    + [("tier", "standard", None)]
    + [("tier", value, "allowedNodeSelectors") for value in ("gold", "standard2", "")]
    + [("pool", "tenants", None)]
    + [("pool", value, "forcedNodeSelector") for value in ("gpu", "tenants-2", _word(RNG))]
    + [(key, "x", "allowedNodeSelectors") for key in ("zone", "topology.kubernetes.io/zon",
                                                       "kubernetes.io/hostname")]
)


@pytest.mark.parametrize("key,value,broken", SELECTOR_CASES)
def test_a_node_selector_entry_is_allowed_by_key_or_key_value_and_never_overrides_a_forced_one(
    key, value, broken
):
    job = spec(resources={"gpu": "cpu", "nodeSelector": {key: value}})
    problems = policy.violations(job, "team-a", SELECTOR_RULES)
    if broken is None:
        assert problems == []
    else:
        (problem,) = problems
        assert problem.path == f"spec.resources.nodeSelector.{key}"
        assert f"policy.{broken}" in problem.message


@pytest.mark.parametrize("value", ["gpu", "tenants-2", ""])
def test_a_forced_entry_holds_even_when_any_key_is_allowed(value):
    rules = Policy(forced_node_selector={"pool": "tenants"})
    job = spec(resources={"gpu": "cpu", "nodeSelector": {"pool": value, "other": "x"}})
    (problem,) = policy.violations(job, "team-a", rules)
    assert problem.path == "spec.resources.nodeSelector.pool"
    assert "policy.forcedNodeSelector: pool=tenants" in problem.message


def test_the_forced_entries_win_in_the_pods_selector():
    assert policy.pod_node_selector(SELECTOR_RULES, {"pool": "other", "zone": "a"}) == {
        "pool": "tenants", "zone": "a"}
    assert policy.pod_node_selector(NO_POLICY, {"zone": "a"}) == {"zone": "a"}


# --------------------------------------------------------------------------- priority


@pytest.mark.parametrize("name,allowed", [
    ("tenant-low", True), ("tenant-high", True), ("system-cluster-critical", False),
    ("tenant-lo", False), ("tenant-low-2", False), ("TENANT-LOW", False), (None, True),
])
def test_a_priority_class_must_be_listed(name, allowed):
    rules = Policy(allowed_priority_classes=("tenant-low", "tenant-high"))
    job = spec(resources={"gpu": "cpu", "priorityClassName": name})
    problems = policy.violations(job, "team-a", rules)
    assert (problems == []) is allowed
    if not allowed:
        assert problems[0].path == "spec.resources.priorityClassName"
        assert "policy.allowedPriorityClasses: tenant-low, tenant-high" in problems[0].message


# --------------------------------------------------------------------------- limits


LIMITS = Policy(namespace_limits={"*": {"max_gpus": 8, "max_nodes": 2},
                                  "research": {"max_gpus": 32}})
# (namespace, the limits that apply, the chart value each comes from)
NAMESPACES = [
    ("team-a", 8, 2, '"*"', '"*"'),
    ("research", 32, 2, '"research"', '"*"'),  # maxNodes falls back to "*"
]
PLAN_CASES = [(ns, nodes, per_node, gpu) for ns, *_ in NAMESPACES
              for nodes in (1, 2, 3) for per_node in (1, 4, 8, 16) for gpu in ("H100-80GB",
                                                                                "cpu")]


@pytest.mark.parametrize("namespace,nodes,per_node,gpu", PLAN_CASES)
def test_a_plan_may_use_at_most_the_namespaces_gpus_and_nodes(namespace, nodes, per_node, gpu):
    _, max_gpus, max_nodes, gpus_from, nodes_from = next(n for n in NAMESPACES
                                                         if n[0] == namespace)
    problems = policy.plan_violations(plan(nodes=nodes, gpus_per_node=per_node, gpu=gpu),
                                      namespace, LIMITS)
    gpus = 0 if gpu == "cpu" else nodes * per_node
    expected = []
    if nodes > max_nodes:
        expected.append(f'policy.namespaceLimits.{nodes_from}.maxNodes: {max_nodes}')
    if gpus > max_gpus:
        expected.append(f'policy.namespaceLimits.{gpus_from}.maxGpus: {max_gpus}')
    assert len(problems) == len(expected)
    for problem, value in zip(problems, expected, strict=True):
        assert value in problem.message and repr(namespace) in problem.message


@pytest.mark.parametrize("limit", [1, 4, 8, 16])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_gpus_around_the_maximum(limit, delta):
    rules = Policy(namespace_limits={"team-a": {"max_gpus": limit}})
    gpus = limit + delta
    if gpus < 1:
        return
    problems = policy.plan_violations(plan(nodes=1, gpus_per_node=gpus, gpu="H100-80GB"),
                                      "team-a", rules)
    assert bool(problems) is (delta > 0)
    assert policy.plan_violations(plan(nodes=1, gpus_per_node=gpus, gpu="H100-80GB"),
                                  "team-b", rules) == []  # no "*": other namespaces are free


@pytest.mark.parametrize("namespace,max_gpus", [("team-a", 8), ("research", 32)])
@pytest.mark.parametrize("per_node", [4, 8, 16, 64])
def test_a_spec_that_asks_for_more_gpus_on_one_node_is_refused_before_planning(
    namespace, max_gpus, per_node
):
    problems = policy.violations(gpu_spec(gpusPerNode=per_node), namespace, LIMITS)
    assert bool(problems) is (per_node > max_gpus)
    if problems:
        assert problems[0].path == "spec.resources.gpusPerNode"


@pytest.mark.parametrize("nodes", [1, 2, 3, 8])
def test_a_spec_that_forces_more_nodes_is_refused_before_planning(nodes):
    job = spec(resources={"gpu": "cpu", "gpusPerNode": 2, "nodes": nodes, "maxNodes": 8})
    problems = policy.violations(job, "team-a", LIMITS)
    assert [p.path for p in problems] == (["spec.resources.nodes"] if nodes > 2 else [])


def test_a_cpu_job_counts_no_gpus():
    rules = Policy(namespace_limits={"*": {"max_gpus": 0}})
    job = spec(resources={"gpu": "cpu", "gpusPerNode": 16, "maxNodes": 1})
    assert policy.violations(job, "team-a", rules) == []
    assert policy.plan_violations(plan(gpus_per_node=16), "team-a", rules) == []


# --------------------------------------------------------------------------- reading


def test_the_chart_values_shape_parses_to_the_policy():
    text = json.dumps({
        "allowedImagePrefixes": ["registry.corp/ml/"],
        "allowedTolerations": [{"key": "spot"}],
        "forcedTolerations": [{"key": "pool", "operator": "Equal", "value": "t",
                               "effect": "NoSchedule"}],
        "allowedNodeSelectors": ["zone", "tier=standard"],
        "forcedNodeSelector": {"pool": "t"},
        "allowedPriorityClasses": ["low"],
        "namespaceLimits": {"*": {"maxGpus": 8}, "research": {"maxNodes": 4}},
    })
    parsed = policy.parse(text)
    assert parsed.allowed_image_prefixes == ("registry.corp/ml/",)
    assert parsed.forced_tolerations == (Toleration(key="pool", operator="Equal", value="t",
                                                    effect="NoSchedule"),)
    assert parsed.limits("research").model_dump() == {"max_gpus": 8, "max_nodes": 4}
    assert parsed.limits("other").model_dump() == {"max_gpus": 8, "max_nodes": None}


@pytest.mark.parametrize("text", ["", "  ", "{}", "null", "policy: {}"])
def test_an_empty_policy_limits_nothing(text):
    assert policy.parse(text) == NO_POLICY


def test_a_values_file_with_a_policy_key_is_read_too():
    assert policy.parse("policy:\n  allowedPriorityClasses: [low]\n").allowed_priority_classes \
        == ("low",)


@pytest.mark.parametrize("text,complaint", [
    ('{"allowedImagePrefixs": []}', "policy.allowedImagePrefixs: unknown field"),
    ('{"allowedImagePrefixes": [""]}', "policy.allowedImagePrefixes"),
    ('{"allowedImagePrefixes": [" registry.corp/"]}', "policy.allowedImagePrefixes"),
    ('{"allowedTolerations": [{"effect": "NoSchedule"}]}', "policy.allowedTolerations[0].key"),
    ('{"allowedTolerations": [{"key": "a", "effect": "Never"}]}',
     "policy.allowedTolerations[0].effect"),
    ('{"allowedNodeSelectors": ["has space"]}', "policy.allowedNodeSelectors"),
    ('{"forcedNodeSelector": {"pool": "bad value"}}', "policy.forcedNodeSelector"),
    ('{"namespaceLimits": {"a": {"maxGpus": -1}}}', "policy.namespaceLimits.a.maxGpus"),
    ('{"namespaceLimits": {"a": {"maxNodes": 0}}}', "policy.namespaceLimits.a.maxNodes"),
    ('{"namespaceLimits": {"a": {"gpus": 1}}}', "policy.namespaceLimits.a.gpus"),
    ("[1, 2]", "must be a mapping"),
    ("{not json", "neither JSON nor YAML"),
])
def test_a_bad_policy_names_the_field_in_one_line(text, complaint):
    with pytest.raises(PolicyError) as caught:
        policy.parse(text)
    assert complaint in str(caught.value)
    assert "\n" not in str(caught.value) and "kubectl" not in str(caught.value)


def test_the_plan_stays_within_the_namespaces_node_limit_when_a_layout_there_fits():
    from finetune_operator.planner import plan_job

    rules = policy.Policy.model_validate({"namespaceLimits": {"*": {"maxNodes": 1}}})
    spec = FineTuneJobSpec.model_validate(spec_dict(resources={
        "gpu": "cpu", "gpusPerNode": 2, "maxNodes": 2, "strategy": "ddp"}))
    assert plan_job(spec).nodes == 2  # the fastest within the spec's own bounds
    plan = policy.plan_within_limits(plan_job, spec, "tenant-a", rules)
    assert plan.fits and plan.nodes == 1
    assert policy.plan_violations(plan, "tenant-a", rules) == []
