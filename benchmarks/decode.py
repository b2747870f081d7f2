"""Decode and prefill, raw llama-cpp-python beside the engine, on one file, threads and load variant.

Raw runs in this process (`Llama.generate`, the library's own loop); the engine runs the same file in
its worker process and the tokens cross the pipe and the event loop. Runs alternate (raw, engine,
raw, ...) so the machine's drift hits both alike; each figure is the median of the repeats. The
engine's prompt lookup is off here (the same work on both sides); its speed-up is measured apart.
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

from benchmarks.common import MB, bytes_per_token, engine, kv_bytes, median, spec
from custom_components.sarai_omni.engine import ChatRequest, Engine
from custom_components.sarai_omni.engine.backends.process import load_params
from custom_components.sarai_omni.engine.prompts import Message, render_prompt
from custom_components.sarai_omni.engine.worker.llamacpp.runner import _new_llama

SAMPLING = {"temp": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}  # the worker's
QUESTION = "Tell me about the weather in the garden today and what I should plant there."
N_CTX = 4096


def file_size(path: Path) -> int:
    return path.stat().st_size


def raw_llama(model: Path, threads: int, n_ctx: int = N_CTX) -> Any:
    import llama_cpp

    return _new_llama(llama_cpp, load_params(spec("fast", model, threads, n_ctx=n_ctx)))


def user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def prompt_ids(llm: Any, messages: list[Message]) -> list[int]:
    rendered = render_prompt(messages, llm.metadata.get("tokenizer.chat_template"))
    return list(llm.tokenize(rendered.text.encode(), add_bos=True, special=True))


def raw_decode(llm: Any, tokens: int, messages: list[Message] | None = None) -> float:
    """Tokens per second from the first token to the last, as the engine's figure is taken."""
    stamps: list[float] = []
    llm.reset()
    for _ in llm.generate(prompt_ids(llm, messages or user(QUESTION)), reset=False, **SAMPLING):
        stamps.append(time.perf_counter())
        if len(stamps) >= tokens:
            break
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def raw_prefill(llm: Any, text: str) -> float:
    ids = prompt_ids(llm, user(text))
    llm.reset()
    started = time.perf_counter()
    llm.eval(ids)
    return len(ids) / (time.perf_counter() - started)


async def engine_decode(eng: Engine, tokens: int, messages: list[Message] | None = None) -> float:
    """From the worker's first token (request time + its TTFT) to the end of the stream on the event
    loop: every token's pipe and streaming cost is inside the interval."""
    stream = eng.chat(
        ChatRequest(messages=messages or user(QUESTION), temperature=0.0, max_tokens=tokens, ignore_eos=True)
    )
    started = time.perf_counter()
    async for _ in stream:
        pass
    ended = time.perf_counter()
    assert stream.result is not None
    return (stream.result.completion_tokens - 1) / (ended - started - stream.result.ttft_ms / 1000)


async def engine_prefill(eng: Engine, text: str) -> float:
    result = await eng.complete(ChatRequest(messages=user(text), temperature=0.0, max_tokens=1, ignore_eos=True))
    return result.evaluated_prompt_tokens / (result.ttft_ms / 1000)


def prefill_text(n_words: int, session: int) -> str:
    """A different prompt each time (no cached prefix), of about the same length."""
    return f"Session {session}. " + " ".join(f"device{(session * 7 + i) % 97} is on" for i in range(n_words))


async def side_by_side(
    model: Path, threads: int, tokens: int, repeat: int, *, bandwidth_gbs: float, prefill_words: int = 60
) -> dict[str, Any]:
    llm = raw_llama(model, threads)
    eng = engine(spec("fast", model, threads, n_ctx=N_CTX, pinned=True, prompt_lookup=False))
    await eng.start()
    raw_tps, eng_tps, raw_pp, eng_pp = [], [], [], []
    for i in range(repeat):  # alternate: drift hits both sides alike
        raw_tps.append(raw_decode(llm, tokens))
        eng_tps.append(await engine_decode(eng, tokens))
        raw_pp.append(raw_prefill(llm, prefill_text(prefill_words, 2 * i)))
        eng_pp.append(await engine_prefill(eng, prefill_text(prefill_words, 2 * i + 1)))
    status = eng.snapshot().models["fast"]
    await eng.close()
    llm.close()
    file_mb, kv_mb = file_size(model) / MB, kv_bytes(model, N_CTX) / MB
    roofline = bandwidth_gbs * 1e9 / bytes_per_token(model)
    return {
        "model": model.name,
        "threads": threads,
        "decode_tokens": tokens,
        "repeat": repeat,
        "raw_decode_tps": raw_tps,
        "engine_decode_tps": eng_tps,
        "raw_prefill_tps": raw_pp,
        "engine_prefill_tps": eng_pp,
        "decode_ratio": round(median(eng_tps) / median(raw_tps), 3),
        "prefill_ratio": round(median(eng_pp) / median(raw_pp), 3),
        "roofline_tps": round(roofline, 2),
        "raw_over_roofline": round(median(raw_tps) / roofline, 3),
        "file_mb": round(file_mb),
        "kv_mb": round(kv_mb),
        "rss_mb": status.rss_mb,
        "rss_over_file_kv": round(status.rss_mb / (file_mb + kv_mb), 3),
        "load_ms": status.load_ms,
    }


async def context_size(model: Path, threads: int, tokens: int, repeat: int) -> dict[str, Any]:
    """The seed's auto_reduce_context: does a small context make a short turn faster here?"""
    out: dict[str, Any] = {}
    for n_ctx in (512, N_CTX):
        llm = raw_llama(model, threads, n_ctx)
        started = time.perf_counter()
        out[str(n_ctx)] = {"decode_tps": median([raw_decode(llm, tokens) for _ in range(repeat)])}
        out[str(n_ctx)]["short_prefill_tps"] = round(raw_prefill(llm, QUESTION), 1)
        out[str(n_ctx)]["seconds"] = round(time.perf_counter() - started, 1)
        llm.close()
    small, full = out["512"]["decode_tps"], out[str(N_CTX)]["decode_tps"]
    out["small_over_full_decode"] = round(small / full, 3)
    return out
