"""Media source: the timeline's key frames (`media-source://sarai_omni/timeline/<event id>`), newest first.

Resolved to `/api/sarai_omni/timeline/<event id>.jpg`, served to authenticated users only (the
frontend signs the path when it resolves the item; cameras' pictures are private).
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from homeassistant.components.media_player.const import MediaClass
from homeassistant.components.media_player.errors import BrowseError
from homeassistant.components.media_source import (
    BrowseMediaSource,
    MediaSource,
    MediaSourceItem,
    PlayMedia,
    Unresolvable,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView
from homeassistant.util import dt as dt_util

from .const import DOMAIN
from .models import SaraiConfigEntry
from .timeline import Event, Query

FOLDER = "timeline"
BROWSED = 200  # key frames the browser lists (the newest)


async def async_get_media_source(hass: HomeAssistant) -> TimelineMediaSource:
    return TimelineMediaSource(hass)


def image_url(event_id: str) -> str:
    return f"/api/{DOMAIN}/timeline/{event_id}.jpg"


def _entry(hass: HomeAssistant) -> SaraiConfigEntry | None:
    return next((e for e in hass.config_entries.async_loaded_entries(DOMAIN)), None)


async def _event(hass: HomeAssistant, event_id: str) -> tuple[SaraiConfigEntry, Event] | None:
    if (entry := _entry(hass)) is None:
        return None
    event = await hass.async_add_executor_job(entry.runtime_data.timeline.get, event_id)
    return (entry, event) if event is not None and event.image else None


class TimelineMediaSource(MediaSource):
    """What the cameras saw, as images."""

    name = "Sarai Omni timeline"

    def __init__(self, hass: HomeAssistant) -> None:
        super().__init__(DOMAIN)
        self.hass = hass

    async def async_resolve_media(self, item: MediaSourceItem) -> PlayMedia:
        folder, _, event_id = (item.identifier or "").partition("/")
        if folder != FOLDER or await _event(self.hass, event_id) is None:
            raise Unresolvable(f"No timeline image {item.identifier}")
        return PlayMedia(image_url(event_id), "image/jpeg")

    async def async_browse_media(self, item: MediaSourceItem) -> BrowseMediaSource:
        if item.identifier not in (None, "", FOLDER):
            raise BrowseError(f"Unknown item {item.identifier}")
        entry = _entry(self.hass)
        events = (
            await self.hass.async_add_executor_job(entry.runtime_data.timeline.events, Query(limit=BROWSED))
            if entry
            else []
        )
        children = [
            BrowseMediaSource(
                domain=DOMAIN, identifier=f"{FOLDER}/{e.id}", media_class=MediaClass.IMAGE,
                media_content_type="image/jpeg", title=_title(e), can_play=True, can_expand=False,
                thumbnail=image_url(e.id),
            )
            for e in events
            if e.image
        ]  # fmt: skip
        return BrowseMediaSource(
            domain=DOMAIN, identifier=FOLDER, media_class=MediaClass.DIRECTORY, media_content_type="",
            title=self.name, can_play=False, can_expand=True, children_media_class=MediaClass.IMAGE,
            children=children,
        )  # fmt: skip


def _title(event: Event) -> str:
    return f"{dt_util.as_local(event.start):%Y-%m-%d %H:%M} {event.source}: {event.title}"


class TimelineImageView(HomeAssistantView):
    """A timeline event's key frame."""

    url = "/api/sarai_omni/timeline/{event_id}.jpg"
    name = "api:sarai_omni:timeline"

    async def get(self, request: web.Request, event_id: str) -> web.StreamResponse:
        hass = request.app[KEY_HASS]
        if not event_id.isalnum() or (found := await _event(hass, event_id)) is None:
            return web.Response(status=HTTPStatus.NOT_FOUND)
        entry, event = found
        path = entry.runtime_data.timeline.image_path(event)
        assert path is not None  # _event() found it with an image
        headers = {"Content-Type": "image/jpeg", "Cache-Control": "private, max-age=86400"}
        return web.FileResponse(path, headers=headers)
