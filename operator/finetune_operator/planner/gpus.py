"""The accelerator catalog: memory, dense throughput, bf16 support and hourly price.

Memory is what the driver reports as usable (nvidia-smi's total in MiB), not the marketing
number. Throughput is the dense (no sparsity) tensor-core figure from the vendor data sheet,
used only for time estimates. Prices are on-demand USD per GPU-hour across the big clouds and
GPU clouds in 2025-2026: a range, because that is what it is.

`cpu` is the CPU backend used for local runs and CI: one rank is one process with one thread,
its "GPU memory" is the host RAM given to that rank, and its throughput was measured on this
project's CI machines (fp32 GEMM about 95 GFLOP/s per thread, bf16 about 200).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

MIB = 1024**2
GIB = 1024**3

CPU = "cpu"
# Host RAM per CPU rank when neither resources.memory nor resources.gpuMemoryGiB says.
DEFAULT_CPU_RANK_MEMORY = 4 * GIB


@dataclass(frozen=True)
class Gpu:
    """One accelerator type."""

    name: str
    memory: int  # bytes usable by one rank
    tflops_16bit: float  # dense bf16 (or fp16 where bf16 is missing) TFLOP/s
    tflops_fp32: float  # fp32 TFLOP/s without TF32 tricks; cpu: measured
    bf16: bool
    price_low: float  # USD per GPU-hour (per rank-hour on cpu)
    price_high: float
    # Host RAM per GPU of the usual 8-GPU instance: what offloading may assume when the job
    # does not say (resources.memory).
    host_memory_per_gpu: int = 0

    @property
    def is_cpu(self) -> bool:
        return self.name == CPU

    def tflops(self, precision: str) -> float:
        return self.tflops_fp32 if precision == "fp32" else self.tflops_16bit


CATALOG: dict[str, Gpu] = {
    g.name: g
    for g in (
        # Host RAM per GPU from the 8-GPU cloud instances: p5 (2 TiB), p4d/p4de (1152 GiB),
        # g6e (1536 GiB), g6/g5/p3dn (768 GiB), g4dn.metal (384 GiB).
        Gpu("H100-80GB", 81559 * MIB, 989.0, 67.0, True, 2.0, 5.0, 256 * GIB),
        Gpu("H200-141GB", 143771 * MIB, 989.0, 67.0, True, 3.0, 6.5, 256 * GIB),
        Gpu("A100-80GB", 81920 * MIB, 312.0, 19.5, True, 1.3, 3.5, 144 * GIB),
        Gpu("A100-40GB", 40960 * MIB, 312.0, 19.5, True, 1.0, 3.0, 144 * GIB),
        Gpu("L40S-48GB", 46068 * MIB, 362.0, 91.6, True, 0.8, 2.0, 192 * GIB),
        Gpu("L4-24GB", 23034 * MIB, 121.0, 30.3, True, 0.4, 0.9, 96 * GIB),
        Gpu("A10G-24GB", 23028 * MIB, 70.0, 31.2, True, 0.75, 1.3, 96 * GIB),
        Gpu("V100-32GB", 32768 * MIB, 125.0, 15.7, False, 0.5, 3.0, 96 * GIB),
        Gpu("T4-16GB", 15360 * MIB, 65.0, 8.1, False, 0.2, 0.6, 48 * GIB),
        # One CPU rank = one core: 0.095 TFLOP/s fp32 and 0.2 bf16 measured per thread;
        # price is a vCPU-hour of a general-purpose instance.
        Gpu(CPU, DEFAULT_CPU_RANK_MEMORY, 0.2, 0.095, True, 0.02, 0.05),
    )
}


# GPU Feature Discovery's product names (the node label nvidia.com/gpu.product), as users
# copy them from `kubectl get nodes -L nvidia.com/gpu.product`, for each catalog entry. The
# one table of them: validation, the planner and the suggestions all read it.
GFD_PRODUCTS: dict[str, str] = {
    "NVIDIA-H100-80GB-HBM3": "H100-80GB",
    "NVIDIA-H100-SXM5-80GB": "H100-80GB",
    "NVIDIA-H100-PCIe": "H100-80GB",
    "NVIDIA-H200": "H200-141GB",
    "NVIDIA-H200-141GB-HBM3e": "H200-141GB",
    "NVIDIA-A100-SXM4-80GB": "A100-80GB",
    "NVIDIA-A100-80GB-PCIe": "A100-80GB",
    "NVIDIA-A100-SXM4-40GB": "A100-40GB",
    "NVIDIA-A100-PCIE-40GB": "A100-40GB",
    "NVIDIA-L40S": "L40S-48GB",
    "NVIDIA-L4": "L4-24GB",
    "NVIDIA-A10G": "A10G-24GB",
    "Tesla-V100-SXM2-32GB": "V100-32GB",
    "Tesla-V100-PCIE-32GB": "V100-32GB",
    "Tesla-T4": "T4-16GB",
}
# The node label GPU Feature Discovery writes those product names to.
GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"


def gfd_products(name: str) -> tuple[str, ...]:
    """GFD's product names of a catalog GPU: the values its nodes' GFD_PRODUCT_LABEL takes."""
    return tuple(product for product, key in GFD_PRODUCTS.items() if key == name)


def known_gpus() -> str:
    return ", ".join(CATALOG)


def find_gpu(name: str) -> Gpu | None:
    """Case-insensitive lookup of a catalog name or a GFD product name; None when unknown."""
    wanted = name.strip().lower()
    for key, gpu in CATALOG.items():
        if key.lower() == wanted:
            return gpu
    for product, key in GFD_PRODUCTS.items():
        if product.lower() == wanted:
            return CATALOG[key]
    return None


def suggest_gpu(name: str) -> str | None:
    """The catalog name closest to an unknown GPU name (through its GFD alias too)."""
    spellings = {key.lower(): key for key in CATALOG}
    spellings.update({product.lower(): key for product, key in GFD_PRODUCTS.items()})
    close = difflib.get_close_matches(name.strip().lower(), spellings, n=1, cutoff=0.6)
    return spellings[close[0]] if close else None


def unknown_gpu_message(name: str) -> str:
    """What an unknown GPU type is told: the closest catalog name, and every one."""
    close = suggest_gpu(name)
    hint = f" (did you mean {close}?)" if close else ""
    return (f"unknown GPU type {name!r}{hint}; known: {known_gpus()}, or GPU Feature "
            "Discovery's product names of them (or set resources.gpuMemoryGiB for a GPU the "
            "catalog lacks)")


def with_memory(gpu: Gpu, memory: int) -> Gpu:
    """The same accelerator with a user-given memory size."""
    return replace(gpu, memory=memory)
