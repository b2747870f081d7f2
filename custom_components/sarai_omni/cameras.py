"""Camera-aware Assist: which cameras a turn asks about, and their snapshots attached to it.

The words → entity resolution is deterministic, never left to a small model: a turn asks about a
camera when it says "camera"/"cámara" (or "cam", "webcam") and names one of the cameras by its name,
an alias or its area, in any case and with or without accents ("¿qué ves en la cámara del jardín?"
finds the camera named "Jardín" or in the area "Jardín"; "what do you see on the garden camera?"
finds "Garden"). A turn naming no camera attaches nothing; naming two attaches both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
import contextlib
import dataclasses
from pathlib import Path
import re

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar, device_registry as dr, entity_registry as er

from .const import CONF_CAMERA_IMAGE_SIZE
from .engine import normalize
from .settings import tunable
from .vision import camera_frame, temp_dir

CAMERA_CUES = re.compile(r"\b(?:camaras?|cameras?|cams?|webcams?)\b")


def snapshot_size(entry: ConfigEntry) -> int:
    """The longest side of an Assist question's snapshot (px): the option, else the measured default."""
    return int(tunable(entry.options, CONF_CAMERA_IMAGE_SIZE))


def _words(text: str, *, keep_cues: bool = False) -> str:
    """Lower case, accents and punctuation gone, single spaces; without the camera words unless kept
    (so a name and a turn are compared in one form)."""
    plain = re.sub(r"[^\w\s]", " ", normalize(text))
    return " ".join((plain if keep_cues else CAMERA_CUES.sub(" ", plain)).split())


def camera_names(hass: HomeAssistant, entity_id: str) -> set[str]:
    """How a person may call a camera: its name, aliases and area, normalized, without the cue words."""
    state = hass.states.get(entity_id)
    names = {state.name} if state else set()
    if entry := er.async_get(hass).async_get(entity_id):
        # HA's own list of what the entity is called (an alias may be the computed full name)
        names |= {n for n in (entry.name, entry.original_name, *er.async_get_entity_aliases(hass, entry)) if n}
        area_id = entry.area_id
        if area_id is None and entry.device_id and (device := dr.async_get(hass).async_get(entry.device_id)):
            area_id = device.area_id
        if area_id and (area := ar.async_get(hass).async_get_area(area_id)):
            names |= {area.name, *area.aliases}
    return {p for p in map(_words, names) if p}


def mentioned_cameras(hass: HomeAssistant, text: str) -> list[str]:
    """The camera entities a turn asks about, in entity-id order (none without a camera word)."""
    norm = _words(text, keep_cues=True)
    if not CAMERA_CUES.search(norm):
        return []
    found = []
    for entity_id in sorted(hass.states.async_entity_ids("camera")):
        if any(re.search(rf"\b{re.escape(name)}\b", norm) for name in camera_names(hass, entity_id)):
            found.append(entity_id)
    return found


@contextlib.asynccontextmanager
async def snapshots_attached(
    hass: HomeAssistant, chat_log: conversation.ChatLog, cameras: Iterable[str], size: int
) -> AsyncIterator[None]:
    """The cameras' current snapshots attached to the turn's user message while the turn runs.

    Afterwards the message is put back as it was: the files are removed with the turn, and a later
    turn must not send an image that no longer exists.
    """
    cameras = list(cameras)
    index = _last_user(chat_log)
    if not cameras or index is None:
        yield
        return
    original = chat_log.content[index]
    assert isinstance(original, conversation.UserContent)
    async with temp_dir(hass, "sarai_camera_") as folder:
        attachments = [await _snapshot(hass, entity_id, Path(folder), size) for entity_id in cameras]
        chat_log.content[index] = dataclasses.replace(
            original, attachments=[*(original.attachments or []), *attachments]
        )
        try:
            yield
        finally:
            chat_log.content[index] = original


async def _snapshot(hass: HomeAssistant, entity_id: str, folder: Path, size: int) -> conversation.Attachment:
    frame = await camera_frame(hass, entity_id, size)
    path = folder / f"{entity_id}.jpg"
    await hass.async_add_executor_job(path.write_bytes, frame.jpeg)
    source = f"media-source://camera/{entity_id}"
    return conversation.Attachment(media_content_id=source, mime_type="image/jpeg", path=path)


def _last_user(chat_log: conversation.ChatLog) -> int | None:
    for index in range(len(chat_log.content) - 1, -1, -1):
        if isinstance(chat_log.content[index], conversation.UserContent):
            return index
    return None


def camera_by_name(hass: HomeAssistant, name: str, allowed: Iterable[str]) -> str | None:
    """The camera among `allowed` that `name` means: its entity id, name, alias or area."""
    allowed = list(allowed)
    if name in allowed:
        return name
    wanted = _words(name)
    return next((e for e in allowed if wanted and wanted in camera_names(hass, e)), None)
