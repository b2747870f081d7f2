"""The Engine facade: routing, the model pool and streaming chat, with no Home Assistant imports.

The HA layer talks to the engine only through `Engine`: it never reaches into the pool, its slots
or a backend. Who calls whom: Engine → ModelPool (what is loaded, budget, queue) → Backend
(backend.py: llama.cpp worker by default) for every model operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
import logging
from typing import TYPE_CHECKING, Any

from . import defaults
from .backend import Backend, BackendFactory, ChatRequest, Generated, ModelSpec, Speech
from .errors import InvalidInput
from .gguf import GGUFInfo
from .llamacpp import llama_cpp_factory
from .pool import MB, ModelPool
from .prompts import Message, ThinkFilter, clean, count_parts, sentences
from .router import FAST, QUALITY, Availability, RouteDecision, RouterConfig, route
from .transformers_backend import transformers_factory

if TYPE_CHECKING:
    import aiohttp

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs; built by the HA layer from the config entry."""

    models: tuple[ModelSpec, ...]
    ram_budget_mb: int
    idle_unload_s: float = defaults.IDLE_UNLOAD_S
    request_timeout_s: float = defaults.REQUEST_TIMEOUT_S
    max_queue: int = defaults.MAX_QUEUE
    router: RouterConfig = field(default_factory=RouterConfig)
    python: str | None = None  # the llama.cpp worker's interpreter (default: this one)
    state_dir: str | None = None  # where load calibrations are remembered (None: in memory only)
    backend_factory: BackendFactory | None = None  # who runs each role (default: default_factory)
    http_session: aiohttp.ClientSession | None = None  # remote roles' connections (HA's shared session)


def default_factory(
    python: str | None = None, session: aiohttp.ClientSession | None = None, memory_limit: int | None = None
) -> BackendFactory:
    """Remote specs on an OpenAI-compatible server; model folders in transformers workers (the torch
    venv's Python); GGUF files in llama.cpp workers. Local workers each get a hard `memory_limit`
    (bytes) where the kernel offers one."""
    local, torch = llama_cpp_factory(python, memory_limit), transformers_factory(memory_limit)

    def make(spec: ModelSpec, on_crash: Callable[[], None] | None) -> Backend:
        if spec.remote is not None:
            from .remote import RemoteBackend  # noqa: PLC0415  (aiohttp stays out of worker processes)

            return RemoteBackend(spec, session)
        if spec.transformers is not None:
            return torch(spec, on_crash)
        return local(spec, on_crash)

    return make


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The finished answer and what it cost."""

    text: str
    role: str
    model: str
    load_ms: float
    ttft_ms: float
    tokens_per_second: float
    prompt_tokens: int
    cached_tokens: int
    evaluated_prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    dropped_messages: int = 0  # oldest turns left out because the history outgrew n_ctx
    audio_seconds: float = 0.0  # of the clips the prompt carried

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChatStream:
    """Async iterator over text deltas; `result` is set once the stream is exhausted."""

    def __init__(self, engine: Engine, request: ChatRequest) -> None:
        self._engine, self._request = engine, request
        self.result: ChatResult | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def _run(self) -> AsyncIterator[str]:
        req, pool = self._request, self._engine.pool
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (req.timeout_s or self._engine.config.request_timeout_s)
        parts: list[str] = []
        done = Generated()
        thoughts = ThinkFilter()  # reasoning is not the answer: never spoken, never in a result
        async with pool.use(req.role, deadline) as (slot, load_ms):
            async for item in slot.backend.generate(req, deadline):
                if isinstance(item, str):
                    if text := thoughts.feed(item):
                        parts.append(text)
                        yield text
                else:
                    done = item
            if tail := thoughts.flush():
                parts.append(tail)
                yield tail
            self.result = ChatResult(
                text="".join(parts),
                role=req.role,
                model=slot.name,
                load_ms=load_ms,
                ttft_ms=done.ttft_ms,
                tokens_per_second=done.tokens_per_second,
                prompt_tokens=done.prompt_tokens,
                cached_tokens=done.cached_tokens,
                evaluated_prompt_tokens=done.evaluated_prompt_tokens,
                completion_tokens=done.completion_tokens,
                finish_reason=done.finish_reason,
                dropped_messages=done.dropped_messages,
                audio_seconds=round(done.audio_seconds, 2),
            )
            slot.last.update(  # the last request's figures, beside what the pool keeps of the load
                ttft_ms=round(done.ttft_ms, 1),
                tokens_per_second=round(done.tokens_per_second, 2),
                prompt_tokens=done.prompt_tokens,
                evaluated_prompt_tokens=done.evaluated_prompt_tokens,
                cached_tokens=done.cached_tokens,
                route_reason=req.route_reason,
                images=count_parts(req.messages, "image"),
                audio_seconds=self.result.audio_seconds,
                cameras=list(req.cameras),
            )


class Engine:
    """Routes requests to the fast or quality model and runs them in worker processes."""

    def __init__(self, config: EngineConfig, on_change: Callable[[], None] | None = None) -> None:
        self.config = config
        self._listeners: list[Callable[[], None]] = [on_change] if on_change else []
        self._closed = False
        self.pool = ModelPool(
            list(config.models),
            config.ram_budget_mb * MB,
            backend_factory=config.backend_factory
            or default_factory(config.python, config.http_session, config.ram_budget_mb * MB),
            idle_unload_s=config.idle_unload_s,
            max_queue=config.max_queue,
            state_dir=config.state_dir,
            on_change=self._changed,
        )

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` whenever a model's state or stats change; returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    async def prepare(self) -> None:
        """Read every model's header (file I/O in a thread) and estimate its memory; once."""
        if not self.pool.prepared:
            await self.pool.prepare()

    async def start(self, warm_messages: list[Message] | None = None) -> None:
        """Load pinned models (after `prepare`) and evaluate the standing prompt on them."""
        await self.prepare()
        for slot in self.pool.slots.values():
            if slot.spec.pinned:
                await self.pool.ensure_loaded(slot)
                if warm_messages:
                    await self.warm(slot.spec.role, warm_messages)
        self.pool.prespawn()  # the models loaded on demand get a worker process that waits for them

    async def warm(
        self, role: str, messages: list[Message], tools: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Put `messages` (the standing prompt) in the model's KV cache, from disk when saved before.

        Later turns that start with the same messages evaluate only their new tokens.
        """
        async with self.pool.use(role) as (slot, _):
            result = await slot.backend.warm(clean(messages), tools)
        slot.standing = {
            "source": result.get("source", "server"),  # context, disk, evaluated; a server keeps its own
            "tokens": int(result.get("prompt_tokens", 0)),
            "ms": round(float(result.get("ms", 0.0))),
        }
        self._changed()
        return result

    async def logits(self, role: str, messages: list[Message], top: int = 20) -> dict[str, Any]:
        """Next-token logits after `messages` (top ids and values), reusing the cached prefix."""
        async with self.pool.use(role) as (slot, _):
            return await slot.backend.logits(messages, top)

    def availability(self) -> Availability:
        quality = self.pool.slots.get(QUALITY)
        if quality is None:
            why = "not configured"
        elif not quality.backend.available:
            why = f"its server ({quality.status()['server']}) did not answer"
        else:
            why = "does not fit the RAM budget"
        return Availability(
            quality=quality is not None and self.pool.fits(QUALITY),
            quality_why_not=why,
            fast_vision=self.sees(FAST),
            quality_audio=bool(quality and quality.hears),
            fast_audio=self.hears(FAST),
        )

    def route(self, text: str, modalities: frozenset[str] = frozenset(), requested: str | None = None) -> RouteDecision:
        """The router's decision for a request, given what the pool can serve now."""
        return route(text, modalities, requested, self.availability(), self.config.router)

    def chat(self, request: ChatRequest) -> ChatStream:
        """Start a streaming generation; iterate the result for text deltas."""
        request.messages = clean(request.messages)  # a lone surrogate in a prompt is an answer, not a crash
        return ChatStream(self, request)

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Run a generation to the end and return its result."""
        stream = self.chat(request)
        async for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    async def load(self, role: str) -> dict[str, Any]:
        return await self.pool.load(role)

    async def unload(self, role: str) -> dict[str, Any]:
        await self.pool.unload(role)
        return self.pool.slot(role).status()

    async def cancel(self, role: str) -> None:
        """Stop the generation `role` is running now (it ends as `cancelled`, its text kept)."""
        await self.pool.slot(role).backend.cancel()

    def snapshot(self) -> dict[str, Any]:
        return self.pool.snapshot()

    # -- what the HA layer asks (it never reaches into the pool) -----------------------------------
    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.pool.slots)

    @property
    def budget_mb(self) -> int:
        return self.pool.budget // MB

    def status(self, role: str) -> dict[str, Any]:
        """One model's state and last figures (raises ModelNotFound for a role not configured)."""
        return self.pool.slot(role).status()

    def model_info(self, role: str) -> GGUFInfo | None:
        """The model file's header, once `prepare` has read it."""
        return self.pool.slot(role).info

    def hears(self, role: str) -> bool:
        """Whether `role` takes audio (a projector with an audio encoder, or a remote model that hears)."""
        slot = self.pool.slots.get(role)
        return bool(slot and slot.hears)

    def sees(self, role: str) -> bool:
        """Whether `role` takes images (a projector with a vision encoder, or a remote model that sees)."""
        slot = self.pool.slots.get(role)
        return bool(slot and slot.sees)

    def speaks(self, role: str) -> bool:
        """Whether `role` has a voice (a Qwen2.5-Omni talker on transformers)."""
        slot = self.pool.slots.get(role)
        return bool(slot and slot.speaks)

    def voices(self, role: str) -> tuple[str, ...]:
        return self.pool.slot(role).voices

    @property
    def speaker(self) -> str | None:
        """The role that speaks, if any (the quality model first: it is the seed's voice)."""
        return next((r for r in (QUALITY, FAST) if self.speaks(r)), None)

    async def speak(self, role: str, text: str, voice: str | None = None, timeout_s: float | None = None) -> Speech:
        """Say `text` with `role`'s talker, sentence by sentence (each within the talker's limit)."""
        await self.prepare()
        if not self.speaks(role):
            raise InvalidInput(f"the {role} model does not speak")
        voice = voice or (defaults.VOICE if defaults.VOICE in self.voices(role) else self.voices(role)[0])
        parts: list[Speech] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self.config.request_timeout_s)
        async with self.pool.use(role, deadline) as (slot, _):
            for sentence in sentences(text):
                parts.append(await slot.backend.speak(sentence, voice))
            if not parts:
                raise InvalidInput("nothing to say")
            speech = Speech(b"".join(p.pcm for p in parts), parts[0].sample_rate, voice, sum(p.ms for p in parts))
            slot.last.update(speech_seconds=round(speech.seconds, 2), speech_ms=round(speech.ms, 1), voice=voice)
            self.pool.observe(slot)  # speaking is the heaviest thing a talker does: learn what it took
        return speech

    def needed_mb(self, role: str) -> int:
        """The estimated memory of `role` loaded, rounded up."""
        return -(-self.pool.slot(role).estimate // MB)

    def any_loaded(self) -> bool:
        return any(s.loaded for s in self.pool.slots.values())

    def crashes_within(self, seconds: float) -> int:
        return self.pool.crashes_within(seconds)

    def backend_problem(self) -> str | None:
        return self.pool.backend_problem()

    @property
    def closed(self) -> bool:
        """close() was called: what fails from now on is the shutdown, not a fault."""
        return self._closed

    async def close(self) -> None:
        self._closed = True
        await self.pool.close()
