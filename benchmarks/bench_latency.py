"""What a person waits for, on the seed shapes, side by side in one run (2 threads by default).

Three waits, each with the time measured, its floor and where the time went (the worker's stages
and the host's):
- **a camera question** on Qwen2.5-Omni-7B's shape: *before* is today's path (the quality model's
  standing prompt not warm, so instructions, tools, entities, the image and the question are all
  evaluated; the snapshot at 672 px, the size Assist sent), *after* the new one (the standing prompt
  warm in the quality model's context, the snapshot at the `camera_image_size` default), and a
  follow-up question about the same frame (its encoder output reused); the after path at 336, 448
  and 672 px too;
- **an Assist turn** on Qwen3-VL-4B's shape: the time to the first token after the standing prompt
  is warm (the host's clock, from the request to the first text);
- **a voice round trip**: end of speech → first audio out. The 7B hears a 2 s command arriving in
  real time (the STT entity's streamed path), the 4B answers its first sentence, the 0.6B Qwen3-TTS
  voice speaks it; the three stages back to back through the engine, as the pipeline calls them.
Plus **the cost as the home grows**: 10, 50 and 200 exposed entities in an Assist-shaped standing
prompt (HA's static-context YAML and intent tools): its tokens, cold and warm TTFT, the worker's RSS,
and what happens when it outgrows the default context.

Floors come from the tokens each request really needed and the rates measured in this run by raw
llama-cpp-python on the same file and threads: the same number of tokens evaluated in one batch
after a cached prefix (a small batch runs well below a large one's rate on a CPU, so that is the
floor raw llama.cpp itself reaches), decode steps at the raw decode rate, the voice's first piece at
its measured per-frame rate. Encoders are left out of the floors (shown as a stage).

    .venv/bin/python benchmarks/bench_latency.py [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterator
import contextlib
import ctypes
import gc
import io
import json
from pathlib import Path
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import ha_voice, seed_models  # noqa: E402
from benchmarks.bench_audio import streamed  # noqa: E402
from benchmarks.bench_tts import FRAME_S, speak_timed  # noqa: E402
from benchmarks.common import engine, machine, save, spec  # noqa: E402
from custom_components.sarai_omni.engine import ChatRequest, ContextTooSmall, Engine, defaults  # noqa: E402
from custom_components.sarai_omni.engine.worker.llamacpp import adapter  # noqa: E402
from custom_components.sarai_omni.engine.worker.llamacpp.speech import FIRST_PIECE  # noqa: E402
from tests.conftest import write_speechlike  # noqa: E402
from tests.tiny_tts import SEED_06B, write_voice  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"
BEFORE_SIZE = 672  # the snapshot size Assist's camera questions sent before the option
SIZES = (336, 448, 672)
ENTITY_COUNTS = (10, 50, 200)
SENTENCE_TOKENS = 12  # the agent's first sentence (random weights never end one by themselves)
TRANSCRIPT = "Turn on the kitchen light."
ANSWER = "The kitchen light is on."
ROOMS = ("Kitchen", "Living room", "Bedroom", "Office", "Garage", "Hallway", "Bathroom", "Garden")
KINDS = ("light", "switch", "sensor", "cover", "climate")
INSTRUCTIONS = (
    "You are a voice assistant for Home Assistant.\nAnswer questions about the world truthfully.\n"
    "Answer in plain text. Keep it simple and to the point.\n"
    "When controlling Home Assistant always call the intent tools. Use HassTurnOn to lock and HassTurnOff to "
    "unlock a lock. When controlling a device, prefer passing just name and domain. When controlling an area, "
    "prefer passing just area name and domain.\nWhen a user asks to turn on all devices of a specific type, "
    "ask user to specify an area, unless there is only one device of that type.\n"
    "This device is not able to start timers.\nYou ARE equipped to answer questions about the current state "
    "of the home using the `GetLiveContext` tool. This is a primary function. Do not state you lack the "
    "functionality if the question requires live data.\nIf the user asks about device existence/type (e.g., "
    "'Do I have lights in the bedroom?'): Answer from the static context below.\nIf the user asks about the "
    "CURRENT state, value, or mode (e.g., 'Is the lock locked?', 'Is the fan on?', 'What mode is the "
    "thermostat in?', 'What is the temperature outside?'):\n    1.  Recognize this requires live data.\n"
    "    2.  You MUST call `GetLiveContext`. This tool will provide the needed real-time information "
    "(like temperature from the local weather, lock status, etc.).\n    3.  Use the tool's response** to "
    "answer the user accurately (e.g., 'The temperature outside is [value from tool].').\n"
    "For general knowledge questions not about the home: Answer truthfully from internal knowledge.\n"
)
INTENTS = {
    "HassTurnOn": "Turns on/opens/presses a device or entity. For locks, this performs a 'lock' action.",
    "HassTurnOff": "Turns off/closes a device or entity. For locks, this performs an 'unlock' action.",
    "HassCancelAllTimers": "Cancels all timers",
    "HassLightSet": "Sets the brightness percentage or color of a light",
    "HassClimateSetTemperature": "Sets the target temperature of a climate device or entity",
    "HassSetPosition": "Sets the position of a device or entity",
    "HassListAddItem": "Add item to a todo list",
    "HassBroadcast": "Broadcast a message through the home",
    "GetDateTime": "Provides the current date and time.",
    "GetLiveContext": "Provides real-time information about the CURRENT state, value, or mode of devices, "
    "sensors, entities, or areas. Use this tool for: 1. Answering questions about current conditions. "
    "2. As the first step in conditional actions.",
}


def assist_prompt(entities: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An Assist-shaped standing prompt: HA's instructions, its static-context YAML of `entities`
    exposed entities, and its intent tools (the parameters HA's intents take)."""
    lines = []
    for i in range(entities):
        room, kind = ROOMS[i % len(ROOMS)], KINDS[i // len(ROOMS) % len(KINDS)]
        lines.append(f"- names: {room} {kind} {i // (len(ROOMS) * len(KINDS)) + 1}\n  domain: {kind}\n  areas: {room}")
    system = f"{INSTRUCTIONS}Static Context: An overview of the areas and the devices in this smart home:\n"
    text = {"role": "system", "content": system + "\n".join(lines)}
    target = {
        "name": {"type": "string"},
        "area": {"type": "string"},
        "floor": {"type": "string"},
        "domain": {"type": "array", "items": {"type": "string", "enum": list(KINDS)}},
        "device_class": {"type": "array", "items": {"type": "string", "enum": ["tv", "speaker", "outlet"]}},
    }
    parameters = {"type": "object", "properties": target}
    tools = [
        {"type": "function", "function": {"name": n, "description": d, "parameters": parameters}}
        for n, d in INTENTS.items()
    ]
    return text, tools


def camera_jpeg(side: int) -> bytes:
    """A 1280x720 camera frame, shrunk by the integration's own code to `side` px on its longest side."""
    from PIL import Image, ImageDraw

    from custom_components.sarai_omni.vision import to_jpeg

    image = Image.linear_gradient("L").convert("RGB").resize((1280, 720))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        draw.rectangle((60 + 100 * i, 200 + 20 * (i % 5), 140 + 100 * i, 420), fill=(30 * i % 255, 90, 200 - 12 * i))
    raw = io.BytesIO()
    image.save(raw, "JPEG", quality=90)
    return to_jpeg(raw.getvalue(), side, "camera")


# -- raw llama-cpp-python: the floors ------------------------------------------------------------
class Raw:
    """One model in this process: seconds to evaluate n tokens in one batch after a prefix in the
    cache (the standing prompt's own KV state as the engine saved it, so attention spans as many
    cells as in the measured request; else PREFIX tokens), and the decode rate."""

    PREFIX = 256

    def __init__(self, model: Path, threads: int, n_ctx: int = defaults.N_CTX) -> None:
        import llama_cpp

        self.llm: Any = llama_cpp.Llama(  # as the engine's specs here load it: no repacking, no flash attention
            str(model), n_ctx=n_ctx, n_threads=threads, n_batch=512, flash_attn=False, verbose=False
        )
        self.vocab, self.n_ctx, self.base = self.llm.n_vocab(), n_ctx, 0
        self.at(None)

    def nearest(self, folder: str, tokens: int) -> int:
        """Restore the state file in `folder` holding the number of tokens nearest `tokens` (the
        standing prompt the measured requests found cached: the worker names files by content)."""
        held = {}
        for path in Path(folder).glob("state-*.kv"):
            with contextlib.suppress(RuntimeError):
                held[str(path)] = self.at(str(path))
        best = min(held, key=lambda p: abs(held[p] - tokens))
        return self.at(best)

    def at(self, state: str | None) -> int:
        """Put the prefix in the cache: the KV state file `state` (a standing prompt), or PREFIX tokens."""
        import llama_cpp

        self.llm.reset()
        adapter.clear_kv(self.llm)
        if state is None:
            self.llm.eval([(7 + 31 * i) % self.vocab for i in range(self.PREFIX)])
        else:  # the worker's format (kvfiles.py): the whole context's state
            out, count = (llama_cpp.llama_token * self.n_ctx)(), ctypes.c_size_t(0)
            if not llama_cpp.llama_state_load_file(self.llm.ctx, state.encode(), out, self.n_ctx, ctypes.byref(count)):
                raise RuntimeError(f"cannot restore {state}")
            self.llm.n_tokens = count.value
        self.base = int(self.llm.n_tokens)
        return self.base

    def batch_s(self, n: int, repeat: int = 2) -> float:
        runs = []
        for r in range(repeat):
            self.llm.n_tokens = self.base
            adapter.keep_prefix(self.llm, self.base)
            tokens = [(11 + 13 * i + r) % self.vocab for i in range(n)]
            started = time.perf_counter()
            self.llm.eval(tokens)
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    def decode_tps(self, n: int = 16) -> float:
        self.llm.n_tokens = self.base
        adapter.keep_prefix(self.llm, self.base)
        started = time.perf_counter()
        for i in range(n):
            self.llm.eval([(5 + 17 * i) % self.vocab])
        return n / (time.perf_counter() - started)

    def close(self) -> None:
        self.llm.close()


@contextlib.contextmanager
def raw(model: Path, threads: int, n_ctx: int = defaults.N_CTX) -> Iterator[Raw]:
    model_raw = Raw(model, threads, n_ctx)
    try:
        yield model_raw
    finally:
        model_raw.close()
        gc.collect()


# -- the engine side ------------------------------------------------------------------------------
async def first_text(eng: Engine, request: ChatRequest) -> dict[str, Any]:
    """Wall time to the first streamed text and to the end, with the result's figures and stages."""
    started, first = time.perf_counter(), 0.0
    stream = eng.chat(request)
    async for _ in stream:
        first = first or time.perf_counter()
    ended = time.perf_counter()
    assert stream.result is not None
    r = stream.result
    held = r.stages.get("held_ms", 0.0)  # the first token's text held back in the worker (see summarize)
    return {
        "ttft_ms": round(((first or ended) - started) * 1000 - held, 1),
        "first_text_ms": round(((first or ended) - started) * 1000, 1),
        "done_ms": round((ended - started) * 1000, 1),
        "worker_ttft_ms": round(r.ttft_ms, 1),
        "prompt_tokens": r.prompt_tokens,
        "evaluated_prompt_tokens": r.evaluated_prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "decode_tps": round(r.tokens_per_second, 2),
        "stages": r.stages,
    }


def turn(system: dict[str, Any], tools: list[dict[str, Any]], text: str, role: str, **kw: Any) -> ChatRequest:
    return ChatRequest(
        messages=[system, {"role": "user", "content": text}], role=role, tools=tools, temperature=0.0,
        ignore_eos=True, **kw,
    )  # fmt: skip


async def home_point(model: Path, threads: int, entities: int, n_ctx: int, kv_dir: str) -> dict[str, Any]:
    """One home size on the 4B: the standing prompt's tokens, cold and warm TTFT, the worker's RSS.
    The standing prompt's KV state is saved to `kv_dir` (as HA does), for the suite's later engine."""
    system, tools = assist_prompt(entities)
    eng = engine(spec("fast", model, threads, n_ctx=n_ctx, pinned=True, kv_cache_dir=kv_dir))
    try:
        await eng.load("fast")
        started = time.perf_counter()
        try:  # as HA does at start (no request timeout: 200 entities take minutes here); saved to disk
            await eng.warm("fast", [system], tools)
        except ContextTooSmall as err:  # what a turn answering up to the agent's max_tokens is told
            told = ContextTooSmall(tokens=err.tokens, n_ctx=err.n_ctx, answer=defaults.MAX_TOKENS)
            return {"entities": entities, "n_ctx": n_ctx, "refused": str(told)} | told.detail()
        standing_ms = (time.perf_counter() - started) * 1000
        cold = await first_text(eng, turn(system, tools, "Turn on the kitchen light", "fast", max_tokens=2))
        warm = [await first_text(eng, turn(system, tools, t, "fast", max_tokens=2)) for t in WARM_TURNS]
        rss = eng.status("fast").rss_mb
    finally:
        await eng.close()
    return {
        "entities": entities,
        "n_ctx": n_ctx,
        "standing_tokens": cold["prompt_tokens"],
        "cold_ttft_ms": round(standing_ms + cold["ttft_ms"], 1),  # the standing prompt evaluated, then the turn
        "standing_ms": round(standing_ms, 1),
        "warm_ttft_ms": statistics.median(w["ttft_ms"] for w in warm),
        "warm": warm,
        "rss_mb": rss,
    }


WARM_TURNS = ("Is the garage switch on?", "Switch off the bedroom lamp", "Which lights are on?")


async def home_curve(model: Path, threads: int, found: dict[str, Any], save: Callable[[], None]) -> None:
    """The points not measured yet (a resumed run keeps the others), each saved as it is measured."""
    points, kv_dir = found.setdefault("home", []), found["kv_dir"]
    for count in ENTITY_COUNTS:
        if any(p["entities"] == count for p in points):
            continue
        point = await home_point(model, threads, count, defaults.N_CTX, kv_dir)
        if "refused" in point:  # what the answer says to do, done: the context it suggests
            points.append(point)
            point = await home_point(model, threads, count, int(point["suggested"]), kv_dir)
        points.append(point)
        print(f"home {count}: {str(point)[:300]}", file=sys.stderr, flush=True)
        save()


async def camera(eng: Engine, system: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Today's camera question and the new one on the 7B, side by side."""
    question = "What do you see on the garden camera?"
    with tempfile.TemporaryDirectory() as folder:
        frames = {}
        for side in SIZES:
            path = Path(folder) / f"garden-{side}.jpg"
            path.write_bytes(camera_jpeg(side))
            frames[side] = path

        def ask(side: int) -> ChatRequest:
            content = [{"type": "text", "text": question}, {"type": "image", "path": str(frames[side])}]
            return ChatRequest(
                messages=[system, {"role": "user", "content": content}], role="quality", tools=tools,
                temperature=0.0, max_tokens=2, ignore_eos=True,
            )  # fmt: skip

        await eng.load("quality")
        before = await first_text(eng, ask(BEFORE_SIZE))  # nothing of the standing prompt cached
        warmed = await eng.warm("quality", [system], tools)
        after = {str(side): await first_text(eng, ask(side)) for side in SIZES}
        follow_up = await first_text(eng, ask(defaults.CAMERA_IMAGE_SIZE))  # the same frame again
    return {"before": before, "warm_source": warmed.source, "after": after, "follow_up": follow_up}


async def voice_round_trip(eng: Engine, system: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """End of speech -> first audio: hear (7B, streamed), answer a sentence (4B), speak it (0.6B)."""
    with tempfile.TemporaryDirectory() as folder:
        clip = write_speechlike(Path(folder) / "command.wav", 2.0)
        heard = await streamed(eng, clip, "latency")
    answered = await first_text(eng, turn(system, tools, TRANSCRIPT, "fast", max_tokens=SENTENCE_TOKENS))
    spoken = await speak_timed(eng, ANSWER)
    return {"hear": heard, "answer": answered, "speak": spoken}


# -- the run ---------------------------------------------------------------------------------------
async def measure(threads: int, found: dict[str, Any], save: Callable[[], None]) -> None:
    """Each part not in `found` yet, saved as it completes (a run that fails can be resumed)."""
    fast, quality = seed_models.ensure("qwen3vl-4b", threads), seed_models.ensure("omni-7b", threads)
    talker, projector = write_voice(seed_models.CACHE / "voices", SEED_06B)
    kv_dir = found.setdefault("kv_dir", tempfile.mkdtemp(prefix="sarai-latency-kv-"))
    await home_curve(fast.model, threads, found, save)
    if "voice" in found:
        return
    system, tools = assist_prompt(ENTITY_COUNTS[0])
    eng = engine(
        spec(
            "fast", fast.model, threads, mmproj=str(fast.mmproj), pinned=True, n_ctx=defaults.N_CTX, kv_cache_dir=kv_dir
        ),
        spec(
            "quality",
            quality.model,
            threads,
            mmproj=str(quality.mmproj),
            n_ctx=defaults.QUALITY_N_CTX,
            kv_cache_dir=kv_dir,
        ),
        spec("voice", talker, threads, mmproj=str(projector), n_ctx=2048),
        budget_mb=16384,  # the seed's 16 GB box: the three stay resident
    )
    try:
        found["assist_warm"] = (await eng.warm("fast", [system], tools)).source  # from disk: the curve saved it
        found["assist"] = [await first_text(eng, turn(system, tools, t, "fast", max_tokens=2)) for t in WARM_TURNS]
        found["camera"] = await camera(eng, system, tools)
        await speak_timed(eng, "Hello.")  # the voice loaded, its first code2wav graph built
        found["voice"] = await voice_round_trip(eng, system, tools)
        found["resident"] = sorted(r for r, s in eng.snapshot().models.items() if s.state == "loaded")
    finally:
        await eng.close()
    save()


def floors(found: dict[str, Any], fast: Path, quality: Path, threads: int) -> dict[str, Any]:
    """The raw model's own time for what each request needed, measured now."""
    assist_n = int(statistics.median(t["evaluated_prompt_tokens"] for t in found["assist"]))
    answer = found["voice"]["answer"]
    with raw(fast, threads) as r:
        fast_decode = r.decode_tps()
        assist = found["assist"][0]
        held = r.nearest(found["kv_dir"], assist["prompt_tokens"] - assist["evaluated_prompt_tokens"])
        assert abs(held - (assist["prompt_tokens"] - assist["evaluated_prompt_tokens"])) <= 2, held
        assist_s, answer_s = r.batch_s(assist_n, repeat=5), r.batch_s(answer["evaluated_prompt_tokens"], repeat=3)
    cam = found["camera"]["after"][str(defaults.CAMERA_IMAGE_SIZE)]
    with raw(quality, threads, defaults.QUALITY_N_CTX) as r:
        quality_decode = r.decode_tps()
        heard = found["voice"]["hear"]
        hear_s = r.batch_s(int(heard["tail_tokens"]))
        after = found["camera"]["after"][str(defaults.CAMERA_IMAGE_SIZE)]
        r.nearest(found["kv_dir"], after["prompt_tokens"] - after["evaluated_prompt_tokens"])
        camera_s = r.batch_s(cam["evaluated_prompt_tokens"])
    speak = found["voice"]["speak"]
    frame_ms = speak["ms"] / (speak["audio_s"] / FRAME_S)
    return {
        "fast_decode_tps": round(fast_decode, 2),
        "quality_decode_tps": round(quality_decode, 2),
        "assist_ms": round(assist_s * 1000, 1),
        "assist_tokens": assist_n,
        "camera_ms": round(camera_s * 1000, 1),
        "hear_ms": round(hear_s * 1000 + 7 / quality_decode * 1000, 1),  # the tail, then an 8-token transcript
        "answer_ms": round(answer_s * 1000 + (SENTENCE_TOKENS - 1) / fast_decode * 1000, 1),
        "speak_ms": round(min(FIRST_PIECE, speak["audio_s"] / FRAME_S) * frame_ms, 1),
        "frame_ms": round(frame_ms, 1),
    }


def summarize(found: dict[str, Any], threads: int) -> dict[str, Any]:
    f, cam, voice = found["floors"], found["camera"], found["voice"]
    after = cam["after"][str(defaults.CAMERA_IMAGE_SIZE)]
    assist_ttft = statistics.median(t["ttft_ms"] for t in found["assist"])
    engine_trip = voice["hear"]["eos_to_transcript_ms"] + voice["answer"]["done_ms"] + voice["speak"]["first_audio_ms"]
    trip_floor = f["hear_ms"] + f["answer_ms"] + f["speak_ms"]
    ha_runs = found["ha_voice"]["runs"]
    return {
        "machine": machine(threads),
        "camera_image_size": defaults.CAMERA_IMAGE_SIZE,
        "camera_question_ms": after["ttft_ms"],
        "camera_question_floor_ms": f["camera_ms"],
        "camera_question_ms_before": cam["before"]["ttft_ms"],
        "camera_speedup": round(cam["before"]["ttft_ms"] / after["ttft_ms"], 2),
        "camera_over_floor": round(after["ttft_ms"] / f["camera_ms"], 2),
        "camera_follow_up_ms": cam["follow_up"]["ttft_ms"],
        "camera_by_size_ms": {str(s): cam["after"][str(s)]["ttft_ms"] for s in SIZES},
        "camera_tokens_by_size": {str(s): cam["after"][str(s)]["evaluated_prompt_tokens"] for s in SIZES},
        "camera_stages": after["stages"],
        "camera_stages_before": cam["before"]["stages"],
        "assist_ttft_ms": assist_ttft,
        "assist_ttft_floor_ms": f["assist_ms"],
        "assist_over_floor": round(assist_ttft / f["assist_ms"], 3),
        "assist_new_tokens": f["assist_tokens"],
        "assist_stages": found["assist"][len(found["assist"]) // 2]["stages"],
        # the three stages back to back through the engine, as the pipeline calls them
        "voice_round_trip_ms": round(engine_trip, 1),
        "voice_round_trip_floor_ms": round(trip_floor, 1),
        # a real HA's pipeline: with random weights its transcript runs to the STT entity's length limit
        "voice_round_trip_ha_stages_ms": {
            "transcript": statistics.median(r["eos_to_transcript_ms"] for r in ha_runs),
            "answer": statistics.median(r["eos_to_answer_ms"] for r in ha_runs),
        },
        "voice_stages_ms": {
            "hear": round(voice["hear"]["eos_to_transcript_ms"], 1),
            "answer_first_sentence": voice["answer"]["done_ms"],
            "speak_first_audio": voice["speak"]["first_audio_ms"],
        },
        "voice_floors_ms": {
            "hear": f["hear_ms"], "answer_first_sentence": f["answer_ms"], "speak_first_audio": f["speak_ms"],
        },
        "home": [{k: v for k, v in p.items() if k != "warm"} for p in found["home"]],
        "floors": f,
        "resident": found["resident"],
    }  # fmt: skip


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (waits, home) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["camera question\n(today's path)", "camera question", "Assist TTFT", "voice round trip"]
    measured = [
        summary["camera_question_ms_before"], summary["camera_question_ms"], summary["assist_ttft_ms"],
        summary["voice_round_trip_ms"],
    ]  # fmt: skip
    floor = [
        0.0,
        summary["camera_question_floor_ms"],
        summary["assist_ttft_floor_ms"],
        summary["voice_round_trip_floor_ms"],
    ]
    x = range(len(names))
    waits.bar([i - 0.2 for i in x], [m / 1000 for m in measured], 0.4, label="measured")
    waits.bar([i + 0.2 for i in x], [v / 1000 for v in floor], 0.4, label="floor", color="#888")
    waits.set_xticks(list(x), names)
    waits.set_yscale("log")
    waits.set_ylabel("seconds (log)")
    waits.set_title(f"What a person waits for ({summary['machine']['threads']} threads)")
    waits.legend()
    points = [p for p in summary["home"] if "cold_ttft_ms" in p]
    counts = [f"{p['entities']}\n({p['standing_tokens']} tok, n_ctx {p['n_ctx']})" for p in points]
    at = range(len(points))
    home.bar([i - 0.2 for i in at], [p["cold_ttft_ms"] / 1000 for p in points], 0.4, label="cold", color="#d62728")
    home.bar([i + 0.2 for i in at], [p["warm_ttft_ms"] / 1000 for p in points], 0.4, label="warm", color="#2ca02c")
    home.set_xticks(list(at), counts)
    home.set_yscale("log")
    home.set_ylabel("time to first token, seconds (log)")
    home.set_title("Assist as the home grows (4B shape; exposed entities)")
    home.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--resume", action="store_true", help="keep what the raw JSON holds; measure the rest")
    args = parser.parse_args()
    raw_json = args.out / f"latency-t{args.threads}-raw.json"
    found: dict[str, Any] = json.loads(raw_json.read_text()) if args.resume and raw_json.exists() else {}

    def keep() -> None:  # nothing measured is lost
        raw_json.write_text(json.dumps(found, indent=1) + "\n")

    asyncio.run(measure(args.threads, found, keep))
    if "floors" not in found:
        fast, quality = seed_models.ensure("qwen3vl-4b", args.threads), seed_models.ensure("omni-7b", args.threads)
        found["floors"] = floors(found, fast.model, quality.model, args.threads)
        keep()
    if "ha_voice" not in found:  # the same round trip through a real HA's Assist pipeline
        found["ha_voice"] = ha_voice.round_trip(args.threads, SENTENCE_TOKENS)
        keep()
    save(args.out, f"latency-t{args.threads}", summarize(found, args.threads), plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
