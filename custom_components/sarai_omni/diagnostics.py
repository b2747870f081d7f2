"""Diagnostics for a config entry: engine snapshot, model metadata, versions, CPU; nothing private."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
import platform
import re
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import (
    CONF_API_KEY,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_PROMPT,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
)
from .engine.procmem import cpu_flags, physical_cores, total_ram_bytes
from .models import SaraiConfigEntry

# Paths tell where the user keeps files; prompts can hold personal details; API keys are secrets.
TO_REDACT = {
    CONF_FAST_MODEL,
    CONF_FAST_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_QUALITY_MMPROJ,
    CONF_PROMPT,
    CONF_API_KEY,
    "model_path",
}
_PATH = re.compile(r"(?:/[^\s/:'\"]+)+")


async def async_get_config_entry_diagnostics(hass: HomeAssistant, entry: SaraiConfigEntry) -> dict[str, Any]:
    engine = entry.runtime_data.engine
    snapshot = engine.snapshot()
    for status in snapshot["models"].values():
        if status.get("error"):
            status["error"] = _PATH.sub("**PATH**", status["error"])
    data = {
        "entry": {
            "data": dict(entry.data),
            "options": dict(entry.options),
            "subentries": {sid: sub.as_dict() for sid, sub in entry.subentries.items()},
        },
        "engine": snapshot,
        "models": {role: info.summary() if (info := engine.model_info(role)) else None for role in engine.roles},
        "system": await hass.async_add_executor_job(_system),
    }
    return async_redact_data(data, TO_REDACT)


def _system() -> dict[str, Any]:
    """Blocking: versions and the CPU facts that decide llama.cpp's speed."""
    try:
        llama = version("llama-cpp-python")
    except PackageNotFoundError:
        llama = None
    return {
        "llama_cpp_python": llama,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_flags": cpu_flags(),
        "physical_cores": physical_cores(),
        "ram_mb": total_ram_bytes() // 2**20,
    }
