"""The Engine facade: routing, the model pool and streaming chat, with no Home Assistant imports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
import logging
from typing import Any

from .pool import MB, ModelPool, ModelSpec
from .prompts import Message
from .router import FAST, QUALITY, Availability, RouteDecision, RouterConfig, route

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs; built by the HA layer from the config entry."""

    models: tuple[ModelSpec, ...]
    ram_budget_mb: int
    idle_unload_s: float = 600.0
    request_timeout_s: float = 300.0
    router: RouterConfig = field(default_factory=RouterConfig)
    python: str | None = None  # the worker's interpreter (default: this one)
    state_dir: str | None = None  # where load calibrations are remembered (None: in memory only)


@dataclass(slots=True)
class ChatRequest:
    """One generation request."""

    messages: list[Message]
    role: str = FAST
    tools: list[dict[str, Any]] | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    grammar: str | None = None
    stop: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    route_reason: str = ""  # why the router chose `role`; shown in the model's state attributes
    ignore_eos: bool = False  # benchmarks: always generate max_tokens
    json_schema: dict[str, Any] | None = None  # constrain the output to JSON of this schema
    schema_as_tool_call: bool = False  # ... inside <tool_call> tags (tool-call repair)

    def payload(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "tools": self.tools,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "grammar": self.grammar,
            "stop": self.stop,
            "ignore_eos": self.ignore_eos,
            "json_schema": self.json_schema,
            "schema_as_tool_call": self.schema_as_tool_call,
        }


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
        data: dict[str, Any] = {}
        async with pool.use(req.role, deadline) as (slot, load_ms):
            async for event in slot.client.stream("generate", req.payload(), deadline):
                if event.get("event") == "token":
                    parts.append(event["text"])
                    yield event["text"]
                else:
                    data = event.get("data", {})
            self.result = ChatResult(
                text="".join(parts),
                role=req.role,
                model=slot.name,
                load_ms=load_ms,
                ttft_ms=float(data.get("ttft_ms", 0.0)),
                tokens_per_second=float(data.get("tokens_per_second", 0.0)),
                prompt_tokens=int(data.get("prompt_tokens", 0)),
                cached_tokens=int(data.get("cached_tokens", 0)),
                evaluated_prompt_tokens=int(data.get("evaluated_prompt_tokens", 0)),
                completion_tokens=int(data.get("completion_tokens", 0)),
                finish_reason=str(data.get("finish_reason", "")),
                dropped_messages=int(data.get("dropped_messages", 0)),
            )
            slot.last = {
                "ttft_ms": round(self.result.ttft_ms, 1),
                "tokens_per_second": round(self.result.tokens_per_second, 2),
                "evaluated_prompt_tokens": self.result.evaluated_prompt_tokens,
                "cached_tokens": self.result.cached_tokens,
                "route_reason": req.route_reason,
            }


class Engine:
    """Routes requests to the fast or quality model and runs them in worker processes."""

    def __init__(self, config: EngineConfig, on_change: Callable[[], None] | None = None) -> None:
        self.config = config
        self._listeners: list[Callable[[], None]] = [on_change] if on_change else []
        self.pool = ModelPool(
            list(config.models),
            config.ram_budget_mb * MB,
            idle_unload_s=config.idle_unload_s,
            python=config.python,
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

    async def start(self, warm_messages: list[Message] | None = None) -> None:
        """Read model headers, load pinned models and evaluate the standing prompt on them."""
        await self.pool.prepare()
        for slot in self.pool.slots.values():
            if slot.spec.pinned:
                await self.pool.ensure_loaded(slot)
                if warm_messages:
                    await self.warm(slot.spec.role, warm_messages)

    async def warm(self, role: str, messages: list[Message]) -> dict[str, Any]:
        """Put `messages` (the standing prompt) in the model's KV cache, from disk when saved before.

        Later turns that start with the same messages evaluate only their new tokens.
        """
        async with self.pool.use(role) as (slot, _):
            return await slot.client.call("warm", {"messages": messages})

    async def logits(self, role: str, messages: list[Message], top: int = 20) -> dict[str, Any]:
        """Next-token logits after `messages` (top ids and values), reusing the cached prefix."""
        async with self.pool.use(role) as (slot, _):
            return await slot.client.call("logits", {"messages": messages, "top": top})

    def availability(self) -> Availability:
        slots = self.pool.slots
        quality = slots.get(QUALITY)
        why = "not configured" if quality is None else "does not fit the RAM budget"
        fast = slots.get(FAST)
        return Availability(
            quality=quality is not None and self.pool.fits(QUALITY),
            quality_why_not=why,
            fast_vision=bool(fast and fast.mmproj_info and fast.mmproj_info.has_vision),
            quality_audio=bool(quality and quality.mmproj_info and quality.mmproj_info.has_audio),
        )

    def route(self, text: str, modalities: frozenset[str] = frozenset(), requested: str | None = None) -> RouteDecision:
        """The router's decision for a request, given what the pool can serve now."""
        return route(text, modalities, requested, self.availability(), self.config.router)

    def chat(self, request: ChatRequest) -> ChatStream:
        """Start a streaming generation; iterate the result for text deltas."""
        return ChatStream(self, request)

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Run a generation to the end and return its result."""
        stream = self.chat(request)
        async for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    async def load(self, role: str) -> dict[str, Any]:
        slot = self.pool.slot(role)
        async with slot.lock:
            await self.pool.ensure_loaded(slot)
        return slot.status()

    async def unload(self, role: str) -> dict[str, Any]:
        await self.pool.unload(role)
        return self.pool.slot(role).status()

    def snapshot(self) -> dict[str, Any]:
        return self.pool.snapshot()

    async def close(self) -> None:
        await self.pool.close()
