"""Engine overhead and prompt-cache benchmark, side by side in one run (machines are noisy).

Measures on the same GGUF, threads and load parameters:
- decode tok/s of raw llama-cpp-python in this process vs through the engine (worker process +
  JSON-lines streaming, timed where the tokens arrive, on the event loop) with the default options,
  and through an engine with `prompt_lookup` on (the option's other value), all three alternated;
- time to first token for a ~1,500-token system prompt: cold (full prompt), warm (prefix cached in
  the worker's context) and restored (KV state loaded from disk by a fresh worker);
- decode tok/s through the engine of each load variant: plain (no weight repacking, the variant the
  raw/engine ratio uses on both sides) and repacked (llama.cpp's extra buffer types). A variant whose
  worker dies (SIGILL where AMX traps) is reported by its signal instead of ending the benchmark.
Each figure is the median of --repeat runs, alternating raw/engine. Writes JSON and a PNG plot to
benchmarks/results/ and prints the summary JSON as the last line.

    .venv/bin/python benchmarks/bench_engine.py [--model PATH] [--threads N] [--tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from custom_components.sarai_omni.engine import ChatRequest, Engine, EngineConfig, WorkerCrashed  # noqa: E402
from custom_components.sarai_omni.engine.errors import describe_exit  # noqa: E402
from custom_components.sarai_omni.engine.prompts import Message, render_prompt  # noqa: E402
from custom_components.sarai_omni.engine.spec import Runtime  # noqa: E402
from custom_components.sarai_omni.engine.worker.llamacpp.runner import _new_llama  # noqa: E402
from tests.specs import gguf_spec  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
RESULTS = ROOT / "benchmarks" / "results"
N_CTX = 4096
SAMPLING = {"temp": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}  # the worker's defaults


def standing_prompt(session: int, entities: int = 56) -> str:
    """A system prompt like Assist's with exposed entities (~1,500 tokens with 56 entities on gemma)."""
    lines = [
        f"Session {session}. You are a voice assistant for Home Assistant. Answer briefly.",
        "An overview of the areas and the devices in this smart home:",
    ]
    areas = ("Kitchen", "Living room", "Bedroom", "Garden", "Garage", "Office")
    for i in range(entities):
        area, kind = areas[i % len(areas)], ("light", "switch", "sensor", "cover")[i % 4]
        lines.append(f"- names: {area} {kind} {i}\n  domain: {kind}\n  state: 'off'\n  areas: {area}")
    return "\n".join(lines)


def raw_decode(model: Path, threads: int, tokens: int, repeat: int) -> list[float]:
    import llama_cpp

    llm = _new_llama(llama_cpp, {"model_path": str(model), "n_ctx": N_CTX, "n_threads": threads})
    prompt = render_prompt(
        [{"role": "user", "content": "Tell me about the weather."}], llm.metadata.get("tokenizer.chat_template")
    )
    ids = llm.tokenize(prompt.text.encode(), add_bos=True, special=True)
    rates = []
    for _ in range(repeat):
        stamps = []
        llm.reset()
        for _token in llm.generate(ids, reset=False, **SAMPLING):
            stamps.append(time.perf_counter())
            if len(stamps) >= tokens:
                break
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))  # first token to last, like the engine
    llm.close()
    return rates


async def engine_decode(engine: Engine, tokens: int) -> float:
    """Tokens per second from the first token to the end of the stream, as the event loop sees it.

    Deltas are not tokens (EOS pieces and held-back stop-string prefixes emit no text), so the
    clock starts at the worker's first token (request time + its TTFT) and stops when the final
    result has crossed the pipe: every token's IPC and streaming cost is inside the interval.
    """
    stream = engine.chat(
        ChatRequest(
            messages=[{"role": "user", "content": "Tell me about the weather."}],
            temperature=0.0,
            max_tokens=tokens,
            ignore_eos=True,
        )
    )
    started = time.perf_counter()
    async for _ in stream:
        pass
    ended = time.perf_counter()
    assert stream.result is not None
    first = started + stream.result.ttft_ms / 1000
    return (stream.result.completion_tokens - 1) / (ended - first)


async def ttft(engine: Engine, messages: list[Message]) -> dict[str, float]:
    """Wall time from the request to the first streamed text, and the worker's own TTFT."""
    t0 = time.perf_counter()
    first = 0.0
    stream = engine.chat(ChatRequest(messages=messages, temperature=0.0, max_tokens=4, ignore_eos=True))
    async for _ in stream:
        first = first or time.perf_counter()
    assert stream.result is not None
    return {
        "wall_ms": (first - t0) * 1000,
        "worker_ms": stream.result.ttft_ms,
        "evaluated": stream.result.evaluated_prompt_tokens,
        "prompt": stream.result.prompt_tokens,
    }


def make_engine(
    model: Path, threads: int, kv_dir: str | None = None, *, repack: bool = False, **runtime: Any
) -> Engine:
    """The model as HA runs it: every runtime option at its default unless given."""
    spec = gguf_spec(
        "fast", str(model), n_ctx=N_CTX, n_threads=threads, pinned=True, kv_cache_dir=kv_dir, repack=repack, **runtime
    )
    return Engine(EngineConfig(models=(spec,), ram_budget_mb=16384))


async def load_variants(model: Path, threads: int, tokens: int, repeat: int) -> dict[str, dict[str, Any]]:
    """Median engine decode tok/s per load variant, each in its own worker; a dying one says why."""
    out: dict[str, dict[str, Any]] = {}
    for name, repack in (("plain", False), ("repack", True)):
        engine = make_engine(model, threads, repack=repack)
        try:
            await engine.start()
            status = engine.snapshot().models["fast"]
            if status.repack != repack:  # its load died and the engine fell back to the safe way
                out[name] = {"decode_tps": None, "unusable": status.unusable_variants.get(name)}
                continue
            runs = [await engine_decode(engine, tokens) for _ in range(repeat)]
            rss = engine.status("fast").rss_mb
            out[name] = {"decode_tps": round(statistics.median(runs), 2), "runs": runs, "rss_mb": rss}
        except WorkerCrashed as err:
            out[name] = {"decode_tps": None, "unusable": describe_exit(err.exit_code)}
        finally:
            await engine.close()
    return out


async def prompt_cache(model: Path, threads: int, repeat: int) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": [], "restored": []}
    with tempfile.TemporaryDirectory() as kv_dir:
        engine = make_engine(model, threads)
        await engine.start()
        for i in range(repeat):
            system: Message = {"role": "system", "content": standing_prompt(i)}
            runs["cold"].append(await ttft(engine, [system, {"role": "user", "content": "Turn on the kitchen light."}]))
            runs["warm"].append(await ttft(engine, [system, {"role": "user", "content": "And the garden one?"}]))
        await engine.close()
        for i in range(repeat):
            system = {"role": "system", "content": standing_prompt(100 + i)}
            saver = make_engine(model, threads, kv_dir)
            await saver.warm("fast", [system])
            await saver.close()
            restarted = make_engine(model, threads, kv_dir)
            warm = await restarted.warm("fast", [system])
            assert warm.source == "disk", warm
            run = await ttft(restarted, [system, {"role": "user", "content": "Turn on the kitchen light."}])
            runs["restored"].append({**run, "restore_ms": warm.ms})
            await restarted.close()
    return runs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(args.model, args.threads)  # the defaults
    lookup = make_engine(args.model, args.threads, prompt_lookup=True)
    await engine.start()
    await lookup.start()
    raw, eng, eng_lookup = [], [], []
    for _ in range(args.repeat):  # alternate so drift hits all sides alike
        raw += raw_decode(args.model, args.threads, args.tokens, 1)
        eng.append(await engine_decode(engine, args.tokens))
        eng_lookup.append(await engine_decode(lookup, args.tokens))
    await engine.close()
    await lookup.close()
    cache = await prompt_cache(args.model, args.threads, args.repeat)
    variants = await load_variants(args.model, args.threads, args.tokens, args.repeat)

    def med(runs: list[dict[str, float]], key: str = "wall_ms") -> float:
        return statistics.median(r[key] for r in runs)

    cold, warm, restored = med(cache["cold"]), med(cache["warm"]), med(cache["restored"])
    return {
        "model": args.model.name,
        "threads": args.threads,
        "decode_tokens": args.tokens,
        "repeat": args.repeat,
        "raw_tps_runs": raw,
        "engine_tps_runs": eng,
        "engine_prompt_lookup_tps_runs": eng_lookup,
        "prompt_lookup_default": Runtime().prompt_lookup,
        "prompt_cache_runs": cache,
        "prompt_tokens": int(med(cache["cold"], "prompt")),
        "ttft_cold_ms": cold,
        "ttft_warm_ms": warm,
        "ttft_restored_ms": restored,
        "restore_ms": med(cache["restored"], "restore_ms"),
        "load_variants": variants,
        "summary": {
            "decode_ratio": round(statistics.median(eng) / statistics.median(raw), 3),
            "ttft_warm_over_cold": round(warm / cold, 4),
            "ttft_restored_over_cold": round(restored / cold, 4),
            "raw_tps": round(statistics.median(raw), 2),
            "engine_tps": round(statistics.median(eng), 2),
            "prompt_lookup_ratio": round(statistics.median(eng_lookup) / statistics.median(raw), 3),
            "prompt_lookup_tps": round(statistics.median(eng_lookup), 2),
            "plain_tps": variants["plain"]["decode_tps"],
            "repack_tps": variants["repack"]["decode_tps"],
            "repack_unusable": variants["repack"].get("unusable"),
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    s = result["summary"]
    left.bar(
        ["raw llama-cpp-python", "engine (defaults)", "engine, prompt lookup"],
        [s["raw_tps"], s["engine_tps"], s["prompt_lookup_tps"]],
        color=["#888", "#1f77b4", "#9467bd"],
    )
    left.set_ylabel("decode tokens/s (median)")
    left.set_title(f"Decode, {result['threads']} threads: ratio {s['decode_ratio']:.2f}")
    bars = [result["ttft_cold_ms"], result["ttft_warm_ms"], result["ttft_restored_ms"]]
    right.bar(["cold", "warm (prefix)", "restored (disk)"], bars, color=["#d62728", "#2ca02c", "#ff7f0e"])
    right.set_yscale("log")
    right.set_ylabel("time to first token, ms (log)")
    right.set_title(f"TTFT, {result['prompt_tokens']}-token prompt")
    for i, value in enumerate(bars):
        right.text(i, value, f"{value:.0f} ms", ha="center", va="bottom")
    fig.suptitle(f"sarai_omni engine on {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--tokens", type=int, default=128, help="decode tokens per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"bench_engine_{args.model.stem}_t{args.threads}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / stem}.json and .png", file=sys.stderr)
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    cli()
