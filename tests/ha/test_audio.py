"""Omni's ears on real HA + real llama.cpp (issue 13): the STT entity in an Assist pipeline,
`analyze_audio`, audio attachments in AI Task, a video's sound. On the seeds' layouts, tiny: the fast
model a Qwen3-VL, the quality model a Qwen2.5-Omni whose projector hears (random weights: the
transcript is noise, its path is real)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
from pathlib import Path
import shutil
import subprocess
from typing import Any
from unittest.mock import patch
import wave

from homeassistant.components import ai_task, assist_pipeline, stt
from homeassistant.components.assist_pipeline import PipelineEvent, PipelineEventType
from homeassistant.components.assist_pipeline.pipeline import PipelineStage
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.audio import transcription_prompt
from custom_components.sarai_omni.engine import ChatRequest, InvalidInput
from custom_components.sarai_omni.services import EVENT_ANALYSIS

from ..conftest import write_speechlike
from .conftest import agent_id, entity_of
from .test_assist import spy_requests, state_attrs

SPOKEN = {"en": "Turn on the kitchen light", "es": "Enciende la luz de la cocina"}


def stt_entity(hass: HomeAssistant, entry: MockConfigEntry) -> str | None:
    return entity_of(hass, entry, "stt")


async def run_voice_pipeline(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    pcm: bytes,
    tts_id: str | None = None,
    tts_voice: str = "Chelsie",
    **run: Any,
) -> list[PipelineEvent]:
    """An Assist pipeline with Sarai Omni STT and agent (and `tts_id` speaking in `tts_voice`, if any)
    run on `pcm` (English)."""
    assert await async_setup_component(hass, "assist_pipeline", {})
    stt_id = stt_entity(hass, entry)
    assert stt_id is not None
    pipeline = await assist_pipeline.async_create_default_pipeline(
        hass,
        stt_engine_id=stt_id,
        tts_engine_id=tts_id,  # type: ignore[arg-type]  # HA takes None: it skips TTS
        pipeline_name="Sarai Omni voice",
    )
    assert pipeline is not None
    await assist_pipeline.async_update_pipeline(
        hass, pipeline, conversation_engine=agent_id(hass, entry), language="en", stt_language="en",
        tts_language="en", tts_voice=tts_voice,  # used only where there is a TTS stage
    )  # fmt: skip
    events: list[PipelineEvent] = []
    await assist_pipeline.async_pipeline_from_audio_stream(
        hass,
        context=Context(),
        event_callback=events.append,
        stt_metadata=metadata("en"),
        stt_stream=chunks(pcm),
        pipeline_id=pipeline.id,
        **run,
    )
    kinds = [e.type for e in events]
    assert PipelineEventType.ERROR not in kinds, [e.data for e in events if e.type == PipelineEventType.ERROR]
    return events


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Spoken sentences (espeak-ng), as the pipeline delivers them: 16 kHz mono 16-bit WAV (ffmpeg)."""
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("needs espeak-ng and ffmpeg (scripts/setup installs both where it may use apt)")
    folder, clips = tmp_path_factory.mktemp("speech"), {}
    for lang, text in SPOKEN.items():
        raw, out = folder / f"{lang}-22k.wav", folder / f"{lang}.wav"
        subprocess.run(["espeak-ng", "-v", lang, "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-ar", "16000", "-ac", "1", "-sample_fmt", "s16", str(out)],
            check=True,
            capture_output=True,
        )
        clips[lang] = out
    return clips


def pcm_and_seconds(path: Path) -> tuple[bytes, float]:
    with wave.open(str(path)) as clip:
        assert (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) == (16000, 1, 2)
        return clip.readframes(clip.getnframes()), clip.getnframes() / 16000


async def chunks(pcm: bytes, size: int = 3200) -> AsyncIterator[bytes]:
    """The pipeline's audio stream: 100 ms chunks."""
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


def metadata(language: str) -> stt.SpeechMetadata:
    return stt.SpeechMetadata(
        language=language,
        format=stt.AudioFormats.WAV,
        codec=stt.AudioCodecs.PCM,
        bit_rate=stt.AudioBitRates.BITRATE_16,
        sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
        channel=stt.AudioChannels.CHANNEL_MONO,
    )


def omni_audio_tokens(samples: int) -> int:
    """Qwen2.5-Omni's audio tokens for a clip (transformers' rule): its frames (one per 160 samples,
    rounded up) in 200-frame windows of 50 tokens, the last (n + 1) // 2 // 2."""
    frames = -(-samples // 160)
    tail = frames % 200
    return frames // 200 * 50 + ((tail + 1) // 2 // 2 if tail >= 3 else 0)


def _audio_parts(request: ChatRequest) -> list[dict[str, Any]]:
    content = request.messages[-1]["content"]
    return [p for p in content if p.get("type") == "audio"] if isinstance(content, list) else []


@pytest.mark.parametrize("language", ["en", "es"])
async def test_stt_entity_transcribes_with_the_model_that_hears(
    hass: HomeAssistant, seed_entry: MockConfigEntry, speech: dict[str, Path], language: str
) -> None:
    entity_id = stt_entity(hass, seed_entry)
    assert entity_id is not None
    entity = stt.async_get_speech_to_text_entity(hass, entity_id)
    assert entity is not None
    assert language in entity.supported_languages
    pcm, seconds = pcm_and_seconds(speech[language])
    seen, spy = spy_requests(seed_entry)
    with spy:
        result = await entity.internal_async_process_audio_stream(metadata(language), chunks(pcm))
    assert result.result is stt.SpeechResultState.SUCCESS
    (request,) = seen  # the transcript: the windows were prefilled while the clip streamed in
    assert request.role == "quality"
    assert request.listening
    assert len(request.pcm) < 2 * 16000 * 2  # only the tail is left at the end of speech
    assert request.messages[-1]["content"][0]["text"] == transcription_prompt(language)
    assert len(_audio_parts(request)) == 1
    assert request.tools is None  # the transcript only: no chat, no tool calls
    attrs = state_attrs(hass, seed_entry, "quality")
    assert attrs["audio_seconds"] == pytest.approx(seconds, abs=0.01)
    assert attrs["audio_tokens"] == omni_audio_tokens(len(pcm) // 2)  # 25 per second, not 750 per clip
    assert attrs["hearing"] == "faithful"
    assert result.text is not None
    assert result.text == result.text.strip()


async def test_assist_pipeline_from_audio_runs_stt_and_the_agent(
    hass: HomeAssistant, seed_entry: MockConfigEntry, speech: dict[str, Path]
) -> None:
    pcm, _ = pcm_and_seconds(speech["en"])
    seen, spy = spy_requests(seed_entry)
    with spy:
        events = await run_voice_pipeline(hass, seed_entry, pcm, end_stage=PipelineStage.INTENT)
    kinds = [e.type for e in events]
    assert kinds.index(PipelineEventType.STT_END) < kinds.index(PipelineEventType.INTENT_START)
    assert PipelineEventType.INTENT_END in kinds
    # the pipeline hands STT whole 10 ms frames: a clip's last partial frame may go
    assert state_attrs(hass, seed_entry, "quality")["audio_tokens"] == pytest.approx(
        omni_audio_tokens(len(pcm) // 2), abs=1
    )
    stt_end = next(e.data for e in events if e.type == PipelineEventType.STT_END)
    assert stt_end is not None
    transcript = stt_end["stt_output"]["text"]
    assert len(seen) == 2  # the transcription, then the agent's turn with the transcript as the user's words
    assert _audio_parts(seen[0])
    user_turn = seen[1].messages[-1]
    assert transcript in str(user_turn["content"])


async def test_analyze_audio_answers_from_the_quality_model(
    hass: HomeAssistant, local_media: str, seed_entry: MockConfigEntry, wav: Path
) -> None:
    hass.config.allowlist_external_dirs |= {str(wav.parent)}
    fired: list[dict[str, Any]] = []
    hass.bus.async_listen(EVENT_ANALYSIS, lambda event: fired.append(dict(event.data)))
    response = await hass.services.async_call(
        "sarai_omni", "analyze_audio", {"audio_path": [str(wav)]}, blocking=True, return_response=True
    )
    assert response is not None
    by_media = await hass.services.async_call(
        "sarai_omni", "analyze_audio", {"audio_path": [local_media]}, blocking=True, return_response=True
    )
    assert by_media is not None
    assert by_media["audio_seconds"] == response["audio_seconds"]  # media-source audio: the same clip
    assert set(response) == {
        "text",
        "model",
        "route_reason",
        "timings",
        "prompt_tokens",
        "audio_seconds",
        "audio_tokens",
    }
    assert response["model"] == "quality"
    assert "audio attached" in str(response["route_reason"])
    assert response["audio_seconds"] == pytest.approx(1.5, abs=0.01)
    assert response["audio_tokens"] == omni_audio_tokens(24000) == 37
    assert isinstance(response["prompt_tokens"], int)
    assert response["prompt_tokens"] > response["audio_tokens"]
    await hass.async_block_till_done()
    assert fired[0]["service"] == "analyze_audio"


@pytest.fixture
async def local_media(hass: HomeAssistant, wav: Path) -> str:
    """The clip's folder as HA's local media, before anything sets up media_source."""
    hass.config.media_dirs = {"local": str(wav.parent)}
    assert await async_setup_component(hass, "media_source", {})
    return f"media-source://media_source/local/{wav.name}"


async def test_ai_task_with_an_audio_attachment_goes_to_the_model_that_hears(
    hass: HomeAssistant, local_media: str, seed_entry: MockConfigEntry
) -> None:
    entities = er.async_entries_for_config_entry(er.async_get(hass), seed_entry.entry_id)
    task = next(e.entity_id for e in entities if e.domain == "ai_task")
    seen, spy = spy_requests(seed_entry)
    with spy:
        await ai_task.async_generate_data(
            hass,
            task_name="sound",
            entity_id=task,
            instructions="What was that sound?",
            attachments=[{"media_content_id": local_media, "media_content_type": "audio/wav"}],
        )
    assert seen[0].role == "quality"
    assert "audio attached" in seen[0].route_reason
    assert len(_audio_parts(seen[0])) == 1


async def test_without_a_model_that_hears_there_is_no_stt_and_audio_is_refused(
    hass: HomeAssistant, vision_entry: MockConfigEntry, wav: Path, tmp_path: Path
) -> None:
    assert stt_entity(hass, vision_entry) is None
    hass.config.allowlist_external_dirs |= {str(wav.parent), str(tmp_path)}
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            "sarai_omni", "analyze_audio", {"audio_path": [str(wav)]}, blocking=True, return_response=True
        )
    assert err.value.translation_key == "no_hearing_model"
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            "sarai_omni", "analyze_audio", {"audio_path": [str(text)]}, blocking=True, return_response=True
        )
    assert err.value.translation_key == "unsupported_audio"


def clip_with_sound(path: Path, seconds: float = 3) -> Path:
    """A real video file with a picture and a 440 Hz tone (ffmpeg's lavfi sources)."""
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"),
            *("-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds), "-pix_fmt", "yuv420p", str(path)),
        ],
        check=True,
    )
    return path


async def _analyze_video(
    hass: HomeAssistant, entry: MockConfigEntry, video: Path
) -> tuple[dict[str, Any], list[ChatRequest]]:
    hass.config.allowlist_external_dirs |= {str(video.parent)}
    seen, spy = spy_requests(entry)
    with spy:
        response = await hass.services.async_call(
            "sarai_omni",
            "analyze_video",
            {"video_path": str(video), "max_frames": 2},
            blocking=True,
            return_response=True,
        )
    assert response is not None
    return dict(response), seen


async def test_analyze_video_sends_the_clips_sound_to_a_model_that_hears(
    hass: HomeAssistant, seed_entry: MockConfigEntry, jpeg: Path
) -> None:
    assert await async_setup_component(hass, "ffmpeg", {})
    video = await hass.async_add_executor_job(clip_with_sound, jpeg.parent / "with-sound.mp4")
    response, seen = await _analyze_video(hass, seed_entry, video)
    assert response["model"] == "quality"
    assert response["frames"] == 2
    assert response["audio_seconds"] == pytest.approx(3.0, abs=0.1)
    (request,) = seen
    assert len(_audio_parts(request)) == 1
    assert sum(1 for p in request.messages[-1]["content"] if p.get("type") == "image") == 2


async def test_analyze_video_on_a_model_that_only_sees_sends_frames_only(
    hass: HomeAssistant, vision_entry: MockConfigEntry, jpeg: Path
) -> None:
    video = await hass.async_add_executor_job(clip_with_sound, jpeg.parent / "with-sound-2.mp4")
    response, seen = await _analyze_video(hass, vision_entry, video)
    assert response["audio_seconds"] == 0.0
    assert not _audio_parts(seen[0])


async def test_a_two_second_command_takes_50_audio_tokens(
    hass: HomeAssistant, seed_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """Through the STT entity (heard while streamed) and analyze_audio (a file): 2 s, 50 tokens."""
    clip = await hass.async_add_executor_job(write_speechlike, tmp_path / "command.wav", 2.0)
    hass.config.allowlist_external_dirs |= {str(tmp_path)}
    pcm, _ = pcm_and_seconds(clip)
    entity = stt.async_get_speech_to_text_entity(hass, stt_entity(hass, seed_entry) or "")
    assert entity is not None
    result = await entity.internal_async_process_audio_stream(metadata("en"), chunks(pcm))
    assert result.result is stt.SpeechResultState.SUCCESS
    heard_by_stt = state_attrs(hass, seed_entry, "quality")["audio_tokens"]
    response = await hass.services.async_call(
        "sarai_omni", "analyze_audio", {"audio_path": [str(clip)]}, blocking=True, return_response=True
    )
    assert response is not None
    assert heard_by_stt == response["audio_tokens"] == omni_audio_tokens(32000) == 50


async def test_a_cancelled_stream_leaves_no_listening_session(
    hass: HomeAssistant, seed_entry: MockConfigEntry, speech: dict[str, Path]
) -> None:
    """The speaker's stream stops midway (the pipeline was cancelled): the session that took its
    first windows is ended in the worker, and the next utterance is transcribed."""
    engine = seed_entry.runtime_data.engine
    pcm, _ = pcm_and_seconds(speech["en"])
    sessions: list[str] = []
    listened = asyncio.Event()

    async def listen(role: str, session: str, messages: list[Any], piece: bytes) -> Any:
        sessions.append(session)
        heard = await type(engine).listen(engine, role, session, messages, piece)
        if piece:
            listened.set()
        return heard

    async def never_ends() -> AsyncIterator[bytes]:
        async for chunk in chunks(pcm * 3):  # more than 2 s: a window is prefilled while it streams
            yield chunk
        await asyncio.Event().wait()  # the speaker never stops: the pipeline cancels

    entity = stt.async_get_speech_to_text_entity(hass, stt_entity(hass, seed_entry) or "")
    assert entity is not None
    with patch.object(engine, "listen", listen):
        task = asyncio.create_task(entity.internal_async_process_audio_stream(metadata("en"), never_ends()))
        await asyncio.wait_for(listened.wait(), 120)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with pytest.raises(InvalidInput, match="listening session is gone"):
        await engine.complete(ChatRequest(messages=[], role="quality", listening=sessions[0]))
    result = await entity.internal_async_process_audio_stream(metadata("en"), chunks(pcm))
    assert result.result is stt.SpeechResultState.SUCCESS


async def test_the_model_that_hears_loads_while_the_person_speaks(
    hass: HomeAssistant, seed_entry: MockConfigEntry, speech: dict[str, Path]
) -> None:
    """The first audio starts the quality model's load: the speaker goes on only once it has begun
    (were the load left for the end of speech, this stream would never end)."""
    engine = seed_entry.runtime_data.engine
    await engine.unload("quality")
    pcm, _ = pcm_and_seconds(speech["en"])

    began = asyncio.Event()
    remove = engine.add_listener(
        lambda: began.set() if engine.status("quality").state in ("loading", "loaded") else None
    )

    async def speaking() -> AsyncIterator[bytes]:
        async for chunk in chunks(pcm):
            yield chunk
            await asyncio.wait_for(began.wait(), 120)

    entity = stt.async_get_speech_to_text_entity(hass, stt_entity(hass, seed_entry) or "")
    assert entity is not None
    assert engine.status("quality").state == "unloaded"
    result = await entity.internal_async_process_audio_stream(metadata("en"), speaking())
    remove()
    assert result.result is stt.SpeechResultState.SUCCESS
    assert state_attrs(hass, seed_entry, "quality")["route_reason"] == "speech-to-text: heard while spoken"
