"""What this machine can train on, found without importing torch.

The operator side never imports torch (it takes seconds and the operator image has none), so
CUDA is detected cheaply: the installed torch must be a CUDA build (it ships libtorch_cuda)
and `nvidia-smi` must list GPUs that CUDA_VISIBLE_DEVICES does not hide.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NVIDIA_SMI_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class LocalGpu:
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class LocalHardware:
    """CUDA GPUs usable by the installed torch; empty means CPU ranks."""

    gpus: tuple[LocalGpu, ...] = ()

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_has_cuda() -> bool:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return any(lib.glob("libtorch_cuda*.so*"))


def parse_nvidia_smi(text: str) -> list[LocalGpu]:
    """Rows of `--query-gpu=name,memory.total --format=csv,noheader,nounits` (MiB)."""
    gpus = []
    for line in text.splitlines():
        name, _, memory = line.rpartition(",")
        if name.strip() and memory.strip().isdigit():
            gpus.append(LocalGpu(name.strip(), int(memory.strip()) * 1024 * 1024))
    return gpus


def visible(gpus: list[LocalGpu], cuda_visible_devices: str | None) -> list[LocalGpu]:
    """Apply CUDA_VISIBLE_DEVICES given as indices (UUID lists keep every GPU)."""
    if cuda_visible_devices is None:
        return gpus
    wanted = [part.strip() for part in cuda_visible_devices.split(",") if part.strip()]
    if not wanted:
        return []
    if not all(part.isdigit() for part in wanted):
        return gpus[: len(wanted)]
    return [gpus[int(i)] for i in wanted if int(i) < len(gpus)]


def detect_hardware() -> LocalHardware:
    smi = shutil.which("nvidia-smi")
    if not smi or not torch_has_cuda():
        return LocalHardware()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_SECONDS, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return LocalHardware()
    gpus = visible(parse_nvidia_smi(out), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return LocalHardware(tuple(gpus))
