"""The llama.cpp backend: GGUF models in worker processes (engine/worker/llamacpp) under HA's Python.

Beyond the core protocol it warms standing prompts (KV snapshots on disk), constrains output
(GBNF grammars, JSON schemas), is calibrated (repacking and flash attention measured per machine) and
reads a projector in the background while text is already answered, takes speech while it is
spoken (listen: each 2 s window prefilled at once) and, when its model is a Qwen3-TTS voice, speaks
(`Speaks`: PCM pieces as code2wav makes them).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import protocol
from ..capabilities import GRAMMAR, JSON_SCHEMA
from ..prompts import Message
from ..spec import ModelSpec
from .base import BenchResult, Heard, Speech, Warmed
from .process import WorkerBackend

VOICE_RATE = 24000  # Qwen3-TTS's code2wav


class LlamaCppBackend(WorkerBackend):
    """A llama.cpp worker process under HA's Python."""

    constraints = frozenset({GRAMMAR, JSON_SCHEMA})
    hearing: str | None = None  # measured by the worker once its projector is in (Hears)

    async def warm(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> Warmed:
        return Warmed.from_dict(await self.client.call(protocol.OP_WARM, {"messages": messages, "tools": tools}))

    async def bench(self) -> BenchResult:
        data = await self.client.call(protocol.OP_BENCH, {})
        return BenchResult(float(data["prefill_tps"]), float(data["decode_tps"]))

    async def listen(self, session: str, messages: list[Message], pcm: bytes) -> Heard:
        payload = {"session": session, "messages": messages, "pcm": base64.b64encode(pcm).decode()}
        return Heard.from_dict(await self.client.call(protocol.OP_LISTEN, payload))

    async def forget(self, session: str) -> None:
        await self.client.call(protocol.OP_LISTEN, {"session": session, "end": True})

    async def speak(
        self, text: str, voice: str, language: str | None = None, deadline: float | None = None
    ) -> AsyncIterator[Speech]:
        """The voice's PCM as it is made; the last piece (possibly empty) carries the time it all took."""
        payload = {"text": text, "voice": voice, "language": language or "en"}
        async for event in self.client.stream(protocol.OP_SPEAK, payload, deadline):
            if event.get("event") == protocol.EV_AUDIO:
                yield Speech(base64.b64decode(event["pcm"]), VOICE_RATE, voice)
            else:
                data = event.get("data", {})
                yield Speech(b"", int(data.get("sample_rate", VOICE_RATE)), voice, float(data.get("ms", 0.0)))

    async def media_ready(self) -> str | None:
        data = await self.client.call(protocol.OP_MEDIA_READY)
        self.hearing = data.get("hearing")
        error = data.get("vision_error")
        return str(error) if error else None


def llama_cpp_factory(
    python: str | None = None, memory_limit: int | None = None
) -> Callable[[ModelSpec, Callable[[], None] | None], LlamaCppBackend]:
    """backend.BackendFactory for llama.cpp workers running under `python` (default: this one),
    each confined to `memory_limit` bytes where the kernel offers memory cgroups (cgroup.py)."""

    def make(spec: ModelSpec, on_crash: Callable[[], None] | None) -> LlamaCppBackend:
        return LlamaCppBackend(spec.role, python, on_crash, memory_limit=memory_limit)

    return make
