"""25 analyses remembered at once through real HA: every one stored, the event loop never stalled."""

from __future__ import annotations

import asyncio
from pathlib import Path

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.ha.conftest import GardenCamera
from tests.ha.test_services import call

from .conftest import STALL_LIMIT_S, StallDetector
from .figures import record

AT_ONCE = 25


async def test_many_remembered_analyses_at_once_lose_nothing(
    hass: HomeAssistant, vision_entry: MockConfigEntry, garden_camera: GardenCamera, stalls: StallDetector
) -> None:
    vision_entry.runtime_data.engine.pool.max_queue = 32  # the default 8 refuses the rest as busy (tested elsewhere)
    answers = await asyncio.gather(
        *(
            call(hass, "analyze_image", camera_entity_id="camera.garden", remember=True, max_tokens=2)
            for _ in range(AT_ONCE)
        )
    )
    ids = {a["event_id"] for a in answers}
    assert len(ids) == AT_ONCE
    stored = (await call(hass, "get_events", limit=100))["events"]
    assert {e["id"] for e in stored} == ids
    folder = Path(hass.config.path("sarai_omni", "timeline"))
    images = await hass.async_add_executor_job(lambda: sorted(p.name for p in folder.iterdir()))
    assert images == sorted(f"{i}.jpg" for i in ids)
    record("timeline_events_at_once", AT_ONCE)
    record("timeline_longest_loop_stall_ms", round(stalls.longest * 1000, 1))
    assert stalls.longest <= STALL_LIMIT_S, stalls.where
    assert await hass.config_entries.async_unload(vision_entry.entry_id)  # workers and the watchdog stop
