"""Generated values for the API server's rules (finetune_operator/apirules.py), each known good
or bad by how it was built, not by the code under test: a label value of 63 label characters
is good, of 64 bad; a toleration's verdict comes from the rules of ValidateTolerations as
`toleration_verdict` states them, one by one.

`spec_cases` turns them into one-field edits of examples/tiny-chat-k8s.yaml, with the field
that validation must name (None: accepted). The unit tests run them through validate_job,
tests/e2e/test_cluster_rendered_objects.py through a real API server.
"""

from __future__ import annotations

import copy
import itertools
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from finetune_operator.render import FIXED_MOUNT_PATHS

from tests.conftest import ROOT

BASE = ROOT / "examples" / "tiny-chat-k8s.yaml"
ALNUM = string.ascii_letters + string.digits
LABEL_INNER = ALNUM + "-_."
LOWER_ALNUM = string.ascii_lowercase + string.digits
# Characters no label, DNS name or key takes (a space, punctuation, unicode, a newline).
FOREIGN = [" ", "!", "@", ":", "/", "é", "中", "\n", "*"]


def _rng(seed: str) -> random.Random:
    return random.Random(f"apiserver-cases-{seed}")


def _word(rng: random.Random, length: int, edge: str, inner: str) -> str:
    """`length` characters, the first and last from `edge`, the others from `inner`."""
    if length == 1:
        return rng.choice(edge)
    middle = "".join(rng.choice(inner) for _ in range(length - 2))
    return rng.choice(edge) + middle + rng.choice(edge)


def _spoil(rng: random.Random, value: str) -> str:
    """`value` with one foreign character put at a random place."""
    at = rng.randrange(len(value) + 1)
    return value[:at] + rng.choice(FOREIGN) + value[at:]


# --------------------------------------------------------------------------- labels


def label_values() -> tuple[list[str], list[str]]:
    """(good, bad) label values: empty or <= 63 label characters, alphanumeric at both ends."""
    rng = _rng("label-value")
    good = ["", "a", "Z9", "a" * 63, _word(rng, 63, ALNUM, LABEL_INNER), "v1.2_3-x"]
    good += [_word(rng, rng.randint(1, 63), ALNUM, LABEL_INNER) for _ in range(12)]
    bad = ["a" * 64, _word(rng, 64, ALNUM, LABEL_INNER), "-a", "a-", "_a", "a.", ".a",
           "é", "中文", "a b", "a/b", "a\n"]
    bad += [_spoil(rng, _word(rng, rng.randint(1, 40), ALNUM, LABEL_INNER)) for _ in range(12)]
    bad += [rng.choice("-_.") + _word(rng, rng.randint(1, 20), ALNUM, LABEL_INNER)
            for _ in range(4)]
    return good, bad


def dns_subdomains() -> tuple[list[str], list[str]]:
    """(good, bad) DNS-1123 subdomains (non-empty): lower case labels joined by '.'."""
    rng = _rng("subdomain")

    def label(n: int) -> str:
        return _word(rng, n, LOWER_ALNUM, LOWER_ALNUM + "-")

    good = ["a", "high", "high-priority", "a.b-c", "0x", ".".join(["a" * 63] * 4)[:253]]
    good += [".".join(label(rng.randint(1, 20)) for _ in range(rng.randint(1, 4)))
             for _ in range(10)]
    long_one = ".".join(["a" * 63] * 4) + "a"  # 256
    bad = ["High", "a_b", "-a", "a-", "a.", ".a", "a..b", "é", "a b", "a\n", long_one[:254]]
    bad += [_spoil(rng, label(rng.randint(1, 20))) for _ in range(8)]
    return [g for g in good if not g.endswith(".")], bad


def label_keys() -> tuple[list[str], list[str]]:
    """(good, bad) label keys: [DNS-subdomain prefix/]name, the name a non-empty label value."""
    values_good, values_bad = label_values()
    prefixes_good, prefixes_bad = dns_subdomains()
    names_good = [v for v in values_good if v]
    good = names_good[:8] + [f"{p}/{n}" for p, n in zip(prefixes_good, names_good[2:],
                                                         strict=False)]
    good += ["nvidia.com/gpu.product", "kubernetes.io/hostname"]
    bad = ["", "/a", "a/", "a/b/c", "bad key!"]
    bad += [v for v in values_bad if "/" not in v][:10]
    bad += [f"{p}/a" for p in prefixes_bad if "/" not in p][:6]
    bad += [f"example.com/{v}" for v in values_bad if "/" not in v][:4]
    return good, bad


# --------------------------------------------------------------------------- keys


def secret_keys() -> tuple[list[str], list[str]]:
    """(good, bad) Secret keys: [-._a-zA-Z0-9]+ of <= 253, not '.', not starting with '..'."""
    rng = _rng("secret-key")
    inner = ALNUM + "-._"
    good = ["token", "HF_TOKEN", "a.b-c_d", ".hidden", "-", "_", "a..b", "x" * 253]
    good += [rng.choice(ALNUM + "-_") + "".join(rng.choice(inner) for _ in
                                                range(rng.randint(0, 30))) for _ in range(8)]
    bad = [".", "..", "../../token", "..a", "a/b", "a b", "é", "x" * 254, "tok:en", "key\n"]
    bad += [_spoil(rng, "".join(rng.choice(inner) for _ in range(rng.randint(1, 20))))
            for _ in range(6)]
    return good, [b for b in bad if b]


# --------------------------------------------------------------------------- tolerations


def tolerations() -> list[dict[str, Any]]:
    """Every combination of key x operator x value x effect x tolerationSeconds."""
    keys = [None, "dedicated", "example.com/gpu", "bad key!"]
    operators = [None, "Equal", "Exists"]
    values = [None, "gpu", "bad value!"]
    effects = [None, "NoSchedule", "PreferNoSchedule", "NoExecute"]
    seconds = [None, 0, 300]
    out = []
    for key, op, value, effect, secs in itertools.product(keys, operators, values, effects,
                                                          seconds):
        fields = {"key": key, "operator": op, "value": value, "effect": effect,
                  "tolerationSeconds": secs}
        out.append({k: v for k, v in fields.items() if v is not None})
    return out


def toleration_verdict(t: dict[str, Any]) -> str | None:
    """The first field the API server refuses of toleration `t`, in the order validate_job
    reports them; None when it takes it. Each line is one rule of ValidateTolerations."""
    key, op = t.get("key"), t.get("operator", "Equal")
    if key is not None and (" " in key or "!" in key):
        return "key"  # a key is a qualified name
    if key is None and op != "Exists":
        return "operator"  # an empty key tolerates every taint: only with Exists
    if "tolerationSeconds" in t and t.get("effect") != "NoExecute":
        return "effect"  # only NoExecute taints evict after a time
    if op == "Equal" and " " in (t.get("value") or ""):
        return "value"  # Equal compares a label value
    if op == "Exists" and t.get("value"):
        return "value"  # Exists compares nothing
    return None


# --------------------------------------------------------------------------- output paths


def output_paths() -> tuple[list[str], list[str]]:
    """(good, bad) output.path: bad when it is, lies inside or holds a fixed mount of the pod;
    good beside them (/tmpx is not /tmp) or relative (under /output)."""
    bad = ["/"]
    # (absolute: the example has output.pvc, which takes absolute paths only)
    good = ["/output", "/output/model", "/models/run-1", "/workspace"]
    for mount in FIXED_MOUNT_PATHS:
        bad += [mount, mount + "/", mount + "/model", mount + "/a/b"]
        parent = str(Path(mount).parent)
        if parent != "/":
            bad.append(parent)
        good += [mount + "x", mount + "-out", "/out" + mount]
    return good, bad


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class SpecCase:
    """examples/tiny-chat-k8s.yaml with `edit` applied (section -> fields merged into it)."""

    id: str
    edit: dict[str, Any]
    field: str | None  # the field validation must name; None: accepted

    def document(self, name: str = "tiny-chat") -> dict[str, Any]:
        doc = yaml.safe_load(BASE.read_text(encoding="utf-8"))
        doc["metadata"]["name"] = name
        for section, fields in self.edit.items():
            doc["spec"].setdefault(section, {}).update(copy.deepcopy(fields))
        return doc


def _cases(prefix: str, section: str, make: Any, good: list[Any], bad: list[Any],
           field: str) -> list[SpecCase]:
    return ([SpecCase(f"{prefix}-good-{i}", {section: make(v)}, None)
             for i, v in enumerate(good)]
            + [SpecCase(f"{prefix}-bad-{i}", {section: make(v)}, field)
               for i, v in enumerate(bad)])


def spec_cases() -> list[SpecCase]:
    values_good, values_bad = label_values()
    keys_good, keys_bad = label_keys()
    subs_good, subs_bad = dns_subdomains()
    secrets_good, secrets_bad = secret_keys()
    paths_good, paths_bad = output_paths()
    sel = "spec.resources.nodeSelector"
    cases = _cases("selector-value", "resources", lambda v: {"nodeSelector": {"pool": v}},
                   values_good, values_bad, f"{sel}.pool")
    cases += _cases("selector-key", "resources", lambda k: {"nodeSelector": {k: "x"}},
                    keys_good, keys_bad, sel)
    cases += _cases("queue", "resources", lambda v: {"queueName": v},
                    [v for v in values_good if v], values_bad, "spec.resources.queueName")
    cases += _cases("priority", "resources", lambda v: {"priorityClassName": v},
                    subs_good, subs_bad, "spec.resources.priorityClassName")
    cases += _cases("secret-key", "secrets", lambda k: {"hfToken": {"name": "hf", "key": k}},
                    secrets_good, secrets_bad, "spec.secrets.hfToken.key")
    cases += _cases("secret-name", "secrets", lambda n: {"hfToken": {"name": n, "key": "t"}},
                    subs_good, subs_bad, "spec.secrets.hfToken.name")
    cases += _cases("output", "output", lambda p: {"path": p}, paths_good, paths_bad,
                    "spec.output.path")
    for i, t in enumerate(tolerations()):
        verdict = toleration_verdict(t)
        field = f"spec.resources.tolerations[0].{verdict}" if verdict else None
        cases.append(SpecCase(f"toleration-{i}", {"resources": {"tolerations": [t]}}, field))
    return cases
