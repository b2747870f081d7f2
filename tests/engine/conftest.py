"""Engine fixtures: real worker processes on tiny GGUFs, no Home Assistant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import pytest

from custom_components.sarai_omni.engine import Engine, EngineConfig
from custom_components.sarai_omni.engine.backends.base import BackendFactory
from tests.echo_backend import echo_factory
from tests.specs import gguf_spec

EngineFactory = Callable[..., Engine]
HELLO = 'root ::= "Hello there, friend."'
ENDLESS = "root ::= [a-z] root"  # never lets the model stop: runs until max_tokens or cancel
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def make_engine(tiny_qwen2: Path) -> AsyncGenerator[EngineFactory]:
    """Build engines whose roles all run the tiny model; every engine is closed afterwards."""
    engines: list[Engine] = []

    def factory(
        roles: tuple[str, ...] = ("fast",),
        *,
        budget_mb: int = 4096,
        pinned: tuple[str, ...] = ("fast",),
        n_ctx: int = 4096,
        kv_cache_dir: str | None = None,
        idle_unload_s: float = 600.0,
        backend: BackendFactory | None = None,
        max_queue: int = 8,
        prompt_lookup: bool = True,
    ) -> Engine:
        specs = tuple(
            gguf_spec(
                role,
                str(tiny_qwen2),
                n_ctx=n_ctx,
                n_threads=2,
                pinned=role in pinned,
                kv_cache_dir=kv_cache_dir,
                repack=False,
                prompt_lookup=prompt_lookup,
            )  # calibration has its own tests
            for role in roles
        )
        config = EngineConfig(
            models=specs,
            ram_budget_mb=budget_mb,
            idle_unload_s=idle_unload_s,
            backend_factory=backend,
            max_queue=max_queue,
        )
        engine = Engine(config)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.close()


@pytest.fixture(params=["llama_cpp", "echo"])
def any_backend(request: pytest.FixtureRequest) -> BackendFactory | None:
    """The contract tests run on the real llama.cpp backend and on a second, in-process one: the
    pool, router and services must not care which (None: the engine's default, llama.cpp)."""
    return None if request.param == "llama_cpp" else echo_factory


async def queue_reaches(engine: Engine, n: int, role: str = "fast") -> None:
    """Wait until `n` requests wait for `role` (the pool reports every change of its queue)."""
    reached = asyncio.Event()

    def check() -> None:
        if engine.status(role).queue >= n:
            reached.set()

    remove = engine.add_listener(check)
    check()
    try:
        await reached.wait()
    finally:
        remove()
