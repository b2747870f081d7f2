"""The memory watchdog: the budget holds in every sample, not only after a load.

Every WATCH_INTERVAL_S while any role is busy or loading, the workers' RSS is summed; above the
budget, the worker that outgrew its estimate most is ended (its request fails as DoesNotFitBudget).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
import contextlib
import logging

from ..errors import DoesNotFitBudget, WorkerCrashed
from .budget import MB
from .slot import ModelSlot

_LOGGER = logging.getLogger(__name__)
WATCH_INTERVAL_S = 0.1


class MemoryWatchdog:
    def __init__(self, slots: Callable[[], Iterable[ModelSlot]], budget: int) -> None:
        self._slots = slots
        self.budget = budget
        self.peak_rss = 0  # the highest sum of worker RSS sampled
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def measured_rss(self) -> int:
        """Resident memory of every worker process alive now (loading ones included)."""
        return sum(s.backend.resident_bytes() for s in self._slots())

    def watch(self) -> None:
        """Sample while anything is busy or loading (started by each request and load)."""
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._sample(), name="sarai_omni memory watchdog")

    async def stop(self) -> None:
        """For good (the pool is closing): a load still under way cannot start it again."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        while any(s.active for s in self._slots()):
            rss = self.measured_rss()
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.budget:
                await self._stop_largest(rss)
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _stop_largest(self, rss: int) -> None:
        active = [s for s in self._slots() if s.active and s.backend.resident_bytes()]
        if not active:
            return
        victim = max(active, key=lambda s: s.backend.resident_bytes() - s.estimate)
        victim.load.over_budget_mb = round(victim.backend.resident_bytes() / MB)
        _LOGGER.warning(
            "%s grew to %d MB while %s (all workers: %d MB of a %d MB budget): stopping it",
            victim.name, victim.load.over_budget_mb, victim.load.state, rss // MB, self.budget // MB,
        )  # fmt: skip
        await victim.backend.stop_now()

    def memory_error(self, slot: ModelSlot, err: WorkerCrashed, used_by_others: int) -> DoesNotFitBudget | None:
        """The error to give for a worker that the budget ended (this watchdog, or the kernel at its
        cgroup's limit when it was faster); None for any other death."""
        over_mb = slot.load.over_budget_mb or (round(self.budget / MB) if err.out_of_memory else 0)
        if not over_mb:
            return None
        slot.load.over_budget_mb = 0
        free = round((self.budget - used_by_others) / MB)
        return DoesNotFitBudget(slot.name, over_mb, free, round(self.budget / MB))
