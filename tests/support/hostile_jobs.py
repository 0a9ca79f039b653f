"""Generated hostile FineTuneJob specs (issue 15's root causes), each with the field it must
be refused for.

Every case is the tiny CPU job of `ftj_samples.spec_dict` with one part made hostile. The
values are generated per kind (each bound crossed several ways, each API-server rule broken
each way it can be), so a fix of the listed examples alone does not pass them. A case knows
only which field the refusal names (`field`, a prefix of the path in the message), not the
wording: the messages belong to validation.

Kinds:
- bounds: numbers far beyond any real model (work that grows with them must not start);
- apiserver: values the API server refuses in a rendered object (labels, tolerations, names,
  mount paths, Secret keys, object size);
- amplification: megabyte strings that must not be copied into status;
- secrets: a token in shapes other than a Secret reference (never echoed);
- types: values the CRD's types refuse but a lax parse would coerce.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.ftj_samples import spec_dict

# A token in the Hugging Face shape; no case may see it echoed anywhere.
TOKEN = "hf_" + "QmFkVG9rZW5Gb3JUZXN0aW5nT25seQ"
# Near a megabyte, and under the emulator's 1 MiB request limit (the real API server takes
# 3 MiB requests and stores 1.5 MiB objects): storable, and huge next to any real value.
MEGABYTE = 900_000


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    spec: dict[str, Any]
    field: str  # the refusal's message names a path starting with this


def _with(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    spec = copy.deepcopy(spec_dict())
    edit(spec)
    return spec


def _set(path: str, value: Any) -> dict[str, Any]:
    """The tiny spec with `value` at the dotted `path` (camelCase wire names)."""
    def edit(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _with(edit)


def _sized_model(parameters: Any) -> dict[str, Any]:
    """A model known only by its size: nothing to download or read to plan it."""
    return _set("model", {"name": "acme/huge", "parameters": parameters})


CONFIG_SIZES = ["num_hidden_layers", "hidden_size", "intermediate_size",
                "num_attention_heads", "num_key_value_heads", "max_position_embeddings"]
HUGE_INTS = [40_000_000, 10**12, 10**18, 2**63, 10**100]


def bounds() -> Iterator[Case]:
    for key in CONFIG_SIZES:
        # a context of tens of millions is conceivable; a trillion is not
        for value in HUGE_INTS[1:] if key == "max_position_embeddings" else HUGE_INTS:
            yield Case(f"bounds-config-{key}-{value:.0e}", "bounds",
                       _set(f"model.config.{key}", value), "spec.model")
    for vocab in (10**9, 10**18):
        yield Case(f"bounds-tokenizer-vocab-{vocab:.0e}", "bounds",
                   _set("model.tokenizer", {"train": {"vocabSize": vocab}}), "spec.model")
    for i, parameters in enumerate(("9" * 40 + "T", "1e400", "1e30B", str(10**30), 10**30)):
        yield Case(f"bounds-parameters-{i}", "bounds",
                   _sized_model(parameters), "spec.model.parameters")
    for field in ("memory", "cpu"):
        for i, quantity in enumerate(("1e400", "9" * 30 + "Ei", "1e18Ei", "9" * 23)):
            yield Case(f"bounds-{field}-{i}", "bounds",
                       _set(f"resources.{field}", quantity), f"spec.resources.{field}")


BAD_LABEL_KEYS = ["bad key!", "-lead", "trail-", "a" * 64, "x/y/z", "", "Example..com/k",
                  "example.com/", "ünicode"]
BAD_LABEL_VALUES = ["a" * 64, "v@l", "-v", "v-", "two words", "ünicode"]
BAD_TOLERATIONS = [
    {"key": "gpu", "operator": "Exists", "value": "x"},            # Exists takes no value
    {"key": "gpu", "operator": "Equal", "value": "x", "effect": "NoSchedule",
     "tolerationSeconds": 5},                                     # seconds need NoExecute
    {"key": "gpu", "value": "x", "tolerationSeconds": 5},           # no effect: not NoExecute
    {"operator": "Equal", "value": "x"},                            # Equal needs a key
    {"value": "x"},                                                 # Equal by default
    {"key": "bad key", "operator": "Exists"},                       # not a label key
    {"key": "gpu", "operator": "Equal", "value": "v@l"},            # not a label value
]
BAD_DNS_NAMES = ["Bad_Class", "UPPER", "a..b", "-x", "x-", "two words", "dot."]
BAD_QUEUE_NAMES = ["Bad Queue!", "-q", "q-", "a/b", "ünicode"]
FIXED_MOUNTS = ["/tmp", "/dev/shm", "/etc/finetune", "/data"]
BAD_SECRET_KEYS = ["../../token", "..", ".", "a/b", "tok en", "key:1"]


def apiserver() -> Iterator[Case]:
    for i, key in enumerate(BAD_LABEL_KEYS):
        yield Case(f"apiserver-node-selector-key-{i}", "apiserver",
                   _set("resources.nodeSelector", {key: "v"}), "spec.resources.nodeSelector")
    for i, value in enumerate(BAD_LABEL_VALUES):
        yield Case(f"apiserver-node-selector-value-{i}", "apiserver",
                   _set("resources.nodeSelector", {"pool": value}),
                   "spec.resources.nodeSelector")
    for i, toleration in enumerate(BAD_TOLERATIONS):
        yield Case(f"apiserver-toleration-{i}", "apiserver",
                   _set("resources.tolerations", [toleration]),
                   "spec.resources.tolerations[0]")
    for i, name in enumerate(BAD_DNS_NAMES):
        yield Case(f"apiserver-priority-class-{i}", "apiserver",
                   _set("resources.priorityClassName", name),
                   "spec.resources.priorityClassName")
    for i, name in enumerate(BAD_QUEUE_NAMES):
        yield Case(f"apiserver-queue-{i}", "apiserver",
                   _set("resources.queueName", name), "spec.resources.queueName")
    for mount in FIXED_MOUNTS:
        for path in (mount, mount + "/out", mount.rsplit("/", 1)[0] or "/"):
            yield Case(f"apiserver-output-path{path.replace('/', '-')}-{mount[1:4]}",
                       "apiserver", _set("output.path", path), "spec.output.path")
    for i, key in enumerate(BAD_SECRET_KEYS):
        yield Case(f"apiserver-secret-key-{i}", "apiserver",
                   _set("secrets", {"hfToken": {"name": "hf", "key": key}}),
                   "spec.secrets.hfToken.key")
    for i, name in enumerate(BAD_DNS_NAMES):
        yield Case(f"apiserver-secret-name-{i}", "apiserver",
                   _set("secrets", {"hfToken": {"name": name, "key": "token"}}),
                   "spec.secrets.hfToken.name")
    # Over the ConfigMap's 1 MiB: the config is copied into the rendered trainer config.
    bulky = {f"extra_{i}": "y" * 1000 for i in range(1100)}
    yield Case("apiserver-configmap-over-1mib", "apiserver",
               _set("model.config", {**spec_dict()["model"]["config"], **bulky}),
               "model.config")


def amplification() -> Iterator[Case]:
    huge = "x" * MEGABYTE
    yield Case("amplification-parameters", "amplification", _sized_model(huge),
               "spec.model.parameters")
    for path, field in [("model.name", "spec.model.name"),
                        ("dataset.train.path", "spec.dataset.train.path"),
                        ("resources.gpu", "spec.resources.gpu"),
                        ("resources.priorityClassName", "spec.resources.priorityClassName"),
                        ("output.path", "spec.output.path")]:
        yield Case(f"amplification-{path.replace('.', '-')}", "amplification",
                   _set(path, huge), field)
    yield Case("amplification-toleration-key", "amplification",
               _set("resources.tolerations", [{"key": huge, "operator": "Exists"}]),
               "spec.resources.tolerations[0].key")
    yield Case("amplification-node-selector-key", "amplification",
               _set("resources.nodeSelector", {huge: "v"}), "spec.resources.nodeSelector")


def secrets() -> Iterator[Case]:
    shapes: list[tuple[str, Any, str]] = [
        ("plain", TOKEN, "spec.secrets"),
        ("list", {"hfToken": [TOKEN]}, "spec.secrets.hfToken"),
        ("as-key", {TOKEN: "x"}, "spec.secrets"),
        ("nested-key", {"hfToken": {TOKEN: "x"}}, "spec.secrets.hfToken"),
        ("in-list-of-maps", [{"hfToken": TOKEN}], "spec.secrets"),
        ("literal", {"hfToken": TOKEN}, "spec.secrets.hfToken"),
        ("as-name", {"hfToken": {"name": TOKEN, "key": "token"}},
         "spec.secrets.hfToken.name"),
    ]
    for shape, value, field in shapes:
        yield Case(f"secrets-{shape}", "secrets", _set("secrets", value), field)
    # A token pasted into a field that is not a secret, and refused there.
    for path, field in [("training.epochs", "spec.training.epochs"),
                        ("resources.gpu", "spec.resources.gpu"),
                        ("dataset.format", "spec.dataset.format")]:
        yield Case(f"secrets-pasted-{path.replace('.', '-')}", "secrets", _set(path, TOKEN),
                   field)


def types() -> Iterator[Case]:
    coerced = [("dataset.dedupe", "yes"), ("dataset.dedupe", "true"), ("dataset.dedupe", 1),
               ("training.epochs", "3"), ("training.globalBatchSize", "32"),
               ("training.globalBatchSize", 32.5), ("resources.gpusPerNode", "2"),
               ("resources.maxNodes", True), ("training.learningRate", "1e-4")]
    for path, value in coerced:
        yield Case(f"types-{path.replace('.', '-')}-{str(value)[:4]}", "types",
                   _set(path, value), f"spec.{path}")
    for repo in ("evil..repo", "evil--repo", "org/evil..repo", "org/-lead", "a/b/c"):
        yield Case(f"types-model-name-{repo.replace('/', '_')}", "types",
                   _set("model", {"name": repo, "parameters": "1B"}), "spec.model.name")
    for value in (["llama"], {"type": "llama"}, 7):
        yield Case(f"types-model-type-{type(value).__name__}", "types",
                   _set("model.config.model_type", value), "spec.model.config")
    for value in ("2", 2.5, [2]):
        yield Case(f"types-config-layers-{type(value).__name__}", "types",
                   _set("model.config.num_hidden_layers", value), "spec.model.config")


KINDS = {"bounds": bounds, "apiserver": apiserver, "amplification": amplification,
         "secrets": secrets, "types": types}


def all_cases() -> list[Case]:
    cases = [case for generate in KINDS.values() for case in generate()]
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


def k8s_name(case_id: str) -> str:
    """The case as a FineTuneJob name: lower-case DNS label, short enough for its children."""
    cleaned = "".join(c if c.isascii() and c.isalnum() else "-" for c in case_id.lower())
    readable = "-".join(part for part in cleaned.split("-") if part)[:42].strip("-")
    return f"{readable}-{hashlib.sha1(case_id.encode()).hexdigest()[:6]}"  # ids differ here
