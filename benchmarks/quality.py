"""The quality model (Omni-7B shape + its vision/audio projector) loaded on demand beside the resident
fast model (4B shape), inside the seed's 12 GB: load times with a cold and a warm page cache, the first
image analysis after the load, image cost at 1, 2 and 4 frames, audio cost for 2 s and 5 s clips, and
the workers' resident memory sampled all along (every 50 ms, per phase) against the budget.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
import tempfile
import time
from typing import Any

from benchmarks.common import SEED_RAM_LIMIT_MB, RssSampler, drop_page_cache, engine, spec, worker_pids
from benchmarks.seed_models import Seed
from custom_components.sarai_omni.engine import ChatRequest, Engine
from tests.conftest import write_wav

SNAPSHOT = (672, 378)
SPARE_S = 3.0  # a 16:9 camera snapshot at the integration's SNAPSHOT_WIDTH


def write_frames(folder: Path, count: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 255, (SNAPSHOT[1], SNAPSHOT[0], 3), dtype=np.uint8)
        path = folder / f"frame{i}.jpg"
        Image.fromarray(pixels).save(path, quality=85)
        paths.append(str(path))
    return paths


async def ask(eng: Engine, parts: list[dict[str, Any]], text: str) -> dict[str, Any]:
    started = time.perf_counter()
    request = ChatRequest(
        role="quality",
        messages=[{"role": "user", "content": [*parts, {"type": "text", "text": text}] if parts else text}],
        temperature=0.0,
        max_tokens=4,
        ignore_eos=True,
    )
    result = await eng.complete(request)
    return {
        "ttft_ms": round(result.ttft_ms),
        "wall_ms": round((time.perf_counter() - started) * 1000),
        "prompt_tokens": result.prompt_tokens,
    }


async def load(eng: Engine) -> dict[str, Any]:
    """The 7B loaded on demand by a text request (the router's long analytical turn): until it answers
    (wall minus its own TTFT), then until its projector has loaded too (images can be analysed)."""
    started = time.perf_counter()
    result = await eng.complete(ChatRequest(role="quality", messages=[{"role": "user", "content": "hi"}], max_tokens=1))
    text_ready = (time.perf_counter() - started) * 1000 - result.ttft_ms
    await eng.load("quality")  # returns once the projector is in
    return {
        "wall_ms": round(text_ready),
        "worker_ms": eng.status("quality").load_ms,
        "projector_ready_ms": round((time.perf_counter() - started) * 1000),
    }


async def run(fast: Seed, omni: Seed, threads: int, quick: bool) -> dict[str, Any]:
    eng = engine(
        spec("fast", fast.model, threads, pinned=True),
        spec("quality", omni.model, threads, mmproj=str(omni.mmproj), n_ctx=8192),
        budget_mb=SEED_RAM_LIMIT_MB,
    )
    out: dict[str, Any] = {"budget_mb": SEED_RAM_LIMIT_MB}
    with tempfile.TemporaryDirectory() as tmp, RssSampler(lambda: worker_pids(eng)) as rss:
        frames = write_frames(Path(tmp), 4)
        with rss.during("load fast"):
            await eng.start()
        drop_page_cache(omni.model, omni.mmproj)
        with rss.during("load 7B (cold cache)"):
            out["load_7b_cold"] = await load(eng)
        await eng.unload("quality")
        await asyncio.sleep(SPARE_S)  # an idle-unloaded model's spare worker is up long before it is needed
        with rss.during("load 7B (warm cache)"):
            out["load_7b_warm"] = await load(eng)
        snap = eng.snapshot().models
        out["rss_mb"] = {role: snap[role].rss_mb for role in ("fast", "quality")}
        with rss.during("image"):
            out["first_image"] = await ask(eng, [{"type": "image", "path": frames[0]}], "What do you see?")
            out["images"] = {"1": out["first_image"]} if quick else {}  # --quick: the first image only
            for n in () if quick else (1, 2, 4):
                parts = [{"type": "image", "path": p} for p in frames[:n]]
                out["images"][str(n)] = await ask(eng, parts, "What changed?")
        with rss.during("audio"):
            out["audio"] = {}
            for seconds in () if quick else (2, 5):
                clip = write_wav(Path(tmp) / f"clip{seconds}.wav", seconds)
                out["audio"][str(seconds)] = await ask(eng, [{"type": "audio", "path": str(clip)}], "What was that?")
            out["text_only"] = await ask(eng, [], "What was that?")
        status = eng.snapshot()
        out["both_models_rss_mb"] = sum(status.models[r].rss_mb for r in ("fast", "quality"))
        out["engine_peak_rss_mb"] = status.peak_rss_mb
        await eng.close()
    out["peak_rss_mb"] = rss.peaks_mb()
    out["peak_over_budget"] = max(out["peak_rss_mb"].values()) > SEED_RAM_LIMIT_MB
    return out
