"""A voice on llama.cpp through HA (issue 28): the TTS entity speaks with a Qwen3-TTS role (tiny,
random weights: noise with real names, shapes, rates and timing), beside the seeds' fast and quality
models; and a whole Assist voice pipeline runs locally: Sarai Omni STT, agent and TTS."""

from __future__ import annotations

from collections.abc import AsyncGenerator
import io
import os
from pathlib import Path
import signal
from typing import Any
import wave

from homeassistant.components import tts
from homeassistant.components.assist_pipeline import PipelineEventType
from homeassistant.components.tts.entity import TTSAudioRequest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import (
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_N_CTX,
    CONF_RAM_BUDGET_MB,
    CONF_ROLE,
    SUBENTRY_MODEL,
)
from custom_components.sarai_omni.engine.voices import QWEN3TTS_LANGUAGES
from custom_components.sarai_omni.settings import role_data

from .conftest import entity_of, forget_spoken_audio, make_entry, wait_loaded
from .test_audio import pcm_and_seconds, run_voice_pipeline, speech  # noqa: F401  (speech: a fixture)
from .test_transformers import read_wav, tts_entity

LONG = "This sentence is long enough that its first seconds of speech go out before the voice has finished it."


@pytest.fixture
async def voice_entry(
    hass: HomeAssistant, seed_form: dict[str, Any], voice: tuple[Path, Path]
) -> AsyncGenerator[MockConfigEntry]:
    """The seeds' pair, tiny (fast a Qwen3-VL, quality a Qwen2.5-Omni that hears) and a Qwen3-TTS voice."""
    await forget_spoken_audio(hass)
    talker, projector = voice
    role = role_data("voice", model=str(talker), mmproj=str(projector), n_ctx=1024)
    entry = make_entry(hass, seed_form, roles=(role,))
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize(("language", "message"), [("en", "Hello, how are you?"), ("es", "Hola, ¿qué tal?")])
async def test_the_voice_speaks_a_wav_through_has_tts(
    hass: HomeAssistant, voice_entry: MockConfigEntry, language: str, message: str
) -> None:
    entity_id = entity_of(hass, voice_entry, "tts")
    entity = tts_entity(hass, entity_id)
    assert list(entity.supported_languages) == list(QWEN3TTS_LANGUAGES)
    assert [v.voice_id for v in entity.async_get_supported_voices(language) or []] == ["Sarai"]
    media_id = tts.generate_media_source_id(
        hass, message, engine=entity_id, language=language, options={tts.ATTR_PREFERRED_FORMAT: "wav"}
    )
    extension, data = await tts.async_get_media_source_audio(hass, media_id)
    assert extension == "wav"
    rate, seconds = read_wav(data)
    assert rate == 24000
    assert seconds > 0
    status = voice_entry.runtime_data.engine.status("voice")  # the voice spoke (no cache answered)
    assert status.last.voice == "Sarai"
    assert status.last.speech_seconds == pytest.approx(seconds, abs=0.01)


async def test_streamed_text_is_spoken_piece_by_piece(hass: HomeAssistant, voice_entry: MockConfigEntry) -> None:
    """A streamed reply: a zero-length WAV header, then the PCM as code2wav makes it; a long sentence
    comes in more than one piece."""
    entity = tts_entity(hass, entity_of(hass, voice_entry, "tts"))

    async def reply() -> AsyncGenerator[str]:
        yield "Hello there. "
        yield LONG

    response = await entity.internal_async_stream_tts_audio(TTSAudioRequest("en", {}, reply()))
    parts = [part async for part in response.data_gen]
    with wave.open(io.BytesIO(parts[0])) as w:
        assert (w.getframerate(), w.getnframes()) == (24000, 0)  # a stream: its length is not known yet
    pcm = parts[1:]
    assert len(pcm) >= 3  # the first sentence, then the long one in at least two pieces
    assert all(len(p) % (2 * 1920) == 0 for p in pcm)  # whole 80 ms frames


async def test_an_assist_voice_pipeline_runs_stt_agent_and_tts_all_local(
    hass: HomeAssistant,
    voice_entry: MockConfigEntry,
    speech: dict[str, Path],  # noqa: F811
) -> None:
    """espeak-ng's WAV in; Sarai Omni STT (the quality model hears), the agent (fast), Sarai Omni TTS
    (the voice) out: every stage ran on this machine's models."""
    tts_id = entity_of(hass, voice_entry, "tts")
    pcm, _ = pcm_and_seconds(speech["en"])
    events = await run_voice_pipeline(hass, voice_entry, pcm, tts_id, tts_voice="Sarai", tts_audio_output="wav")
    kinds = [e.type for e in events]
    assert kinds.index(PipelineEventType.STT_END) < kinds.index(PipelineEventType.INTENT_END)
    assert kinds.index(PipelineEventType.INTENT_END) < kinds.index(PipelineEventType.TTS_END)
    tts_end = next(e.data for e in events if e.type == PipelineEventType.TTS_END)
    assert tts_end is not None
    stream = tts.async_get_stream(hass, tts_end["tts_output"]["token"])
    assert stream is not None
    data = b"".join([chunk async for chunk in stream.async_stream_result()])
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == 16000  # the pipeline's own output format: HA resampled the 24 kHz voice
    engine = voice_entry.runtime_data.engine
    assert (engine.status("quality").last.audio_tokens or 0) > 0  # it heard the clip
    assert engine.status("fast").last.ttft_ms is not None  # the agent answered
    assert (engine.status("voice").last.speech_seconds or 0) > 0  # and the voice said it
    assert len(data) > 44


async def test_the_model_flow_adds_a_voice_and_counts_its_ram(
    hass: HomeAssistant, entry_data: dict[str, Any], voice: tuple[Path, Path]
) -> None:
    """A Qwen3-TTS pair is a role like any other: the form takes its files, refuses a budget that
    cannot hold it beside the others (saying what they need), and with room the entity speaks."""
    entry = make_entry(hass, {**entry_data, CONF_RAM_BUDGET_MB: 200})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    talker, projector = voice
    form = {CONF_ROLE: "voice", CONF_MODEL_PATH: str(talker), CONF_MMPROJ_PATH: str(projector), CONF_N_CTX: 1024}
    flows = hass.config_entries.subentries
    result = await flows.async_init((entry.entry_id, SUBENTRY_MODEL), context={"source": "user"})
    result = await flows.async_configure(result["flow_id"], form)
    assert result.get("errors") == {CONF_RAM_BUDGET_MB: "does_not_fit_budget"}, result
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    assert "qwen3tts" in placeholders["models"]  # the talker and its projector, each on its line
    assert int(placeholders["needed_mb"]) > 200
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_RAM_BUDGET_MB: 4096})
    await hass.async_block_till_done()  # a new budget reloads the entry
    await wait_loaded(entry)
    result = await flows.async_init((entry.entry_id, SUBENTRY_MODEL), context={"source": "user"})
    result = await flows.async_configure(result["flow_id"], form)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()  # the entry reloads with the new role
    await wait_loaded(entry)
    assert entity_of(hass, entry, "tts") is not None
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_a_voice_killed_mid_sentence_is_a_translated_error_and_the_next_sentence_is_spoken(
    hass: HomeAssistant, voice_entry: MockConfigEntry
) -> None:
    entity = tts_entity(hass, entity_of(hass, voice_entry, "tts"))
    engine = voice_entry.runtime_data.engine
    await engine.load("voice")
    pid = engine.pool.slot("voice").backend.pid

    async def reply() -> AsyncGenerator[str]:  # a reply still being written: spoken piece by piece
        yield f"{LONG} "
        yield "And more. "
        yield "The end."

    response = await entity.internal_async_stream_tts_audio(TTSAudioRequest("en", {}, reply()))

    async def listen_and_kill() -> None:
        heard = 0
        async for _ in response.data_gen:
            heard += 1
            if heard == 2:  # the header and the first piece are out: the voice dies mid-sentence
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(HomeAssistantError) as failed:
        await listen_and_kill()
    assert failed.value.translation_key == "worker_crashed"
    media_id = tts.generate_media_source_id(
        hass, "The next sentence.", engine=entity.entity_id, language="en", options={tts.ATTR_PREFERRED_FORMAT: "wav"}
    )
    _, data = await tts.async_get_media_source_audio(hass, media_id)
    assert read_wav(data)[1] > 0  # a new worker spoke it
    assert engine.pool.slot("voice").backend.pid != pid
