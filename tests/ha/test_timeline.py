"""The timeline through real HA: remembered analyses listed by `get_events`, their key frames through
the media source, the calendar, the Assist tool; a restart, retention and a corrupt database."""

from __future__ import annotations

from datetime import timedelta
import json
from pathlib import Path
from typing import Any

from homeassistant.components import conversation, media_source
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import entity_registry as er, issue_registry as ir
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.sarai_omni.const import (
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_N_CTX,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    DOMAIN,
    ISSUE_TIMELINE_CORRUPT,
)
from custom_components.sarai_omni.llm import SEARCH_TIMELINE
from custom_components.sarai_omni.timeline import Event

from .conftest import GardenCamera, agent_id, make_entry, wait_loaded
from .test_assist import answering, force, spy_requests

ANSWER = 'root ::= "A cat, twice."'


async def call(hass: HomeAssistant, service: str, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(DOMAIN, service, data, blocking=True, return_response=True)
    assert isinstance(response, dict)
    return response


def _search(when: str, camera: str) -> str:
    tool = {"name": SEARCH_TIMELINE, "arguments": {"when": when, "camera": camera}}
    return "<tool_call>\\n" + json.dumps(tool).replace('"', '\\"') + "\\n</tool_call>"


async def _seed_entry(hass: HomeAssistant, data: dict[str, Any], **paths: Path) -> MockConfigEntry:
    """The seeds' pair, tiny (Qwen3-VL fast, Omni quality), an agent with Assist and room for its tools."""
    assert await async_setup_component(hass, "ffmpeg", {})
    form = {
        **data, CONF_FAST_MODEL: str(paths["fast"]), CONF_FAST_MMPROJ: str(paths["fast_mmproj"]),
        CONF_QUALITY_MODEL: str(paths["quality"]), CONF_QUALITY_MMPROJ: str(paths["quality_mmproj"]),
        CONF_RAM_BUDGET_MB: 4096, CONF_N_CTX: 16384,
    }  # fmt: skip
    entry = make_entry(hass, form, llm_hass_api=["assist"])
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    return entry


async def test_remembered_analyses_are_listed_shown_and_answered(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    *,
    entry_data: dict[str, Any],
    qwen3vl_model: Path,
    qwen3vl_mmproj: Path,
    omni_thinker: Path,
    omni_mmproj: Path,
    garden_camera: GardenCamera,
) -> None:
    entry = await _seed_entry(
        hass, entry_data, fast=qwen3vl_model, fast_mmproj=qwen3vl_mmproj, quality=omni_thinker,
        quality_mmproj=omni_mmproj,
    )  # fmt: skip
    assert await async_setup_component(hass, "media_source", {})
    fired: list[dict[str, Any]] = []
    hass.bus.async_listen(f"{DOMAIN}_event", lambda e: fired.append(dict(e.data)))
    first = await call(hass, "analyze_image", camera_entity_id="camera.garden", remember=True, max_tokens=8)
    second = await call(hass, "analyze_image", camera_entity_id="camera.garden", remember=True, max_tokens=8)
    forgotten = await call(hass, "analyze_image", camera_entity_id="camera.garden", max_tokens=8)
    assert "event_id" not in forgotten
    await hass.async_block_till_done()
    assert [e["id"] for e in fired] == [first["event_id"], second["event_id"]]

    events = (await call(hass, "get_events", camera_entity_id="camera.garden"))["events"]
    assert [e["id"] for e in events] == [second["event_id"], first["event_id"]]  # newest first
    assert events[0]["summary"] == second["text"]
    assert events[0]["camera_entity_id"] == "camera.garden"
    client = await hass_client()
    for found in events:  # each key frame resolves through the media source to a JPEG
        play = await media_source.async_resolve_media(hass, found["image"], None)
        assert play.mime_type == "image/jpeg"
        response = await client.get(play.url)
        assert response.status == 200
        assert (await response.read())[:3] == b"\xff\xd8\xff"
    assert (await (await hass_client_no_auth()).get(play.url)).status == 401  # camera pictures are private
    browsed = await media_source.async_browse_media(hass, "media-source://sarai_omni/timeline")
    assert [c.media_content_id for c in browsed.children or []] == [e["image"] for e in events]

    calendar = er.async_get(hass).async_get_entity_id("calendar", DOMAIN, f"{entry.entry_id}_timeline")
    assert calendar is not None
    today = dt_util.start_of_local_day()
    listed = await hass.services.async_call(
        "calendar", "get_events", {"start_date_time": today, "end_date_time": today + timedelta(days=1)},
        target={"entity_id": calendar}, blocking=True, return_response=True,
    )  # fmt: skip
    assert listed is not None
    day: Any = listed[calendar]["events"]  # type: ignore[index,call-overload]
    assert [e["description"].split("\n")[0] for e in day] == [first["text"], second["text"]]
    assert {e["location"] for e in day} == {"Garden"}

    # Assist: the fast model asks the timeline (no model loaded for it) and answers from the events.
    async_expose_entity(hass, conversation.DOMAIN, "camera.garden", True)
    seen, spy = spy_requests(entry)
    with spy, force(lambda r: ANSWER if answering(r) else f'root ::= "{_search("today", "garden")}"'):
        result = await conversation.async_converse(
            hass, "what happened on the garden camera today?", None, Context(), language="en",
            agent_id=agent_id(hass, entry),
        )  # fmt: skip
    assert result.response.speech["plain"]["speech"] == "A cat, twice."
    assert SEARCH_TIMELINE in {t["function"]["name"] for t in seen[0].tools or []}
    assert {r.role for r in seen} == {"fast"}
    tool_result = json.loads(seen[-1].messages[-1]["content"])
    assert [e["what"] for e in tool_result["events"]] == [second["text"], first["text"]]
    assert {e["camera"] for e in tool_result["events"]} == {"Garden"}


async def test_restart_retention_and_a_corrupt_database(
    hass: HomeAssistant, vision_entry: MockConfigEntry, garden_camera: GardenCamera
) -> None:
    remembered = await call(hass, "analyze_image", camera_entity_id="camera.garden", remember=True, max_tokens=4)
    old = Event(
        start=dt_util.utcnow() - timedelta(days=40), end=dt_util.utcnow() - timedelta(days=40, seconds=-5),
        camera="camera.garden", source="camera.garden", title="Old", summary="Old.", labels=(), role="fast",
        model="tiny",
    )  # fmt: skip
    timeline = vision_entry.runtime_data.timeline
    old = await hass.async_add_executor_job(timeline.add, old, b"\xff\xd8\xff\xe0old")
    old_image = timeline.image_path(old)
    assert old_image is not None
    assert old_image.exists()

    # A restart: what was remembered is there; what retention (30 days by default) drops is gone.
    assert await hass.config_entries.async_reload(vision_entry.entry_id)
    await wait_loaded(vision_entry)
    ids = [e["id"] for e in (await call(hass, "get_events"))["events"]]
    assert ids == [remembered["event_id"]]
    assert not old_image.exists()

    # A corrupt database: moved aside, a repair says where, setup succeeds, new events are stored.
    assert await hass.config_entries.async_unload(vision_entry.entry_id)
    db = Path(hass.config.path(DOMAIN, "timeline.db"))
    await hass.async_add_executor_job(db.write_bytes, b"garbage" * 1000)
    assert await hass.config_entries.async_setup(vision_entry.entry_id)
    assert vision_entry.state is ConfigEntryState.LOADED
    await wait_loaded(vision_entry)
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_TIMELINE_CORRUPT)
    assert issue is not None
    moved = Path(issue.translation_placeholders["moved_to"])  # type: ignore[index]
    assert moved.name.startswith("timeline.db.corrupt-")
    assert (await hass.async_add_executor_job(moved.read_bytes)).startswith(b"garbage")
    assert (await call(hass, "get_events"))["events"] == []
    fresh = await call(hass, "analyze_image", camera_entity_id="camera.garden", remember=True, max_tokens=4)
    assert [e["id"] for e in (await call(hass, "get_events"))["events"]] == [fresh["event_id"]]
