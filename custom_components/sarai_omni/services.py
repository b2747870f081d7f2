"""Services for automations: analyze_image, analyze_video, analyze_audio (remembered in the timeline on
request), get_events (the timeline searched), load_model, unload_model (all return data)."""

from __future__ import annotations

import asyncio
from datetime import datetime
import logging
from pathlib import Path
import time
from typing import Any

from homeassistant.components.ffmpeg import get_ffmpeg_manager
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.helpers import config_validation as cv
from homeassistant.util import dt as dt_util
import probatio

from .audio import resolve_audio
from .const import AUTO, DEFAULT_MAX_TOKENS, DEFAULT_TASK_MAX_TOKENS, DEFAULT_TASK_TEMPERATURE, DOMAIN
from .engine import HEAR, SEE, ChatRequest, ChatResult, Engine, Message, ModelStatus, RouteDecision
from .errors import engine_call
from .history import Seen, as_data, async_events, async_remember
from .models import SaraiConfigEntry
from .timeline import LABELS, Query
from .vision import (
    Frame,
    camera_frame,
    invalid,
    read_image_file,
    select_frames,
    temp_dir,
    video_file_audio,
    video_file_frames,
    write_frames,
)

_LOGGER = logging.getLogger(__name__)
EVENT_ANALYSIS = f"{DOMAIN}_analysis"
DEFAULT_IMAGE_PROMPT = "Describe what you see in the image(s) briefly."
DEFAULT_VIDEO_PROMPT = "Describe what happens across these frames briefly."
DEFAULT_AUDIO_PROMPT = "What can be heard in this audio? Describe the sounds and any speech briefly."

_COMMON: dict[probatio.Marker, Any] = {
    probatio.Optional("prompt"): cv.string,
    probatio.Optional("model", default=AUTO): cv.string,  # auto, or a configured role (checked when routed)
    probatio.Optional("max_tokens", default=DEFAULT_MAX_TOKENS): probatio.All(
        probatio.Coerce(int), probatio.Range(min=1, max=4096)
    ),
    probatio.Optional("remember", default=False): cv.boolean,  # keep it in the timeline
}
IMAGE_SCHEMA = probatio.Schema(
    {
        probatio.Optional("camera_entity_id", default=list): cv.entity_ids,
        probatio.Optional("image_path", default=list): probatio.All(cv.ensure_list, [cv.string]),
        **_COMMON,
    }
)
VIDEO_SCHEMA = probatio.Schema(
    {
        probatio.Exclusive("camera_entity_id", "source"): cv.entity_id,
        probatio.Exclusive("video_path", "source"): cv.string,
        probatio.Optional("duration", default=3.0): probatio.All(
            probatio.Coerce(float), probatio.Range(min=0.5, max=60)
        ),
        probatio.Optional("max_frames", default=4): probatio.All(probatio.Coerce(int), probatio.Range(min=1, max=16)),
        probatio.Optional("target_width", default=672): probatio.All(
            probatio.Coerce(int), probatio.Range(min=64, max=4096)
        ),
        **_COMMON,
    }
)
_AUDIO: dict[probatio.Marker, Any] = {
    probatio.Required("audio_path"): probatio.All(cv.ensure_list, [cv.string], probatio.Length(min=1)),
    **_COMMON,
}
AUDIO_SCHEMA = probatio.Schema(_AUDIO)
MODEL_SCHEMA = probatio.Schema({probatio.Required("model"): cv.string})
EVENTS_SCHEMA = probatio.Schema(
    {
        probatio.Optional("start"): cv.datetime,
        probatio.Optional("end"): cv.datetime,
        probatio.Optional("camera_entity_id"): cv.entity_id,
        probatio.Optional("query", default=""): cv.string,
        probatio.Optional("labels", default=list): probatio.All(cv.ensure_list, [probatio.In(LABELS)]),
        probatio.Optional("limit", default=20): probatio.All(probatio.Coerce(int), probatio.Range(min=1, max=500)),
    }
)


def async_setup_services(hass: HomeAssistant) -> None:
    """Register the services once for the integration (quality rule action-setup)."""

    async def analyze_image(call: ServiceCall) -> ServiceResponse:
        entry, started = loaded_entry(hass), dt_util.utcnow()
        frames = [await camera_frame(hass, e) for e in call.data["camera_entity_id"]]
        for path in (p for p in call.data["image_path"] if p.strip()):  # an empty entry is no file
            frames.append(await hass.async_add_executor_job(read_image_file, hass, path))
        if not frames:
            raise invalid("no_input")
        prompt = call.data.get("prompt") or DEFAULT_IMAGE_PROMPT
        return await _analyze(hass, entry, call, frames, prompt=prompt, modality="image", started=started)

    async def analyze_video(call: ServiceCall) -> ServiceResponse:
        entry, started = loaded_entry(hass), dt_util.utcnow()
        width, count = call.data["target_width"], call.data["max_frames"]
        if path := call.data.get("video_path"):
            ffmpeg = get_ffmpeg_manager(hass).binary
            candidates = await video_file_frames(hass, ffmpeg, path, width)
        elif entity_id := call.data.get("camera_entity_id"):
            candidates = await _camera_clip(hass, entity_id, call.data["duration"], count, width)
        else:
            raise invalid("no_input")
        frames = await hass.async_add_executor_job(select_frames, candidates, count)
        prompt = call.data.get("prompt") or DEFAULT_VIDEO_PROMPT
        return await _analyze(
            hass, entry, call, frames, prompt=prompt, modality="video", started=started, sound_of=path
        )

    async def analyze_audio(call: ServiceCall) -> ServiceResponse:
        entry, started = loaded_entry(hass), dt_util.utcnow()
        paths = [await resolve_audio(hass, p) for p in call.data["audio_path"] if p.strip()]
        if not paths:
            raise invalid("no_input")
        prompt = call.data.get("prompt") or DEFAULT_AUDIO_PROMPT
        decision, result = await hear(
            hass, entry, paths, prompt=prompt, model=call.data["model"], max_tokens=call.data["max_tokens"]
        )
        response = _response(decision, result) | _heard(result)
        if call.data["remember"]:
            seen = Seen(", ".join(p.name for p in paths), None, started, response["text"], decision.role, result.model)
            response["event_id"] = (await async_remember(hass, entry, seen)).id
        _fire(hass, call, decision, response)
        return response

    async def get_events(call: ServiceCall) -> ServiceResponse:
        entry, data = loaded_entry(hass), call.data
        start, end = (dt_util.as_utc(data[k]) if k in data else None for k in ("start", "end"))
        query = Query(start, end, data.get("camera_entity_id"), tuple(data["labels"]), data["query"], data["limit"])
        return {"events": [as_data(e) for e in await async_events(hass, entry, query)]}

    async def load_model(call: ServiceCall) -> ServiceResponse:
        engine = loaded_entry(hass).runtime_data.engine
        return _model_status(await engine_call(engine.load(_configured(engine, call.data["model"]))))

    async def unload_model(call: ServiceCall) -> ServiceResponse:
        engine = loaded_entry(hass).runtime_data.engine
        return _model_status(await engine_call(engine.unload(_configured(engine, call.data["model"]))))

    for name, handler, schema in (
        ("analyze_image", analyze_image, IMAGE_SCHEMA),
        ("analyze_video", analyze_video, VIDEO_SCHEMA),
        ("analyze_audio", analyze_audio, AUDIO_SCHEMA),
        ("load_model", load_model, MODEL_SCHEMA),
        ("unload_model", unload_model, MODEL_SCHEMA),
    ):
        hass.services.async_register(DOMAIN, name, handler, schema=schema, supports_response=SupportsResponse.OPTIONAL)
    hass.services.async_register(
        DOMAIN, "get_events", get_events, schema=EVENTS_SCHEMA, supports_response=SupportsResponse.ONLY
    )


def loaded_entry(hass: HomeAssistant) -> SaraiConfigEntry:
    for entry in hass.config_entries.async_entries(DOMAIN):
        if entry.state is ConfigEntryState.LOADED:
            return entry
    raise invalid("not_loaded")


async def _camera_clip(hass: HomeAssistant, entity_id: str, duration: float, count: int, width: int) -> list[Frame]:
    """Snapshots spread over `duration` seconds: twice as many as will be sent, to choose from."""
    shots = max(count * 2, 2)
    frames, started = [], time.monotonic()
    for i in range(shots):
        await asyncio.sleep(max(0.0, started + i * duration / (shots - 1) - time.monotonic()))
        frame = await camera_frame(hass, entity_id, width)
        frames.append(Frame(frame.jpeg, round(time.monotonic() - started, 2)))
    return frames


def _configured(engine: Engine, role: str) -> str:
    if role not in engine.roles:
        raise invalid("model_not_configured", model=role)
    return role


def _route(entry: SaraiConfigEntry, prompt: str, modality: str, model: str) -> RouteDecision:
    engine = entry.runtime_data.engine
    decision = engine.route(prompt, frozenset({modality}), None if model == AUTO else _configured(engine, model))
    if modality == "audio" and not engine.has(decision.role, HEAR):
        raise invalid("no_hearing_model", model=decision.role)
    if modality != "audio" and not engine.has(decision.role, SEE):
        raise invalid("no_vision_model", model=decision.role)
    return decision


async def hear(
    hass: HomeAssistant,
    entry: SaraiConfigEntry,
    clips: list[Path],
    *,
    prompt: str,
    model: str = AUTO,
    max_tokens: int = DEFAULT_TASK_MAX_TOKENS,
    temperature: float = DEFAULT_TASK_TEMPERATURE,
) -> tuple[RouteDecision, ChatResult]:
    """Audio clips (files mtmd decodes) and a prompt to a model that hears."""
    decision = _route(entry, prompt, "audio", model)
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    parts += [{"type": "audio", "path": str(clip)} for clip in clips]
    request = ChatRequest(
        messages=[{"role": "user", "content": parts}],
        role=decision.role,
        max_tokens=max_tokens,
        temperature=temperature,
        route_reason=decision.reason,
    )
    return decision, await engine_call(entry.runtime_data.engine.complete(request))


def _messages(prompt: str, paths: list[str], frames: list[Frame], video: bool) -> list[Message]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    if video:
        parts[0]["text"] += f"\nThe {len(frames)} frames below are in time order, oldest first."
    for i, (path, frame) in enumerate(zip(paths, frames, strict=True), start=1):
        if video:
            parts.append({"type": "text", "text": f"\nFrame {i} at {frame.at:.1f} s: "})
        parts.append({"type": "image", "path": path})
    return [{"role": "user", "content": parts}]


async def describe(
    hass: HomeAssistant,
    entry: SaraiConfigEntry,
    frames: list[Frame],
    *,
    prompt: str,
    modality: str = "image",
    video: bool = False,
    model: str = AUTO,
    max_tokens: int = DEFAULT_TASK_MAX_TOKENS,
    cameras: tuple[str, ...] = (),
    sound_of: str | None = None,
) -> tuple[RouteDecision, ChatResult]:
    """Frames with a prompt to a model that sees: the router's choice unless `model` says. With
    `sound_of` (a video file), its sound track goes too when the chosen model hears."""
    decision = _route(entry, prompt, modality, model)
    async with temp_dir(hass, "sarai_analysis_") as folder:
        paths = await hass.async_add_executor_job(write_frames, frames, folder)
        messages = _messages(prompt, paths, frames, video)
        track = None
        if sound_of and entry.runtime_data.engine.has(decision.role, HEAR):
            track = await video_file_audio(hass, get_ffmpeg_manager(hass).binary, sound_of, folder)
        if track is not None:
            messages[-1]["content"] += [
                {"type": "text", "text": "\nThe clip's sound: "},
                {"type": "audio", "path": str(track)},
            ]
        request = ChatRequest(
            messages=messages,
            role=decision.role,
            max_tokens=max_tokens,
            temperature=DEFAULT_TASK_TEMPERATURE,
            route_reason=decision.reason,
            cameras=cameras,
        )
        result = await engine_call(entry.runtime_data.engine.complete(request))
    return decision, result


async def _analyze(
    hass: HomeAssistant,
    entry: SaraiConfigEntry,
    call: ServiceCall,
    frames: list[Frame],
    *,
    prompt: str,
    modality: str,
    started: datetime,
    sound_of: str | None = None,
) -> ServiceResponse:
    video = modality == "video"
    cameras = call.data.get("camera_entity_id") or []
    decision, result = await describe(
        hass,
        entry,
        frames,
        prompt=prompt,
        modality=modality,
        video=video,
        model=call.data["model"],
        max_tokens=call.data["max_tokens"],
        cameras=tuple([cameras] if isinstance(cameras, str) else cameras),
        sound_of=sound_of,
    )
    response = _response(decision, result)
    if video:
        response["frames"] = len(frames)
        response["frame_times"] = [f.at for f in frames]
        response |= _heard(result)
    if call.data["remember"]:
        response["event_id"] = (await async_remember(hass, entry, _seen(call, frames, started, decision, result))).id
    _fire(hass, call, decision, response)
    return response


def _seen(
    call: ServiceCall, frames: list[Frame], started: datetime, decision: RouteDecision, result: ChatResult
) -> Seen:
    """What an image or video analysis saw: its camera (or files), and the middle frame as its key frame."""
    cameras = call.data.get("camera_entity_id") or []
    camera = cameras if isinstance(cameras, str) else next(iter(cameras), None)
    files = [Path(p).name for p in (call.data.get("image_path") or [call.data.get("video_path")]) if p]
    source = camera or ", ".join(files) or "-"
    key_frame = frames[len(frames) // 2].jpeg
    return Seen(source, camera, started, result.text.strip(), decision.role, result.model, key_frame)


def _heard(result: ChatResult) -> dict[str, Any]:
    """What the clips took: their seconds, and their tokens of the prompt."""
    return {"audio_seconds": result.audio_seconds, "audio_tokens": result.audio_tokens}


def _response(decision: RouteDecision, result: ChatResult) -> dict[str, Any]:
    """The analysis services' answer (the contract's shape)."""
    return {
        "text": result.text.strip(),
        "model": decision.role,
        "route_reason": decision.reason,
        "timings": {
            "load_ms": round(result.load_ms, 1),
            "ttft_ms": round(result.ttft_ms, 1),
            "tokens_per_second": round(result.tokens_per_second, 2),
        },
        "prompt_tokens": result.prompt_tokens,
    }


def _fire(hass: HomeAssistant, call: ServiceCall, decision: RouteDecision, response: dict[str, Any]) -> None:
    hass.bus.async_fire(
        EVENT_ANALYSIS,
        {"service": call.service, "model": decision.role, "route_reason": decision.reason, "text": response["text"]},
    )


def _model_status(status: ModelStatus) -> ServiceResponse:
    return {
        "model": status.role,
        "state": status.state,
        "rss_mb": status.rss_mb,
        "estimate_mb": status.estimate_mb,
        "load_ms": status.load_ms,
    }
