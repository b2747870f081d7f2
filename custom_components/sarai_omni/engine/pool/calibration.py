"""Per-machine choice of llama.cpp load parameters, by measurement, remembered on disk.

llama.cpp's CPU weight repacking (`use_extra_bufts`) keeps a second copy of the weights beside the
mmap'd file: on an AVX2 EPYC a 4B Q4_K_M took 4.64 GB instead of 2.89 GB and loaded 5x slower, for
no speed gain (shared/notes/perf-anchors.md). On other CPUs (AVX-512, ARM) it can speed up prompt
processing. So the first load of a model on a machine measures both ways and keeps repacking only
when it pays (decode >= 10% or prefill >= 25% faster) and fits the budget; the decision and the
measured RSS of each way are saved, keyed by the model file, the CPU and the thread count.

Repacking can also kill the process: on Intel CPUs with AMX flags whose AMX instructions trap (some
VMs), the extra buffer types pick AMX kernels and the first tile load dies with SIGILL. So each way is
tried in a throwaway worker process, the safe way (no repacking) first. A trial of another way that
dies (any signal or exit) rules that way out on this machine, with the reason, in the same record;
only the safe way dying is fatal, and the caller reports it as an unusable backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import contextlib
from dataclasses import dataclass, replace
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..backends.base import Backend, Calibrates, LoadResult
from ..errors import ModelNotFound, WorkerCrashed, describe_exit
from ..procmem import cpu_flags
from ..protocol import REPACK, variant
from ..spec import LoadVariant, ModelSpec
from .budget import estimate_bytes
from .slot import ModelSlot

_LOGGER = logging.getLogger(__name__)
DECODE_GAIN, PREFILL_GAIN = 1.10, 1.25
FA_GAIN, FA_LOSS = 1.05, 0.98  # flash attention: 5 % faster one way, at most 2 % slower the other
FLASH = "flash_attn"  # a trial of flash attention (not a load variant of its own)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One way of loading, measured."""

    repack: bool
    rss: int
    prefill_tps: float
    decode_tps: float
    flash_attn: bool = False


def choose_repack(plain: Measurement, repacked: Measurement | None) -> bool:
    """Repack only when it is measurably faster (and it was measured: it fit the budget)."""
    if repacked is None:
        return False
    return repacked.decode_tps >= DECODE_GAIN * plain.decode_tps or (
        repacked.prefill_tps >= PREFILL_GAIN * plain.prefill_tps
    )


def choose_flash_attn(base: Measurement, flash: Measurement | None) -> bool:
    """Flash attention only when it is measurably faster one way and not slower the other."""
    if flash is None:
        return False
    return (flash.prefill_tps >= FA_GAIN * base.prefill_tps and flash.decode_tps >= FA_LOSS * base.decode_tps) or (
        flash.decode_tps >= FA_GAIN * base.decode_tps and flash.prefill_tps >= FA_LOSS * base.prefill_tps
    )


def calibration_key(model_path: str, n_threads: int) -> str:
    stat = os.stat(model_path)
    raw = "|".join(map(str, (os.path.realpath(model_path), stat.st_size, stat.st_mtime_ns, n_threads, *cpu_flags())))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


class CalibrationStore:
    """Decisions in memory, and in `<state_dir>/calibration.json` when a state dir is given."""

    def __init__(self, state_dir: str | None) -> None:
        self._path = Path(state_dir) / "calibration.json" if state_dir else None
        self._data: dict[str, dict[str, Any]] = {}
        if self._path and self._path.is_file():
            try:
                self._data = json.loads(self._path.read_text())
            except (OSError, ValueError):
                _LOGGER.warning("Ignoring unreadable calibration file %s", self._path)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        self._data[key] = record
        self.save()
        return record

    def rule_out(self, key: str, model: str, way: str, reason: str) -> dict[str, Any]:
        """`way` died on this machine (e.g. repacking with trapping AMX): never load it that way
        again. In memory at once (the next load reads it); `save()` writes it to the file."""
        record = self._data.setdefault(key, {"model": model, "repack": False, "measured": {}})
        record.setdefault("unusable", {})[way] = reason
        if way == REPACK:
            record["repack"] = False
        return record

    def save(self) -> None:
        """Write atomically; a state folder that cannot be written (read-only, full) keeps the
        decisions in memory for this run, and says so."""
        if not self._path:
            return
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._data, indent=1))
            tmp.replace(self._path)
        except OSError as err:
            _LOGGER.warning("Load calibrations kept in memory only: %s cannot be written (%s)", self._path, err)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def make_record(
    model: str,
    plain: Measurement | None,
    repacked: Measurement | None,
    unusable: dict[str, str],
    flash: Measurement | None = None,
) -> dict[str, Any]:
    """What is remembered for one model x CPU x threads."""
    chosen = repacked if plain is not None and choose_repack(plain, repacked) else plain
    return {
        "model": model,
        "repack": chosen is not None and chosen.repack,
        "measured": {str(m.repack): _as_dict(m) for m in (plain, repacked) if m is not None},
        "flash_attn": chosen is not None and choose_flash_attn(chosen, flash),
        "flash_attn_measured": _as_dict(flash) if flash is not None else None,
        "unusable": unusable,
    }


async def calibrate(
    model: str,
    spec: ModelSpec,
    fits: Callable[[bool], bool],
    new_backend: Callable[[str], Backend],
) -> dict[str, Any]:
    """Load and bench each way that fits, each in a fresh backend (worker process), the safe way first;
    then the chosen way with flash attention.

    Raises WorkerCrashed when the safe way itself dies: there is nothing left to fall back to.
    """
    measured: dict[bool, Measurement] = {}
    unusable: dict[str, str] = {}
    for repack in (False, True):
        if fits(repack):
            way = replace(spec, variant=LoadVariant(repack))
            found = await _trial(model, way, new_backend, unusable, safe=not repack)
            if found is not None:
                measured[repack] = found
    flash = None
    if measured:
        chosen = make_record(model, measured.get(False), measured.get(True), unusable)["repack"]
        flash = await _trial(model, replace(spec, variant=LoadVariant(chosen, True)), new_backend, unusable, safe=False)
    _LOGGER.info("load calibration for %s: %s, flash attention %s, unusable: %s", model, measured, flash, unusable)
    return make_record(model, measured.get(False), measured.get(True), unusable, flash)


async def _trial(
    model: str, spec: ModelSpec, new_backend: Callable[[str], Backend], unusable: dict[str, str], *, safe: bool
) -> Measurement | None:
    """One way, loaded and benched in a throwaway worker; a way other than the safe one that dies is
    recorded in `unusable` (its name: repack or flash_attn) and measures nothing."""
    way = spec.variant or LoadVariant()
    name = FLASH if way.flash_attn else variant(way.repack)
    trial = new_backend(f"{model} calibration ({name})")
    assert isinstance(trial, Calibrates)
    try:
        await trial.load(spec)
        bench = await trial.bench()
        return Measurement(way.repack, trial.resident_bytes(), bench.prefill_tps, bench.decode_tps, way.flash_attn)
    except WorkerCrashed as err:
        if safe:
            raise
        unusable[name] = describe_exit(err.exit_code)
        _LOGGER.warning("Loading %s with %s died (%s): loading it without", model, name, unusable[name])
        return None
    finally:
        await trial.close()


def _as_dict(m: Measurement) -> dict[str, Any]:
    return {
        "repack": m.repack,
        "rss": m.rss,
        "prefill_tps": round(m.prefill_tps, 2),
        "decode_tps": round(m.decode_tps, 2),
        "flash_attn": m.flash_attn,
    }


class LoadVariants:
    """How each llama.cpp role loads on this machine: measured once, remembered, ruled out when it dies.

    The pool asks `choose()` before a load and `start()` to load; a crash of a repacked model that was
    running comes back through `rule_out_repack()`.
    """

    def __init__(self, store: CalibrationStore, spawn: Callable[[Coroutine[Any, Any, Any], str], None]) -> None:
        self.store = store
        self.runs = 0  # calibrations measured in this run
        self._spawn = spawn

    async def choose(
        self, slot: ModelSlot, fixed_bytes: int, budget: int, new_backend: Callable[[str], Backend]
    ) -> LoadVariant:
        """The way to load `slot`: the spec's own, else this machine's measurement (measured now if
        it never was, each way that fits beside `fixed_bytes` of other roles)."""
        if slot.spec.variant is not None or not isinstance(slot.backend, Calibrates) or _voice(slot):
            return slot.spec.variant or LoadVariant()
        try:
            key = await asyncio.to_thread(calibration_key, slot.spec.path, slot.spec.runtime.n_threads)
        except OSError as err:  # moved or deleted since setup
            raise ModelNotFound(f"model file not found: {slot.spec.path}") from err
        slot.calibration_key = key
        record = self.store.get(key) or await self._measure(slot, key, fixed_bytes, budget, new_backend)
        slot.unusable = dict(record.get("unusable", {}))
        flash = bool(record.get("flash_attn", False)) and FLASH not in slot.unusable  # older records: not measured
        chosen = LoadVariant(repack=bool(record["repack"]) and REPACK not in slot.unusable, flash_attn=flash)
        measured = record["measured"].get(str(chosen.repack), {}).get("rss", 0)
        slot.estimate = max(estimate_bytes(slot.spec, slot.files, chosen), int(measured * 1.05))
        return chosen

    async def _measure(
        self, slot: ModelSlot, key: str, fixed: int, budget: int, new_backend: Callable[[str], Backend]
    ) -> dict[str, Any]:
        self.runs += 1

        def fits(repack: bool) -> bool:
            return fixed + estimate_bytes(slot.spec, slot.files, LoadVariant(repack)) <= budget

        record = await calibrate(slot.name, slot.spec, fits, new_backend)
        if not record["measured"]:  # not even the plain way fits: the caller's budget check refuses it
            return record
        return await asyncio.to_thread(self.store.put, key, record)

    async def start(self, slot: ModelSlot, chosen: LoadVariant) -> LoadResult:
        """Load `slot` the `chosen` way; a repacked load that dies natively is ruled out and the safe way follows."""
        slot.load.variant = chosen
        try:
            return await slot.backend.load(replace(slot.spec, variant=chosen))
        except WorkerCrashed as err:
            if not (chosen.repack and err.native_fault):
                raise
            _LOGGER.warning("%s died loading with weight repacking (%s): loading it without", slot.name, err)
            self.rule_out_repack(slot, describe_exit(err.exit_code))
        slot.load.variant = replace(chosen, repack=False)
        return await slot.backend.load(replace(slot.spec, variant=slot.load.variant))

    def rule_out_repack(self, slot: ModelSlot, reason: str) -> None:
        slot.unusable[REPACK] = reason
        if slot.calibration_key is not None:
            # In the store's memory now: a load that starts before the file is written reads it there.
            self.store.rule_out(slot.calibration_key, slot.name, REPACK, reason)
            self._spawn(asyncio.to_thread(self.store.save), "sarai_omni calibration")


def _voice(slot: ModelSlot) -> bool:
    """A Qwen3-TTS voice: no prefill/decode bench to measure it by; it loads the safe (plain) way."""
    return slot.files.gguf is not None and slot.files.gguf.speaks
