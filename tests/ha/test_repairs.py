"""Each repair issue is raised by its real condition and cleared once fixed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import signal
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import CONF_FAST_MODEL, CONF_RAM_BUDGET_MB, DOMAIN
from custom_components.sarai_omni.engine import FAST
from tests.tiny_models import write_text_model

from .conftest import make_entry, wait_loaded


def issue(hass: HomeAssistant, issue_id: str) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


async def test_model_missing_raised_and_cleared_when_the_file_is_back(
    hass: HomeAssistant, entry_data: dict[str, Any], model_dir: Path
) -> None:
    path = model_dir / "moved-away.gguf"
    entry = make_entry(hass, {**entry_data, CONF_FAST_MODEL: str(path)})
    assert not await hass.config_entries.async_setup(entry.entry_id)
    found = issue(hass, "model_missing")
    assert found is not None
    assert "moved-away.gguf" in (found.translation_placeholders or {})["error"]

    await hass.async_add_executor_job(write_text_model, path)  # the user puts the file back
    assert await hass.config_entries.async_reload(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert issue(hass, "model_missing") is None
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_budget_smaller_than_the_fast_model(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    entry = make_entry(hass, {**entry_data, CONF_RAM_BUDGET_MB: 32})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    found = issue(hass, "budget_too_small")
    assert found is not None
    assert (found.translation_placeholders or {})["budget_mb"] == "32"

    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_RAM_BUDGET_MB: 1024})  # reconfigured
    await hass.async_block_till_done()  # the update listener reloads
    assert entry.state is ConfigEntryState.LOADED
    assert issue(hass, "budget_too_small") is None
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_crash_loop_after_three_crashes(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    engine = loaded_entry.runtime_data.engine
    client = engine.pool.slot(FAST).client
    for crash in range(3):
        assert issue(hass, "crash_loop") is None
        pid = client.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # an idle worker dying is a crash too
        for _ in range(100):
            await asyncio.sleep(0.02)
            if client.crashes == crash + 1:
                break
        assert engine.snapshot()["models"][FAST]["state"] == "unloaded"  # reported at once, not at next use
        await wait_loaded(loaded_entry)  # restarts the worker
    found = issue(hass, "crash_loop")
    assert found is not None
    assert (found.translation_placeholders or {})["count"] == "3"

    assert await hass.config_entries.async_reload(loaded_entry.entry_id)  # after fixing the cause
    assert issue(hass, "crash_loop") is None
