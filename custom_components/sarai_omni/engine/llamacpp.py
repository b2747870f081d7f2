"""Worker-process backends: a worker driven over the JSON-lines protocol (client.py).

`WorkerBackend` is everything the two local backends share; `LlamaCppBackend` runs worker.py under
HA's Python, `TransformersBackend` (transformers_backend.py) runs hf_worker.py under the torch venv's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from . import protocol
from .backend import SPARE_BYTES, BenchResult, ChatRequest, Generated, LoadResult, ModelSpec, Speech
from .client import WorkerClient
from .errors import InvalidInput
from .prompts import Message


class WorkerBackend:
    """Implements backend.Backend on one worker process (spawned on demand) running `module`."""

    calibrates = False
    available = True  # a local process: it is started on demand
    failures = 0  # a worker that cannot start fails its request (crashes are counted apart)
    module = "worker"
    spare_bytes = SPARE_BYTES  # what an idle worker holds (the pool reserves it for a spare)

    def __init__(
        self,
        name: str,
        python: str | None = None,
        on_crash: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        memory_limit: int | None = None,
    ) -> None:
        self.name = name
        self.client = WorkerClient(
            name, python, env=env, on_crash=on_crash, memory_limit=memory_limit, module=self.module
        )

    @property
    def crashes(self) -> int:
        return self.client.crashes

    @property
    def last_exit(self) -> int | None:
        return self.client.last_exit

    @property
    def running(self) -> bool:
        return self.client.running

    @property
    def pid(self) -> int | None:
        return self.client.pid

    def resident_bytes(self) -> int:
        return self.client.rss_bytes()

    def crashes_within(self, seconds: float) -> int:
        return self.client.crashes_within(seconds)

    async def prespawn(self) -> None:
        """Start the worker process (it imports llama.cpp while idle): a later load costs the model only."""
        await self.client.start()

    async def load(self, spec: ModelSpec) -> LoadResult:
        data = await self.client.call(protocol.OP_LOAD, spec.load_params())
        return LoadResult(
            load_ms=float(data.get("load_ms", 0.0)),
            n_ctx=int(data.get("n_ctx", 0)),
            chat_template=bool(data.get("chat_template")),
            vision_pending=bool(data.get("vision_pending")),
            voices=tuple(data.get("voices") or ()),
        )

    async def media_ready(self) -> str | None:
        data = await self.client.call(protocol.OP_MEDIA_READY)
        return data.get("vision_error")

    async def generate(self, request: ChatRequest, deadline: float | None = None) -> AsyncIterator[str | Generated]:
        async for event in self.client.stream(protocol.OP_GENERATE, request.payload(), deadline):
            if event.get("event") == protocol.EV_TOKEN:
                yield str(event["text"])
            else:
                yield Generated.from_dict(event.get("data", {}))

    async def speak(self, text: str, voice: str) -> Speech:
        raise InvalidInput(f"{self.name}: this model does not speak (no talker)")

    async def warm(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return await self.client.call(protocol.OP_WARM, {"messages": messages, "tools": tools})

    async def logits(self, messages: list[Message], top: int) -> dict[str, Any]:
        return await self.client.call(protocol.OP_LOGITS, {"messages": messages, "top": top})

    async def bench(self) -> BenchResult:
        data = await self.client.call(protocol.OP_BENCH, {})
        return BenchResult(float(data["prefill_tps"]), float(data["decode_tps"]))

    async def stats(self) -> dict[str, Any]:
        return await self.client.call(protocol.OP_STATS)

    async def cancel(self) -> None:
        self.client.cancel_all()

    async def unload(self) -> None:
        await self.client.call(protocol.OP_UNLOAD)

    async def close(self) -> None:
        await self.client.close()

    async def stop_now(self) -> None:
        await self.client.close(grace_s=0)


class LlamaCppBackend(WorkerBackend):
    """A llama.cpp worker process (worker.py) under HA's Python."""

    calibrates = True  # weight repacking is measured per machine (calibrate.py)


def llama_cpp_factory(
    python: str | None = None, memory_limit: int | None = None
) -> Callable[[ModelSpec, Callable[[], None] | None], LlamaCppBackend]:
    """backend.BackendFactory for llama.cpp workers running under `python` (default: this one),
    each confined to `memory_limit` bytes where the kernel offers memory cgroups (cgroup.py)."""

    def make(spec: ModelSpec, on_crash: Callable[[], None] | None) -> LlamaCppBackend:
        return LlamaCppBackend(spec.role, python, on_crash, memory_limit=memory_limit)

    return make
