"""The real end-to-end run on kind: build both images, install the chart, train to Succeeded.

Needs a container engine (Docker or Podman) and kind (or Go, to install it): on machines
without an engine it skips with that reason, the only skip allowed in CI. It creates its own
cluster (KIND_CLUSTER_NAME=finetune-e2e) and deletes it at the end, pass or fail.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT, require_container_engine

SCRIPT = ROOT / "scripts" / "kind.sh"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_tiny_chat_trains_to_succeeded_on_kind() -> None:
    require_container_engine()
    env = {**os.environ, "KIND_CLUSTER_NAME": "finetune-e2e", "E2E_TIMEOUT": "2400"}
    try:
        out = subprocess.run(["bash", str(SCRIPT), "kind-up", "images", "kind-e2e"], env=env,
                             cwd=ROOT, check=False, capture_output=True, text=True,
                             timeout=3300)
    finally:
        subprocess.run(["bash", str(SCRIPT), "kind-down"], env=env, cwd=ROOT, check=False,
                       capture_output=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded in" in out.stderr
    assert "Succeeded" in out.stdout  # the `kubectl get ftj -o wide` table
    assert "finetune_train_loss" in out.stdout or "finetune_job_loss" in out.stdout
