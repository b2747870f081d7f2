"""The transformers backend on real HA (issue 14): a quality role on a tiny Qwen2.5-Omni folder run by
a worker under the torch venv's Python. Its voice through HA's `tts` component, an Assist pipeline
with Sarai Omni STT + agent + TTS, `analyze_image` and Assist turns on it, a killed worker, the budget,
and an integration that loads without the torch venv and says what is missing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
import io
import os
from pathlib import Path
import signal
import sys
from typing import Any
from unittest.mock import patch
import wave

from homeassistant import config_entries
from homeassistant.components import tts
from homeassistant.components.assist_pipeline import PipelineEventType
from homeassistant.components.tts.const import DATA_COMPONENT
from homeassistant.components.tts.entity import TTSAudioRequest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er, issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import (
    CONF_BACKEND,
    CONF_FAST_MODEL,
    CONF_N_CTX,
    CONF_N_THREADS,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    CONF_TORCH_PYTHON,
    DOMAIN,
    ISSUE_TORCH_MISSING,
    QUALITY,
)
from custom_components.sarai_omni.engine import SPEAK, Speech
from custom_components.sarai_omni.flow_schemas import options_schema

from .conftest import EN, entity_of, forget_spoken_audio, make_entry, role_data, shown_errors, turn, wait_loaded
from .test_audio import pcm_and_seconds, run_voice_pipeline, speech  # noqa: F401  (speech: a fixture)
from .test_services import call


def tts_entity(hass: HomeAssistant, entity_id: str | None) -> tts.TextToSpeechEntity:
    assert entity_id is not None
    entity = hass.data[DATA_COMPONENT].get_entity(entity_id)
    assert entity is not None
    return entity


async def setup_omni(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_omni: Path, python: str, **agent: Any
) -> MockConfigEntry:
    hass.config.allowlist_external_dirs |= {str(tiny_omni.parent)}
    await forget_spoken_audio(hass)
    data = {**entry_data, CONF_QUALITY_MODEL: str(tiny_omni), CONF_RAM_BUDGET_MB: 4096}
    entry = make_entry(hass, data, folders=(QUALITY,), **agent)
    hass.config_entries.async_update_entry(entry, options={CONF_TORCH_PYTHON: python})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    return entry


@pytest.fixture
async def omni_entry(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_omni: Path, torch_venv_python: Path
) -> AsyncGenerator[MockConfigEntry]:
    """Fast: the tiny GGUF; quality: the tiny Omni folder on transformers; the agent on quality."""
    entry = await setup_omni(hass, entry_data, tiny_omni, str(torch_venv_python), model=QUALITY, max_tokens=8)
    await wait_loaded(entry)
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(entry.entry_id)


def read_wav(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of a complete WAV (its header's length must be true)."""
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), w.getnframes() / w.getframerate()


@pytest.mark.parametrize(("language", "message"), [("en", "Hello, how are you?"), ("es", "Hola, ¿qué tal?")])
async def test_tts_through_ha_is_a_wav_with_audio(
    hass: HomeAssistant, omni_entry: MockConfigEntry, language: str, message: str
) -> None:
    entity_id = entity_of(hass, omni_entry, "tts")
    assert entity_id is not None
    entity = tts_entity(hass, entity_id)
    assert language in entity.supported_languages
    assert [v.voice_id for v in entity.async_get_supported_voices(language) or []] == ["Chelsie", "Ethan"]
    media_id = tts.generate_media_source_id(
        hass, message, engine=entity_id, language=language,
        options={tts.ATTR_VOICE: "Ethan", tts.ATTR_PREFERRED_FORMAT: "wav"},
    )  # fmt: skip
    extension, data = await tts.async_get_media_source_audio(hass, media_id)
    assert extension == "wav"
    rate, seconds = read_wav(data)
    assert rate == 24000
    assert seconds > 0
    status = omni_entry.runtime_data.engine.status(QUALITY)  # the model spoke (no cache answered)
    assert status.last.voice == "Ethan"
    assert status.last.speech_seconds == pytest.approx(seconds, abs=0.01)


async def test_tts_speaks_streamed_text_sentence_by_sentence(hass: HomeAssistant, omni_entry: MockConfigEntry) -> None:
    """The first sentence is spoken before the second is written (the pipeline's streaming case)."""
    entity_id = entity_of(hass, omni_entry, "tts")
    entity = tts_entity(hass, entity_id)
    assert entity.async_supports_streaming_input()
    first_audio = asyncio.Event()
    said: list[str] = []
    engine = omni_entry.runtime_data.engine
    real = engine.speak_stream

    def speak_stream(role: str, text: str, voice: str | None = None, **how: Any) -> AsyncIterator[Speech]:
        said.append(text)
        pieces: AsyncIterator[Speech] = real(role, text, voice, **how)
        return pieces

    async def reply() -> AsyncGenerator[str]:
        yield "Hola, ¿qué tal? "
        yield "Muy "
        await first_audio.wait()  # the agent is still writing when the first sentence is heard
        yield "bien."

    with patch.object(engine, "speak_stream", speak_stream):
        response = await entity.internal_async_stream_tts_audio(TTSAudioRequest("es", {}, reply()))
        assert response.extension == "wav"
        parts = []
        async for part in response.data_gen:
            parts.append(part)
            if len(parts) == 2:  # the streaming header, then the first sentence's PCM
                first_audio.set()
    assert said == ["Hola, ¿qué tal?", "Muy bien."]
    with wave.open(io.BytesIO(parts[0])) as w:
        assert (w.getframerate(), w.getnframes()) == (24000, 0)  # a stream: its length is not known yet
    assert sum(len(p) for p in parts[1:]) > 0


async def test_assist_pipeline_with_sarai_stt_agent_and_tts_completes_every_stage(
    hass: HomeAssistant,
    omni_entry: MockConfigEntry,
    speech: dict[str, Path],  # noqa: F811
) -> None:
    tts_id = entity_of(hass, omni_entry, "tts")
    assert tts_id is not None
    pcm, _ = pcm_and_seconds(speech["en"])
    events = await run_voice_pipeline(hass, omni_entry, pcm, tts_id, tts_audio_output="wav")
    kinds = [e.type for e in events]
    for stage in (PipelineEventType.STT_END, PipelineEventType.INTENT_END, PipelineEventType.TTS_END):
        assert stage in kinds
    tts_end = next(e.data for e in events if e.type == PipelineEventType.TTS_END)
    assert tts_end is not None
    stream = tts.async_get_stream(hass, tts_end["tts_output"]["token"])
    assert stream is not None
    assert stream.extension == "wav"
    data = b"".join([chunk async for chunk in stream.async_stream_result()])
    assert data[:4] == b"RIFF"
    with wave.open(io.BytesIO(data)) as w:
        rate = w.getframerate()
    assert (len(data) - 44) / 2 / rate > 0  # speech after the header (streamed: its length is the file's)
    status = omni_entry.runtime_data.engine.status(QUALITY)
    assert (status.last.speech_seconds or 0) > 0, (len(data), status, [e.data for e in events][-4:])


async def test_analyze_image_and_an_assist_turn_on_the_transformers_role(
    hass: HomeAssistant, omni_entry: MockConfigEntry, jpeg: Path
) -> None:
    hass.config.allowlist_external_dirs |= {str(jpeg.parent)}
    response = await call(hass, "analyze_image", image_path=[str(jpeg)], prompt="What is it?", model=QUALITY)
    assert response["model"] == QUALITY
    assert isinstance(response["text"], str)
    status = omni_entry.runtime_data.engine.status(QUALITY)
    assert status.backend == "transformers"
    assert status.last.images == 1
    result = await turn(hass, omni_entry, "Hello there", lambda _: None)
    assert result.response.response_type.value == "action_done"
    assert omni_entry.runtime_data.engine.status(QUALITY).last.images == 0  # the turn was the last request


async def test_a_killed_worker_is_a_spoken_error_then_the_next_turn_works(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_omni: Path, torch_venv_python: Path
) -> None:
    entry = await setup_omni(hass, entry_data, tiny_omni, str(torch_venv_python), model=QUALITY, max_tokens=4000)
    await wait_loaded(entry, QUALITY)
    backend = entry.runtime_data.engine.pool.slot(QUALITY).backend
    pid = backend.client.pid
    assert pid is not None

    def kill_at_the_first_word(delta: dict[str, Any]) -> None:
        if delta.get("content") and backend.client.pid == pid:
            os.kill(pid, signal.SIGKILL)

    with patch("custom_components.sarai_omni.entity.ChatRequest", _endless):
        broken = await turn(hass, entry, "Hello there", kill_at_the_first_word)
    assert broken.response.response_type.value == "error"
    assert "SIGKILL" in broken.response.speech["plain"]["speech"]
    again = await turn(hass, entry, "Hello there", lambda _: None)
    assert again.response.response_type.value == "action_done"
    assert backend.client.pid not in (None, pid)
    assert await hass.config_entries.async_unload(entry.entry_id)


def _endless(*args: Any, **kwargs: Any) -> Any:
    """The entity's ChatRequest, never ending on its own (the kill must land mid-generation)."""
    from custom_components.sarai_omni.engine import ChatRequest

    return ChatRequest(*args, **{**kwargs, "ignore_eos": True})


async def test_the_workers_rss_is_in_the_sensors_and_the_budget(
    hass: HomeAssistant, omni_entry: MockConfigEntry
) -> None:
    engine = omni_entry.runtime_data.engine
    await engine.load(QUALITY)
    rss = engine.pool.slot(QUALITY).backend.resident_bytes()
    assert rss > 0
    registry = er.async_get(hass)
    sensor = registry.async_get_entity_id("sensor", DOMAIN, f"{omni_entry.entry_id}_{QUALITY}_rss")
    assert sensor is not None
    omni_entry.runtime_data.engine._changed()
    await hass.async_block_till_done()
    state = hass.states.get(sensor)
    assert state is not None
    assert float(state.state) == pytest.approx(rss / 2**20, rel=0.2)
    assert engine.pool.used_bytes() >= engine.pool.slot(QUALITY).estimate >= rss


async def test_without_the_torch_venv_it_loads_and_says_what_is_missing(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_omni: Path, tmp_path: Path
) -> None:
    python = str(tmp_path / "no-torch-venv" / "bin" / "python")
    entry = await setup_omni(hass, entry_data, tiny_omni, python)
    await wait_loaded(entry)  # the fast model answers meanwhile
    await hass.async_block_till_done()
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_TORCH_MISSING)
    assert issue is not None
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["python"] == python
    tts_id = entity_of(hass, entry, "tts")
    assert tts_id is not None  # its voices are read without torch
    media_id = tts.generate_media_source_id(
        hass, "Hello.", engine=tts_id, language="en", options={tts.ATTR_PREFERRED_FORMAT: "wav"}
    )
    with pytest.raises(HomeAssistantError) as raised:
        await tts.async_get_media_source_audio(hass, media_id)
    assert "no-torch-venv" in str(raised.value)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_the_flow_takes_a_model_folder_and_the_options_check_the_torch_python(
    hass: HomeAssistant, tiny_qwen2: Path, tiny_omni: Path, torch_venv_python: Path, tmp_path: Path
) -> None:
    hass.config.allowlist_external_dirs |= {str(tiny_omni.parent), str(tmp_path)}
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    form = {CONF_FAST_MODEL: str(tiny_qwen2), CONF_RAM_BUDGET_MB: 2048, CONF_N_THREADS: 2, CONF_N_CTX: 512}
    with (
        patch("custom_components.sarai_omni.integration.async_setup_entry", return_value=True),
        patch("custom_components.sarai_omni.integration.async_unload_entry", return_value=True),
    ):
        flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
        wrong = await hass.config_entries.flow.async_configure(
            flow["flow_id"], {**form, CONF_QUALITY_MODEL: str(tmp_path)}
        )
        assert shown_errors(wrong) == {CONF_QUALITY_MODEL: "unsupported_folder"}
        assert "llama" in (wrong["description_placeholders"] or {})["found"]
        done = await hass.config_entries.flow.async_configure(
            flow["flow_id"], {**form, CONF_QUALITY_MODEL: str(tiny_omni)}
        )
        assert done["type"] is FlowResultType.CREATE_ENTRY
        entry = hass.config_entries.async_entries(DOMAIN)[0]
        assert role_data(entry, QUALITY)[CONF_BACKEND] == "transformers"  # a folder: decided by the flow
        options = await hass.config_entries.options.async_init(entry.entry_id)
        assert options["data_schema"] is not None
        assert CONF_TORCH_PYTHON in {str(k) for k in options["data_schema"].schema}
        tuned = {**options_schema(torch=True)({}), CONF_TORCH_PYTHON: sys.executable}  # HA's Python: no torch
        refused = await hass.config_entries.options.async_configure(options["flow_id"], tuned)
        assert shown_errors(refused, EN["options"]) == {CONF_TORCH_PYTHON: "torch_not_importable"}
        assert "cannot import torch" in (refused["description_placeholders"] or {})["error"]
        saved = await hass.config_entries.options.async_configure(
            options["flow_id"], {**tuned, CONF_TORCH_PYTHON: str(torch_venv_python)}
        )
    assert saved["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_TORCH_PYTHON] == str(torch_venv_python)


async def test_without_a_model_that_speaks_there_is_no_tts(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    assert entity_of(hass, loaded_entry, "tts") is None  # GGUF roles only: nothing speaks
    assert loaded_entry.runtime_data.engine.best_for(SPEAK) is None
