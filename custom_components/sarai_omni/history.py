"""The timeline in Home Assistant: opened with the entry, analyses remembered, events on the bus.

The store (timeline/) blocks; everything here runs it in the executor. A remembered analysis becomes
an event with a title, the model's summary, the labels it names, its key frame (a 320 px JPEG) and
the role that saw it; `sarai_omni_event` carries it on the bus, the calendar entity and the media
source show it, `get_events` and the Assist tool search it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
import logging
from pathlib import Path
import sqlite3
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.util import dt as dt_util

from .const import (
    CONF_TIMELINE_DAYS,
    CONF_TIMELINE_MAX_EVENTS,
    CONF_TIMELINE_MAX_MB,
    DOMAIN,
    ISSUE_TIMELINE_CORRUPT,
    ISSUE_TIMELINE_NOT_SAVED,
    SIGNAL_TIMELINE_UPDATED,
)
from .models import SaraiConfigEntry
from .settings import tunable
from .timeline import Event, Query, Retention, Timeline, asks_what_was_seen, labels_in, title_of, window
from .vision import to_jpeg

_LOGGER = logging.getLogger(__name__)
EVENT_TIMELINE = f"{DOMAIN}_event"
KEY_FRAME_WIDTH = 320
MEDIA_PREFIX = f"media-source://{DOMAIN}/timeline/"


@dataclass(frozen=True, slots=True)
class Seen:
    """What an analysis saw, to remember: where, when, what the model wrote, and its key frame."""

    source: str  # the camera entity id, or the file's name
    camera: str | None
    started: datetime
    summary: str
    role: str
    model: str
    frame: bytes | None = None  # a JPEG of the moment (None for sound)


def retention(entry: SaraiConfigEntry) -> Retention:
    return Retention(
        days=int(tunable(entry.options, CONF_TIMELINE_DAYS)),
        max_events=int(tunable(entry.options, CONF_TIMELINE_MAX_EVENTS)),
        max_mb=int(tunable(entry.options, CONF_TIMELINE_MAX_MB)),
    )


async def async_open(hass: HomeAssistant, entry: SaraiConfigEntry) -> Timeline:
    """Open (or make) the store; a corrupt one is moved aside, a repair says where, setup goes on.
    Where the folder cannot be written, events are kept for this run only, and a repair says so."""
    folder = Path(hass.config.path(DOMAIN))
    try:
        timeline = await hass.async_add_executor_job(Timeline.open, folder)
    except (OSError, sqlite3.Error) as err:
        _LOGGER.warning("The timeline cannot be stored under %s (%s): kept in memory until restart", folder, err)
        ir.async_create_issue(
            hass, DOMAIN, ISSUE_TIMELINE_NOT_SAVED, is_fixable=False, severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_TIMELINE_NOT_SAVED,
            translation_placeholders={"folder": str(folder), "error": str(err)},
        )  # fmt: skip
        timeline = await hass.async_add_executor_job(Timeline.open_temporary)
    else:
        ir.async_delete_issue(hass, DOMAIN, ISSUE_TIMELINE_NOT_SAVED)
    if timeline.recovered is not None:
        ir.async_create_issue(
            hass, DOMAIN, ISSUE_TIMELINE_CORRUPT, is_fixable=False, severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_TIMELINE_CORRUPT, translation_placeholders={"moved_to": str(timeline.recovered)},
        )  # fmt: skip
    await hass.async_add_executor_job(timeline.prune, retention(entry))
    return timeline


async def async_remember(hass: HomeAssistant, entry: SaraiConfigEntry, seen: Seen) -> Event:
    """Store what an analysis saw; fire `sarai_omni_event`; the calendar refreshes."""
    timeline = entry.runtime_data.timeline
    key_frame = (
        await hass.async_add_executor_job(to_jpeg, seen.frame, KEY_FRAME_WIDTH, seen.source) if seen.frame else None
    )
    ended = max(dt_util.utcnow(), seen.started + timedelta(seconds=1))  # a calendar event has a length
    event = Event(
        start=seen.started, end=ended, camera=seen.camera, source=seen.source, title=title_of(seen.summary),
        summary=seen.summary.strip(), labels=labels_in(seen.summary), role=seen.role, model=seen.model,
    )  # fmt: skip
    event = await hass.async_add_executor_job(timeline.add, event, key_frame)
    await hass.async_add_executor_job(timeline.prune, retention(entry))
    hass.bus.async_fire(EVENT_TIMELINE, as_data(event))
    async_dispatcher_send(hass, f"{SIGNAL_TIMELINE_UPDATED}_{entry.entry_id}", event)
    return event


async def async_events(hass: HomeAssistant, entry: SaraiConfigEntry, query: Query) -> list[Event]:
    return await hass.async_add_executor_job(entry.runtime_data.timeline.events, query)


def about_the_past(entry: SaraiConfigEntry, text: str) -> bool:
    """Whether `text` asks what the cameras saw at a time before now ("who came today?", "¿qué pasó
    ayer por la tarde?") and the timeline holds events to answer from."""
    if not entry.runtime_data.timeline.size or not asks_what_was_seen(text):
        return False
    return window(text, dt_util.now()) is not None


def place_of(hass: HomeAssistant, event: Event) -> str:
    """Where an event was seen, as the user names it: the camera's name, else the files'."""
    where = hass.states.get(event.camera) if event.camera else None
    return where.name if where else event.source


def media_uri(event: Event) -> str | None:
    return f"{MEDIA_PREFIX}{event.id}" if event.image else None


def as_data(event: Event) -> dict[str, Any]:
    """An event as services, the bus and the Assist tool give it (times in HA's time zone)."""
    return {
        "id": event.id,
        "start": dt_util.as_local(event.start).isoformat(),
        "end": dt_util.as_local(event.end).isoformat(),
        "camera_entity_id": event.camera,
        "source": event.source,
        "title": event.title,
        "summary": event.summary,
        "labels": list(event.labels),
        "model": event.role,
        "image": media_uri(event),
    }
