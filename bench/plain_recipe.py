"""Recipe A: the plain TRL SFTTrainer setup everyone starts from.

Default padded batches (no padding-free, no packing), the usual hyperparameters, assistant-only
loss (so its loss is comparable with ours), launched by torchrun with one process per rank:

    torchrun --standalone --nproc-per-node 2 bench/plain_recipe.py ARGS.json

ARGS.json names the data, tokenizer and model directories, the batch and the step count; the
script writes its result (train time, losses, real tokens) to the path ARGS.json gives.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(args_path: str) -> None:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    args = json.loads(open(args_path).read())
    torch.manual_seed(args["seed"])
    tokenizer = AutoTokenizer.from_pretrained(args["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    data = load_dataset("json", data_files=args["data"], split="train")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = args["global_batch"] // (args["micro_batch"] * world)
    losses: list[dict] = []

    class Record(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            if logs and "loss" in logs:
                losses.append({"step": state.global_step, "loss": logs["loss"]})

    config = SFTConfig(
        output_dir=args["output"],
        per_device_train_batch_size=args["micro_batch"],
        gradient_accumulation_steps=accumulation,
        max_steps=args["steps"],
        learning_rate=args["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args["steps"] // 10),
        weight_decay=0.01,
        max_length=args["max_length"],
        assistant_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=args["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data,
                         processing_class=tokenizer, callbacks=[Record()])
    start = time.perf_counter()
    result = trainer.train()
    elapsed = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        json.dump({"train_seconds": elapsed, "train_runtime": result.metrics["train_runtime"],
                   "losses": losses, "final_loss": losses[-1]["loss"] if losses else None},
                  open(args["result"], "w"))


if __name__ == "__main__":
    main(sys.argv[1])
