"""Prompt-lookup speculative decoding against raw decode, and the engine's own overhead per turn.

Speed-up = engine tok/s with prompt lookup / raw llama-cpp-python tok/s without it, same file, same
threads, greedy, on Assist-like replies (a standing prompt of entities, a question about them) and on
free text. On the gemma 270M package the text is real; on the seed shapes the weights are random, so
their drafts are rarely accepted: what that shows is the measured guard (drafting switches itself
off when it does not pay), not a speed-up.
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

from benchmarks.common import engine, median, spec
from benchmarks.decode import engine_decode, raw_decode, raw_llama, user
from custom_components.sarai_omni.engine import ChatRequest
from custom_components.sarai_omni.engine.prompts import Message
from tests.workers import worker_stats

ROOMS = ("Kitchen", "Living room", "Bedroom", "Office", "Garage", "Hallway")


def assist_like() -> list[Message]:
    entities = "\n".join(
        f"- names: {room} {kind}\n  domain: {kind}\n  state: '{state}'\n  areas: {room}"
        for room in ROOMS
        for kind, state in (("light", "on"), ("switch", "off"))
    )
    system = f"You are a voice assistant for Home Assistant. Answer briefly.\nThe devices in this home:\n{entities}"
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "Which lights are on? Name each one with its area."},
    ]


def free_text() -> list[Message]:
    return user("Write a short story about a dragon who learns to cook.")


CASES = {"assist": assist_like, "free": free_text}


async def speedup(model: Path, threads: int, tokens: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model.name}
    llm = raw_llama(model, threads)
    for case, make in CASES.items():
        messages = make()
        raw = [raw_decode(llm, tokens, messages) for _ in range(repeat)]
        rates, stats = {}, {}
        for on in (False, True):
            eng = engine(spec("fast", model, threads, pinned=True, prompt_lookup=on))
            await eng.start()
            rates[on] = [await engine_decode(eng, tokens, messages) for _ in range(repeat)]
            stats[on] = (await worker_stats(eng, "fast"))["prompt_lookup"]
            await eng.close()
        out[case] = {
            "raw_tps": median(raw),
            "engine_tps_without": median(rates[False]),
            "engine_tps_with": median(rates[True]),
            "speedup_over_raw": round(median(rates[True]) / median(raw), 3),
            "drafts": stats[True],
        }
    llm.close()
    return out


async def overhead(model: Path, threads: int, repeat: int) -> dict[str, Any]:
    """Per turn: the router's decision, and what the request costs beyond the worker's own TTFT."""
    eng = engine(spec("fast", model, threads, pinned=True))
    await eng.start()
    started = time.perf_counter()
    for i in range(2000):
        eng.route(f"turn on the kitchen light number {i}")
    route_us = (time.perf_counter() - started) / 2000 * 1e6
    beyond = []
    for i in range(repeat):
        t0 = time.perf_counter()
        result = await eng.complete(ChatRequest(messages=user(f"hi {i}"), max_tokens=1, temperature=0.0))
        beyond.append((time.perf_counter() - t0) * 1000 - result.ttft_ms)
    await eng.close()
    return {"route_us": round(route_us, 1), "request_beyond_worker_ttft_ms": median(beyond)}
