"""Generate one answer with a trained model through its own chat template.

Run as `python -m finetune_operator.local.generate --model DIR` with the conversation as
JSON on stdin; prints `{"answer": ...}` on stdout. It runs in a child process because the
operator side never imports torch: importing this module imports only the standard library,
transformers is loaded inside `main` in the child.
"""

from __future__ import annotations

import argparse
import json
import sys

MAX_NEW_TOKENS = 48


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="directory of the saved model")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    args = parser.parse_args(argv)
    messages = json.load(sys.stdin)
    answer = generate(args.model, messages, args.max_new_tokens)
    json.dump({"answer": answer}, sys.stdout)
    return 0


def generate(model_dir: str, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id),
        )
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


if __name__ == "__main__":
    sys.exit(main())
