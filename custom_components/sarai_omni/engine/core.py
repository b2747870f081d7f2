"""The Engine facade: routing, the model pool and streaming chat, with no Home Assistant imports.

The HA layer talks to the engine only through this package's API (`Engine` and the types of
engine/__init__): it never reaches into the pool, its slots or a backend. Who calls whom: Engine ->
ModelPool (what is loaded, budget, queue) -> Backend (backends/: llama.cpp worker by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
import logging
from typing import TYPE_CHECKING, Any

from . import defaults
from .backends import default_factory
from .backends.base import (
    BackendFactory,
    ChatRequest,
    ConstrainsOutput,
    Heard,
    Inspects,
    Listens,
    Speaks,
    Speech,
    Warmed,
    Warms,
)
from .capabilities import CHAT, HEAR, SPEAK
from .chat import ChatResult, ChatStream
from .deadlines import within
from .errors import CapabilityMissing, InvalidInput, RequestTimeout
from .files import ModelFiles
from .pool import ModelPool
from .pool.budget import MB
from .pool.slot import ModelSlot
from .prompts import Message, clean, sentences
from .router import Needs, RoleView, RouteDecision, RouterConfig, route
from .spec import ModelSpec, RemoteModel, server_label
from .status import EngineStatus, ModelStatus, StandingPrompt

if TYPE_CHECKING:
    import aiohttp

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs; built by the HA layer from the config entry (config.py there)."""

    models: tuple[ModelSpec, ...]
    ram_budget_mb: int
    idle_unload_s: float = defaults.IDLE_UNLOAD_S
    request_timeout_s: float = defaults.REQUEST_TIMEOUT_S
    max_queue: int = defaults.MAX_QUEUE
    router: RouterConfig = field(default_factory=RouterConfig)
    python: str | None = None  # the llama.cpp worker's interpreter (default: this one)
    state_dir: str | None = None  # where load calibrations are remembered (None: in memory only)
    backend_factory: BackendFactory | None = None  # who runs each role (default: backends.default_factory)
    http_session: aiohttp.ClientSession | None = None  # remote roles' connections (HA's shared session)


class Engine:
    """Routes requests among the configured roles and runs them where their backends run them."""

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
        """Call `listener` whenever a role's state or stats change; returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    async def prepare(self) -> None:
        """Read every role's files (file I/O in a thread), its capabilities and its estimate; once."""
        if not self.pool.prepared:
            await self.pool.prepare()

    async def start(self, warm_messages: list[Message] | None = None) -> None:
        """Load the pinned roles (after `prepare`) and put `warm_messages` in their caches; roles loaded
        on demand get a spare process."""
        await self.prepare()
        for slot in self.pool.slots.values():
            if slot.spec.pinned:
                await self.pool.ensure_loaded(slot)
                if warm_messages:
                    await self.warm(slot.role, warm_messages)
        self.pool.prespawn()

    # -- what a role is and can do --------------------------------------------------------------
    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.pool.slots)

    @property
    def default_role(self) -> str:
        """The role that answers when nothing asks for another: the first pinned one that chats."""
        chat = [s for s in self.pool.slots.values() if CHAT in s.capabilities] or list(self.pool.slots.values())
        return next((s.role for s in chat if s.spec.pinned), chat[0].role)

    def capabilities(self, role: str) -> frozenset[str]:
        return self.pool.slot(role).capabilities

    def has(self, role: str, capability: str) -> bool:
        slot = self.pool.slots.get(role)
        return bool(slot and capability in slot.capabilities and (capability != SPEAK or slot.voices))

    def best_for(self, capability: str) -> str | None:
        """The role to use for `capability`: a loaded one first, else the largest that fits, else any."""
        able = [s for s in self.pool.slots.values() if self.has(s.role, capability)]
        if not able:
            return None
        ready = [s for s in able if s.loaded] or [s for s in able if self.pool.fits(s.role)] or able
        return max(ready, key=lambda s: _view(self.pool, s).depth).role

    def quickest_for(self, capability: str) -> str | None:
        """The role that answers `capability` soonest: a loaded one (no load to wait for), else the
        smallest that fits (the quickest to load and to run), else any."""
        able = [s for s in self.pool.slots.values() if self.has(s.role, capability)]
        ready = [s for s in able if s.loaded] or [s for s in able if self.pool.fits(s.role)] or able
        return min(ready, key=lambda s: s.estimate).role if ready else None

    def listens(self, role: str) -> bool:
        """Whether `role` hears and takes speech while it is spoken (backends.base.Listens)."""
        slot = self.pool.slots.get(role)
        return bool(slot and HEAR in slot.capabilities and isinstance(slot.backend, Listens))

    async def listen(self, role: str, session: str, messages: list[Message], pcm: bytes) -> Heard:
        """Encode and prefill a piece of speech into `role`'s listening `session`, loading the model
        first if it must; a ChatRequest with `listening=session` then writes the transcript."""
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        async with self.pool.use(role, deadline) as (slot, _):
            if not isinstance(slot.backend, Listens):
                raise CapabilityMissing(f"the {role} model does not take speech while it is spoken")
            heard = slot.backend.listen(session, clean(messages), pcm)
            return await within(heard, deadline, lambda: RequestTimeout(f"timed out listening with the {role} model"))

    async def forget(self, role: str, session: str) -> None:
        """End a listening session that will not be finished (the speaker's stream was cancelled)."""
        slot = self.pool.slot(role)
        if slot.loaded and isinstance(slot.backend, Listens):
            async with self.pool.use(role) as (used, _):
                assert isinstance(used.backend, Listens)
                await used.backend.forget(session)

    def voices(self, role: str) -> tuple[str, ...]:
        return self.pool.slot(role).voices

    def constraints(self, role: str) -> frozenset[str]:
        """What the role's backend can enforce on its output (capabilities.CONSTRAINTS)."""
        backend = self.pool.slot(role).backend
        return backend.constraints if isinstance(backend, ConstrainsOutput) else frozenset()

    def warms(self, role: str) -> bool:
        return isinstance(self.pool.slot(role).backend, Warms)

    def model_files(self, role: str) -> ModelFiles:
        """What `prepare` read of the role's files (headers; nothing for a server's model)."""
        return self.pool.slot(role).files

    # -- routing and chat -----------------------------------------------------------------------
    def route(
        self,
        text: str,
        modalities: frozenset[str] = frozenset(),
        requested: str | None = None,
        constraints: frozenset[str] = frozenset(),
        past: bool = False,
    ) -> RouteDecision:
        """The router's decision for a request, given what each role can do and serve now (`past`: it
        asks about what was seen before, and a memory of it exists)."""
        views = [_view(self.pool, s) for s in self.pool.slots.values()]
        return route(Needs(text, modalities, requested, constraints, past), views, self.config.router)

    def chat(self, request: ChatRequest) -> ChatStream:
        """Start a streaming generation; iterate the result for text deltas."""
        request.messages = clean(request.messages)  # a lone surrogate in a prompt is an answer, not a crash
        request.role = request.role or self.default_role
        return ChatStream(self.pool, request, self.config.request_timeout_s)

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Run a generation to the end and return its result."""
        stream = self.chat(request)
        async for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    async def warm(self, role: str, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> Warmed:
        """Put `messages` (the standing prompt) in the role's KV cache, from disk when saved before.

        Later turns that start with the same messages evaluate only their new tokens. A backend
        without a prefix cache of ours is not asked (a server keeps its own).
        """
        slot = self.pool.slot(role)
        if not isinstance(slot.backend, Warms):
            warmed = Warmed("server" if isinstance(slot.spec.source, RemoteModel) else "not_cached")
        else:
            async with self.pool.use(role) as (used, _):
                assert isinstance(used.backend, Warms)
                warmed = await used.backend.warm(clean(messages), tools)
        slot.standing = StandingPrompt(warmed.source, warmed.prompt_tokens, round(warmed.ms))
        self._changed()
        return warmed

    async def logits(self, role: str, messages: list[Message], top: int = 20) -> dict[str, Any]:
        """Next-token logits after `messages` (top ids and values), reusing the cached prefix."""
        async with self.pool.use(role) as (slot, _):
            if not isinstance(slot.backend, Inspects):
                raise CapabilityMissing(f"the {role} model's backend shows no logits")
            return await slot.backend.logits(messages, top)

    async def speak(
        self,
        role: str,
        text: str,
        voice: str | None = None,
        *,
        timeout_s: float | None = None,
        language: str | None = None,
    ) -> Speech:
        """Say `text` with `role`'s talker: all of it, as one piece of PCM."""
        parts = [p async for p in self.speak_stream(role, text, voice, timeout_s=timeout_s, language=language)]
        return Speech(b"".join(p.pcm for p in parts), parts[0].sample_rate, parts[0].voice, sum(p.ms for p in parts))

    async def speak_stream(
        self,
        role: str,
        text: str,
        voice: str | None = None,
        *,
        timeout_s: float | None = None,
        language: str | None = None,
    ) -> AsyncIterator[Speech]:
        """Say `text` with `role`'s talker sentence by sentence, each piece of PCM as soon as it is made."""
        await self.prepare()
        if not self.has(role, SPEAK) or not isinstance(self.pool.slot(role).backend, Speaks):
            raise CapabilityMissing(f"the {role} model does not speak")
        if not (said := sentences(text)):
            raise InvalidInput("nothing to say")
        voices = self.voices(role)
        voice = voice or next((v for v in defaults.VOICES if v in voices), voices[0])
        deadline = asyncio.get_running_loop().time() + (timeout_s or self.config.request_timeout_s)
        seconds = ms = 0.0
        async with self.pool.use(role, deadline) as (slot, _):
            assert isinstance(slot.backend, Speaks)
            for sentence in said:
                async for piece in slot.backend.speak(sentence, voice, language, deadline):
                    seconds, ms = seconds + piece.seconds, ms + piece.ms
                    yield piece
            reason = f"{role} speaks (text to speech)"
            if slot.made_room:  # the voice took another role's share of the budget: say whose
                reason += f"; loaded in place of {', '.join(slot.made_room)} (least recently used) within the budget"
                slot.made_room = ()  # said once, with the speech that needed the room
            slot.last = replace(
                slot.last, speech_seconds=round(seconds, 2), speech_ms=round(ms, 1), voice=voice, route_reason=reason
            )
            self.pool.observe(slot)  # speaking is the heaviest thing a talker does: learn what it took

    # -- loading and state ----------------------------------------------------------------------
    async def load(self, role: str) -> ModelStatus:
        await self.pool.load(role)
        return self.status(role)

    async def unload(self, role: str) -> ModelStatus:
        await self.pool.unload(role)
        return self.status(role)

    async def cancel(self, role: str) -> None:
        """Stop what `role` is generating now (it ends as `cancelled`, its text kept; every answer of
        a role on a server that takes several at once)."""
        await self.pool.slot(role).backend.cancel()

    def status(self, role: str) -> ModelStatus:
        """One role's state and last figures (raises ModelNotFound for a role not configured)."""
        return self.pool.slot(role).status()

    def snapshot(self) -> EngineStatus:
        return self.pool.status()

    @property
    def budget_mb(self) -> int:
        return self.pool.budget // MB

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


def _view(pool: ModelPool, slot: ModelSlot) -> RoleView:
    """What the router needs to know of one role now."""
    backend, source = slot.backend, slot.spec.source
    if not backend.available:
        why = f"its server ({server_label(source.base_url) if isinstance(source, RemoteModel) else '?'}) did not answer"
    else:
        why = "does not fit the RAM budget"
    return RoleView(
        name=slot.role,
        capabilities=slot.capabilities,
        constraints=backend.constraints if isinstance(backend, ConstrainsOutput) else frozenset(),
        pinned=slot.spec.pinned,
        parameters=float(slot.files.parameters) if slot.files.parameters else float("inf"),
        ready=pool.fits(slot.role),
        why_not=why,
    )
