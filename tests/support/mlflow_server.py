"""A real MLflow tracking server on loopback (`mlflow server`, from scripts/install-mlflow.sh)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.tiny import free_port

READY_TIMEOUT = 120  # the first start migrates its SQLite store


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """An MLflow server storing under `folder`; yields its URL once /health answers."""
    port = free_port()
    log = folder / "mlflow-server.log"
    server = subprocess.Popen(
        [require_tool("mlflow-server"), "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--default-artifact-root", str(folder / "artifacts"), "--workers", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(server, url, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_ready(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the MLflow server never became ready: {log.read_text()[-3000:]}")
