"""Section 4: one CUDA GPU. A model with a real model's shape (Qwen2.5-0.5B's config, random
weights), trained by `finetune_trainer` for a few steps in each of these cases:

- full fine-tuning under ddp, zero2, zero3 and fsdp; lora and qlora under ddp;
- and, outside the trainer, the decoder blocks' forward and backward on one padding-free
  micro-batch with each attention kernel: masked `sdpa` against `varlen_sdpa`
  (finetune_trainer/attention.py), and whatever `attention.choose` picks on this device.

Each training case is one rank (torchrun, world size 1: zero2, zero3 and fsdp then shard over
one GPU, which measures their overhead on one GPU, not their savings), planned by `plan_job`
for this GPU as `finetune run --local` plans it (bench/trainer_recipe.py) with the strategy,
tuning, micro-batch, sequence length and precision fixed, and measured by the bench's own
callbacks: tokens/s over the steady steps (bench/step_clock.py) and the peak memory against
the plan (bench/memory_probe.py; on a GPU the CUDA allocator's peak, on a CPU the RSS, both
compared by bench/planner_accuracy.py's `compare`). MFU is the trainer's FLOPs per token
(6 N for full fine-tuning, 4 N + 2 T with T trainable parameters for adapters) times
tokens/s, over the dense 16-bit peak of the GPU's catalog entry
(finetune_operator/planner/gpus.py), found by the device's name (the driver's, which
nvidia-smi and torch.cuda.get_device_name() both report) as `finetune run --local` finds it
(localize.catalog_gpu); a GPU the catalog lacks gets no MFU.

`--dry-run` runs the same functions on the CPU with a tiny model of the same family and three
steps: it checks the bench, its figures say nothing about a GPU. fsdp is skipped there, with
the contract's reason (finetune_contract/rules.py: the trainer refuses it on CPU ranks).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune_operator.local.machine import LocalHardware

from bench import chat_data, launch, planner_accuracy, trainer_recipe, workspace

# Qwen2.5-0.5B's config.json (Hugging Face Qwen/Qwen2.5-0.5B): 494M parameters with the
# embedding tied to the head, grouped-query attention (14 query, 2 key/value heads).
QWEN25_05B: dict[str, Any] = {
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}
# The dry run's model: the same family and layout, 64 wide, 2 blocks, the tokenizer's
# vocabulary.
TINY_QWEN2: dict[str, Any] = {
    "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 1024, "tie_word_embeddings": True,
}
# Characters per token of the bench tokenizer on the bench text is about 3; text rows get
# 6 per planned token, so the trainer cuts every row to exactly the sequence length.
CHARS_PER_TOKEN = 6
TOKENIZER_CONVERSATIONS = 400
SEED = 7


@dataclass(frozen=True)
class Case:
    tuning: str  # full, lora or qlora
    strategy: str

    @property
    def label(self) -> str:
        return self.strategy if self.tuning == "full" else f"{self.tuning} {self.strategy}"

    @property
    def slug(self) -> str:
        """The label as a directory and job name."""
        return self.label.replace(" ", "-")


CASES = (Case("full", "ddp"), Case("full", "zero2"), Case("full", "zero3"),
         Case("full", "fsdp"), Case("lora", "ddp"), Case("qlora", "ddp"))


@dataclass(frozen=True)
class Settings:
    model_name: str
    model: dict[str, Any]
    micro_batch: int
    seq_len: int
    steps: int  # the first is not counted in tokens/s (bench/step_clock.py)
    precision: str
    attention_iterations: int  # timed forward+backward passes per kernel, after one warm-up
    case_timeout: float  # seconds one training case may take, start-up included

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batch * self.seq_len


GPU_SETTINGS = Settings(model_name="Qwen2.5-0.5B-shaped", model=QWEN25_05B, micro_batch=4,
                        seq_len=2048, steps=20, precision="bf16", attention_iterations=10,
                        case_timeout=150)
# bf16 runs on CPU ranks too (autocast, DeepSpeed's CPU accelerator, bitsandbytes' CPU path).
DRY_RUN_SETTINGS = Settings(model_name="tiny Qwen2", model=TINY_QWEN2, micro_batch=2,
                            seq_len=64, steps=3, precision="bf16", attention_iterations=2,
                            case_timeout=300)


@dataclass(frozen=True)
class Inputs:
    """What every case reads: the tokenizer, text rows longer than the sequence length, and
    the model directory (random weights saved once: qlora quantizes only saved weights)."""

    root: Path
    tokenizer: Path
    data: Path
    base: Path


# --------------------------------------------------------------------------- the device


def hardware(dry_run: bool) -> LocalHardware:
    """The first CUDA GPU (the cases run on one), or CPU ranks for the dry run."""
    if dry_run:
        return LocalHardware()
    from finetune_operator.local.machine import detect_hardware

    found = detect_hardware()
    if not found.gpus:
        raise SystemExit("python -m bench --gpu: no CUDA GPU is visible (nvidia-smi and a CUDA "
                         "build of torch are needed); `--gpu --dry-run` runs it on the CPU")
    return LocalHardware(found.gpus[:1])


def first_gpu_environment() -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES that leaves the ranks only the first visible GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = visible.split(",")[0].strip() if visible else "0"
    return {"CUDA_VISIBLE_DEVICES": first}


def peak_flops(hw: LocalHardware, precision: str) -> tuple[float | None, str]:
    """The dense peak FLOP/s of one rank from the GPU catalog, and the entry it came from.
    A GPU the catalog lacks has no peak (MFU unknown); a CPU rank is the catalog's `cpu`
    entry: one thread, as the bench runs CPU ranks."""
    from finetune_operator.local import localize
    from finetune_operator.planner.gpus import CATALOG, CPU

    name = localize.catalog_gpu(hw) if hw.gpus else CPU
    if name is None:
        return None, f"unknown ({hw.gpus[0].name} is not in the GPU catalog)"
    return CATALOG[name].tflops(precision) * 1e12, name


def describe_device(hw: LocalHardware, precision: str) -> dict[str, Any]:
    peak, entry = peak_flops(hw, precision)
    device: dict[str, Any] = {"kind": hw.device, "catalog_entry": entry, "peak_flops": peak}
    if hw.gpus:
        device.update(name=hw.gpus[0].name, memory=hw.gpus[0].memory_bytes,
                      driver=_nvidia_smi("driver_version"), cuda=_torch_cuda_version())
    return device


def _nvidia_smi(field: str) -> str:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def _torch_cuda_version() -> str:
    import torch

    return str(torch.version.cuda)


# --------------------------------------------------------------------------- inputs


def prepare(root: Path, s: Settings) -> Inputs:
    """Tokenizer, text rows and model directory under `root` (the model is kept between
    runs: a directory per model shape). Paths are absolute: the spec's resolve against the
    data root."""
    root = root.resolve()
    rows = chat_data.conversations(TOKENIZER_CONVERSATIONS, seed=SEED)
    tokenizer = root / "tokenizer"
    workspace.save_tokenizer(rows, tokenizer)
    data = planner_accuracy.write_text_rows(root / "text.jsonl", rows=s.steps * s.micro_batch,
                                            min_chars=CHARS_PER_TOKEN * s.seq_len)
    check_rows_fill(data, tokenizer, s)
    base = planner_accuracy.save_base(s.model, tokenizer,
                                      root / f"base-{s.model_name.replace(' ', '-')}")
    return Inputs(root=root, tokenizer=tokenizer, data=data, base=base)


def check_rows_fill(data: Path, tokenizer: Path, s: Settings) -> None:
    """Every text row must tokenize to at least the sequence length, or micro-batches carry
    fewer tokens than planned and the memory comparison is off."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    rows = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    shortest = min(len(tok(text)["input_ids"]) for text in rows)
    if len(rows) < s.steps * s.micro_batch or shortest < s.seq_len:
        raise RuntimeError(f"{data}: {len(rows)} rows, the shortest {shortest} tokens; "
                           f"{s.steps * s.micro_batch} rows of {s.seq_len} tokens are needed")


# --------------------------------------------------------------------------- training cases


def refusal(case: Case, device: str) -> str | None:
    """Why this case cannot run on `device`: the contract's own rules (the trainer would
    refuse it), or bitsandbytes missing for qlora."""
    from finetune_contract import rules

    refused = rules.strategy_refusals(case.strategy, device, tuning=case.tuning,
                                      l2_to_pretrained=0.0)
    if refused:
        return refused[0]
    if case.tuning == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "qlora needs bitsandbytes, which is not installed"
    return None


def case_spec(inputs: Inputs, case: Case, s: Settings, hw: LocalHardware) -> dict[str, Any]:
    """The run's spec: section 2's (bench/planner_accuracy.py) on one rank, with the
    precision fixed and no activation checkpointing, for this device."""
    spec = planner_accuracy.spec({}, case.strategy, inputs.tokenizer, inputs.data, s, 0,
                                 case.tuning, inputs.base, ranks=1)
    spec["training"].update(precision=s.precision, gradientCheckpointing=False)
    if hw.gpus:
        # The catalog type when the GPU is in it (localize.local_spec), else its own name
        # with its memory; host RAM from the GPU's usual instance, not section 2's bound.
        spec["resources"].update(gpu=hw.gpus[0].name[:64])
        spec["resources"].pop("memory")
    return spec


def measure_case(inputs: Inputs, case: Case, s: Settings, hw: LocalHardware,
                 work: Path) -> dict[str, Any]:
    """One training case: measured, skipped (with the reason) or failed (with the log's
    end); a failure does not stop the other cases."""
    row: dict[str, Any] = {"case": case.label, **asdict(case)}
    reason = refusal(case, hw.device)
    if reason:
        return {**row, "status": "skipped", "reason": reason}
    out = work / case.slug
    shutil.rmtree(out, ignore_errors=True)  # a leftover checkpoint would be resumed
    started = time.perf_counter()
    try:
        plan, ranks = train_case(inputs, case, s, hw, out)
    except (launch.LaunchError, RuntimeError) as err:
        return {**row, "status": "failed", "reason": str(err)}
    except subprocess.TimeoutExpired:
        return {**row, "status": "failed",
                "reason": f"timed out after {s.case_timeout:.0f} s (log: {out / 'log.txt'})"}
    return {**row, "status": "measured", "wall_seconds": time.perf_counter() - started,
            **case_figures(out, plan, ranks, hw, s.precision)}


def train_case(inputs: Inputs, case: Case, s: Settings, hw: LocalHardware,
               out: Path) -> tuple[Any, list[dict[str, Any]]]:
    """Plan the case for this device, then train it on one rank under the memory probe and
    the step clock; the plan and the rank's memory readings."""
    peak, _ = peak_flops(hw, s.precision)
    config, plan = trainer_recipe.render(
        trainer_recipe.job(f"gpu-{case.slug}", case_spec(inputs, case, s, hw)),
        data_root=inputs.root, output=out, nproc=1, peak_flops_per_rank=peak, hardware=hw)
    ranks = planner_accuracy.run_probed(
        config, out, nproc=1, device=hw.device, timeout=s.case_timeout,
        extra_args=("--clock", str(out / "clock.json")),
        env=first_gpu_environment() if hw.gpus else None)
    return plan, ranks


def case_figures(out: Path, plan: Any, ranks: list[dict[str, Any]], hw: LocalHardware,
                 precision: str) -> dict[str, Any]:
    """Tokens/s per GPU, MFU and the memory comparison of a finished case."""
    from finetune_contract.layout import SUMMARY_FILE
    from finetune_trainer.metrics import training_flops_per_token

    clock = json.loads((out / "clock.json").read_text())
    summary = json.loads((out / SUMMARY_FILE).read_text())
    per_gpu = clock["tokens_per_second"] / plan.world_size
    flops_per_token = training_flops_per_token(summary["parameters"],
                                               summary["trainableParameters"])
    peak, _ = peak_flops(hw, precision)
    meter = "cuda" if hw.gpus else "rss"
    wire = plan.to_wire()
    return {
        "plan": {k: wire[k] for k in ("strategy", "worldSize", "precision", "microBatchSize",
                                      "seqLength", "packing", "gradientCheckpointing")},
        "wrapper": summary["strategy"]["wrapper"],
        "parameters": summary["parameters"],
        "trainable_parameters": summary["trainableParameters"],
        "tokens_per_second_per_gpu": per_gpu,
        "steady_tokens": clock["steady_tokens"],
        "steady_seconds": clock["steady_seconds"],
        "final_loss": clock["losses"][-1]["loss"] if clock["losses"] else None,
        "flops_per_token": flops_per_token,
        "mfu": flops_per_token * per_gpu / peak if peak else None,
        "meter": meter,
        "planned_total": plan.memory_per_gpu.total,
        "reserved_peak": ranks[0].get("reserved_peak_cuda"),
        "memory": planner_accuracy.compare(out.name, plan.strategy, plan, ranks, meter),
    }


# --------------------------------------------------------------------------- attention


def packed_row_lengths(total: int, longest: int, seed: int = SEED) -> list[int]:
    """Long-tailed row lengths (lognormal, median an eighth of `longest`) filling one
    padding-free micro-batch of `total` tokens exactly."""
    rng = random.Random(seed)
    lengths: list[int] = []
    while sum(lengths) < total:
        drawn = round(rng.lognormvariate(0, 0.9) * longest / 8)
        lengths.append(max(2, min(longest, drawn, total - sum(lengths))))
    return lengths


def packed_batch(lengths: list[int], vocab_size: int, device: str) -> dict[str, Any]:
    """Input ids and position ids restarting at 0 for each row: what TRL's padding-free
    collator hands the model (one sequence, no attention mask), without a KV cache as the
    trainer runs it (transformers looks for packed rows only when there is no cache)."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, vocab_size, (1, sum(lengths)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    return {"input_ids": ids.to(device), "position_ids": positions.to(device),
            "use_cache": False}


def attention_model(s: Settings, device: str) -> Any:
    """The decoder blocks of the settings' model (random, in the working precision), with
    transformers' SDPA kernel to start from."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    keys = dict(s.model)
    keys.setdefault("vocab_size", workspace.VOCAB_SIZE)
    config = AutoConfig.for_model(keys.pop("model_type"), **keys)
    torch.manual_seed(SEED)
    dtype = torch.bfloat16 if s.precision == "bf16" else torch.float32
    # Built on the device it computes on: initializing 0.5B weights on the host and copying
    # them over would take longer than the measurement itself.
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")


def attention_kernels(model: Any, device: str, precision: str) -> tuple[list[str], str]:
    """Masked sdpa, varlen_sdpa and the kernel the trainer picks on this device (flash
    attention on a GPU that has it installed), and which one that is."""
    from finetune_trainer import attention

    chosen = attention.choose(model, device, precision)
    attention.register()  # choose() registers it on CPU only
    return list(dict.fromkeys(["sdpa", attention.VARLEN_SDPA, chosen])), chosen


def time_kernel(model: Any, kernel: str, batch: dict[str, Any], iterations: int,
                meter: Any) -> dict[str, Any]:
    """Forward and backward of the decoder blocks (no LM head: the head is the same for
    every kernel and would dilute the difference) with `kernel`; the peak is the meter's
    growth over the weights during the timed passes."""
    import torch

    model.set_attn_implementation(kernel)
    blocks = model.get_decoder()
    sync = torch.cuda.synchronize if batch["input_ids"].is_cuda else (lambda: None)

    def step() -> Any:
        hidden = blocks(**batch).last_hidden_state
        hidden.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        return hidden.detach()

    output = step()  # warm-up: kernel selection, allocator growth
    sync()
    meter.reset()
    before = meter.current()
    started = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    seconds = (time.perf_counter() - started) / iterations
    return {"kernel": kernel, "seconds_per_pass": seconds,
            "tokens_per_second": batch["input_ids"].shape[1] / seconds,
            "peak_growth": meter.peak() - before, "output": output}


def compare_attention(s: Settings, hw: LocalHardware) -> dict[str, Any]:
    """Each kernel on the same padding-free micro-batch; outputs checked against sdpa's."""
    from bench.memory_probe import CudaMeter, RssMeter

    model = attention_model(s, hw.device)
    lengths = packed_row_lengths(s.tokens_per_step, s.seq_len)
    batch = packed_batch(lengths, model.config.vocab_size, hw.device)
    meter = CudaMeter() if hw.gpus else RssMeter()
    kernels, chosen = attention_kernels(model, hw.device, s.precision)
    rows = [time_kernel(model, kernel, batch, s.attention_iterations, meter)
            for kernel in kernels]
    reference = rows[0]["output"].float()
    for row in rows:
        row["max_difference"] = float((row.pop("output").float() - reference).abs().max())
    return {"rows": lengths, "tokens": sum(lengths), "meter": meter.name,
            "trainer_kernel": chosen, "kernels": rows}


# --------------------------------------------------------------------------- the section


def measure(work: Path, dry_run: bool, log=print) -> dict[str, Any]:
    """Every case and the attention comparison; the section's result."""
    s = DRY_RUN_SETTINGS if dry_run else GPU_SETTINGS
    hw = hardware(dry_run)
    inputs = prepare(work / "inputs", s)
    cases = []
    for case in CASES:
        row = measure_case(inputs, case, s, hw, work)
        log(f"  {case_line(row)}")
        cases.append(row)
    attention = compare_attention(s, hw)
    for row in attention["kernels"]:
        log(f"  attention {row['kernel']}: {row['tokens_per_second']:.0f} tokens/s, "
            f"max difference to sdpa {row['max_difference']:.3g}")
    return {"dry_run": dry_run, "settings": asdict(s), "device": describe_device(hw, s.precision),
            "cases": cases, "attention": attention}


def case_line(row: dict[str, Any]) -> str:
    """One line of progress: what a case measured, or why it did not."""
    if row["status"] != "measured":
        return f"{row['case']}: {row['status']}: {row['reason'].splitlines()[0]}"
    memory = row["memory"]
    mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "unknown"
    return (f"{row['case']}: {row['tokens_per_second_per_gpu']:.0f} tokens/s per GPU, MFU "
            f"{mfu}, peak {memory['measured_growth'] / 2**20:.0f} MiB measured vs "
            f"{memory['predicted_growth'] / 2**20:.0f} MiB planned "
            f"({memory['growth_error']:+.1%}), {row['wall_seconds']:.0f} s")
