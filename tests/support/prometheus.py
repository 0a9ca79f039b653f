"""A real Prometheus server (Debian's `prometheus`) for the tests that check what it scrapes."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require_tool

READY_TIMEOUT = 60


def start_prometheus(folder: Path, listen: str) -> tuple[subprocess.Popen, str]:
    """Starts Prometheus on `listen` (host:port) with `folder`/prometheus.yml, its data and
    log in `folder`; returns the process and its URL once it reports ready."""
    log = folder / "prometheus.log"
    server = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address={listen}",
         "--log.level=warn"],
        stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://{listen}"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.2)
    server.kill()
    pytest.fail(f"prometheus never became ready: {log.read_text()}")
