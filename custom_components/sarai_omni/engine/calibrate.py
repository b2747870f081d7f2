"""Per-machine choice of llama.cpp load parameters, by measurement, remembered on disk.

llama.cpp's CPU weight repacking (`use_extra_bufts`) keeps a second copy of the weights beside the
mmap'd file: on an AVX2 EPYC a 4B Q4_K_M took 4.64 GB instead of 2.89 GB and loaded 5x slower, for
no speed gain (shared/notes/perf-anchors.md). On other CPUs (AVX-512, ARM) it can speed up prompt
processing. So the first load of a model on a machine measures both ways and keeps repacking only
when it pays (decode >= 10% or prefill >= 25% faster) and fits the budget; the decision and the
measured RSS of each way are saved, keyed by the model file, the CPU and the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .procmem import cpu_flags

_LOGGER = logging.getLogger(__name__)
DECODE_GAIN, PREFILL_GAIN = 1.10, 1.25


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

    def put(self, key: str, model: str, plain: Measurement, repacked: Measurement | None) -> dict[str, Any]:
        record = {
            "model": model,
            "repack": choose_repack(plain, repacked),
            "measured": {str(m.repack): _as_dict(m) for m in (plain, repacked) if m is not None},
        }
        self._data[key] = record
        if self._path:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=1))
            tmp.replace(self._path)
        return record


def _as_dict(m: Measurement) -> dict[str, Any]:
    return {
        "repack": m.repack,
        "rss": m.rss,
        "prefill_tps": round(m.prefill_tps, 2),
        "decode_tps": round(m.decode_tps, 2),
    }
