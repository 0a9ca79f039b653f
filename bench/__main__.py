"""`make bench` (python -m bench): run every section and write docs/benchmarks.md.

    python -m bench                          all sections (about 23 minutes on 2 cores)
    python -m bench --sections planner       one or more of: throughput, adapters, planner,
                                             operator
    python -m bench --quick                  tiny settings, to check the bench itself runs
    python -m bench --report-only            re-render the report from the saved results
    python -m bench --gpu                    section 4 alone, on one CUDA GPU (bench/gpu.py)
    python -m bench --gpu --dry-run          section 4's code on the CPU, tiny: prints the
                                             section, leaves the report and gpu.json alone

Raw results go to bench/results/<section>.json (git-ignored); the report is rendered from
all of them, so a section can be re-run alone and the report still covers every section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from bench import machine, report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "runs" / "bench"
SECTIONS = ("throughput", "adapters", "planner", "operator")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _save(name: str, value: Any) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(_jsonable(value), indent=1, default=str))


def _load(name: str) -> Any:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# --quick's model: 2 blocks, 64 wide (section 1 and its adapters part).
_QUICK_MODEL = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                "max_position_embeddings": 1024, "tie_word_embeddings": False}


def _throughput_settings(quick: bool) -> Any:
    from bench import throughput

    return (throughput.Settings(steps=4, global_batch=8, micro_batch_a=4, runs=1)
            if quick else throughput.Settings())


def run_throughput(quick: bool) -> dict[str, Any]:
    from bench import throughput, workspace

    print("throughput: measuring the fp32 GEMM peak (2 ranks x 1 thread) ...", flush=True)
    load_before = _load_average()
    peak_before = machine.gemm_peak_two_ranks()
    ws = workspace.prepare(WORK / "workspace", model_config=_QUICK_MODEL if quick else None,
                           conversations=200 if quick else workspace.CONVERSATIONS)
    settings = _throughput_settings(quick)
    print(f"throughput: {ws.parameters / 1e6:.1f}M parameters, {settings.runs} runs of each "
          "recipe, alternating", flush=True)
    result = throughput.measure(ws, WORK / "throughput", settings, peak_before)
    peak_after = machine.gemm_peak_two_ranks()
    # The lower fraction is the honest one: use the higher of the two peak measurements.
    result.gemm_peak_flops = max(peak_before, peak_after)
    print("throughput: profiling one run of each recipe ...", flush=True)
    profile = throughput.profile(ws, WORK / "throughput", settings, result.gemm_peak_flops,
                                 steps="2:3" if quick else "2:4")
    return {"result": asdict(result), "summary": result.summary(), "profile": profile,
            "gemm_peak_before": peak_before, "gemm_peak_after": peak_after,
            "real_tokens_per_row": ws.real_tokens_per_row,
            "load_before": load_before, "load_after": _load_average()}


def run_adapters(quick: bool) -> dict[str, Any]:
    from bench import adapter_throughput, workspace

    load_before = _load_average()
    # Section 1's workspace and settings, rebuilt the same way (seeded: the same files).
    ws = workspace.prepare(WORK / "workspace", model_config=_QUICK_MODEL if quick else None,
                           conversations=200 if quick else workspace.CONVERSATIONS)
    settings = _throughput_settings(quick)
    print(f"adapters: {ws.parameters / 1e6:.1f}M parameters, {settings.runs} runs of full, "
          "lora and qlora, alternating", flush=True)
    result = adapter_throughput.measure(ws, WORK / "adapters", settings)
    return {"result": asdict(result), "summary": result.summary(),
            "real_tokens_per_row": ws.real_tokens_per_row,
            "load_before": load_before, "load_after": _load_average()}


def run_planner(quick: bool) -> dict[str, Any]:
    from bench import planner_accuracy, workspace

    load_before = _load_average()
    tokenizer = WORK / "workspace" / "tokenizer"
    if not tokenizer.exists():
        workspace.prepare(WORK / "workspace", conversations=200)
    settings = (planner_accuracy.Settings(configs=("llama-tiny",), steps=2)
                if quick else planner_accuracy.Settings())
    rows = planner_accuracy.measure(tokenizer, WORK / "planner", settings)
    return {"rows": rows, "settings": asdict(settings), "load_before": load_before,
            "load_after": _load_average()}


def run_operator(quick: bool) -> dict[str, Any]:
    from bench import operator_scale

    load_before = _load_average()
    counts = (3,) if quick else (10, 100, 500)
    results = operator_scale.measure(WORK / "operator", counts,
                                     timeout=60 if quick else 240)
    return {"results": [asdict(r) for r in results], "load_before": load_before,
            "load_after": _load_average()}


RUNNERS = {"throughput": run_throughput, "adapters": run_adapters, "planner": run_planner,
           "operator": run_operator}


def run_gpu(dry_run: bool) -> dict[str, Any]:
    """Section 4, with the machine it ran on (not machine.json: that one describes the CPU
    machine of sections 1-3)."""
    from bench import gpu

    started = time.monotonic()
    value = gpu.measure(WORK / ("gpu-dry-run" if dry_run else "gpu"), dry_run=dry_run)
    host = machine.describe()
    return {**value, "machine": host, "when": host["date"],
            "command": report.GPU_DRY_RUN_COMMAND if dry_run else report.GPU_COMMAND,
            "seconds": time.monotonic() - started}


def gpu_main(dry_run: bool, output: str) -> int:
    """--gpu: save gpu.json and render section 4 into the report, the other sections left as
    they are. --gpu --dry-run: save gpu-dry-run.json and print the section it renders; the
    report keeps saying the GPU bench has not run on a GPU."""
    print("== gpu" + (" (dry run on the CPU)" if dry_run else ""), flush=True)
    value = run_gpu(dry_run)
    name = "gpu-dry-run" if dry_run else "gpu"
    _save(name, value)
    print(f"== gpu: {value['seconds']:.0f} s; wrote {RESULTS / name}.json", flush=True)
    if dry_run:
        print("\n".join(report.gpu_section(_load(name))), flush=True)
        return 0
    path = Path(output)
    path.write_text(report.with_gpu_section(path.read_text() if path.exists() else "",
                                            _load(name)))
    print(f"wrote section 4 of {output}", flush=True)
    return 0


def _write_report(output: str, argv: list[str]) -> None:
    text = report.render({name: _load(name) for name in ("machine", *SECTIONS, "gpu")},
                         command=" ".join(["python -m bench", *argv]))
    Path(output).write_text(text)
    print(f"wrote {output}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--report-only", action="store_true",
                        help="only re-render the report from bench/results")
    parser.add_argument("--gpu", action="store_true",
                        help="run section 4 alone, on one CUDA GPU (bench/gpu.py)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --gpu: the same code on the CPU with a tiny model")
    args = parser.parse_args(argv)
    if args.dry_run and not args.gpu:
        parser.error("--dry-run goes with --gpu")
    if args.gpu:
        return gpu_main(args.dry_run, args.output)
    wanted = [] if args.report_only else [s.strip() for s in args.sections.split(",")
                                          if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    if wanted:
        _save("machine", machine.describe())
    for section in wanted:
        t = time.monotonic()
        print(f"== {section}", flush=True)
        value = RUNNERS[section](args.quick)
        value["seconds"] = time.monotonic() - t
        value["quick"] = args.quick
        value["when"] = machine.describe()["date"]
        _save(section, value)
        print(f"== {section}: {value['seconds']:.0f} s", flush=True)
    _write_report(args.output, argv if argv is not None else sys.argv[1:])
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
