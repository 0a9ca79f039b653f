"""The two Dockerfiles (linted with hadolint), .dockerignore, and the kind cluster config.

The images are built for real by `make cluster-up` (scripts/cluster/images.sh) and run in
the real-cluster tests (tests/e2e/test_cluster_*.py). These are the static checks: hadolint
clean, non-root numeric users, the right extras, torch pinned to the version the Makefile
uses, build arguments for a local base image and a proxy's CA, and agreement with what the
operator's pod spec expects of the image.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool

OPERATOR_DOCKERFILE = ROOT / "operator" / "Dockerfile"
TRAINER_DOCKERFILE = ROOT / "trainer_image" / "Dockerfile"
DOCKERFILES = [OPERATOR_DOCKERFILE, TRAINER_DOCKERFILE]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\")
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _arg_default(path: Path, name: str) -> str:
    for word, rest in _instructions(path):
        if word == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}=... in {path}")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(dockerfile: Path) -> None:
    hadolint = require_tool("hadolint")
    out = subprocess.run([hadolint, "--no-color", str(dockerfile)], check=False,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == ""


def test_hadolint_would_catch_a_problem(tmp_path: Path) -> None:
    hadolint = require_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    out = subprocess.run([hadolint, "--no-color", str(bad)], check=False,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3007" in out.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = [rest for word, rest in _final_stage(dockerfile) if word == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1]
    uid_text = user.split(":")[0]
    uid_arg = re.fullmatch(r"\$\{?(\w+)\}?", uid_text)
    uid = _arg_default(dockerfile, uid_arg.group(1)) if uid_arg else uid_text
    assert uid.isdigit(), f"USER {user}: the kubelet can only check runAsNonRoot for a numeric uid"
    assert int(uid) != 0


def test_operator_image_installs_only_the_operator_extra() -> None:
    runs = " ".join(rest for word, rest in _instructions(OPERATOR_DOCKERFILE) if word == "RUN")
    extras = set(re.findall(r"\.\[([a-z,]+)\]", runs))
    assert extras == {"operator"}, extras
    assert "torch" not in runs.replace('import torch"', "")  # only the check that it is absent
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    operator_deps = project["optional-dependencies"]["operator"] + project["dependencies"]
    assert not [d for d in operator_deps if re.match(r"(torch|deepspeed|transformers)\b", d)]
    assert _final_stage(OPERATOR_DOCKERFILE)[-1] == ("CMD", '["operator"]')


def test_trainer_image_pins_the_torch_the_makefile_uses() -> None:
    makefile = (ROOT / "Makefile").read_text()
    make_torch = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE).group(1)
    assert _arg_default(TRAINER_DOCKERFILE, "TORCH_VERSION") == make_torch
    runs = [rest for word, rest in _instructions(TRAINER_DOCKERFILE) if word == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    # Every pip install that can bring torch pins it (directly or by constraint).
    for run in installs:
        if "--no-deps" not in run:
            assert "torch==${TORCH_VERSION}" in run, run
    # The trainer extra's requirements come from pyproject.toml (a stage of their own), and
    # are installed before the sources.
    assert any("['optional-dependencies']['trainer']" in r for r in runs)
    assert any("--requirement /tmp/req.txt" in r for r in installs)


def test_trainer_image_has_a_cpu_variant_with_the_example_data() -> None:
    assert _arg_default(TRAINER_DOCKERFILE, "VARIANT") == "cuda"
    assert _arg_default(TRAINER_DOCKERFILE, "BASE_IMAGE").startswith("nvidia/cuda:")
    # Empty: torch from PyPI, whose Linux wheels are CUDA builds that also run on CPUs.
    assert _arg_default(TRAINER_DOCKERFILE, "TORCH_INDEX_URL") == '""'
    env = " ".join(rest for word, rest in _instructions(TRAINER_DOCKERFILE) if word == "ENV")
    assert "FINETUNE_DEVICE=${VARIANT}" in env
    copies = [rest for word, rest in _instructions(TRAINER_DOCKERFILE) if word == "COPY"]
    assert any("examples/data" in c for c in copies)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_builds_from_one_local_base_image_and_trusts_an_extra_ca(dockerfile: Path) -> None:
    """Debian's docker has no BuildKit: the legacy builder builds every stage, so every FROM
    must name the one BASE_IMAGE (or an earlier stage) that can be made locally."""
    instructions = _instructions(dockerfile)
    stages = {rest.split()[-1] for word, rest in instructions
              if word == "FROM" and " AS " in rest.upper()}
    for word, rest in instructions:
        if word == "FROM":
            assert rest.split()[0] in {"${BASE_IMAGE}", *stages}, rest
    _arg_default(dockerfile, "BASE_IMAGE")
    assert _arg_default(dockerfile, "EXTRA_CA_CERTS") == '""'
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "update-ca-certificates" in runs
    env = " ".join(rest for word, rest in instructions if word == "ENV")
    assert "PIP_CERT=/etc/ssl/certs/ca-certificates.crt" in env


def test_trainer_image_matches_what_the_operator_pod_expects() -> None:
    from finetune_operator import render

    text = TRAINER_DOCKERFILE.read_text()
    # The pod's runAsUser is the image's user, so files the image owns stay writable.
    assert int(_arg_default(TRAINER_DOCKERFILE, "UID")) == render.TRAINER_UID
    # The CPU image puts the example data where the operator's data root points.
    assert f"{render.DATA_ROOT}/" in text
    # Writable caches: the pod may override them (read-only root), the image sets defaults.
    env = " ".join(rest for word, rest in _instructions(TRAINER_DOCKERFILE) if word == "ENV")
    for var in ("HF_HOME", "TORCH_EXTENSIONS_DIR"):
        assert f"{var}=" in env


def test_dockerignore_lets_through_exactly_what_the_dockerfiles_copy() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "**", "the context starts empty; files are let in one by one"
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    for dockerfile in DOCKERFILES:
        for word, rest in _instructions(dockerfile):
            if word != "COPY" or "--from=" in rest:
                continue
            sources = [a for a in rest.split() if not a.startswith("--")][:-1]
            for src in sources:
                assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src}: no such path"
                assert any(src == a or a.startswith(src.rstrip("/") + "/") for a in allowed), (
                    f"{dockerfile.name}: COPY {src} is excluded by .dockerignore")


def test_kind_config_has_one_control_plane_and_two_workers() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in config["nodes"]]
    assert sorted(roles) == ["control-plane", "worker", "worker"]


# What the trainer extra brings and the operator image must do without.
_TRAINER_ONLY = ("torch", "transformers", "trl", "accelerate", "deepspeed", "datasets",
                 "tokenizers", "safetensors", "peft")

_BLOCKED_IMPORTS = f"""
import importlib, pkgutil, sys
BLOCKED = {_TRAINER_ONLY!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the operator image")
sys.meta_path.insert(0, Block())
import finetune_operator
from finetune_operator.cli import build_parser
build_parser()  # imports every subcommand module, as `finetune operator` does at start
skip = ("finetune_operator.local",)
for mod in pkgutil.walk_packages(finetune_operator.__path__, "finetune_operator."):
    if not mod.name.startswith(skip):
        importlib.import_module(mod.name)
import finetune_trainer.config
print("ok")
"""


def test_operator_code_imports_without_the_trainer_stack() -> None:
    """The operator image has only the operator extra: its code must not need torch & co.

    Every finetune_operator module (but the local runner, which `finetune run --local` uses
    on a workstation) and the CLI parser import with torch, transformers, TRL, DeepSpeed...
    made unimportable.
    """
    out = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORTS], check=False,
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
