"""The engine on real worker processes running real llama.cpp on tiny GGUFs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import signal
import subprocess
import sys

import pytest

from custom_components.sarai_omni.engine import Busy, ChatRequest, RequestTimeout, WorkerCrashed
from custom_components.sarai_omni.engine.backends.base import BackendFactory, LoadResult
from custom_components.sarai_omni.engine.spec import ModelSpec
from tests.echo_backend import EchoBackend
from tests.workers import kill, worker, worker_stats

from .conftest import ENDLESS, HELLO, USER, EngineFactory, queue_reaches

ROOT = Path(__file__).resolve().parents[2]


def test_engine_imports_without_home_assistant() -> None:
    """Worker processes import the engine; it must not drag Home Assistant in."""
    code = "import custom_components.sarai_omni.engine, sys; assert 'homeassistant' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


async def test_streams_deltas_from_a_worker_process(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    pid = worker(engine).pid
    assert pid is not None
    assert pid != os.getpid()
    stream = engine.chat(ChatRequest(messages=USER, grammar=HELLO, temperature=0))
    deltas = [d async for d in stream]
    assert len(deltas) > 1
    assert "".join(deltas) == "Hello there, friend."
    assert stream.result is not None
    assert stream.result.finish_reason == "stop"
    assert stream.result.tokens_per_second > 0


async def test_second_turn_evaluates_only_new_tokens(make_engine: EngineFactory) -> None:
    engine = make_engine()
    turn1 = [{"role": "system", "content": "You are a helpful home assistant."}, *USER]
    first = await engine.complete(ChatRequest(messages=turn1, grammar=HELLO, temperature=0))
    turn2 = [*turn1, {"role": "assistant", "content": first.text}, {"role": "user", "content": "and now?"}]
    second = await engine.complete(ChatRequest(messages=turn2, grammar=HELLO, temperature=0))
    assert first.cached_tokens == 0
    assert second.cached_tokens >= first.prompt_tokens  # all of turn 1 was reused
    assert second.evaluated_prompt_tokens == second.prompt_tokens - second.cached_tokens
    assert second.evaluated_prompt_tokens < second.prompt_tokens - first.prompt_tokens + 8


async def test_restored_kv_state_matches_fresh_evaluation(make_engine: EngineFactory, tmp_path: Path) -> None:
    system = [{"role": "system", "content": "You control the lights, the blinds and the heating. " * 8}]
    question = [*system, {"role": "user", "content": "turn on the kitchen light"}]
    kv_dir = str(tmp_path / "kv")

    first = make_engine(kv_cache_dir=kv_dir)
    assert (await first.warm("fast", system)).source == "evaluated"
    await first.close()
    assert len(list((tmp_path / "kv").glob("*.kv"))) == 1

    restarted = make_engine(kv_cache_dir=kv_dir)
    warm = await restarted.warm("fast", system)
    assert warm.source == "disk"
    assert warm.evaluated_prompt_tokens == 0
    restored = await restarted.logits("fast", question)

    fresh = await make_engine().logits("fast", question)
    assert restored["evaluated_prompt_tokens"] < fresh["evaluated_prompt_tokens"] // 4
    assert restored["ids"] == fresh["ids"]
    assert restored["logits"] == pytest.approx(fresh["logits"], abs=1e-3)


async def test_sigkill_mid_generation_fails_fast_and_recovers(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    engine = make_engine(backend=any_backend)
    await engine.start()
    killed = False

    async def generate_and_kill() -> None:
        nonlocal killed
        request = ChatRequest(messages=USER, grammar=ENDLESS, max_tokens=100_000, timeout_s=3600)
        async for _ in engine.chat(request):
            if not killed:  # mid-generation: the first token has arrived
                kill(engine)
                killed = True

    # The crash itself ends the request (its own timeout is an hour): the guard only turns a hang
    # into a failure instead of a stuck suite.
    with pytest.raises(WorkerCrashed, match=r"died \(SIGKILL: killed \(out of memory\?\)\)"):
        async with asyncio.timeout(120):
            await generate_and_kill()
    assert engine.status("fast").crashes == 1
    assert engine.status("fast").state == "unloaded"

    again = await engine.complete(ChatRequest(messages=USER, grammar=HELLO, temperature=0))
    assert again.text == "Hello there, friend."
    assert again.load_ms > 0  # the next request restarted the worker and reloaded the model


async def test_requests_to_one_model_are_served_fifo(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    engine = make_engine(backend=any_backend)
    await engine.start()
    finished: list[str] = []

    async def ask(word: str) -> None:
        result = await engine.complete(ChatRequest(messages=USER, grammar=f'root ::= "{word}"', temperature=0))
        finished.append(result.text)

    tasks = []
    for word in ("one", "two", "three", "four"):
        tasks.append(asyncio.create_task(ask(word)))
        await asyncio.sleep(0)  # queue them in this order
    await asyncio.gather(*tasks)
    assert finished == ["one", "two", "three", "four"]


async def test_cancel_stops_generation_and_drops_queued_work(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    # 32k context: uncancelled, the endless generation would run ~10 s before the next request.
    engine = make_engine(n_ctx=32768, backend=any_backend)
    await engine.start()
    started = asyncio.Event()
    queued_output: list[str] = []

    async def endless() -> None:
        async for _ in engine.chat(ChatRequest(messages=USER, grammar=ENDLESS, max_tokens=100_000)):
            started.set()

    async def queued() -> None:
        async for delta in engine.chat(ChatRequest(messages=USER, grammar=HELLO)):
            queued_output.append(delta)

    running = asyncio.create_task(endless())
    await started.wait()
    waiting = asyncio.create_task(queued())
    await queue_reaches(engine, 1)
    waiting.cancel()
    running.cancel()
    for task in (running, waiting):
        with pytest.raises(asyncio.CancelledError):
            await task
    result = await engine.complete(ChatRequest(messages=USER, grammar=HELLO, temperature=0))
    assert result.text == "Hello there, friend."
    assert queued_output == []  # the cancelled queued request never ran
    assert engine.status("fast").crashes == 0
    # The worker stopped the cancelled generation at once: it ended as cancelled, far from the
    # ~32k tokens it would have run to, and the queued request in between never started.
    stats = await worker_stats(engine, "fast")
    *_, endless_run, hello_run = stats["finished"]
    assert stats.get("pending_cancels", 0) == 0  # the worker forgot both cancels once they were served
    assert endless_run["finish_reason"] == "cancelled"
    assert endless_run["completion_tokens"] < 4096
    assert hello_run["finish_reason"] == "stop"


async def test_request_timeout(make_engine: EngineFactory, any_backend: BackendFactory | None) -> None:
    engine = make_engine(backend=any_backend)
    await engine.start()
    with pytest.raises(RequestTimeout):
        await engine.complete(ChatRequest(messages=USER, grammar=ENDLESS, max_tokens=100_000, timeout_s=0.3))
    result = await engine.complete(ChatRequest(messages=USER, grammar=HELLO, temperature=0))
    assert result.text == "Hello there, friend."


async def test_worker_side_cancel_ends_with_a_result(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    client = worker(engine)
    stream = client.stream("generate", {"messages": USER, "grammar": ENDLESS, "max_tokens": 100_000})
    first = await anext(aiter(stream))
    assert first["event"] == "token"
    client._send_nowait({"id": 0, "op": "cancel", "target": client._next_id - 1})
    events = [e async for e in stream]
    assert events[-1]["data"]["finish_reason"] == "cancelled"


async def test_tool_call_schema_makes_random_weights_call_a_real_tool(make_engine: EngineFactory) -> None:
    """Constrained decoding: even a random-weight model emits a parseable call of a known tool."""
    from custom_components.sarai_omni.engine.toolcalls import ToolCall, ToolCallParser, tool_call_schema

    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "parameters": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "maxLength": 12}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
            },
        }
        for name in ("HassTurnOn", "HassTurnOff")
    ]
    engine = make_engine()
    for seed_text in ("on", "off", "lights"):
        request = ChatRequest(
            messages=[{"role": "user", "content": seed_text}],
            json_schema=tool_call_schema(tools),
            schema_as_tool_call=True,
            max_tokens=200,
            temperature=1.0,
        )
        result = await engine.complete(request)
        parser = ToolCallParser()
        events = parser.feed(result.text) + parser.flush()
        calls = [e for e in events if isinstance(e, ToolCall)]
        assert len(calls) == 1, result.text
        assert calls[0].name in {"HassTurnOn", "HassTurnOff"}
        assert set(calls[0].arguments) == {"name"}


async def test_closed_worker_exits_cleanly(make_engine: EngineFactory) -> None:
    """After shutdown the worker ends with 0, not SIGABRT on a reader thread holding stdin."""
    engine = make_engine()
    await engine.start()
    client = worker(engine)
    proc = client._proc
    assert proc is not None
    await client.close()
    assert proc.returncode == 0
    assert client.crashes == 0


async def test_sigill_tells_an_unusable_backend_from_a_crash(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    client = worker(engine)
    assert engine.pool.backend_problem() is None
    assert client.pid is not None
    crashed = asyncio.Event()
    engine.add_listener(lambda: crashed.set() if client.crashes else None)
    os.kill(client.pid, signal.SIGILL)  # an instruction this CPU lacks
    async with asyncio.timeout(5):
        await crashed.wait()
    assert client.last_exit == -signal.SIGILL
    assert "SIGILL: illegal instruction" in (engine.pool.backend_problem() or "")
    await engine.start()  # it runs again (the CPU here is fine): no problem left
    assert engine.pool.backend_problem() is None


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-signal.SIGILL, "SIGILL: illegal instruction (the CPU refused an instruction of the native library)"),
        (-signal.SIGSEGV, "SIGSEGV: segmentation fault (invalid memory access in native code)"),
        (-signal.SIGKILL, "SIGKILL: killed (out of memory?)"),
        (-signal.SIGUSR1, "SIGUSR1: killed by a signal"),
        (1, "exit code 1"),
        (None, "exited"),
    ],
)
def test_exits_are_described_by_signal_name_and_meaning(code: int | None, text: str) -> None:
    from custom_components.sarai_omni.engine.errors import describe_exit

    assert describe_exit(code) == text
    assert WorkerCrashed("x", code).native_fault == (code in (-signal.SIGILL, -signal.SIGSEGV))


async def test_queue_is_bounded_and_refuses_with_busy(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    engine = make_engine(backend=any_backend, max_queue=2)
    await engine.start()
    started = asyncio.Event()

    async def endless() -> None:
        async for _ in engine.chat(ChatRequest(messages=USER, grammar=ENDLESS, max_tokens=100_000)):
            started.set()

    running = asyncio.create_task(endless())
    await started.wait()
    waiting = [asyncio.create_task(engine.complete(ChatRequest(messages=USER, grammar=HELLO))) for _ in range(2)]
    await queue_reaches(engine, 2)
    with pytest.raises(Busy, match="2 requests already wait for the fast model"):
        await engine.complete(ChatRequest(messages=USER, grammar=HELLO))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert [r.text for r in await asyncio.gather(*waiting)] == ["Hello there, friend."] * 2  # the queue still served


async def test_engine_cancel_ends_the_running_generation_keeping_its_text(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    engine = make_engine(backend=any_backend)
    await engine.start()
    stream = engine.chat(ChatRequest(messages=USER, grammar=ENDLESS, max_tokens=100_000))
    parts = []
    async for delta in stream:
        parts.append(delta)
        if len(parts) == 1:
            await engine.cancel("fast")
    assert stream.result is not None
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.text == "".join(parts) != ""


class SlowLoadingEcho(EchoBackend):
    """An echo backend whose load waits until the test lets it finish (a model still loading)."""

    release = asyncio.Event()

    async def load(self, spec: ModelSpec) -> LoadResult:
        await self.release.wait()
        return await super().load(spec)


async def test_a_deadline_hit_while_loading_leaves_no_slot_loading(make_engine: EngineFactory) -> None:
    SlowLoadingEcho.release = asyncio.Event()
    engine = make_engine(backend=SlowLoadingEcho)
    await engine.prepare()
    with pytest.raises(RequestTimeout, match="timed out loading the fast model"):
        await engine.complete(ChatRequest(messages=USER, grammar=HELLO, timeout_s=0.2))
    status = engine.snapshot().models["fast"]
    assert status.state == "unloaded"  # not stuck in `loading`, charging the budget
    assert engine.pool.used_bytes() == 0
    SlowLoadingEcho.release.set()
    result = await engine.complete(ChatRequest(messages=USER, grammar=HELLO))
    assert result.text == "Hello there, friend."
