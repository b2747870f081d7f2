"""A voice that fits the box: Qwen3-TTS on llama.cpp at the exact shapes of Qwen3-TTS-12Hz-0.6B-Base and
1.7B-Base (random values, F16 as the converter writes them; tests/tiny_tts.py), 2 threads by default.

Per shape, through the engine (the worker, its protocol, the pool) as HA's TTS entity calls it:
- `tts_first_audio_ms`: one Assist-length sentence, from the request to its first PCM piece (what a
  pipeline waits before it can play anything); its floor: the first piece's frames (0.8 s of speech)
  at this run's per-frame rate (talker, code predictor and code2wav), i.e. what must be computed
  before there is anything to play.
- `tts_rtf`: seconds of computing per second of speech over a longer sentence (below 1 keeps up with
  playback); the real-time line is its floor for a stream that never stalls.
- `tts_rss_mb`: the worker's peak resident memory while speaking (sampled), against the pool's
  estimate from the files before anything was measured (`tts_estimate_mb`).
- `all_three_peak_rss_mb`: the seed's fast model (Qwen3-VL-4B shape, Q4_K_M + projector), its quality
  model (Qwen2.5-Omni-7B shape) and the 0.6B voice in one engine under the seed's 12 GB budget, each
  used once: the peak of all workers' sampled RSS, and which were resident together.

Random weights never say when to stop: every sentence runs to the voice's length limit (0.12 s of
speech per character), so the seconds of audio are the limit's, the rates are the real ones. JSON +
PNG into docs/benchmarks/ (--out), the summary as the last line.

    .venv/bin/python benchmarks/bench_tts.py [--threads N] [--skip-17b] [--skip-three]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
import sys
import time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import seed_models  # noqa: E402
from benchmarks.common import SEED_RAM_LIMIT_MB, RssSampler, engine, machine, save, spec, worker_pids  # noqa: E402
from custom_components.sarai_omni.engine import ChatRequest, Engine  # noqa: E402
from custom_components.sarai_omni.engine.worker.llamacpp.speech import FIRST_PIECE  # noqa: E402
from tests.tiny_tts import SEED_06B, SEED_17B, VoiceShape, write_voice  # noqa: E402

SENTENCE = "The kitchen light is on."  # an Assist reply
LONGER = "Good evening. The front door is locked, and the garden camera saw nobody since noon."
OUT = ROOT / "docs" / "benchmarks"
FRAME_S = 0.08  # 12.5 frames per second


async def speak_timed(eng: Engine, text: str) -> dict[str, float]:
    """One sentence through the engine: when the first PCM came, how much audio, how long it all took."""
    started = time.perf_counter()
    first: float | None = None
    seconds = 0.0
    async for piece in eng.speak_stream("voice", text, language="en"):
        if piece.pcm and first is None:
            first = (time.perf_counter() - started) * 1000
        seconds += piece.seconds
    total = (time.perf_counter() - started) * 1000
    return {"first_audio_ms": round(first or total, 1), "audio_s": round(seconds, 3), "ms": round(total, 1)}


async def measure_voice(shape: VoiceShape, threads: int) -> dict[str, Any]:
    talker, projector = write_voice(seed_models.CACHE / "voices", shape)
    eng = engine(spec("voice", talker, threads, mmproj=str(projector), n_ctx=2048))
    try:
        await eng.prepare()
        estimate = eng.status("voice").estimate_mb  # before anything was measured
        with RssSampler(lambda: worker_pids(eng)) as rss:
            await eng.load("voice")
            with rss.during("speak"):
                await speak_timed(eng, "Hello.")  # warm: the first code2wav graph is built once
                one = await speak_timed(eng, SENTENCE)
                longer = await speak_timed(eng, LONGER)
    finally:
        await eng.close()
    per_frame_ms = longer["ms"] / (longer["audio_s"] / FRAME_S)
    first_frames = min(one["audio_s"] / FRAME_S, FIRST_PIECE)  # the first piece, or the sentence
    return {
        "talker_mb": round(talker.stat().st_size / 2**20),
        "projector_mb": round(projector.stat().st_size / 2**20),
        "first_audio_ms": one["first_audio_ms"],
        "first_audio_floor_ms": round(first_frames * per_frame_ms, 1),
        "sentence_audio_s": one["audio_s"],
        "rtf": round(longer["ms"] / 1000 / longer["audio_s"], 3),
        "frame_ms": round(per_frame_ms, 1),
        "longer_audio_s": longer["audio_s"],
        "rss_mb": rss.peaks_mb().get("speak", 0),
        "estimate_mb": estimate,
    }


async def measure_three(threads: int) -> dict[str, Any]:
    """The seed's two models and the 0.6B voice in one engine under the 12 GB budget, each used once."""
    fast, quality = seed_models.ensure("qwen3vl-4b", threads), seed_models.ensure("omni-7b", threads)
    talker, projector = write_voice(seed_models.CACHE / "voices", SEED_06B)
    eng = engine(
        spec("fast", fast.model, threads, mmproj=str(fast.mmproj), pinned=True, n_ctx=4096),
        spec("quality", quality.model, threads, mmproj=str(quality.mmproj), n_ctx=4096),
        spec("voice", talker, threads, mmproj=str(projector), n_ctx=2048),
        budget_mb=SEED_RAM_LIMIT_MB,
    )
    turn = [{"role": "user", "content": "Is the kitchen light on?"}]
    resident: list[list[str]] = []
    try:
        await eng.prepare()
        with RssSampler(lambda: worker_pids(eng)) as rss:
            for role in ("fast", "quality"):
                await eng.complete(ChatRequest(messages=turn, role=role, max_tokens=8))
                resident.append(sorted(r for r, s in eng.snapshot().models.items() if s.state == "loaded"))
            await speak_timed(eng, SENTENCE)
            resident.append(sorted(r for r, s in eng.snapshot().models.items() if s.state == "loaded"))
        status = eng.snapshot()
    finally:
        await eng.close()
    return {
        "all_three_peak_rss_mb": max(rss.peaks_mb().values()),
        "engine_peak_rss_mb": status.peak_rss_mb,
        "budget_mb": SEED_RAM_LIMIT_MB,
        "resident_after_each": resident,
        "estimates_mb": {r: s.estimate_mb for r, s in status.models.items()},
    }


def summarize(voices: dict[str, dict[str, Any]], three: dict[str, Any] | None, threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {"threads": threads, "machine": machine(threads), "voices": voices}
    for key, figures in voices.items():
        out[f"tts_rtf_{key}"] = figures["rtf"]
        out[f"tts_first_audio_ms_{key}"] = figures["first_audio_ms"]
        out[f"tts_first_audio_floor_ms_{key}"] = figures["first_audio_floor_ms"]
        out[f"tts_rss_mb_{key}"] = figures["rss_mb"]
        out[f"tts_estimate_mb_{key}"] = figures["estimate_mb"]
    if three is not None:
        out |= three
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(summary["voices"])
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(keys))
    first = [summary["voices"][k]["first_audio_ms"] / 1000 for k in keys]
    floor = [summary["voices"][k]["first_audio_floor_ms"] / 1000 for k in keys]
    rtf = [summary["voices"][k]["rtf"] for k in keys]
    speed.bar([i - 0.27 for i in x], first, 0.27, label="first audio (s)")
    speed.bar(list(x), floor, 0.27, label="its floor (s)")
    speed.bar([i + 0.27 for i in x], rtf, 0.27, label="real-time factor")
    speed.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    speed.set_xticks(list(x), keys)
    speed.set_title(f"Qwen3-TTS on llama.cpp, {summary['threads']} threads")
    speed.legend()
    bars = {f"{k} voice": summary["voices"][k]["rss_mb"] for k in keys}
    bars |= {f"{k} estimate": summary["voices"][k]["estimate_mb"] for k in keys}
    if "all_three_peak_rss_mb" in summary:
        bars["4B + 7B + 0.6B peak"] = summary["all_three_peak_rss_mb"]
    memory.barh(list(bars), list(bars.values()), color="#1f77b4")
    if "budget_mb" in summary:
        memory.axvline(summary["budget_mb"], color="red", linestyle="--", linewidth=1, label="12 GB budget")
        memory.legend()
    memory.set_xlabel("MB (sampled RSS)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-17b", action="store_true", help="only the 0.6B voice")
    parser.add_argument("--skip-three", action="store_true", help="no run of the voice beside the seed models")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    shapes = {"06b": SEED_06B} | ({} if args.skip_17b else {"17b": SEED_17B})
    voices = {key: asyncio.run(measure_voice(shape, args.threads)) for key, shape in shapes.items()}
    three = None if args.skip_three else asyncio.run(measure_three(args.threads))
    save(args.out, f"bench-tts-t{args.threads}", summarize(voices, three, args.threads), plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
