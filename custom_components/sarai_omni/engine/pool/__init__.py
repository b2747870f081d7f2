"""The model pool: the only place that decides what is loaded.

- RAM budget (budget.py): before a load the role's memory is estimated from its files' headers;
  loaded roles count with max(estimate, measured RSS). A load that does not fit evicts
  least-recently-used idle roles that are not pinned; if it still does not fit it is refused with
  the numbers. After a load the real RSS is measured: a role that came out larger than the budget
  allows is unloaded again. The watchdog (watchdog.py) holds the budget while roles run.
- One generation at a time per role: an asyncio.Lock, whose waiters are served first in, first
  out; a cancelled waiter simply leaves the queue. A role on a server with several slots (its
  backend is `Parallel`) runs as many at once (a semaphore; loads and unloads still take the lock).
  Different roles run in parallel. At most
  `max_queue` requests wait for one role; more are refused at once (Busy), as Ollama's scheduler does.
- Idle roles that are not pinned unload `idle_unload_s` after their last use (a timer per role).
- A spare process for each role loaded on demand, where its backend `Prespawns`, reserving its bytes.
- How llama.cpp loads a model here is measured once and remembered (calibration.py).

Lock order (always taken in this order, never the reverse): a slot's queue lock or slots (its turn to
generate), then the pool's `_load_lock` (one load or unload at a time, so budget checks see a
settled pool), then inside a process backend the WorkerClient's `_start_lock` (one spawn per process).

Over 400 lines because loads, evictions, idle unloads and the queues act on the same slots under
that lock order; the estimate, the slot record, the watchdog and calibration are modules of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
import contextlib
from dataclasses import replace
import logging
import signal
import time
from typing import Any

from .. import defaults
from ..backends.base import Backend, BackendFactory, LoadsMediaLater, Parallel, Prespawns
from ..deadlines import within
from ..errors import (
    BackendMissing,
    Busy,
    DoesNotFitBudget,
    EngineError,
    LoadFailed,
    ModelNotFound,
    RequestTimeout,
    WorkerCrashed,
    describe_exit,
    is_native_fault,
)
from ..files import capabilities_of, read_files
from ..spec import ModelSpec
from ..status import STATE_ERROR, STATE_LOADED, STATE_LOADING, STATE_UNLOADED, EngineStatus
from .budget import MB, estimate_bytes
from .calibration import CalibrationStore, LoadVariants
from .slot import ModelSlot
from .watchdog import MemoryWatchdog

_LOGGER = logging.getLogger(__name__)


class ModelPool:
    """Loads, evicts and queues roles within a RAM budget."""

    def __init__(
        self,
        specs: list[ModelSpec],
        budget_bytes: int,
        *,
        backend_factory: BackendFactory,
        idle_unload_s: float = defaults.IDLE_UNLOAD_S,
        max_queue: int = defaults.MAX_QUEUE,
        on_change: Callable[[], None] | None = None,
        state_dir: str | None = None,
    ) -> None:
        self.budget = budget_bytes
        self.state_dir = state_dir
        self._closed = False
        self.prepared = False
        self.variants: LoadVariants | None = None
        self.idle_unload_s = idle_unload_s
        self.max_queue = max_queue
        self._factory = backend_factory
        self.slots = {s.role: self._new_slot(s) for s in specs}
        self._load_lock = asyncio.Lock()
        self._on_change = on_change or (lambda: None)
        self._background: set[asyncio.Task[Any]] = set()
        self.watchdog = MemoryWatchdog(self.slots.values, budget_bytes)

    # -- introspection ------------------------------------------------------------------------
    def slot(self, role: str) -> ModelSlot:
        if role not in self.slots:
            raise ModelNotFound(f"no {role} model is configured")
        return self.slots[role]

    def used_bytes(self, exclude: ModelSlot | None = None) -> int:
        return sum(s.charged() for s in self.slots.values() if s is not exclude)

    def fits(self, role: str) -> bool:
        """Whether `role` is loaded or could be loaded by evicting idle unpinned roles."""
        slot = self.slots.get(role)
        if slot is None or not slot.backend.available:  # a server that did not answer is routed around
            return False
        if slot.loaded:
            return True
        fixed = sum(s.charged() for s in self.slots.values() if s is not slot and (s.spec.pinned or s.busy))
        return fixed + (slot.estimate or 0) <= self.budget

    def status(self) -> EngineStatus:
        used = self.used_bytes()
        return EngineStatus(
            budget_mb=round(self.budget / MB),
            used_mb=round(used / MB),
            used_pct=round(100 * used / self.budget, 1) if self.budget else 0.0,
            measured_rss_mb=round(self.watchdog.measured_rss() / MB),
            peak_rss_mb=round(self.watchdog.peak_rss / MB),
            models={role: s.status() for role, s in self.slots.items()},
        )

    @property
    def calibrations_run(self) -> int:
        return self.variants.runs if self.variants else 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Read every role's files (in a thread: it is file I/O), its capabilities and its estimate."""
        if self.variants is None:
            store = await asyncio.to_thread(CalibrationStore, self.state_dir)
            self.variants = LoadVariants(store, self._spawn)
        for slot in self.slots.values():
            slot.files = await asyncio.to_thread(read_files, slot.spec)
            slot.voices = slot.files.voices
            slot.capabilities = capabilities_of(slot.spec, slot.files)
            slot.estimate = estimate_bytes(slot.spec, slot.files)
        self.prepared = True

    async def close(self) -> None:
        self._closed = True  # no spare process starts from now on
        await self.watchdog.stop()
        if self._background:  # a ruled-out variant being saved, an idle unload or a spare under way
            await asyncio.gather(*self._background, return_exceptions=True)
        for slot in self.slots.values():
            self._cancel_idle_timer(slot)
            await slot.backend.close()
            slot.load.state = STATE_UNLOADED

    def prespawn(self) -> None:
        """A spare process for each role loaded on demand: its next load skips the process start."""
        for slot in self.slots.values():
            if not slot.spec.pinned and isinstance(slot.backend, Prespawns):
                self._spawn(self._spare(slot), f"sarai_omni spare worker for {slot.role}")

    async def _spare(self, slot: ModelSlot) -> None:
        backend = slot.backend
        assert isinstance(backend, Prespawns)
        async with self._load_lock:  # decided and reserved where loads decide: the budget holds
            room = self.budget - self.used_bytes() >= backend.spare_bytes  # a spare counts its own RSS
            if self._closed or slot.spare or slot.load.state != STATE_UNLOADED or not room:
                return
            slot.spare = True
            try:
                await backend.prespawn()
            except (EngineError, OSError) as err:  # the load that needs it will say why
                _LOGGER.debug("no spare worker for %s: %s", slot.role, err)
            slot.spare = slot.backend.running

    def _new_slot(self, spec: ModelSpec) -> ModelSlot:
        def crashed() -> None:
            self._crashed(slot)

        slot = ModelSlot(spec, self._factory(spec, crashed))
        slot.capabilities = capabilities_of(spec, slot.files)  # a server's or declared ones: known already
        return slot

    def _crashed(self, slot: ModelSlot) -> None:
        """A worker died (busy or idle): its role is no longer loaded; say so at once.

        A native fault of a repacked model rules repacking out here (the next load is plain); a
        SIGILL of the safe way means llama.cpp's build cannot run on this CPU.
        """
        code, was, load = slot.backend.last_exit, slot.load.state, slot.load
        how = describe_exit(code)
        self._cancel_idle_timer(slot)
        load.state, load.error = STATE_UNLOADED, f"worker crashed ({how})"
        repacked = load.variant is not None and load.variant.repack
        if is_native_fault(code) and repacked and was == STATE_LOADED and self.variants is not None:
            self.variants.rule_out_repack(slot, how)
        elif code == -signal.SIGILL and not repacked:
            load.fault = f"the {slot.role} model's worker died by {how}"
        self._on_change()

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `work` in the background from a callback; close() waits for what is still running."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def crashes_within(self, seconds: float) -> int:
        return sum(s.backend.crashes_within(seconds) for s in self.slots.values())

    def backend_problem(self) -> str | None:
        """Why llama-cpp-python cannot run here, when a worker showed it; None when it can.

        The safe way (no weight repacking) dying natively means the build cannot run on this CPU (a
        wheel built for another machine); a BackendMissing load means the package does not import.
        A repacked way that dies is not a problem of the backend: it is ruled out (calibration.py).
        """
        for slot in self.slots.values():
            if slot.load.state == STATE_LOADED:
                continue
            if slot.load.fault:
                return slot.load.fault
            if slot.load.error_key == BackendMissing.key:
                return slot.load.error
        return None

    # -- use ----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(self, role: str, deadline: float | None = None) -> AsyncIterator[tuple[ModelSlot, float]]:
        """Wait for the role's turn (FIFO), load it if needed, and hold it while generating.

        Yields the slot and the milliseconds spent loading for this request (0 when resident).
        """
        slot = self.slot(role)
        queue = slot.queue
        if queue.waiting >= self.max_queue:
            raise Busy(f"{queue.waiting} requests already wait for the {role} model")
        queue.waiting += 1
        self._on_change()
        self.watchdog.watch()
        try:
            gate = queue.gate(slot.backend.slots if isinstance(slot.backend, Parallel) else 1)
            await within(gate.acquire(), deadline, _timeout(f"waiting for the {role} model"))
        finally:
            queue.waiting -= 1
        queue.running += 1
        self._cancel_idle_timer(slot)
        try:
            load_ms = await within(self.ensure_loaded(slot), deadline, _timeout(f"loading the {role} model"))
            yield slot, load_ms
        except WorkerCrashed as err:  # _crashed() has said how it died; a backend that did not tell still unloads
            slot.load.state, slot.load.error = STATE_UNLOADED, slot.load.error or "worker crashed"
            if over := self.watchdog.memory_error(slot, err, self.used_bytes(exclude=slot)):
                slot.load.error = str(over)
                raise over from err
            raise
        finally:
            slot.last_used = time.monotonic()
            queue.running -= 1
            gate.release()
            self._arm_idle_timer(slot)
            self._on_change()

    async def ensure_loaded(self, slot: ModelSlot) -> float:
        """Load `slot` within the budget; return the load time in ms (0 when already loaded)."""
        async with self._load_lock:
            if slot.loaded:
                return 0.0
            if not self.prepared:
                await self.prepare()
            await self._make_room(slot)
            return await self._load(slot)

    async def _make_room(self, slot: ModelSlot) -> None:
        slot.made_room = ()
        if self.used_bytes(exclude=slot) + slot.estimate > self.budget:  # spares go first: they hold no model
            for other in self.slots.values():
                if other is not slot and other.load.state == STATE_UNLOADED and other.spare:
                    await other.backend.close()
                    other.spare = False
        while self.used_bytes(exclude=slot) + slot.estimate > self.budget:
            victims = [
                s for s in self.slots.values() if s is not slot and s.loaded and not s.spec.pinned and not s.busy
            ]
            if not victims:
                fixed = self.used_bytes(exclude=slot)
                raise DoesNotFitBudget(
                    slot.name, round(slot.estimate / MB), round((self.budget - fixed) / MB), round(self.budget / MB)
                )
            victim = min(victims, key=lambda s: s.last_used)
            _LOGGER.info("evicting %s model (least recently used) to load %s", victim.role, slot.role)
            slot.made_room = (*slot.made_room, victim.role)
            await self._unload(victim)

    async def _load(self, slot: ModelSlot) -> float:
        load = slot.load
        load.state, load.error, load.over_budget_mb, slot.spare = STATE_LOADING, None, 0, False
        self._on_change()
        self.watchdog.watch()
        try:
            result = await self._start(slot)
        except OSError as err:  # the state folder cannot be written (read-only, full), a file vanished
            failed = LoadFailed(f"loading the {slot.role} model failed: {err}")
            await self._load_failed(slot, failed)
            raise failed from err
        except WorkerCrashed as err:
            if over := self.watchdog.memory_error(slot, err, self.used_bytes(slot)):
                await self._load_failed(slot, over)
                raise over from err
            if err.native_fault:
                load.fault = f"the {slot.role} model's worker died loading it without weight repacking: {err}"
            await self._load_failed(slot, err)
            raise
        except EngineError as err:
            await self._load_failed(slot, err)
            raise
        except asyncio.CancelledError:  # the request's deadline (or its caller) gave up mid-load
            load.state, load.error = STATE_UNLOADED, "load cancelled before it finished"
            await slot.backend.close()
            self._on_change()
            raise
        load.state, load.load_ms, slot.last_used = STATE_LOADED, result.load_ms, time.monotonic()
        load.error = load.error_key = load.fault = load.vision_error = None
        slot.voices = result.voices or slot.voices  # the loaded model's own list wins
        if result.vision_pending:
            self._spawn(self._projector(slot), f"sarai_omni {slot.role} projector")
        await self._check_measured(slot, slot.backend.resident_bytes())
        self._arm_idle_timer(slot)
        self._on_change()
        return load.load_ms

    async def _start(self, slot: ModelSlot) -> Any:
        assert self.variants is not None

        def trial(name: str) -> Backend:  # a calibration trial's death is no crash of the role: no callback
            return self._factory(replace(slot.spec, role=name), None)

        chosen = await self.variants.choose(slot, self.used_bytes(exclude=slot), self.budget, trial)
        return await self.variants.start(slot, chosen)

    async def _load_failed(self, slot: ModelSlot, err: EngineError) -> None:
        slot.load.state, slot.load.error, slot.load.error_key = STATE_ERROR, str(err), err.key
        await slot.backend.close()
        self._on_change()

    async def _check_measured(self, slot: ModelSlot, rss: int) -> None:
        """Trust measurement over estimate: learn from it, and never stay above the budget."""
        self._learn(slot, rss)
        if self.watchdog.measured_rss() > self.budget:
            fixed = self.used_bytes(exclude=slot)
            await self._unload(slot)
            raise DoesNotFitBudget(
                slot.name, round(rss / MB), round((self.budget - fixed) / MB), round(self.budget / MB)
            )

    def observe(self, slot: ModelSlot) -> None:
        """After heavy work (speech): learn what the worker holds now."""
        self._learn(slot, slot.backend.resident_bytes())

    @staticmethod
    def _learn(slot: ModelSlot, rss: int) -> None:
        """A worker that holds more than its estimate raises the estimate to it (with 5 % room)."""
        if rss > slot.estimate:
            _LOGGER.warning("%s uses %d MB, estimated %d MB", slot.name, rss // MB, slot.estimate // MB)
            slot.estimate = int(rss * 1.05)

    async def _projector(self, slot: ModelSlot) -> None:
        """Record how the projector's background load ended (the worker answers text meanwhile)."""
        with contextlib.suppress(EngineError):  # the worker went away: its next load tells
            slot.load.vision_error = await self.media_ready(slot)
            self._on_change()

    @staticmethod
    async def media_ready(slot: ModelSlot) -> str | None:
        return await slot.backend.media_ready() if isinstance(slot.backend, LoadsMediaLater) else None

    async def load(self, role: str) -> None:
        """Load `role` now (in its turn), projector included."""
        slot = self.slot(role)
        async with slot.queue.lock:
            await self.ensure_loaded(slot)
            slot.load.vision_error = await self.media_ready(slot)
            slot.last_used = time.monotonic()
        self._arm_idle_timer(slot)

    async def unload(self, role: str) -> None:
        slot = self.slot(role)
        async with slot.queue.lock, self._load_lock:
            await self._unload(slot)
        self.prespawn()  # not after evictions: a spare must not take the room a load made

    async def _unload(self, slot: ModelSlot) -> None:
        self._cancel_idle_timer(slot)
        await slot.backend.close()
        slot.load.state, slot.spare = STATE_UNLOADED, False
        self._on_change()

    # -- idle unload: one timer per role --------------------------------------------------------
    def _arm_idle_timer(self, slot: ModelSlot) -> None:
        self._cancel_idle_timer(slot)
        if self.idle_unload_s > 0 and not slot.spec.pinned and slot.loaded and not slot.busy:
            loop = asyncio.get_running_loop()
            slot.queue.idle_timer = loop.call_later(self.idle_unload_s, self._idle_expired, slot)

    @staticmethod
    def _cancel_idle_timer(slot: ModelSlot) -> None:
        if slot.queue.idle_timer is not None:
            slot.queue.idle_timer.cancel()
            slot.queue.idle_timer = None

    def _idle_expired(self, slot: ModelSlot) -> None:
        slot.queue.idle_timer = None
        self._spawn(self._unload_if_idle(slot), "sarai_omni idle unload")

    async def _unload_if_idle(self, slot: ModelSlot) -> None:
        async with self._load_lock:
            if slot.loaded and not slot.busy and slot.queue.idle_timer is None:
                _LOGGER.info("unloading idle %s model", slot.role)
                await self._unload(slot)
                self.prespawn()


def _timeout(what: str) -> Callable[[], RequestTimeout]:
    return lambda: RequestTimeout(f"timed out {what}")
