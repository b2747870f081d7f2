"""One role in the pool: its spec and backend, what its files say, how its load went, its queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..backends.base import Backend, Hears, Prespawns, Serves
from ..capabilities import HEAR, SEE, SPEAK
from ..files import ModelFiles
from ..spec import LoadVariant, ModelSpec, RemoteModel, server_label
from ..status import (
    STATE_LOADED,
    STATE_LOADING,
    STATE_REMOTE,
    STATE_UNLOADED,
    LastRequest,
    ModelStatus,
    StandingPrompt,
)
from .budget import MB


@dataclass(slots=True)
class LoadState:
    """How the role's last load went (and how it ended, when it did not)."""

    state: str = STATE_UNLOADED
    load_ms: float = 0.0
    variant: LoadVariant | None = None  # how the running (or last) load was made
    error: str | None = None
    error_key: str | None = None  # the EngineError key of the last failed load
    vision_error: str | None = None  # the projector did not load: text works, media are refused
    fault: str | None = None  # the safe way itself died natively: llama.cpp cannot run on this machine
    over_budget_mb: int = 0  # set when the watchdog ended this role's worker for memory


@dataclass(slots=True)
class Queue:
    """One request at a time per role (FIFO on the lock), or as many as a server has slots (a
    semaphore of that width); how many wait and run, and the idle-unload timer."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    running: int = 0
    idle_timer: asyncio.TimerHandle | None = None
    shared: asyncio.Semaphore | None = None  # a server's slots, once its width is known
    width: int = 1

    def gate(self, width: int) -> asyncio.Lock | asyncio.Semaphore:
        """What a request waits on: the lock, or the slots' semaphore (resized only while unused)."""
        if width <= 1:
            return self.lock
        if self.shared is None or (self.width != width and self.running == 0):
            self.shared, self.width = asyncio.Semaphore(width), width
        return self.shared


@dataclass(slots=True)
class ModelSlot:
    spec: ModelSpec
    backend: Backend
    files: ModelFiles = field(default_factory=ModelFiles)
    capabilities: frozenset[str] = frozenset()
    voices: tuple[str, ...] = ()  # what a role that speaks speaks in (its files, then its load's own list)
    estimate: int = 0
    load: LoadState = field(default_factory=LoadState)
    queue: Queue = field(default_factory=Queue)
    unusable: dict[str, str] = field(default_factory=dict)  # load variants that died here, and why
    calibration_key: str | None = None
    last_used: float = 0.0
    last: LastRequest = field(default_factory=LastRequest)
    standing: StandingPrompt | None = None  # the standing prompt last put in the cache, and how
    spare: bool = False  # a spare process is (being) started for this unloaded role: its bytes reserved
    made_room: tuple[str, ...] = ()  # the roles its last load unloaded to fit the budget (least recently used first)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def sees(self) -> bool:
        return SEE in self.capabilities

    @property
    def hears(self) -> bool:
        return HEAR in self.capabilities

    @property
    def speaks(self) -> bool:
        return SPEAK in self.capabilities and bool(self.voices)

    @property
    def busy(self) -> bool:
        return self.queue.lock.locked() or self.queue.waiting > 0 or self.queue.running > 0

    @property
    def active(self) -> bool:
        return self.busy or self.load.state == STATE_LOADING

    @property
    def loaded(self) -> bool:
        return self.load.state == STATE_LOADED and self.backend.running

    def charged(self) -> int:
        """Bytes this role counts against the budget (a spare process's own, when it has one)."""
        if self.load.state not in (STATE_LOADED, STATE_LOADING):
            if not self.spare or not isinstance(self.backend, Prespawns):
                return 0
            return max(self.backend.spare_bytes, self.backend.resident_bytes())
        return max(self.estimate, self.backend.resident_bytes() if self.load.state == STATE_LOADED else 0)

    def status(self) -> ModelStatus:
        source = self.spec.source
        remote = isinstance(source, RemoteModel)
        load, variant = self.load, self.load.variant or LoadVariant()
        return ModelStatus(
            role=self.role,
            model=self.name,
            state=STATE_REMOTE if remote and load.state == STATE_LOADED else load.state,
            backend=self.spec.backend,
            capabilities=tuple(sorted(self.capabilities)),
            pinned=self.spec.pinned,
            estimate_mb=round(self.estimate / MB),
            rss_mb=round((self.backend.resident_bytes() if self.loaded else 0) / MB),
            load_ms=round(load.load_ms, 1),
            last_used=self.last_used,
            queue=self.queue.waiting,
            crashes=self.backend.crashes,
            failures=self.backend.failures,
            error=load.error,
            error_key=load.error_key,
            vision_error=load.vision_error,
            hearing=self.backend.hearing if isinstance(self.backend, Hears) else None,
            repack=variant.repack,
            flash_attn=variant.flash_attn,
            unusable_variants=dict(self.unusable),
            voices=self.voices,
            server=self.backend.server if isinstance(self.backend, Serves) else None,
            servers=tuple(server_label(u) for u in source.urls) if isinstance(source, RemoteModel) else (),
            standing_prompt=self.standing,
            last=self.last,
        )
