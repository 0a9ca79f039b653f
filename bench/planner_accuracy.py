"""Section 2: the planner's memory prediction against what 2 CPU ranks really hold.

For each small Llama config and each strategy (DDP, ZeRO-2, ZeRO-3) the planner plans a run
(micro-batch and sequence length fixed, so every micro-batch has exactly the planned tokens:
text rows longer than the sequence length, cut to it), then `finetune_trainer` trains three
steps with that plan under `bench/memory_probe.py`. Compared per rank:
- model states: planner weights + gradients + optimizer vs the tensor bytes the rank holds
  right after the first optimizer step;
- totals: the planner's total minus its runtime term (the imported libraries, which the
  baseline already contains) vs the peak RSS growth over the baseline taken after imports;
  glibc returns freed blocks to the system only above its mmap threshold, so the ranks run
  with MALLOC_MMAP_THRESHOLD_=65536 to make RSS follow what is really allocated;
- where the peak falls: each step's forward/backward and optimizer-step peaks, and what the
  process holds beyond its tensors when training starts.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import launch, trainer_recipe
from bench.chat_data import conversations

BENCH_DIR = Path(__file__).resolve().parent
STRATEGIES = ("ddp", "zero2", "zero3")
MMAP_THRESHOLD = "65536"


def llama(hidden: int, layers: int, intermediate: int, heads: int) -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers,
            "intermediate_size": intermediate, "num_attention_heads": heads,
            "num_key_value_heads": heads, "max_position_embeddings": 1024,
            "tie_word_embeddings": False}


CONFIGS = {
    "llama-20m": llama(512, 6, 1376, 8),
    "llama-50m": llama(640, 10, 1728, 10),
    "llama-tiny": llama(64, 2, 128, 4),  # the smoke test and --quick
}


@dataclass(frozen=True)
class Settings:
    micro_batch: int = 2
    seq_len: int = 256
    # Three steps: the second is not yet steady state (DDP rebuilds its buckets in it, ZeRO-3
    # records its module trace in the first), the third is what every later step looks like.
    steps: int = 3
    configs: tuple[str, ...] = ("llama-20m", "llama-50m")
    strategies: tuple[str, ...] = STRATEGIES
    # tuning: lora on a frozen random base, under the strategies LoRA trains with (rank 16 on
    # every linear layer of the blocks).
    lora_strategies: tuple[str, ...] = ("ddp", "zero2")
    # tuning: qlora quantizes pretrained weights only (the trainer refuses it on init:
    # random), so its runs load the same random config saved once as a model directory; it
    # trains under DDP only.
    qlora_strategies: tuple[str, ...] = ("ddp",)


def write_text_rows(path: Path, rows: int = 64, min_chars: int = 4000) -> Path:
    """Text rows of at least `min_chars` characters (well above the planned sequence length
    in tokens), so the trainer cuts every row to exactly that length."""
    out, text = [], ""
    # A conversation averages about 200 characters: draw twice what the rows need (the
    # conversations are deterministic per seed, so a longer draw keeps the same first rows).
    for conversation in conversations(rows * (min_chars // 100 + 1), seed=11):
        text += " ".join(m["content"] for m in conversation["messages"]) + "\n"
        if len(text) >= min_chars:
            out.append({"text": text})
            text = ""
        if len(out) == rows:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def save_base(config: dict[str, Any], tokenizer: Path, out: Path) -> Path:
    """`config` with random weights (seeded) and the tokenizer, saved as a pretrained model
    directory: what qlora can quantize. Written once per config and reused. The vocabulary is
    the tokenizer's unless `config` names a larger one (a real model's shape: the embedding
    and the head keep their real size, the tokenizer uses the first ids)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    keys = dict(config)
    keys["vocab_size"] = max(keys.get("vocab_size", 0), len(tok))
    model_config = AutoConfig.for_model(
        keys.pop("model_type"), **keys, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(model_config, dtype=torch.float32).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def spec(config: dict[str, Any], strategy: str, tokenizer: Path, data: Path, s: Settings,
         vocab_size: int, tuning: str = "full", base: Path | None = None,
         ranks: int = 2) -> dict[str, Any]:
    """A run of `s.steps` steps of one micro-batch per rank on `ranks` CPU ranks, with the
    model `config` (random init) or the model directory `base`."""
    model: dict[str, Any] = (
        {"name": "bench-llama", "path": str(base)} if base else
        {"name": "bench-llama", "init": "random", "config": {**config, "vocab_size": vocab_size}})
    return {
        "method": {"tuning": tuning},
        "model": {**model, "tokenizer": {"path": str(tokenizer)}},
        "dataset": {"format": "text", "train": {"path": str(data)}},
        "training": {"maxSteps": s.steps, "globalBatchSize": ranks * s.micro_batch,
                     "microBatchSize": s.micro_batch, "maxSeqLength": s.seq_len,
                     "packing": "padding-free", "saveSteps": 10**6, "loggingSteps": 1,
                     "learningRate": 1e-4},
        # Memory is bounded generously: the point is what the plan predicts, not the search.
        "resources": {"gpu": "cpu", "gpusPerNode": ranks, "maxNodes": 1, "strategy": strategy,
                      "memory": "16Gi"},
    }


def measure_one(name: str, config: dict[str, Any], strategy: str, tokenizer: Path,
                data: Path, work: Path, s: Settings, vocab_size: int,
                tuning: str = "full", base: Path | None = None) -> dict[str, Any]:
    label = strategy if tuning == "full" else f"{tuning}-{strategy}"
    out = work / f"{name}-{label}"
    # A fresh output directory: the trainer resumes from any complete checkpoint it finds
    # there, and a resumed run loads Adam's states before its first step (no first step to
    # measure, and a setup peak that includes reading the checkpoint).
    shutil.rmtree(out, ignore_errors=True)
    config_path, plan = trainer_recipe.render(
        trainer_recipe.job(f"mem-{name}-{label}",
                           spec(config, strategy, tokenizer, data, s, vocab_size, tuning, base)),
        data_root=data.parent, output=out)
    ranks = run_probed(config_path, out)
    return {**compare(name, strategy, plan, ranks), "tuning": tuning}


def run_probed(config_path: Path, out: Path, *, nproc: int = 2, device: str = "cpu",
               extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
               timeout: float = launch.DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """Train `config_path` on `nproc` ranks under bench/memory_probe.py (log: out/log.txt);
    returns each rank's readings. `extra_args` go to bench/trainer_recipe.py (--clock),
    `env` to the ranks' environment."""
    result = out / "memory"
    # glibc's mmap threshold makes RSS follow what CPU ranks allocate; a GPU rank's memory
    # is read from the CUDA allocator, and its host allocations keep glibc's defaults.
    env = {**({"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD} if device == "cpu" else {}),
           **(env or {})}
    launch.run_ranks(launch.torchrun([str(BENCH_DIR / "trainer_recipe.py"), "--config",
                                      str(config_path), "--memory", str(result), *extra_args],
                                     nproc=nproc),
                     out / "log.txt", env=env, device=device, timeout=timeout)
    return [json.loads(result.with_name(f"memory.rank{r}.json").read_text())
            for r in range(nproc)]


def runtime_overhead(meter: str) -> int:
    """The planner's runtime term, which a meter's baseline already holds (CPU ranks: the
    imported libraries) or which it never sees (the CUDA allocator: the context and library
    workspaces are outside it)."""
    from finetune_operator.planner.memory import CPU_RUNTIME_OVERHEAD, GPU_RUNTIME_OVERHEAD

    return {"rss": CPU_RUNTIME_OVERHEAD, "cuda": GPU_RUNTIME_OVERHEAD}[meter]


def compare(name: str, strategy: str, plan: Any, ranks: list[dict[str, Any]],
            meter: str = "rss") -> dict[str, Any]:
    """Planner vs measured, per rank (the worse of the ranks is reported). `meter`: whose peak
    the plan's total is set against, resident memory ("rss", CPU ranks) or the CUDA
    allocator's ("cuda", GPU ranks); the peak figures carry its name (`peak_rss`, ...)."""
    m = plan.memory_per_gpu
    predicted_states = {"weights": m.weights, "gradients": m.gradients, "optimizer": m.optimizer}
    predicted_state_total = sum(predicted_states.values())
    predicted_growth = m.total - runtime_overhead(meter)
    worst = max(ranks, key=lambda r: r["model_states"])
    growth = max(r[f"peak_{meter}"] - r[f"baseline_{meter}"] for r in ranks)
    return {
        "config": name,
        "strategy": strategy,
        "parameters": plan.parameters,
        "wrapper": worst.get("wrapper"),
        "predicted_states": predicted_states,
        "measured_states": worst["states"],
        "predicted_state_total": predicted_state_total,
        "measured_state_total": worst["model_states"],
        "state_error": worst["model_states"] / predicted_state_total - 1,
        "predicted": {"activations": m.activations, "logits": m.logits, "overhead": m.overhead,
                      "total": m.total},
        "predicted_growth": predicted_growth,
        "measured_growth": growth,
        "growth_error": growth / predicted_growth - 1,
        **{key: max(r[key] for r in ranks) for key in (
            f"peak_{meter}", f"baseline_{meter}", f"setup_peak_{meter}",
            f"training_peak_{meter}", f"{meter}_after_first_step")},
        # Per step, the peak growth of each phase (forward+backward, optimizer step) per rank.
        "phases": [[{k: (v - r[f"baseline_{meter}"] if k.endswith(f"peak_{meter}") else v)
                     for k, v in ph.items()} for ph in r.get("phases", [])] for r in ranks],
        # What the process holds beyond its tensors when training starts: RSS growth minus
        # the bytes of every live tensor (the planner's CPU_PROCESS_OVERHEAD).
        "non_tensor_at_train_begin": max(
            r["rss_at_train_begin"] - r["baseline_rss"] - r["tensor_bytes_at_train_begin"]
            for r in ranks),
        "other_tensors": worst["other"],
        "detail": worst["detail"],
    }


def measure(tokenizer: Path, work: Path, settings: Settings | None = None,
            log=print) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    s = settings or Settings()
    vocab_size = len(AutoTokenizer.from_pretrained(tokenizer))
    data = write_text_rows(work / "text.jsonl")
    rows = []
    for name in s.configs:
        runs = ([("full", st) for st in s.strategies]
                + [("lora", st) for st in s.lora_strategies]
                + [("qlora", st) for st in s.qlora_strategies])
        for tuning, strategy in runs:
            base = (save_base(CONFIGS[name], tokenizer, work / f"{name}-base")
                    if tuning == "qlora" else None)
            row = measure_one(name, CONFIGS[name], strategy, tokenizer, data, work, s,
                              vocab_size, tuning, base)
            log(f"  {name} {tuning} {strategy}: states {row['measured_state_total'] / 2**20:.1f} MiB "
                f"measured vs {row['predicted_state_total'] / 2**20:.1f} MiB planned "
                f"({row['state_error']:+.1%}); RSS growth "
                f"{row['measured_growth'] / 2**20:.0f} MiB vs {row['predicted_growth'] / 2**20:.0f}"
                f" MiB ({row['growth_error']:+.1%})")
            rows.append(row)
    return rows
