"""scripts/kind.sh's control flow, with recording stand-ins for docker, kind, kubectl and helm.

kind's node image cannot be pulled on the project's machines, so the kind path never runs
here (the same end to end runs for real on the local cluster: tests/e2e/test_cluster_*.py).
This test runs the real script with a PATH that holds only the basic shell tools and small
stand-ins that log their arguments and answer like the real tools would. It proves the script
builds the CPU trainer, loads both images, installs the CRD before the chart with the kind
values and the image names, submits the job, waits through the phases, prints the status and
the metrics, and fails with diagnostics when the job fails. shellcheck lints the script.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

SCRIPT = ROOT / "scripts" / "kind.sh"
# What the script may use besides the four tools under test.
BASIC_TOOLS = ("bash", "env", "cat", "date", "dirname", "grep", "head", "mkdir", "mktemp",
               "printf", "rm", "sleep", "touch", "tail", "wc")

STUBS = {
    "docker": r"""
echo "docker $*" >> "$STUB_LOG"
case "$1" in
  info) exit 0 ;;
  image) [ -f "$STUB_DIR/built" ] ;;
  build) touch "$STUB_DIR/built" ;;
  save) touch "$3" ;;
esac
""",
    "kind": r"""
echo "kind $*" >> "$STUB_LOG"
case "$1 $2" in
  "get clusters") [ -f "$STUB_DIR/cluster" ] && echo "${KIND_CLUSTER_NAME:-finetune}"; exit 0 ;;
  "create cluster") touch "$STUB_DIR/cluster" ;;
  "delete cluster") rm -f "$STUB_DIR/cluster" ;;
  "load image-archive") [ -f "${@: -1}" ] || { echo "no archive" >&2; exit 1; } ;;
esac
""",
    "kubectl": r"""
echo "kubectl $*" >> "$STUB_LOG"
case "$*" in
  *"create --dry-run=client"*) printf tiny-chat ;;
  *"get deployment"*) printf finetune-operator ;;
  *"get finetunejob tiny-chat -o jsonpath"*)
    n=$(cat "$STUB_DIR/polls" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$STUB_DIR/polls"
    phases=($STUB_PHASES); i=$(( n - 1 < ${#phases[@]} ? n - 1 : ${#phases[@]} - 1 ))
    printf '%s' "${phases[$i]}" ;;
  *"get pods"*"-o jsonpath"*) printf tiny-chat-r0-0-x7k2p ;;
  *"get --raw"*"/pods/http:tiny-chat-r0-0-x7k2p:9400/proxy/metrics"*)
    printf '# HELP finetune_train_loss x\nfinetune_train_loss{rank="0"} 2.25\n'
    printf 'finetune_train_step{rank="0"} 7\n' ;;
  *"get --raw"*"/services/http:finetune-operator-metrics:metrics/proxy/metrics"*)
    printf 'finetune_operator_jobs{phase="Succeeded"} 1\n'
    printf 'finetune_job_loss{namespace="default",finetunejob="tiny-chat"} 1.5\n' ;;
esac
exit 0
""",
    "helm": r"""
echo "helm $*" >> "$STUB_LOG"
""",
}


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has the basic tools and the stand-ins, nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in BASIC_TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    job = tmp_path / "job.yaml"
    job.write_text("apiVersion: finetune.dev/v1alpha1\nkind: FineTuneJob\n"
                   "metadata: {name: tiny-chat}\n")
    return {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "STUB_DIR": str(tmp_path),
        "STUB_LOG": str(tmp_path / "calls.log"),
        "JOB_FILE": str(job),
        "E2E_POLL": "0",
        # The script falls back to .venv/bin for tools: point it at an empty folder.
        "VENV_BIN": str(tmp_path / "venv-bin"),
        "STUB_PHASES": "Pending Running Running Succeeded",
    }


def _install_stubs(env: dict[str, str], *tools: str) -> None:
    bin_dir = Path(env["PATH"])
    for tool in tools:
        stub = bin_dir / tool
        stub.write_text("#!/usr/bin/env bash\n" + STUBS[tool])
        stub.chmod(0o755)


def _run(env: dict[str, str], *targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *targets], env=env, cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=60)


def _calls(env: dict[str, str]) -> list[str]:
    return Path(env["STUB_LOG"]).read_text().splitlines()


def _index(calls: list[str], *needles: str) -> int:
    for i, call in enumerate(calls):
        if all(n in call for n in needles):
            return i
    raise AssertionError(f"no call with {needles}:\n" + "\n".join(calls))


def test_shellcheck_clean() -> None:
    shellcheck = require_tool("shellcheck")
    out = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], check=False,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_without_a_container_engine_it_says_so(sandbox: dict[str, str]) -> None:
    out = _run(sandbox, "images")
    assert out.returncode == 1
    assert "no running container engine" in out.stderr


def test_unknown_target_is_refused(sandbox: dict[str, str]) -> None:
    out = _run(sandbox, "deploy")
    assert out.returncode == 1 and "unknown target 'deploy'" in out.stderr


def test_kind_up_creates_the_cluster_from_kind_config(sandbox: dict[str, str]) -> None:
    _install_stubs(sandbox, "docker", "kind", "kubectl", "helm")
    out = _run(sandbox, "kind-up")
    assert out.returncode == 0, out.stderr
    calls = _calls(sandbox)
    create = calls[_index(calls, "kind create cluster")]
    assert "--name finetune" in create and "--config kind-config.yaml" in create
    assert any(c == "kubectl config use-context kind-finetune" for c in calls)
    # A second kind-up finds the cluster and creates nothing.
    Path(sandbox["STUB_LOG"]).unlink()
    assert _run(sandbox, "kind-up").returncode == 0
    assert not [c for c in _calls(sandbox) if c.startswith("kind create")]


def test_kind_e2e_builds_loads_installs_runs_and_reports(sandbox: dict[str, str]) -> None:
    _install_stubs(sandbox, "docker", "kind", "kubectl", "helm")
    out = _run(sandbox, "kind-up", "kind-e2e")
    assert out.returncode == 0, out.stdout + out.stderr
    calls = _calls(sandbox)

    build_op = _index(calls, "docker build", "-f operator/Dockerfile", "-t finetune-operator:dev")
    build_tr = _index(calls, "docker build", "-f trainer_image/Dockerfile",
                      "--build-arg VARIANT=cpu", "--build-arg BASE_IMAGE=python:3.12-slim",
                      "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu",
                      "-t finetune-trainer:dev-cpu")
    loads = [i for i, c in enumerate(calls) if c.startswith("kind load image-archive --name "
                                                            "finetune")]
    assert len(loads) == 2
    crd = _index(calls, "kubectl apply --server-side", "-f crds/finetunejob.yaml")
    helm = _index(calls, "helm upgrade --install finetune-operator charts/finetune-operator")
    submit = _index(calls, "kubectl -n default apply -f", sandbox["JOB_FILE"])
    assert build_op < loads[0] and build_tr < loads[0]
    assert loads[-1] < crd < helm < submit

    helm_call = calls[helm]
    for arg in ("--namespace finetune-system", "--create-namespace",
                "-f charts/finetune-operator/ci/kind-values.yaml",
                "--set image.repository=finetune-operator", "--set image.tag=dev",
                "--set trainer.image.repository=finetune-trainer",
                "--set trainer.image.tag=dev-cpu", "--wait"):
        assert arg in helm_call, arg

    # It waited through the phases, then printed the jobs, a trainer sample and operator metrics.
    assert "phase: Pending" in out.stderr and "phase: Running" in out.stderr
    assert "FineTuneJob tiny-chat succeeded" in out.stderr
    assert _index(calls, "kubectl -n default get ftj -o wide") > submit
    assert 'finetune_train_loss{rank="0"} 2.25' in out.stdout
    assert "# HELP" not in out.stdout
    assert 'finetune_job_loss{namespace="default",finetunejob="tiny-chat"} 1.5' in out.stdout


def test_kind_e2e_fails_with_diagnostics_when_the_job_fails(sandbox: dict[str, str]) -> None:
    _install_stubs(sandbox, "docker", "kind", "kubectl", "helm")
    sandbox["STUB_PHASES"] = "Pending Running Failed"
    out = _run(sandbox, "kind-e2e")
    assert out.returncode == 1
    assert "FineTuneJob tiny-chat failed" in out.stderr
    calls = _calls(sandbox)
    _index(calls, "kubectl -n default describe finetunejob tiny-chat")
    _index(calls, "kubectl -n default logs -l finetune.dev/job=tiny-chat")


def test_kind_e2e_times_out(sandbox: dict[str, str]) -> None:
    _install_stubs(sandbox, "docker", "kind", "kubectl", "helm")
    sandbox["STUB_PHASES"] = "Pending"
    sandbox["E2E_TIMEOUT"] = "1"
    sandbox["E2E_POLL"] = "1"
    out = _run(sandbox, "kind-e2e")
    assert out.returncode == 1
    assert "did not succeed within 1s" in out.stderr


def test_image_names_with_a_registry_port_are_split_right(sandbox: dict[str, str]) -> None:
    _install_stubs(sandbox, "docker", "kind", "kubectl", "helm")
    sandbox["OPERATOR_IMAGE"] = "localhost:5001/ml/finetune-operator:1.2.3"
    sandbox["TRAINER_IMAGE"] = "localhost:5001/ml/finetune-trainer"
    out = _run(sandbox, "kind-e2e")
    assert out.returncode == 0, out.stderr
    helm_call = _calls(sandbox)[_index(_calls(sandbox), "helm upgrade --install")]
    assert "--set image.repository=localhost:5001/ml/finetune-operator" in helm_call
    assert "--set image.tag=1.2.3" in helm_call
    assert "--set trainer.image.repository=localhost:5001/ml/finetune-trainer" in helm_call
    assert "--set trainer.image.tag=latest" in helm_call


def test_kind_down_deletes_the_cluster(sandbox: dict[str, str]) -> None:
    _install_stubs(sandbox, "docker", "kind", "kubectl", "helm")
    Path(sandbox["STUB_DIR"], "cluster").touch()
    out = _run(sandbox, "kind-down")
    assert out.returncode == 0, out.stderr
    assert "kind delete cluster --name finetune" in _calls(sandbox)


def test_kind_missing_without_go_tells_the_user_how_to_get_it(sandbox: dict[str, str]) -> None:
    _install_stubs(sandbox, "docker")
    out = _run(sandbox, "kind-up")
    assert out.returncode == 1
    assert "go install sigs.k8s.io/kind@" in out.stderr
