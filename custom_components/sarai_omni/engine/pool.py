"""The model pool: the only place that decides what is loaded.

- RAM budget: before a load the model's memory is estimated from its GGUF header (weights + KV cache
  + compute buffers + the worker's own runtime); loaded models count with max(estimate, measured RSS).
  A load that does not fit evicts least-recently-used idle models that are not pinned; if it still
  does not fit it is refused with the numbers. After a load the real RSS is measured: a model that
  came out larger than the budget allows is unloaded again, so measured RSS never stays above it.
- One generation at a time per model: an asyncio.Lock, whose waiters are served first in, first out;
  a cancelled waiter simply leaves the queue. Different models run in parallel. At most `max_queue`
  requests wait for one model; more are refused at once (Busy), as Ollama's scheduler does.
- Idle models that are not pinned unload `idle_unload_s` after their last use: one timer per model,
  set when it goes idle and cancelled when it is used again.
- The pool talks to models only through backend.Backend; which backend runs a role is the
  factory's business (llama.cpp worker processes by default).

Lock order (always taken in this order, never the reverse): a slot's `lock` (its turn to generate),
then the pool's `_load_lock` (one load or unload at a time, so budget checks see a settled pool),
then inside the llama.cpp backend the WorkerClient's `_start_lock` (one spawn per process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
import contextlib
from dataclasses import dataclass, field, replace
import logging
from pathlib import Path
import signal
import time
from typing import Any, TypeVar

from . import defaults
from .backend import Backend, BackendFactory, LoadResult, ModelSpec, server_label
from .calibrate import FLASH, PLAIN, REPACK, CalibrationStore, calibrate, calibration_key, variant
from .errors import (
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
from .gguf import GGUFInfo, read_gguf
from .hf import HFInfo, read_folder, read_voices

# No PEP 695 generics in engine/: ruff holds it to Python 3.11 (the torch worker imports it).
T = TypeVar("T")
_LOGGER = logging.getLogger(__name__)
MB = 2**20
# Python + llama_cpp + numpy in the worker before any model (measured ~60 MB), with headroom.
WORKER_RUNTIME_BYTES = 96 * MB
WATCH_INTERVAL_S = 0.1  # the memory watchdog's sampling period while any model is busy or loading
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32}  # q8_0: 32 values in 34 bytes

STATE_UNLOADED, STATE_LOADING, STATE_LOADED, STATE_ERROR = "unloaded", "loading", "loaded", "error"
STATE_REMOTE = "remote"  # what status() says of a loaded role that a server runs (the contract's word)


def estimate_bytes(info: GGUFInfo, spec: ModelSpec, mmproj: GGUFInfo | None = None) -> int:
    """Resident (CPU) memory of a loaded model, from its header and load parameters.

    Layers offloaded to a GPU (`n_gpu_layers`) keep their weights and KV cache in GPU memory; the
    token embeddings stay on the CPU (llama.cpp never offloads them), and so does a projector
    unless layers are offloaded (it follows the model onto the GPU).
    """
    gpu = gpu_fraction(info, spec.n_gpu_layers)
    embd, vocab = info.embedding_length or 0, int(info.metadata.get("tokenizer.ggml.tokens", 0) or 0)
    embedding_share = min(vocab * embd / info.parameter_count, 1.0) if info.parameter_count else 0.0
    weights = info.tensor_bytes * (1 - gpu * (1 - embedding_share))
    weights *= 2 if spec.repack else 1  # repack copies beside the mmap'd file
    kv = spec.n_ctx * info.kv_bytes_per_token(KV_TYPE_BYTES.get(spec.kv_type, 2.0)) * (1 - gpu)
    # CPU compute buffer: activations of one batch plus the logits row of the vocabulary.
    compute = 4 * spec.n_batch * embd * 8 + 4 * vocab * 2
    projector = (0 if gpu else mmproj.tensor_bytes) + 64 * MB if mmproj else 0
    return int(weights + kv + compute + projector + WORKER_RUNTIME_BYTES)


def gpu_fraction(info: GGUFInfo, n_gpu_layers: int) -> float:
    """Share of the repeating layers on the GPU (-1: all of them)."""
    layers = info.block_count or 0
    if n_gpu_layers == 0 or layers == 0:
        return 0.0
    return 1.0 if n_gpu_layers < 0 else min(n_gpu_layers, layers) / layers


@dataclass
class ModelSlot:
    """One model role: its spec, its worker, and what was measured."""

    spec: ModelSpec
    backend: Backend
    info: GGUFInfo | None = None
    mmproj_info: GGUFInfo | None = None
    hf: HFInfo | None = None  # a model folder's config and weights (transformers roles)
    voices: tuple[str, ...] = ()  # what a model that speaks speaks in (spk_dict.pt, then the load's own)
    state: str = STATE_UNLOADED
    estimate: int = 0
    last_used: float = 0.0
    load_ms: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)
    standing: dict[str, Any] | None = None  # the standing prompt last put in the KV cache, and how
    error: str | None = None
    error_key: str | None = None  # the EngineError key of the last failed load
    vision_error: str | None = None  # the projector did not load: text works, images are refused
    variant: str = ""  # how the running (or last) load was made: calibrate.PLAIN or calibrate.REPACK
    flash_attn: bool = False  # ... and whether with flash attention
    unusable: dict[str, str] = field(default_factory=dict)  # load variants that died here, and why
    fault: str | None = None  # the safe way itself died natively: llama.cpp cannot run on this machine
    calibration_key: str | None = None
    over_budget_mb: int = 0  # set when the watchdog ended this model's worker for memory
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    idle_timer: asyncio.TimerHandle | None = None
    spare: bool = False  # a spare worker is (being) started for this unloaded model: its spare_bytes reserved

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def sees(self) -> bool:
        """Configured to take images: a projector with a vision encoder, or a remote model that sees."""
        if self.spec.remote is not None:
            return self.spec.remote.vision
        if self.hf is not None:
            return self.hf.has_vision
        return bool(self.mmproj_info and self.mmproj_info.has_vision)

    @property
    def hears(self) -> bool:
        if self.spec.remote is not None:
            return self.spec.remote.audio
        if self.hf is not None:
            return self.hf.has_audio
        return bool(self.mmproj_info and self.mmproj_info.has_audio)

    @property
    def speaks(self) -> bool:
        """Has a talker and voices (Qwen2.5-Omni on transformers)."""
        return bool(self.hf and self.hf.speaks and self.voices)

    @property
    def busy(self) -> bool:
        return self.lock.locked() or self.waiting > 0

    @property
    def active(self) -> bool:
        return self.busy or self.state == STATE_LOADING

    @property
    def loaded(self) -> bool:
        return self.state == STATE_LOADED and self.backend.running

    def charged(self) -> int:
        """Bytes this slot counts against the budget (a spare worker's own, when it has one)."""
        if self.state not in (STATE_LOADED, STATE_LOADING):
            return max(self.backend.spare_bytes, self.backend.resident_bytes()) if self.spare else 0
        return max(self.estimate, self.backend.resident_bytes() if self.state == STATE_LOADED else 0)

    def status(self) -> dict[str, Any]:
        rss = self.backend.resident_bytes() if self.loaded else 0
        return {
            "role": self.spec.role,
            "model": self.name,
            "state": STATE_REMOTE if self.spec.remote and self.state == STATE_LOADED else self.state,
            "pinned": self.spec.pinned,
            "estimate_mb": round(self.estimate / MB),
            "rss_mb": round(rss / MB),
            "load_ms": round(self.load_ms, 1),
            "last_used": self.last_used,
            "queue": self.waiting,
            "crashes": self.backend.crashes,
            "error": self.error,
            "error_key": self.error_key,
            "vision_error": self.vision_error,
            "repack": self.variant == REPACK,
            "flash_attn": self.flash_attn,
            "unusable_variants": dict(self.unusable),
            "backend": self.spec.backend,
            "voices": list(self.voices),
            "remote": self.spec.remote is not None,
            "server": server_label(self.spec.remote.base_url) if self.spec.remote else None,
            "failures": self.backend.failures,
            "standing_prompt": self.standing,
            **self.last,
        }


class ModelPool:
    """Loads, evicts and queues models within a RAM budget."""

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
        self.calibrations_run = 0
        self._closed = False
        self.prepared = False
        self._calibration: CalibrationStore | None = None
        self.idle_unload_s = idle_unload_s
        self.max_queue = max_queue
        self._factory = backend_factory
        self.slots = {s.role: self._new_slot(s) for s in specs}
        self._load_lock = asyncio.Lock()
        self._on_change = on_change or (lambda: None)
        self._background: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self.peak_rss = 0  # the highest sum of worker RSS the watchdog sampled

    # -- introspection ------------------------------------------------------------------------
    def slot(self, role: str) -> ModelSlot:
        if role not in self.slots:
            raise ModelNotFound(f"no {role} model is configured")
        return self.slots[role]

    def used_bytes(self, exclude: ModelSlot | None = None) -> int:
        return sum(s.charged() for s in self.slots.values() if s is not exclude)

    def measured_rss(self) -> int:
        """Resident memory of every worker process alive now (loading ones included)."""
        return sum(s.backend.resident_bytes() for s in self.slots.values())

    def fits(self, role: str) -> bool:
        """Whether `role` is loaded or could be loaded by evicting idle unpinned models."""
        slot = self.slots.get(role)
        if slot is None or not slot.backend.available:  # a server that did not answer is routed around
            return False
        if slot.loaded:
            return True
        fixed = sum(s.charged() for s in self.slots.values() if s is not slot and (s.spec.pinned or s.busy))
        return fixed + (slot.estimate or 0) <= self.budget

    def snapshot(self) -> dict[str, Any]:
        used = self.used_bytes()
        return {
            "budget_mb": round(self.budget / MB),
            "used_mb": round(used / MB),
            "used_pct": round(100 * used / self.budget, 1) if self.budget else 0.0,
            "measured_rss_mb": round(self.measured_rss() / MB),
            "peak_rss_mb": round(self.peak_rss / MB),
            "models": {role: s.status() for role, s in self.slots.items()},
        }

    # -- lifecycle ----------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Read every model's header (in a thread: it is file I/O) and compute its estimate."""
        if self._calibration is None:
            self._calibration = await asyncio.to_thread(CalibrationStore, self.state_dir)
        for slot in self.slots.values():
            if slot.spec.remote is not None:  # no file here, no local memory
                continue
            if (torch := slot.spec.transformers) is not None:  # a model folder: config.json and weights
                slot.hf = await asyncio.to_thread(read_folder, slot.spec.path)
                slot.voices = await asyncio.to_thread(read_voices, slot.spec.path) if slot.hf.speaks else ()
                slot.estimate = slot.hf.estimate_bytes(torch.dtype, slot.spec.n_ctx, torch.quantization)
                continue
            slot.info = await asyncio.to_thread(_read_model, slot.spec.path)
            if slot.spec.mmproj:
                slot.mmproj_info = await asyncio.to_thread(_read_model, slot.spec.mmproj)
            slot.estimate = estimate_bytes(slot.info, slot.spec, slot.mmproj_info)
        self.prepared = True

    async def close(self) -> None:
        self._closed = True  # no spare worker starts from now on
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._background:  # a ruled-out variant being saved, an idle unload or a spare under way
            await asyncio.gather(*self._background, return_exceptions=True)
        for slot in self.slots.values():
            self._cancel_idle_timer(slot)
            await slot.backend.close()
            slot.state = STATE_UNLOADED

    def prespawn(self) -> None:
        """A spare worker for each model loaded on demand: its next load skips the process start."""
        for slot in self.slots.values():
            if not slot.spec.pinned:
                self._spawn(self._spare(slot), f"sarai_omni spare worker for {slot.spec.role}")

    async def _spare(self, slot: ModelSlot) -> None:
        async with self._load_lock:  # decided and reserved where loads decide: the budget holds
            room = self.budget - self.used_bytes() >= slot.backend.spare_bytes  # a spare counts its own RSS
            if self._closed or slot.spare or slot.state != STATE_UNLOADED or not room:
                return
            slot.spare = True
            try:
                await slot.backend.prespawn()
            except (EngineError, OSError) as err:  # the load that needs it will say why
                _LOGGER.debug("no spare worker for %s: %s", slot.spec.role, err)
            slot.spare = slot.backend.running  # backends without a process start nothing

    def _new_slot(self, spec: ModelSpec) -> ModelSlot:
        def crashed() -> None:
            self._crashed(slot)

        slot = ModelSlot(spec, self._factory(spec, crashed))
        return slot

    def _crashed(self, slot: ModelSlot) -> None:
        """A worker died (busy or idle): its model is no longer loaded; say so at once.

        A native fault of a repacked model rules repacking out here (the next load is plain); a
        SIGILL of the safe way means llama.cpp's build cannot run on this CPU.
        """
        code, was = slot.backend.last_exit, slot.state
        how = describe_exit(code)
        self._cancel_idle_timer(slot)
        slot.state, slot.error = STATE_UNLOADED, f"worker crashed ({how})"
        if is_native_fault(code) and slot.variant == REPACK and was == STATE_LOADED:
            self._rule_out_repack(slot, how)
        elif code == -signal.SIGILL and slot.variant != REPACK:
            slot.fault = f"the {slot.spec.role} model's worker died by {how}"
        self._on_change()

    def _rule_out_repack(self, slot: ModelSlot, reason: str) -> None:
        slot.unusable[REPACK] = reason
        if self._calibration is not None and slot.calibration_key is not None:
            # In the store's memory now: a load that starts before the file is written reads it there.
            self._calibration.rule_out(slot.calibration_key, slot.name, REPACK, reason)
            self._spawn(asyncio.to_thread(self._calibration.save), "sarai_omni calibration")

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
        A repacked way that dies is not a problem of the backend: it is ruled out (calibrate.py).
        """
        for slot in self.slots.values():
            if slot.state == STATE_LOADED:
                continue
            if slot.fault:
                return slot.fault
            if slot.error_key == BackendMissing.key:
                return slot.error
        return None

    # -- use ----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(self, role: str, deadline: float | None = None) -> AsyncIterator[tuple[ModelSlot, float]]:
        """Wait for the model's turn (FIFO), load it if needed, and hold it while generating.

        Yields the slot and the milliseconds spent loading for this request (0 when resident).
        """
        slot = self.slot(role)
        if slot.waiting >= self.max_queue:
            raise Busy(f"{slot.waiting} requests already wait for the {role} model")
        slot.waiting += 1
        self._on_change()
        self._watch()
        try:
            await _within(slot.lock.acquire(), deadline, f"waiting for the {role} model")
        finally:
            slot.waiting -= 1
        self._cancel_idle_timer(slot)
        try:
            load_ms = await _within(self.ensure_loaded(slot), deadline, f"loading the {role} model")
            yield slot, load_ms
        except WorkerCrashed as err:  # _crashed() has said how it died; a backend that did not tell still unloads
            slot.state, slot.error = STATE_UNLOADED, slot.error or "worker crashed"
            if over := self._memory_error(slot, err):
                slot.error = str(over)
                raise over from err
            raise
        finally:
            slot.last_used = time.monotonic()
            slot.lock.release()
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
        if self.used_bytes(exclude=slot) + slot.estimate > self.budget:  # spares go first: they hold no model
            for other in self.slots.values():
                if other is not slot and other.state == STATE_UNLOADED and other.spare:
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
            _LOGGER.info("evicting %s model (least recently used) to load %s", victim.spec.role, slot.spec.role)
            await self._unload(victim)

    async def _load(self, slot: ModelSlot) -> float:
        slot.state, slot.error, slot.over_budget_mb, slot.spare = STATE_LOADING, None, 0, False
        self._on_change()
        self._watch()
        try:
            spec = await self._load_spec(slot)
            result = await self._start_backend(slot, spec)
        except OSError as err:  # the state folder cannot be written (read-only, full), a file vanished
            failed = LoadFailed(f"loading the {slot.spec.role} model failed: {err}")
            await self._load_failed(slot, failed)
            raise failed from err
        except EngineError as err:
            if isinstance(err, WorkerCrashed) and (over := self._memory_error(slot, err)):
                await self._load_failed(slot, over)
                raise over from err
            if isinstance(err, WorkerCrashed) and err.native_fault:
                slot.fault = f"the {slot.spec.role} model's worker died loading it without weight repacking: {err}"
            await self._load_failed(slot, err)
            raise
        except asyncio.CancelledError:  # the request's deadline (or its caller) gave up mid-load
            slot.state, slot.error = STATE_UNLOADED, "load cancelled before it finished"
            await slot.backend.close()
            self._on_change()
            raise
        slot.state, slot.load_ms, slot.last_used = STATE_LOADED, result.load_ms, time.monotonic()
        slot.error = slot.error_key = slot.fault = None
        slot.vision_error = None
        slot.voices = result.voices or slot.voices  # the loaded model's own list wins
        if result.vision_pending:
            self._spawn(self._projector(slot), f"sarai_omni {slot.spec.role} projector")
        await self._check_measured(slot, slot.backend.resident_bytes())
        self._arm_idle_timer(slot)
        self._on_change()
        return slot.load_ms

    async def _load_failed(self, slot: ModelSlot, err: EngineError) -> None:
        slot.state, slot.error, slot.error_key = STATE_ERROR, str(err), err.key
        await slot.backend.close()
        self._on_change()

    async def _start_backend(self, slot: ModelSlot, spec: ModelSpec) -> LoadResult:
        """Load `spec`; a repacked load that dies natively is ruled out and the safe way follows."""
        slot.variant = variant(bool(spec.repack))
        slot.flash_attn = bool(spec.flash_attn)
        try:
            return await slot.backend.load(spec)
        except WorkerCrashed as err:
            if not (spec.repack and err.native_fault):
                raise
            _LOGGER.warning("%s died loading with weight repacking (%s): loading it without", slot.name, err)
            self._rule_out_repack(slot, describe_exit(err.exit_code))
        slot.variant = PLAIN
        return await slot.backend.load(replace(spec, repack=False))

    async def _load_spec(self, slot: ModelSlot) -> ModelSpec:
        """The spec to load with: repacking decided by this machine's measurement (cached)."""
        if slot.spec.repack is not None or not slot.backend.calibrates:
            return slot.spec
        assert self._calibration is not None
        assert slot.info is not None
        try:
            key = await asyncio.to_thread(calibration_key, slot.spec.path, slot.spec.n_threads)
        except OSError as err:  # moved or deleted since setup
            raise ModelNotFound(f"model file not found: {slot.spec.path}") from err
        slot.calibration_key = key
        record = self._calibration.get(key) or await self._calibrate(slot, key)
        slot.unusable = dict(record.get("unusable", {}))
        flash = record.get("flash_attn", False) and FLASH not in slot.unusable  # older records: not measured
        spec = replace(
            slot.spec,
            repack=bool(record["repack"]) and REPACK not in slot.unusable,
            flash_attn=slot.spec.flash_attn if slot.spec.flash_attn is not None else bool(flash),
        )
        measured = record["measured"].get(str(spec.repack), {}).get("rss", 0)
        slot.estimate = max(estimate_bytes(slot.info, spec, slot.mmproj_info), int(measured * 1.05))
        return spec

    async def _calibrate(self, slot: ModelSlot, key: str) -> dict[str, Any]:
        """Measure each way that fits the budget now (calibrate.py), decide, save."""
        assert self._calibration is not None
        info = slot.info
        assert info is not None
        self.calibrations_run += 1
        fixed = self.used_bytes(exclude=slot)

        def fits(repack: bool) -> bool:
            return fixed + estimate_bytes(info, replace(slot.spec, repack=repack), slot.mmproj_info) <= self.budget

        record = await calibrate(
            slot.name,
            lambda repack, flash: replace(slot.spec, repack=repack, flash_attn=flash),
            fits,
            lambda name: self._factory(replace(slot.spec, role=name), None),  # its deaths are trials, not crashes
        )
        if not record["measured"]:  # not even the plain way fits: the caller's budget check refuses it
            return record
        return await asyncio.to_thread(self._calibration.put, key, record)

    async def _check_measured(self, slot: ModelSlot, rss: int) -> None:
        """Trust measurement over estimate: learn from it, and never stay above the budget."""
        self._learn(slot, rss)
        if self.measured_rss() > self.budget:
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
            slot.vision_error = await slot.backend.media_ready()
            self._on_change()

    async def load(self, role: str) -> dict[str, Any]:
        """Load `role` now (in its turn), projector included; return its status."""
        slot = self.slot(role)
        async with slot.lock:
            await self.ensure_loaded(slot)
            slot.vision_error = await slot.backend.media_ready()
            slot.last_used = time.monotonic()
        self._arm_idle_timer(slot)
        return slot.status()

    async def unload(self, role: str) -> None:
        slot = self.slot(role)
        async with slot.lock, self._load_lock:
            await self._unload(slot)
        self.prespawn()  # not after evictions: a spare must not take the room a load made

    async def _unload(self, slot: ModelSlot) -> None:
        self._cancel_idle_timer(slot)
        await slot.backend.close()
        slot.state, slot.spare = STATE_UNLOADED, False
        self._on_change()

    # -- the memory watchdog: the budget holds in every sample, not only after a load ----------
    def _watch(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._sample(), name="sarai_omni memory watchdog")

    async def _sample(self) -> None:
        """Every WATCH_INTERVAL_S while a model is busy or loading: sum the workers' RSS; above the
        budget, end the worker that outgrew its estimate most (its request fails as over budget)."""
        while any(s.active for s in self.slots.values()):
            rss = self.measured_rss()
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.budget:
                await self._stop_largest(rss)
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _stop_largest(self, rss: int) -> None:
        active = [s for s in self.slots.values() if s.active and s.backend.resident_bytes()]
        if not active:
            return
        victim = max(active, key=lambda s: s.backend.resident_bytes() - s.estimate)
        victim.over_budget_mb = round(victim.backend.resident_bytes() / MB)
        _LOGGER.warning(
            "%s grew to %d MB while %s (all workers: %d MB of a %d MB budget): stopping it",
            victim.name, victim.over_budget_mb, victim.state, rss // MB, self.budget // MB,
        )  # fmt: skip
        await victim.backend.stop_now()

    def _memory_error(self, slot: ModelSlot, err: WorkerCrashed) -> DoesNotFitBudget | None:
        """The error to give for a worker that the budget ended (the watchdog, or the kernel at its
        cgroup's limit when it was faster); None for any other death."""
        over_mb = slot.over_budget_mb or (round(self.budget / MB) if err.out_of_memory else 0)
        if not over_mb:
            return None
        slot.over_budget_mb = 0
        free = round((self.budget - self.used_bytes(exclude=slot)) / MB)
        return DoesNotFitBudget(slot.name, over_mb, free, round(self.budget / MB))

    # -- idle unload: one timer per model -----------------------------------------------------
    def _arm_idle_timer(self, slot: ModelSlot) -> None:
        self._cancel_idle_timer(slot)
        if self.idle_unload_s > 0 and not slot.spec.pinned and slot.loaded and not slot.busy:
            loop = asyncio.get_running_loop()
            slot.idle_timer = loop.call_later(self.idle_unload_s, self._idle_expired, slot)

    @staticmethod
    def _cancel_idle_timer(slot: ModelSlot) -> None:
        if slot.idle_timer is not None:
            slot.idle_timer.cancel()
            slot.idle_timer = None

    def _idle_expired(self, slot: ModelSlot) -> None:
        slot.idle_timer = None
        self._spawn(self._unload_if_idle(slot), "sarai_omni idle unload")

    async def _unload_if_idle(self, slot: ModelSlot) -> None:
        async with self._load_lock:
            if slot.loaded and not slot.busy and slot.idle_timer is None:
                _LOGGER.info("unloading idle %s model", slot.spec.role)
                await self._unload(slot)
                self.prespawn()


def _read_model(path: str) -> GGUFInfo:
    if not Path(path).is_file():
        raise ModelNotFound(f"model file not found: {path}")
    return read_gguf(path)


async def _within(awaitable: Awaitable[T], deadline: float | None, what: str) -> T:
    if deadline is None:
        return await awaitable
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        return await asyncio.wait_for(awaitable, max(remaining, 0.001))
    except TimeoutError as err:
        raise RequestTimeout(f"timed out {what}") from err
