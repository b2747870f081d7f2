"""RAM budget, LRU eviction, pinning, refusal and idle unload, with real worker processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
import random

import pytest

from custom_components.sarai_omni.engine import MB, ChatRequest, DoesNotFitBudget, Engine
from custom_components.sarai_omni.engine.backends.base import SPARE_BYTES, BackendFactory
from custom_components.sarai_omni.engine.backends.llamacpp import LlamaCppBackend
from custom_components.sarai_omni.engine.procmem import alive
from tests.specs import gguf_spec

from .conftest import HELLO, USER, EngineFactory

ROLES = ("fast", "a", "b", "c")


def loaded(engine: Engine) -> set[str]:
    return {role for role, s in engine.pool.slots.items() if s.loaded}


async def room_for(make_engine: EngineFactory, models: int, backend: BackendFactory | None = None) -> Engine:
    """An engine whose budget holds exactly `models` of the tiny models at once."""
    probe = make_engine(roles=("fast",))
    await probe.prepare()
    each = probe.needed_mb("fast") + 1
    return make_engine(roles=ROLES, budget_mb=models * each + each // 2, backend=backend)


async def test_lru_eviction_order_and_pinned_model_kept(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    engine = await room_for(make_engine, 3, any_backend)
    await engine.start()  # loads the pinned fast model
    await engine.load("a")
    await engine.load("b")
    await engine.complete(ChatRequest(messages=USER, role="a", grammar=HELLO))  # a is now more recent than b
    await engine.load("c")
    assert loaded(engine) == {"fast", "a", "c"}  # b was the least recently used
    await engine.load("b")
    assert loaded(engine) == {"fast", "c", "b"}  # then a
    assert engine.status("fast").crashes == 0


async def test_refusal_states_needed_free_and_budget(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    engine = await room_for(make_engine, 1, any_backend)
    await engine.start()
    with pytest.raises(DoesNotFitBudget) as info:
        await engine.load("a")  # only the pinned model fits, and it is never evicted
    err, budget = info.value, engine.pool.budget // MB
    need = engine.pool.slot("a").estimate // MB
    assert err.needed_mb == pytest.approx(need, abs=1)
    assert err.budget_mb == budget
    assert err.free_mb == pytest.approx(budget - engine.pool.slot("fast").charged() // MB, abs=1)
    assert str(err) == (
        f"model 'tiny-qwen2.gguf' needs {err.needed_mb} MB but only {err.free_mb} MB of the {budget} MB "
        "RAM budget can be freed"
    )
    assert loaded(engine) == {"fast"}


async def test_random_sequence_never_exceeds_budget(
    make_engine: EngineFactory, any_backend: BackendFactory | None
) -> None:
    engine = await room_for(make_engine, 2, any_backend)
    await engine.start()
    budget, peak, refused = engine.pool.budget, 0, 0
    stop = asyncio.Event()

    async def sample() -> None:  # the real RSS of every worker process, every 5 ms
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, engine.pool.watchdog.measured_rss())
            assert engine.pool.used_bytes() <= budget
            await asyncio.sleep(0.005)

    async def step(rng: random.Random) -> None:
        nonlocal refused
        role, action = rng.choice(ROLES), rng.choice(("load", "chat", "chat", "unload"))
        try:
            if action == "load":
                await engine.load(role)
            elif action == "chat":
                await engine.complete(ChatRequest(messages=USER, role=role, grammar=HELLO))
            elif role != "fast":
                await engine.unload(role)
        except DoesNotFitBudget:
            refused += 1  # two busy unpinned models: a third cannot fit, and is refused

    sampler = asyncio.create_task(sample())
    rng = random.Random(4)
    for _ in range(15):
        await asyncio.gather(step(rng), step(rng))  # two at once: loads race evictions
    stop.set()
    await sampler
    assert 0 < peak <= budget
    assert "fast" in loaded(engine)


async def test_idle_unpinned_model_unloads(make_engine: EngineFactory, any_backend: BackendFactory | None) -> None:
    engine = make_engine(roles=("fast", "a"), idle_unload_s=0.3, backend=any_backend)
    unloaded = asyncio.Event()
    engine.add_listener(lambda: unloaded.set() if engine.status("a").state == "unloaded" else None)
    await engine.start()
    await engine.load("a")
    assert loaded(engine) == {"fast", "a"}
    unloaded.clear()
    async with asyncio.timeout(60):  # a guard against a hang, not a timing claim
        await unloaded.wait()
    assert loaded(engine) == {"fast"}  # the pinned model stays, past its idle time too
    assert engine.status("a").state == "unloaded"


def test_offloaded_layers_leave_the_ram_estimate(tiny_qwen2: Path, tiny_mmproj: Path) -> None:
    from custom_components.sarai_omni.engine import ModelFiles, estimate_bytes, read_gguf

    info, proj = read_gguf(tiny_qwen2), read_gguf(tiny_mmproj)
    layers = info.block_count
    assert layers
    files = ModelFiles(gguf=info, mmproj=proj)
    cpu = estimate_bytes(gguf_spec("fast", str(tiny_qwen2), n_ctx=4096), files)
    half = estimate_bytes(gguf_spec("fast", str(tiny_qwen2), n_ctx=4096, n_gpu_layers=layers // 2), files)
    full = estimate_bytes(gguf_spec("fast", str(tiny_qwen2), n_ctx=4096, n_gpu_layers=-1), files)
    assert cpu > half > full
    kv = 4096 * info.kv_bytes_per_token(2.0)
    assert cpu - full >= kv + proj.tensor_bytes  # all KV and the projector moved to the GPU


async def test_a_model_loaded_on_demand_has_a_spare_worker_waiting(make_engine: EngineFactory) -> None:
    """The quality model's worker process is started (and imports llama.cpp) before it is needed, at
    start and after each unload: the on-demand load costs the model only. close() ends the spares."""
    engine = make_engine(("fast", "quality"))
    await engine.start()
    quality = engine.pool.slot("quality")
    backend = quality.backend
    assert isinstance(backend, LlamaCppBackend)

    def pid() -> int | None:
        return backend.pid

    async def spare_up() -> int:
        async with asyncio.timeout(60):  # a guard against a hang, not a measurement
            while (found := pid()) is None:  # noqa: ASYNC110  (a spare's start fires no engine event)
                await asyncio.sleep(0.05)
        return found

    spare = await spare_up()
    assert quality.load.state == "unloaded"
    assert 0 < quality.charged() <= SPARE_BYTES  # a spare holds no model; its own memory counts
    await engine.load("quality")
    assert pid() == spare  # the load went to the waiting process
    await engine.unload("quality")
    assert quality.load.state == "unloaded"
    second = await spare_up()
    assert second != spare
    await engine.close()
    assert pid() is None
    assert not alive(second)
