"""The typed config entry and what a loaded entry keeps. Imports nothing else of this package but
the engine and the timeline (neither imports HA), so every platform can import it without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeassistant.config_entries import ConfigEntry

from .engine import Engine
from .timeline import Timeline


@dataclass(slots=True)
class SaraiRuntimeData:
    """What a loaded entry keeps: the engine that owns the worker processes, and what the entry was
    set up from (so a change that leaves it the same needs no reload)."""

    engine: Engine
    timeline: Timeline
    loaded_from: Any = None
    reloading: bool = False  # a reload for a changed configuration is on its way


type SaraiConfigEntry = ConfigEntry[SaraiRuntimeData]
