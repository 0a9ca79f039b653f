"""Recipe A: the plain TRL SFTTrainer setup everyone starts from.

Default padded batches (no padding-free, no packing), the usual hyperparameters and
TrainingArguments defaults (e.g. the fused AdamW transformers picks on torch >= 2.8),
assistant-only loss (so its loss is comparable with ours), launched by torchrun with one
process per rank:

    torchrun --standalone --nproc-per-node 2 bench/plain_recipe.py ARGS.json

ARGS.json names the data, tokenizer and model directories, the batch and the step count; the
result (per-step times, real tokens, losses) goes to the path ARGS.json gives, written by the
same StepClock that measures recipe B. Counting real tokens
(`include_num_input_tokens_seen="non_padding"`) is the only addition to the plain recipe; B
counts them the same way.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` when run as a script


def main(args_path: str) -> None:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from bench.step_clock import StepClock

    args = json.loads(Path(args_path).read_text())
    torch.manual_seed(args["seed"])
    tokenizer = AutoTokenizer.from_pretrained(args["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    data = load_dataset("json", data_files=args["data"], split="train")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = args["global_batch"] // (args["micro_batch"] * world)

    config = SFTConfig(
        output_dir=args["output"],
        per_device_train_batch_size=args["micro_batch"],
        gradient_accumulation_steps=accumulation,
        max_steps=args["steps"],
        learning_rate=args["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=args["warmup_ratio"],  # below 1: a ratio of the steps
        weight_decay=args["weight_decay"],
        max_length=args["max_length"],
        assistant_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=args["seed"],
        data_seed=args["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )
    callbacks = [StepClock(args["result"])]
    if args.get("profile"):  # bench/profiling.py: where the steps' time goes
        from bench.profiling import ProfileSteps

        first, last = (int(v) for v in args["profile_steps"].split(":"))
        callbacks.append(ProfileSteps(args["profile"], first, last))
    trainer = SFTTrainer(model=model, args=config, train_dataset=data,
                         processing_class=tokenizer, callbacks=callbacks)
    trainer.train()
    # Leave the process group before exit: a rank torn down mid-collective aborts (SIGABRT).
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    # The results are written. Skip interpreter teardown: a gloo background thread still
    # being destroyed there intermittently aborts the process ("terminate called without an
    # active exception", SIGABRT), which torchrun would report as a failed run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
