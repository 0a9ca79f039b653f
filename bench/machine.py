"""What machine a benchmark ran on, and its measured fp32 GEMM peak."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata

PACKAGES = ("torch", "transformers", "trl", "accelerate", "deepspeed", "kopf", "kmock")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": sys.version.split()[0],
        "versions": versions,
    }


_GEMM = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
n = 2048
a, b = torch.randn(n, n), torch.randn(n, n)
for _ in range(3):
    a @ b
best = 0.0
for _ in range(5):
    t = time.perf_counter()
    for _ in range(4):
        a @ b
    best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
print(best)
"""


def gemm_flops(threads: int) -> float:
    """Best fp32 FLOP/s of a 2048x2048 matmul with `threads` threads (a fresh process)."""
    out = subprocess.run([sys.executable, "-c", _GEMM, str(threads)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def gemm_peak_two_ranks() -> float:
    """The peak our 2-rank runs can reach: two single-thread GEMMs running side by side."""
    procs = [subprocess.Popen([sys.executable, "-c", _GEMM, "1"], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    return sum(float(p.communicate()[0].strip()) for p in procs)


if __name__ == "__main__":
    t = time.perf_counter()
    print(describe())
    print("1 thread", gemm_flops(1) / 1e9, "GFLOP/s")
    print("2 ranks x 1 thread", gemm_peak_two_ranks() / 1e9, "GFLOP/s")
    print(f"{time.perf_counter() - t:.1f}s")
