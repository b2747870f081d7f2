"""Speech-to-text with the model that hears (Qwen2.5-Omni's audio encoder): an Assist pipeline's
STT stage. The entity exists only when a configured model's projector hears; the transcript is
the model's answer to a transcription instruction in the speaker's language, nothing else.

The role that hears soonest transcribes (a loaded one, else the smallest). Where its backend takes
speech while it is spoken (llama.cpp: engine `listen`), the first audio starts the session (and the
model's load), each completed 2 s window is encoded and prefilled while the person still speaks,
and at the end of speech only the tail and the transcript remain. If that fails midway, the whole
clip is transcribed the ordinary way; a cancelled stream ends its session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
import contextlib
import logging
from pathlib import Path
from uuid import uuid4

from homeassistant.components import stt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .audio import MAX_STT_SECONDS, transcription_prompt, wav_bytes
from .const import DOMAIN, TITLE
from .engine import HEAR, ChatRequest, ChatResult, Engine, EngineError, Message
from .models import SaraiConfigEntry
from .services import hear
from .vision import temp_dir

_LOGGER = logging.getLogger(__name__)
PARALLEL_UPDATES = 0
# Languages Qwen2.5-Omni's speech recognition was trained on (its model card), as HA language codes.
LANGUAGES = ["en", "es", "zh", "fr", "de", "it", "pt", "ru", "ja", "ko", "nl", "ar"]
RATE = 16000  # what the projector's audio encoder takes; the pipeline is asked for it
TRANSCRIPT_TOKENS = 256
WINDOW_BYTES = 2 * RATE * 2  # 2 s of 16-bit mono: one window of Omni's audio encoder


def hearing_role(entry: SaraiConfigEntry) -> str | None:
    """The role that transcribes soonest: a loaded one that hears, else the smallest that fits."""
    return entry.runtime_data.engine.quickest_for(HEAR)


async def async_setup_entry(
    hass: HomeAssistant, entry: SaraiConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """One STT entity, when a configured model hears (its projector has an audio encoder)."""
    if (role := hearing_role(entry)) is None:
        _LOGGER.debug("No configured model hears (no projector with an audio encoder): no speech-to-text")
        return
    async_add_entities([SaraiSpeechToText(entry, role)])


class SaraiSpeechToText(stt.SpeechToTextEntity):
    """Transcribes the pipeline's 16 kHz mono PCM with the model that hears."""

    _attr_has_entity_name = True
    _attr_translation_key = "speech_to_text"

    def __init__(self, entry: SaraiConfigEntry, role: str) -> None:
        self.entry, self.role = entry, role
        self._attr_unique_id = f"{entry.entry_id}_stt"
        self._attr_device_info = dr.DeviceInfo(identifiers={(DOMAIN, entry.entry_id)}, manufacturer=TITLE)

    @property
    def supported_languages(self) -> list[str]:
        return LANGUAGES

    @property
    def supported_formats(self) -> list[stt.AudioFormats]:
        return [stt.AudioFormats.WAV]

    @property
    def supported_codecs(self) -> list[stt.AudioCodecs]:
        return [stt.AudioCodecs.PCM]

    @property
    def supported_bit_rates(self) -> list[stt.AudioBitRates]:
        return [stt.AudioBitRates.BITRATE_16]

    @property
    def supported_sample_rates(self) -> list[stt.AudioSampleRates]:
        return [stt.AudioSampleRates.SAMPLERATE_16000]

    @property
    def supported_channels(self) -> list[stt.AudioChannels]:
        return [stt.AudioChannels.CHANNEL_MONO]

    async def async_process_audio_stream(
        self, metadata: stt.SpeechMetadata, stream: AsyncIterable[bytes]
    ) -> stt.SpeechResult:
        engine, role = self.entry.runtime_data.engine, hearing_role(self.entry) or self.role
        prompt = transcription_prompt(metadata.language)
        listener = Listener(engine, role, prompt) if engine.listens(role) else None
        try:
            pcm = await _collect(stream, MAX_STT_SECONDS * RATE * 2, listener)
            if not pcm:
                return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
            result = await listener.transcript(pcm) if listener else None
            if result is None:
                result = await self._whole(pcm, prompt, role)
        except HomeAssistantError as err:  # translated: the pipeline reports it as the STT error
            _LOGGER.error("Sarai Omni could not transcribe: %s", err)
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        finally:
            if listener:
                await listener.close()
        return stt.SpeechResult(result.text.strip(), stt.SpeechResultState.SUCCESS)

    async def _whole(self, pcm: bytes, prompt: str, role: str) -> ChatResult:
        """The clip as one WAV file, transcribed at once."""
        async with temp_dir(self.hass, "sarai_stt_") as folder:
            clip = Path(folder) / "speech.wav"
            await self.hass.async_add_executor_job(clip.write_bytes, wav_bytes(pcm, RATE))
            _, result = await hear(
                self.hass, self.entry, [clip], prompt=prompt, model=role, max_tokens=TRANSCRIPT_TOKENS, temperature=0.0
            )
        return result


class Listener:
    """One utterance taken while it is spoken: the session starts at the first audio (loading the
    model meanwhile), each completed window is prefilled in order, the tail goes with the transcript."""

    def __init__(self, engine: Engine, role: str, prompt: str) -> None:
        self.engine, self.role, self.session = engine, role, uuid4().hex
        self.messages: list[Message] = [
            {"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "audio", "path": "stream"}]}
        ]
        self._fed = 0  # bytes of the stream already handed to the session
        self._queue: asyncio.Task[None] | None = None
        self.failed: str | None = None
        self._finished = False

    def heard(self, pcm: bytearray) -> None:
        """The stream so far: start the session at once, then hand over each completed window."""
        if self._queue is None:
            self._queue = asyncio.create_task(self._feed(None, b""), name="sarai_omni listen")
        while len(pcm) - self._fed >= WINDOW_BYTES:
            piece = bytes(pcm[self._fed : self._fed + WINDOW_BYTES])
            self._fed += WINDOW_BYTES
            self._queue = asyncio.create_task(self._feed(self._queue, piece), name="sarai_omni listen")

    async def _feed(self, before: asyncio.Task[None] | None, piece: bytes) -> None:
        if before is not None:
            await before
        if self.failed is None:
            try:
                await self.engine.listen(self.role, self.session, self.messages, piece)
            except EngineError as err:
                self.failed = str(err)

    async def transcript(self, pcm: bytes) -> ChatResult | None:
        """The transcript after the tail; None when the session failed (the caller hears it whole)."""
        if self._queue is not None:
            await self._queue
        if self.failed is None:
            request = ChatRequest(
                messages=self.messages,
                role=self.role,
                max_tokens=TRANSCRIPT_TOKENS,
                temperature=0.0,
                route_reason="speech-to-text: heard while spoken",
                listening=self.session,
                pcm=pcm[self._fed :],
            )
            try:
                result = await self.engine.complete(request)
            except EngineError as err:
                self.failed = str(err)
            else:
                self._finished = True
                return result
        _LOGGER.warning("Listening while spoken failed (%s): transcribing the whole clip", self.failed)
        return None

    async def close(self) -> None:
        """End an unfinished session (the stream was cancelled or the transcript failed)."""
        if self._queue is not None and not self._queue.done():
            self._queue.cancel()
            with contextlib.suppress(asyncio.CancelledError, EngineError):
                await self._queue
        if not self._finished and self._queue is not None:
            with contextlib.suppress(EngineError):
                await self.engine.forget(self.role, self.session)


async def _collect(stream: AsyncIterable[bytes], limit: int, listener: Listener | None) -> bytes:
    """The stream's bytes, up to `limit` (a pipeline that never stops speaking is cut there), each
    piece shown to the listener as it comes."""
    pcm = bytearray()
    async for chunk in stream:
        pcm += chunk[: max(limit - len(pcm), 0)]
        if listener and pcm:
            listener.heard(pcm)
    return bytes(pcm)
