"""The accelerator catalog: memory, dense throughput, bf16 support and hourly price.

Memory is what the driver reports as usable (nvidia-smi's total in MiB), not the marketing
number. Throughput is the dense (no sparsity) tensor-core figure from the vendor data sheet,
used only for time estimates. Prices are on-demand USD per GPU-hour across the big clouds and
GPU clouds in 2025-2026: a range, because that is what it is.

`cpu` is the CPU backend used for local runs and CI: one rank is one process with one thread,
its "GPU memory" is the host RAM given to that rank, and its throughput was measured on this
project's CI machines (fp32 GEMM about 95 GFLOP/s per thread, bf16 about 200).

Host RAM comes per node shape (`NodeShape`): the published instance sizes of AWS (g4dn, g5, g6,
g6e, p3dn, p4d, p4de, p5, p5e: "Instance types" pages of Amazon EC2, in GiB) and Google Cloud
(g2, a2, a3 accelerator-optimized machine types; Compute Engine's "GB" are GiB) with that many
GPUs of the type. Of the instances with the same GPU count the smallest is the one kept: a plan
that fits it fits on the others, and a bigger node is described by the job's
resources.memory. Each shape names the instances it was taken from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from finetune_operator.caps import echo

MIB = 1024**2
GIB = 1024**3

CPU = "cpu"
# Host RAM per CPU rank when neither resources.memory nor resources.gpuMemoryGiB says.
DEFAULT_CPU_RANK_MEMORY = 4 * GIB


@dataclass(frozen=True)
class NodeShape:
    """A cloud instance size: how many GPUs of one type, and the host RAM beside them."""

    gpus: int
    memory: int  # bytes of host RAM of the whole instance
    instances: str  # the smallest published instances of this size


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
    # The usual instances of this GPU, fewest GPUs first: what offloading may assume of host
    # RAM when the job does not say (resources.memory).
    node_shapes: tuple[NodeShape, ...] = ()

    @property
    def is_cpu(self) -> bool:
        return self.name == CPU

    def tflops(self, precision: str) -> float:
        return self.tflops_fp32 if precision == "fp32" else self.tflops_16bit


def _shapes(*sizes: tuple[int, int, str]) -> tuple[NodeShape, ...]:
    """(GPUs, GiB of host RAM, instances) per size, fewest GPUs first."""
    return tuple(NodeShape(gpus, gib * GIB, instances) for gpus, gib, instances in sizes)


# The smallest instance of each GPU count; the larger ones of the same count are noted.
CATALOG: dict[str, Gpu] = {
    g.name: g
    for g in (
        # p5.4xlarge (1 GPU) 256 GiB, p5.48xlarge 2048 GiB.
        Gpu("H100-80GB", 81559 * MIB, 989.0, 67.0, True, 2.0, 5.0, _shapes(
            (1, 234, "a3-highgpu-1g"), (2, 468, "a3-highgpu-2g"), (4, 936, "a3-highgpu-4g"),
            (8, 1872, "a3-highgpu-8g"))),
        # a3-ultragpu-8g 2952 GiB.
        Gpu("H200-141GB", 143771 * MIB, 989.0, 67.0, True, 3.0, 6.5, _shapes(
            (8, 2048, "p5e.48xlarge, p5en.48xlarge"))),
        # a2-ultragpu-8g 1360 GiB.
        Gpu("A100-80GB", 81920 * MIB, 312.0, 19.5, True, 1.3, 3.5, _shapes(
            (1, 170, "a2-ultragpu-1g"), (2, 340, "a2-ultragpu-2g"), (4, 680, "a2-ultragpu-4g"),
            (8, 1152, "p4de.24xlarge"))),
        # p4d.24xlarge 1152 GiB.
        Gpu("A100-40GB", 40960 * MIB, 312.0, 19.5, True, 1.0, 3.0, _shapes(
            (1, 85, "a2-highgpu-1g"), (2, 170, "a2-highgpu-2g"), (4, 340, "a2-highgpu-4g"),
            (8, 680, "a2-highgpu-8g"), (16, 1360, "a2-megagpu-16g"))),
        # g6e.24xlarge (4 GPUs) 768 GiB.
        Gpu("L40S-48GB", 46068 * MIB, 362.0, 91.6, True, 0.8, 2.0, _shapes(
            (1, 32, "g6e.xlarge"), (4, 384, "g6e.12xlarge"), (8, 1536, "g6e.48xlarge"))),
        # g6.24xlarge (4 GPUs) 384 GiB, g6.48xlarge 768 GiB.
        Gpu("L4-24GB", 23034 * MIB, 121.0, 30.3, True, 0.4, 0.9, _shapes(
            (1, 16, "g6.xlarge, g2-standard-4"), (2, 96, "g2-standard-24"),
            (4, 192, "g6.12xlarge, g2-standard-48"), (8, 384, "g2-standard-96"))),
        # g5.24xlarge (4 GPUs) 384 GiB.
        Gpu("A10G-24GB", 23028 * MIB, 70.0, 31.2, True, 0.75, 1.3, _shapes(
            (1, 16, "g5.xlarge"), (4, 192, "g5.12xlarge"), (8, 768, "g5.48xlarge"))),
        Gpu("V100-32GB", 32768 * MIB, 125.0, 15.7, False, 0.5, 3.0, _shapes(
            (8, 768, "p3dn.24xlarge"))),
        Gpu("T4-16GB", 15360 * MIB, 65.0, 8.1, False, 0.2, 0.6, _shapes(
            (1, 16, "g4dn.xlarge"), (4, 192, "g4dn.12xlarge"), (8, 384, "g4dn.metal"))),
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


def node_host_memory(gpu: Gpu, gpus_per_node: int) -> tuple[int, str] | None:
    """Host RAM a pod with `gpus_per_node` GPUs of this type may assume, and its source; None
    for a GPU without shapes (cpu, one the catalog lacks).

    The shape with that many GPUs; else the smallest with more, of which the pod gets its
    GPUs' share (the node's other GPUs go to pods that need their RAM too); beyond the
    largest shape, the largest one's RAM per GPU.
    """
    if not gpu.node_shapes:
        return None
    for shape in gpu.node_shapes:
        if shape.gpus == gpus_per_node:
            return shape.memory, shape.instances
        if shape.gpus > gpus_per_node:
            share = shape.memory * gpus_per_node // shape.gpus
            return share, f"{gpus_per_node} of the {shape.gpus} GPUs of {shape.instances}"
    largest = gpu.node_shapes[-1]
    per_gpu = largest.memory // largest.gpus
    return per_gpu * gpus_per_node, f"{gpus_per_node} x the RAM per GPU of {largest.instances}"


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
    return (f"unknown GPU type {echo(name)}{hint}; known: {known_gpus()}, or GPU Feature "
            "Discovery's product names of them (or set resources.gpuMemoryGiB for a GPU the "
            "catalog lacks)")


def with_memory(gpu: Gpu, memory: int) -> Gpu:
    """The same accelerator with a user-given memory size."""
    return replace(gpu, memory=memory)


# --------------------------------------------------------------------------- interconnects

GB = 1e9


@dataclass(frozen=True)
class Links:
    """Bandwidth one GPU gets for collectives and host transfers, in bytes/s, one direction.

    `intra_node` and `inter_node` are bus bandwidths in nccl-tests' sense (a ring all-reduce
    of S bytes over n ranks takes 2(n-1)/n x S / busbw), so the planner's formulas use them
    as they are; `pcie` is the host<->GPU copy rate, for offloading."""

    intra_node: float
    inter_node: float
    pcie: float


# Sources, per GPU generation (vendor data sheets; instance pages of AWS and Google Cloud):
# - NVLink 4 (H100/H200 SXM): 900 GB/s per GPU both directions, 450 one way; nccl-tests'
#   all-reduce reaches about 80 % of it on 8-GPU HGX boards: 360 GB/s.
# - NVLink 3 (A100 SXM): 600 GB/s both ways, 300 one way: 240 GB/s. NVLink 2 (V100 SXM2):
#   300 GB/s both ways: 120 GB/s.
# - No NVLink (L40S, L4, A10G, T4): peer traffic crosses PCIe (Gen4 x16 32 GB/s, Gen3 16
#   GB/s one way) and often the host bridge: about 20 and 10 GB/s.
# - Between nodes, per GPU: H100/H200 instances have one 400 Gb/s NIC per GPU (DGX H100's
#   ConnectX-7 NDR InfiniBand, p5's 3200 Gbps EFA): 50 GB/s, 45 achieved. A100: one 200 Gb/s
#   HDR port per GPU (DGX A100), 22 GB/s achieved (AWS p4d has 400 Gbps for 8 GPUs: override).
#   PCIe-only instances: 100-400 Gbps Ethernet per 8 GPUs (g5/g6/g6e/p3dn.48xlarge-class,
#   g4dn.metal): 1.5-6 GB/s per GPU.
# - Host<->GPU: PCIe Gen5 x16 64 GB/s one way (H100/H200), Gen4 32 (A100, L40S, L4, A10G),
#   Gen3 16 (V100, T4); about 80 % achieved with pinned memory.
# - cpu ranks: gloo over loopback or shared memory (intra) and 10 Gb/s Ethernet (inter);
#   "host transfers" are memory copies.
LINKS: dict[str, Links] = {
    "H100-80GB": Links(360 * GB, 45 * GB, 50 * GB),
    "H200-141GB": Links(360 * GB, 45 * GB, 50 * GB),
    "A100-80GB": Links(240 * GB, 22 * GB, 25 * GB),
    "A100-40GB": Links(240 * GB, 22 * GB, 25 * GB),
    "L40S-48GB": Links(20 * GB, 5 * GB, 25 * GB),
    "L4-24GB": Links(20 * GB, 1.5 * GB, 25 * GB),
    "A10G-24GB": Links(20 * GB, 1.5 * GB, 25 * GB),
    "V100-32GB": Links(120 * GB, 1.5 * GB, 12 * GB),
    "T4-16GB": Links(10 * GB, 1.5 * GB, 12 * GB),
    CPU: Links(2 * GB, 1.2 * GB, 10 * GB),
}
# A GPU the catalog lacks (resources.gpuMemoryGiB under another name): PCIe-class figures.
DEFAULT_LINKS = Links(20 * GB, 5 * GB, 25 * GB)


def links_of(gpu: Gpu) -> Links:
    """The catalog's bandwidths for this GPU type, PCIe-class ones for an unknown type."""
    return LINKS.get(gpu.name, DEFAULT_LINKS)
