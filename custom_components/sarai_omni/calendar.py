"""Calendar: the timeline of what the cameras saw, in HA's calendar (one event per remembered analysis)."""

from __future__ import annotations

from datetime import datetime

from homeassistant.components.calendar import CalendarEntity, CalendarEvent
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN, SIGNAL_TIMELINE_UPDATED, TITLE
from .history import async_events, place_of
from .models import SaraiConfigEntry
from .timeline import Event, Query

PARALLEL_UPDATES = 0
LISTED = 1000  # events one calendar view lists at most


async def async_setup_entry(
    hass: HomeAssistant, entry: SaraiConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    async_add_entities([TimelineCalendar(entry)])


class TimelineCalendar(CalendarEntity):
    """Each remembered analysis, from when its frames were taken to when the model had answered."""

    _attr_has_entity_name = True
    _attr_translation_key = "timeline"

    def __init__(self, entry: SaraiConfigEntry) -> None:
        self.entry = entry
        self._attr_unique_id = f"{entry.entry_id}_timeline"
        self._attr_device_info = dr.DeviceInfo(identifiers={(DOMAIN, entry.entry_id)}, manufacturer=TITLE)
        self._latest: CalendarEvent | None = None

    @property
    def event(self) -> CalendarEvent | None:
        """The newest event (HA shows it as the calendar's current or next one)."""
        return self._latest

    async def async_added_to_hass(self) -> None:
        signal = f"{SIGNAL_TIMELINE_UPDATED}_{self.entry.entry_id}"
        self.async_on_remove(async_dispatcher_connect(self.hass, signal, self._changed))
        await self.async_update()

    @callback
    def _changed(self, event: Event) -> None:
        """A new event is the newest: shown at once, in this callback (no task racing an unload)."""
        self._latest = self._calendar_event(event)
        self.async_write_ha_state()

    async def async_update(self) -> None:
        newest = await async_events(self.hass, self.entry, Query(limit=1))
        self._latest = self._calendar_event(newest[0]) if newest else None

    async def async_get_events(
        self, hass: HomeAssistant, start_date: datetime, end_date: datetime
    ) -> list[CalendarEvent]:
        found = await async_events(hass, self.entry, Query(start=start_date, end=end_date, limit=LISTED))
        return [self._calendar_event(e) for e in reversed(found)]  # oldest first, as calendars read

    def _calendar_event(self, event: Event) -> CalendarEvent:
        labels = f"\n\n{', '.join(event.labels)}" if event.labels else ""
        return CalendarEvent(
            start=event.start, end=event.end, summary=event.title, description=f"{event.summary}{labels}",
            location=place_of(self.hass, event), uid=event.id,
        )  # fmt: skip
