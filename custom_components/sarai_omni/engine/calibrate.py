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

from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .backend import Backend, ModelSpec
from .errors import WorkerCrashed, describe_exit
from .procmem import cpu_flags

_LOGGER = logging.getLogger(__name__)
DECODE_GAIN, PREFILL_GAIN = 1.10, 1.25
PLAIN, REPACK = "plain", "repack"  # the load variants (also the names of protocol.FAULTS_ENV)


def variant(repack: bool) -> str:
    return REPACK if repack else PLAIN


@dataclass(frozen=True, slots=True)
class Measurement:
    """One way of loading, measured."""

    repack: bool
    rss: int
    prefill_tps: float
    decode_tps: float


def choose_repack(plain: Measurement, repacked: Measurement | None) -> bool:
    """Repack only when it is measurably faster (and it was measured: it fit the budget)."""
    if repacked is None:
        return False
    return repacked.decode_tps >= DECODE_GAIN * plain.decode_tps or (
        repacked.prefill_tps >= PREFILL_GAIN * plain.prefill_tps
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
    model: str, plain: Measurement | None, repacked: Measurement | None, unusable: dict[str, str]
) -> dict[str, Any]:
    """What is remembered for one model x CPU x threads."""
    return {
        "model": model,
        "repack": plain is not None and choose_repack(plain, repacked),
        "measured": {str(m.repack): _as_dict(m) for m in (plain, repacked) if m is not None},
        "unusable": unusable,
    }


async def calibrate(
    model: str,
    spec_for: Callable[[bool], ModelSpec],
    fits: Callable[[bool], bool],
    new_backend: Callable[[str], Backend],
) -> dict[str, Any]:
    """Load and bench each way that fits, each in a fresh backend (worker process), the safe way first.

    Raises WorkerCrashed when the safe way itself dies: there is nothing left to fall back to.
    """
    measured: dict[bool, Measurement] = {}
    unusable: dict[str, str] = {}
    for repack in (False, True):
        if not fits(repack):
            continue
        trial = new_backend(f"{model} calibration ({variant(repack)})")
        try:
            await trial.load(spec_for(repack))
            bench = await trial.bench()
            measured[repack] = Measurement(repack, trial.resident_bytes(), bench.prefill_tps, bench.decode_tps)
        except WorkerCrashed as err:
            if not repack:
                raise
            unusable[variant(repack)] = describe_exit(err.exit_code)
            _LOGGER.warning("Loading %s with weight repacking died (%s): loading it without", model, unusable[REPACK])
        finally:
            await trial.close()
    _LOGGER.info("load calibration for %s: %s, unusable: %s", model, measured, unusable)
    return make_record(model, measured.get(False), measured.get(True), unusable)


def _as_dict(m: Measurement) -> dict[str, Any]:
    return {
        "repack": m.repack,
        "rss": m.rss,
        "prefill_tps": round(m.prefill_tps, 2),
        "decode_tps": round(m.decode_tps, 2),
    }
