"""The API server's own validation rules for the fields of what the operator renders.

Transcribed from k8s.io/apimachinery pkg/util/validation (IsQualifiedName, IsValidLabelValue,
IsDNS1123Label, IsDNS1123Subdomain, IsConfigMapKey) and k8s.io/kubernetes pkg/apis/core
validation (ValidateTolerations, the volume mounts, MaxConfigMapSize). Each function returns
the reasons a value is refused, [] when the API server takes it; none knows about FineTuneJobs.

validation.py uses them (through apicheck.py) on the fields a user writes, naming the field,
and apicheck.py on every rendered object before it is created: a spec that passes them is not
refused with 422 after it looked valid. tests/e2e/test_cluster_rendered_objects.py holds them
against a real API server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

DNS_LABEL_MAX = 63  # RFC 1035 / 1123 labels: Service names, pod hostnames
DNS_SUBDOMAIN_MAX = 253  # object names, label key prefixes, Secret and ConfigMap keys
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63  # the name part of a label key
# corev1 MaxConfigMapSize: the bytes of all keys and values of data and binaryData together.
CONFIG_MAP_DATA_MAX = 1024 * 1024
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Equal", "Exists")

# Matched with fullmatch: Python's `$` also matches before a final newline, Go's does not.
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_1123_SUBDOMAIN = re.compile(rf"{_DNS_1123_LABEL}(\.{_DNS_1123_LABEL})*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")

_LABEL_CHARS = "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"


# --------------------------------------------------------------------------- DNS names


def is_dns_1035_label(name: str) -> bool:
    return len(name) <= DNS_LABEL_MAX and has_dns_1035_characters(name)


def has_dns_1035_characters(name: str) -> bool:
    """The characters of an RFC 1035 label, whatever the length (checked on its own)."""
    return bool(_DNS_1035.fullmatch(name))


def dns_1035_label_errors(value: str) -> list[str]:
    """What Service names must be."""
    errors = _too_long(value, DNS_LABEL_MAX)
    if not has_dns_1035_characters(value):
        errors.append("must be lower case letters, digits and '-', start with a letter and "
                      "end with a letter or digit")
    return errors


def dns_1123_subdomain_errors(value: str) -> list[str]:
    """What object names (ConfigMap, Job, Secret, PriorityClass) must be."""
    errors = _too_long(value, DNS_SUBDOMAIN_MAX)
    if not _DNS_1123_SUBDOMAIN.fullmatch(value):
        errors.append("must be lower case letters, digits, '-' and '.', start and end with "
                      "a letter or digit (a DNS-1123 subdomain such as my-name.example)")
    return errors


# --------------------------------------------------------------------------- labels


def label_key_errors(key: str) -> list[str]:
    """IsQualifiedName: [prefix/]name, the prefix a DNS subdomain, the name 63 characters of
    letters, digits, '-', '_' and '.' (label keys, toleration keys)."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return ["has an empty prefix before '/'"]
    if "/" in prefix:
        return ["must have at most one '/' (prefix/name)"]
    errors = [f"prefix {msg}" for msg in dns_1123_subdomain_errors(prefix)] if slash else []
    if not name:
        return [*errors, "must have a name (the part after any '/')"]
    if len(name) > QUALIFIED_NAME_MAX:
        errors.append(f"name part must be at most {QUALIFIED_NAME_MAX} characters "
                      f"(got {len(name)})")
    if not _QUALIFIED_NAME.fullmatch(name):
        errors.append(f"name part must be {_LABEL_CHARS}")
    return errors


def label_value_errors(value: str) -> list[str]:
    """IsValidLabelValue: empty, or up to 63 label characters (label values, Kueue queue
    names, toleration values)."""
    errors = _too_long(value, LABEL_VALUE_MAX)
    if not _LABEL_VALUE.fullmatch(value):
        errors.append(f"must be empty or {_LABEL_CHARS}")
    return errors


# --------------------------------------------------------------------------- keys


def config_map_key_errors(key: str) -> list[str]:
    """IsConfigMapKey, which Secret keys obey too (secretKeyRef.key): [-._a-zA-Z0-9]+, not
    '.' and not starting with '..' (a key is a file name in a mounted volume)."""
    errors = _too_long(key, DNS_SUBDOMAIN_MAX)
    if not _CONFIG_MAP_KEY.fullmatch(key):
        errors.append("must be letters, digits, '-', '_' or '.' (a file name)")
    if key == ".":
        errors.append("must not be '.'")
    elif key.startswith(".."):
        errors.append("must not start with '..'")
    return errors


def config_map_size(data: Mapping[str, str], binary: Mapping[str, str] | None = None) -> int:
    """The size the API server holds against CONFIG_MAP_DATA_MAX (bytes of keys and values;
    binaryData values are counted as stored, base64)."""
    pairs = list(data.items()) + list((binary or {}).items())
    return sum(len(k.encode()) + len(v.encode()) for k, v in pairs)


# --------------------------------------------------------------------------- tolerations


def toleration_errors(toleration: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, reason) for one toleration in its wire form, as ValidateTolerations reads it:
    an empty key needs operator Exists (it matches every taint), tolerationSeconds needs
    effect NoExecute, Equal (or no operator) takes a label value, Exists no value."""
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    value = toleration.get("value") or ""
    effect = toleration.get("effect") or ""
    out = [("key", msg) for msg in (label_key_errors(key) if key else [])]
    if not key and operator != "Exists":
        out.append(("operator", ("must be Exists when key is empty (it tolerates every "
                    "taint); give the taint's key, or set operator: Exists")))
    if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
        out.append(("effect", ("must be NoExecute when tolerationSeconds is set (only NoExecute "
                    f"taints evict after a delay; got {effect or 'none'})")))
    if operator == "Equal":
        out += [("value", msg) for msg in label_value_errors(value)]
    elif operator == "Exists":
        if value:
            out.append(("value", ("must be empty when operator is Exists (remove value, or "
                        "set operator: Equal)")))
    else:
        out.append(("operator", f"must be one of {', '.join(TOLERATION_OPERATORS)}"))
    if effect and effect not in TAINT_EFFECTS:
        out.append(("effect", f"must be one of {', '.join(TAINT_EFFECTS)} or empty"))
    return out


# --------------------------------------------------------------------------- mounts


def duplicate_mount_paths(paths: list[str]) -> list[str]:
    """Mount paths of one container given twice: the API server wants them unique."""
    seen: set[str] = set()
    return [p for p in paths if p in seen or seen.add(p)]  # type: ignore[func-returns-value]


def overlaps(path: str, other: str) -> bool:
    """Whether two absolute mount paths are the same folder or one holds the other: a volume
    mounted at one hides or is nested in the other's (not refused by the API server when
    they differ, but the pod breaks: a read-only config volume, the memory of /dev/shm)."""
    a, b = PurePosixPath(path).parts, PurePosixPath(other).parts
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def image_errors(image: str) -> list[str]:
    if image != image.strip():
        return ["must not have leading or trailing whitespace"]
    return [] if image else ["must not be empty"]


def _too_long(value: str, limit: int) -> list[str]:
    return [f"must be at most {limit} characters (got {len(value)})"] if len(value) > limit \
        else []
