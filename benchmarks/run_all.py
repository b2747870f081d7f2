"""Every figure of docs/benchmarks.md, side by side in one run, on the seed models' shapes.

    .venv/bin/python benchmarks/run_all.py [--quick] [--threads N] [--out DIR]

Makes the seed-shaped GGUFs first if they are not cached (benchmarks/seed_models.py: ~10 min once),
then measures on this machine, with its own read bandwidth:
- decode / prefill: raw llama-cpp-python vs the engine, 4B and 7B shapes, and decode / roofline;
- the seed's auto_reduce_context (a 512-token context for a short turn vs the full one);
- Assist through a real Home Assistant: TTFT cold / warm / after a restart, turn latency P50 / P95;
- the 7B quality model on demand: load with a cold and a warm page cache, first image analysis,
  1 / 2 / 4 frames, 2 s / 5 s audio, both models' RSS and the peaks sampled against the 12 GB budget;
- prompt-lookup speculative decoding vs raw decode; the router's and the pipe's cost per turn.
Writes <out>/<name>.json and one PNG per plot (docs/benchmarks/ by default; `--quick` runs are
named *-quick) and prints the summary as its last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
import sys
import time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import assist, decode, plots, quality, report, seed_models, speculation  # noqa: E402
from benchmarks.common import GEMMA, machine  # noqa: E402

GOALS = {  # summary key: (limit, "min" | "max")
    "decode_ratio_4b": (0.97, "min"),
    "decode_ratio_7b": (0.97, "min"),
    "rss_over_file_kv_4b": (1.15, "max"),
    "ttft_warm_over_cold": (0.03, "max"),
    "ttft_restored_over_cold": (0.05, "max"),
    "load_7b_warm_ms": (1000, "max"),
}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    quick, threads = args.quick, args.threads
    fast, omni = seed_models.ensure("qwen3vl-4b"), seed_models.ensure("omni-7b")
    result: dict[str, Any] = {"quick": quick, "machine": machine(threads), "seconds": {}}
    bandwidth = result["machine"]["read_bandwidth_gbs"][str(threads)]

    async def section(name: str, work: Any) -> None:
        started = time.perf_counter()
        result[name] = await work
        result["seconds"][name] = round(time.perf_counter() - started, 1)
        print(f"[bench] {name}: {result['seconds'][name]} s", file=sys.stderr, flush=True)

    tokens, repeat = (48, 3) if quick else (64, 5)
    result["decode"] = {}
    for label, seed in (("4b", fast), ("7b", omni)):
        work = decode.side_by_side(
            seed.model, threads, tokens, repeat, bandwidth_gbs=bandwidth, prefill_words=16 if quick else 60
        )
        await section(f"decode_{label}", work)
        result["decode"][label] = result.pop(f"decode_{label}")
    await section("context_size", decode.context_size(fast.model, threads, 16 if quick else 32, 1 if quick else 3))
    await section("assist", asyncio.to_thread(assist.run, fast.model, threads, 5 if quick else 20, 16 if quick else 24))
    await section("quality", quality.run(fast, omni, threads, quick))
    models = [GEMMA] if quick else [GEMMA, fast.model]
    lookups = {}
    for model in models:
        lookups[model.name] = await speculation.speedup(model, threads, 48 if quick else 64, 2 if quick else 3)
    result["prompt_lookup"] = lookups
    await section("overhead", speculation.overhead(GEMMA, threads, 10))
    result["summary"] = summary(result)
    return result


def summary(r: dict[str, Any]) -> dict[str, Any]:
    q, a, d = r["quality"], r["assist"], r["decode"]
    gemma = r["prompt_lookup"][GEMMA.name]
    out: dict[str, Any] = {
        "decode_ratio_4b": d["4b"]["decode_ratio"],
        "decode_ratio_7b": d["7b"]["decode_ratio"],
        "rss_over_file_kv_4b": d["4b"]["rss_over_file_kv"],
        "rss_over_file_kv_7b": d["7b"]["rss_over_file_kv"],
        "ttft_warm_over_cold": a["ttft_warm_over_cold"],
        "ttft_restored_over_cold": a["ttft_restored_over_cold"],
        "load_7b_warm_ms": q["load_7b_warm"]["wall_ms"],
        "load_7b_cold_ms": q["load_7b_cold"]["wall_ms"],
        "both_models_rss_mb": q["both_models_rss_mb"],
        "peak_rss_mb": max(q["peak_rss_mb"].values()),
        "budget_mb": q["budget_mb"],
        "decode_tps_4b": max(d["4b"]["engine_decode_tps"]),
        "decode_tps_7b": max(d["7b"]["engine_decode_tps"]),
        "raw_over_roofline_4b": d["4b"]["raw_over_roofline"],
        "raw_over_roofline_7b": d["7b"]["raw_over_roofline"],
        "turn_p50_ms": a["turn_p50_ms"],
        "turn_p95_ms": a["turn_p95_ms"],
        "prompt_lookup_speedup_assist": gemma["assist"]["speedup_over_raw"],
        "prompt_lookup_speedup_free": gemma["free"]["speedup_over_raw"],
        "small_context_decode_ratio": r["context_size"]["small_over_full_decode"],
        "threads": r["machine"]["threads"],
    }
    out["goals_met"] = {key: _meets(out[key], *goal) for key, goal in GOALS.items()}
    out["goals_met"]["rss_never_above_budget"] = not q["peak_over_budget"]
    return out


def _meets(value: float, limit: float, kind: str) -> bool:
    return value >= limit if kind == "min" else value <= limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and turns: under 10 min on 2 vCPUs")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--report", action="store_true", help="also write docs/benchmarks.md from a --quick run")
    args = parser.parse_args()
    started = time.perf_counter()
    result = asyncio.run(measure(args))
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    name = result["name"] = f"seed-shapes-t{args.threads}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    for plot, draw in plots.ALL.items():
        draw(result, args.out / f"{name}-{plot}.png")
    if not args.quick or args.report:  # the page users read comes from full runs
        (args.out.parent / "benchmarks.md").write_text(report.render(result, name))
    print(f"wrote {args.out / name}.json and {len(plots.ALL)} PNGs", file=sys.stderr)
    print(json.dumps(result["summary"] | {"seconds": result["seconds"]["total"]}))


if __name__ == "__main__":
    main()
