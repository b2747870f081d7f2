"""What every benchmark section shares: the machine's facts, its measured read bandwidth, engines on
the seed shapes, and a sampler of the workers' resident memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
import contextlib
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import platform
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from custom_components.sarai_omni.engine import Engine, EngineConfig, ModelSpec  # noqa: E402
from custom_components.sarai_omni.engine.gguf import read_gguf  # noqa: E402
from custom_components.sarai_omni.engine.procmem import cpu_flags, rss_bytes, total_ram_bytes  # noqa: E402
from tests.specs import gguf_spec  # noqa: E402

MB = 1024 * 1024
GEMMA = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
SEED_RAM_LIMIT_MB = 12 * 1024  # the seed's "RAM P99 <= 12 GB"


def machine(threads: int) -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    flags = set(cpu_flags())
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "threads": threads,
        "ram_gb": round(total_ram_bytes() / 1e9, 1),
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "f16c", "fma"}),
        "read_bandwidth_gbs": {str(n): read_bandwidth(n) for n in sorted({1, threads})},
    }


def read_bandwidth(threads: int, size_mb: int = 1024, repeat: int = 5) -> float:
    """STREAM-style read bandwidth: each thread sums its share of a buffer far larger than the caches
    (numpy's reductions release the GIL); the best of `repeat` passes, in GB/s."""
    data = np.ones(size_mb * MB // 8, dtype=np.int64)
    parts = np.array_split(data, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeat):
            started = time.perf_counter()
            list(pool.map(np.bitwise_xor.reduce, parts))
            best = max(best, data.nbytes / (time.perf_counter() - started) / 1e9)
    return round(best, 1)


def bytes_per_token(model: Path) -> int:
    """Weights one decoded token reads: every tensor but the input embedding (one row of it is read),
    unless the embedding is also the output (tied, as in Qwen3-VL-4B)."""
    import gguf

    sizes = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(str(model)).tensors}
    tied = "output.weight" not in sizes
    return sum(n for name, n in sizes.items() if tied or name != "token_embd.weight")


def kv_bytes(model: Path, n_ctx: int, bytes_per_value: int = 2) -> int:
    """The f16 KV cache of `n_ctx` tokens."""
    info = read_gguf(model)
    per_token = (
        (info.block_count or 0) * (info.head_count_kv or 0) * ((info.key_length or 0) + (info.value_length or 0))
    )
    return per_token * n_ctx * bytes_per_value


def spec(role: str, model: Path, threads: int, **kw: Any) -> ModelSpec:
    """A role on a seed-shaped file, loaded the way the raw side is (no repacking: the variant the
    calibration picks on this kind of CPU, and the only safe one where AMX traps)."""
    return gguf_spec(role, str(model), n_threads=threads, repack=False, **kw)


def engine(*specs: ModelSpec, budget_mb: int = SEED_RAM_LIMIT_MB, state_dir: str | None = None) -> Engine:
    return Engine(EngineConfig(models=specs, ram_budget_mb=budget_mb, state_dir=state_dir))


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


@dataclass
class RssSampler:
    """Samples the resident memory of the given processes every `period` s, per named phase."""

    pids: Any  # a callable returning the PIDs to sum (workers come and go)
    period: float = 0.05
    peaks: dict[str, int] = field(default_factory=dict)
    phase: str = "idle"
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def during(self, phase: str) -> Iterator[None]:
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            total = sum(rss_bytes(pid) or 0 for pid in self.pids())
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), total)

    def peaks_mb(self) -> dict[str, int]:
        return {phase: round(value / MB) for phase, value in self.peaks.items()}


def worker_pids(eng: Engine) -> list[int]:
    """The engine's worker processes (benchmarks may look behind the seam; HA code may not)."""
    pids = []
    for slot in eng.pool.slots.values():
        client = getattr(slot.backend, "client", None)
        if client is not None and client.pid:
            pids.append(client.pid)
    return pids


def drop_page_cache(*paths: Path) -> None:
    """Evict the files' pages from the page cache (a cold start), without root: clean pages of a file
    go with POSIX_FADV_DONTNEED."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def save(out: Path, name: str, result: dict[str, Any], plot: Callable[[dict[str, Any], Path], None]) -> None:
    """`<out>/<name>.json` ({"summary": result}) and `<out>/<name>.png`; the summary as the last line."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"summary": result}, indent=1) + "\n")
    plot(result, out / f"{name}.png")
    print(json.dumps(result))
