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


def known_gpus() -> str:
    return ", ".join(CATALOG)


def find_gpu(name: str) -> Gpu | None:
    """Case-insensitive catalog lookup; None when unknown."""
    for key, gpu in CATALOG.items():
        if key.lower() == name.strip().lower():
            return gpu
    return None


def with_memory(gpu: Gpu, memory: int) -> Gpu:
    """The same accelerator with a user-given memory size."""
    return replace(gpu, memory=memory)
