"""Diagnostics for a config entry: engine snapshot, model metadata, versions, CPU; nothing private."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
import platform
import re
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_API_KEY, CONF_MMPROJ_PATH, CONF_MODEL_PATH, CONF_PROMPT
from .engine import ModelFiles, cpu_flags, physical_cores, total_ram_bytes
from .models import SaraiConfigEntry

# Paths tell where the user keeps files; prompts can hold personal details; API keys are secrets.
TO_REDACT = {CONF_MODEL_PATH, CONF_MMPROJ_PATH, CONF_PROMPT, CONF_API_KEY, "path"}
_PATH = re.compile(r"(?:/[^\s/:'\"]+)+")


async def async_get_config_entry_diagnostics(hass: HomeAssistant, entry: SaraiConfigEntry) -> dict[str, Any]:
    engine = entry.runtime_data.engine
    snapshot = engine.snapshot().as_dict()
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
        "models": {role: _files(engine.model_files(role)) for role in engine.roles},
        "system": await hass.async_add_executor_job(_system),
    }
    return async_redact_data(data, TO_REDACT)


def _files(files: ModelFiles) -> dict[str, Any] | None:
    """What the role's files say (a GGUF's header and its projector's; a folder's type and size)."""
    if files.gguf is not None:
        return files.gguf.summary() | ({"projector": files.mmproj.summary()} if files.mmproj else {})
    if files.folder is not None:
        return {"model_type": files.folder.model_type, "parameters": files.folder.parameters(), "voices": files.voices}
    return None  # a server's model


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
