"""What hearing costs, side by side in one run: a text-only turn vs the same turn with a 2 s and a
5 s clip, through the engine (worker + mtmd), on the tiny Qwen2.5-Omni fixture (thinker `qwen2vl`,
projector `qwen2.5o` with its Whisper-style audio tower; random weights) or on --model/--mmproj.

Audio is encoded in 30 s windows, so a 2 s and a 5 s clip cost the same ~750 prompt tokens; the
time to first token is the encoder plus the prefill of those tokens. From the measured audio tokens
and a model's prefill speed (perf-anchors: 13.3 tok/s for the 7B on 2 threads here) the expected
time on the real model follows. Medians of --repeat runs; JSON + PNG in benchmarks/results/; the
summary JSON is the last line.

    .venv/bin/python benchmarks/bench_audio.py [--model PATH --mmproj PATH] [--threads N] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
import statistics
import sys
import tempfile
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from custom_components.sarai_omni.engine import ChatRequest, Engine, EngineConfig  # noqa: E402
from tests.conftest import write_wav  # noqa: E402
from tests.specs import gguf_spec  # noqa: E402
from tests.tiny_models import VL_TEMPLATE, write_omni_mmproj, write_text_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PREFILL_7B_TPS = 13.3  # perf-anchors.md: Qwen2.5-7B-shaped Q4_K_M, pp512, 2 threads, this machine kind
REAL_CLIP_TOKENS = 752  # one 30 s window + <|audio_bos|>/<|audio_eos|> (single tokens in Qwen's vocabulary)
GRAMMAR = 'root ::= "ok"'


def turn(clip: Path | None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "Transcribe exactly what is said in this audio."}]
    if clip is not None:
        parts.append({"type": "audio", "path": str(clip)})
    return [{"role": "user", "content": parts if clip else parts[0]["text"]}]


async def measure(
    model: Path, mmproj: Path, clips: dict[str, Path | None], threads: int, repeat: int
) -> dict[str, Any]:
    spec = gguf_spec("quality", str(model), str(mmproj), n_ctx=4096, n_threads=threads, repack=False)
    engine = Engine(EngineConfig(models=(spec,), ram_budget_mb=16384))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in clips}
    try:
        for _ in range(repeat):
            for name, clip in clips.items():  # alternating, so drift hits every case alike
                result = await engine.complete(
                    ChatRequest(messages=turn(clip), role="quality", grammar=GRAMMAR, temperature=0.0)
                )
                status = engine.status("quality")
                runs[name].append(
                    {
                        "ttft_ms": result.ttft_ms,
                        "prompt_tokens": result.prompt_tokens,
                        "seconds": status.last.audio_seconds or 0.0,
                    }
                )
    finally:
        await engine.close()
    return {
        name: {key: statistics.median(r[key] for r in rs) for key in ("ttft_ms", "prompt_tokens", "seconds")}
        for name, rs in runs.items()
    }


def plot(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figures)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, [figures[n]["ttft_ms"] for n in names], color=["#999", "#3a7", "#285"])
    for i, n in enumerate(names):
        ax.annotate(f"{figures[n]['prompt_tokens']:.0f} tok", (i, figures[n]["ttft_ms"]), ha="center", va="bottom")
    ax.set_ylabel("time to first token (ms)")
    ax.set_title("Hearing on the fixture: text only vs 2 s and 5 s clips")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="text model GGUF (default: the tiny fixture)")
    parser.add_argument("--mmproj", type=Path, help="its projector with an audio encoder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sarai_bench_audio_") as tmp:
        folder = Path(tmp)
        model = args.model or write_text_model(folder / "thinker.gguf", "qwen2vl", chat_template=VL_TEMPLATE, seed=5)
        mmproj = args.mmproj or write_omni_mmproj(folder / "omni-mmproj.gguf")
        clips = {
            "text only": None,
            "2 s clip": write_wav(folder / "2s.wav", 2.0),
            "5 s clip": write_wav(folder / "5s.wav", 5.0),
        }
        figures = asyncio.run(measure(model, mmproj, clips, args.threads, args.repeat))
    audio_tokens = figures["5 s clip"]["prompt_tokens"] - figures["text only"]["prompt_tokens"]
    summary = {
        "model": args.model.name if args.model else "tiny fixture",
        "threads": args.threads,
        "ttft_ms": {n: round(f["ttft_ms"], 1) for n, f in figures.items()},
        "audio_tokens_per_clip": round(audio_tokens),
        "ttft_5s_over_2s": round(figures["5 s clip"]["ttft_ms"] / figures["2 s clip"]["ttft_ms"], 2),
        "expected_7b_prefill_s": round(REAL_CLIP_TOKENS / PREFILL_7B_TPS, 1),  # plus the 7B's audio encoder
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"bench_audio_{summary['model'].replace(' ', '-')}_t{args.threads}"
    stem.with_suffix(".json").write_text(json.dumps({"summary": summary, "figures": figures}, indent=2))
    plot(figures, stem.with_suffix(".png"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
