"""What the local backends share: a model in a worker process of its own, driven over the JSON-lines
protocol (client.py): spawn on demand, crashes (counted, named by their signal), RSS, a spare process
(`Prespawns`), the watchdog's hard stop. `LlamaCppBackend` (llamacpp.py) runs engine/worker/llamacpp
under HA's Python, `TransformersBackend` (transformers/) runs engine/worker/transformers under the
torch venv's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import protocol
from ..prompts import Message
from ..spec import FolderModel, GGUFModel, LoadVariant, ModelSpec, RemoteModel
from .base import SPARE_BYTES, ChatRequest, Generated, LoadResult
from .client import WorkerClient


class WorkerBackend:
    """backend.Backend (and Prespawns, Inspects) on one worker process, spawned on demand, running `module`."""

    available = True  # a local process: it is started on demand
    failures = 0  # a worker that cannot start fails its request (crashes are counted apart)
    module = "worker.llamacpp"  # the engine.worker package the process runs
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
        """Start the worker process (it imports its native library while idle): a later load costs the model only."""
        await self.client.start()

    async def load(self, spec: ModelSpec) -> LoadResult:
        data = await self.client.call(protocol.OP_LOAD, load_params(spec))
        return LoadResult(
            load_ms=float(data.get("load_ms", 0.0)),
            n_ctx=int(data.get("n_ctx", 0)),
            chat_template=bool(data.get("chat_template")),
            vision_pending=bool(data.get("vision_pending")),
            voices=tuple(data.get("voices") or ()),
        )

    async def generate(self, request: ChatRequest, deadline: float | None = None) -> AsyncIterator[str | Generated]:
        async for event in self.client.stream(protocol.OP_GENERATE, request.payload(), deadline):
            if event.get("event") == protocol.EV_TOKEN:
                yield str(event["text"])
            else:
                yield Generated.from_dict(event.get("data", {}))

    async def logits(self, messages: list[Message], top: int) -> dict[str, Any]:
        return await self.client.call(protocol.OP_LOGITS, {"messages": messages, "top": top})

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


def load_params(spec: ModelSpec) -> dict[str, Any]:
    """The `load` request a worker gets for `spec` (protocol.py)."""
    source, runtime, way = spec.source, spec.runtime, spec.variant or LoadVariant()
    assert not isinstance(source, RemoteModel)
    params: dict[str, Any] = {
        "model_path": source.path,
        "mmproj_path": source.mmproj if isinstance(source, GGUFModel) else None,
        "n_ctx": runtime.n_ctx,
        "n_threads": runtime.n_threads,
        "n_batch": runtime.n_batch,
        "kv_type": runtime.kv_type,
        "n_gpu_layers": runtime.n_gpu_layers,
        "repack": way.repack,
        "flash_attn": way.flash_attn,
        "kv_cache_dir": runtime.kv_cache_dir,
        "prompt_lookup": runtime.prompt_lookup,
        "voices_dir": runtime.voices_dir,
    }
    if isinstance(source, FolderModel):
        params |= {"dtype": source.dtype, "device": source.device, "quantization": source.quantization}
    return params
