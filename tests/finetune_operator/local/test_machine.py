"""Finding local CUDA GPUs without importing torch."""

from __future__ import annotations

from finetune_operator.local.machine import LocalGpu, LocalHardware, parse_nvidia_smi, visible

SMI = "NVIDIA A100-SXM4-80GB, 81920\nNVIDIA A100-SXM4-80GB, 81920\nbroken line\n"


def test_parse_nvidia_smi_reads_name_and_memory():
    gpus = parse_nvidia_smi(SMI)
    assert gpus == [LocalGpu("NVIDIA A100-SXM4-80GB", 80 * 2**30)] * 2


def test_cuda_visible_devices_hides_gpus():
    gpus = [LocalGpu("a", 1), LocalGpu("b", 2), LocalGpu("c", 3)]
    assert visible(gpus, None) == gpus
    assert visible(gpus, "") == []
    assert visible(gpus, "2,0") == [gpus[2], gpus[0]]
    assert visible(gpus, "7") == []
    assert visible(gpus, "GPU-uuid-1") == [gpus[0]]


def test_device_follows_the_gpus():
    assert LocalHardware().device == "cpu"
    assert LocalHardware((LocalGpu("x", 1),)).device == "cuda"
