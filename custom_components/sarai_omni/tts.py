"""Text-to-speech with Qwen2.5-Omni's talker (a transformers role): an Assist pipeline's TTS stage.

The entity exists only when a configured model speaks. Input may stream (`async_stream_tts_audio`):
each sentence is spoken as soon as it is complete, so a pipeline starts talking while the agent is
still writing. A message that arrives whole is one WAV whose header says its true length; a
streamed one is a WAV header with zero frames followed by each sentence's PCM (as HA's Wyoming
integration streams WAV).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
import logging
from typing import Any

from homeassistant.components import tts
from homeassistant.components.tts.entity import TTSAudioRequest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .audio import wav_bytes
from .const import DOMAIN, TITLE
from .engine import SENTENCE_END, SPEAK, Speech, defaults, sentences
from .errors import engine_call
from .models import SaraiConfigEntry

_LOGGER = logging.getLogger(__name__)
PARALLEL_UPDATES = 0
# Qwen2.5-Omni's talker speaks English and Chinese (its model card) and Spanish; the pipeline asks by these.
LANGUAGES = ["en", "es", "zh"]


async def async_setup_entry(
    hass: HomeAssistant, entry: SaraiConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """One TTS entity, when a configured model speaks (a talker and voices)."""
    if (role := entry.runtime_data.engine.best_for(SPEAK)) is None:
        _LOGGER.debug("No configured model speaks (a Qwen2.5-Omni folder on transformers does): no TTS")
        return
    async_add_entities([SaraiTextToSpeech(entry, role)])


class SaraiTextToSpeech(tts.TextToSpeechEntity):
    """Speaks with the talker of the model that has one; WAV out, streaming text in."""

    _attr_has_entity_name = True
    _attr_translation_key = "text_to_speech"
    _attr_supported_options = [tts.ATTR_VOICE]

    def __init__(self, entry: SaraiConfigEntry, role: str) -> None:
        self.entry, self.role = entry, role
        self._attr_unique_id = f"{entry.entry_id}_tts"
        self._attr_device_info = dr.DeviceInfo(identifiers={(DOMAIN, entry.entry_id)}, manufacturer=TITLE)
        self._attr_supported_languages = LANGUAGES

    @property
    def default_language(self) -> str:
        language = self.hass.config.language.split("-", maxsplit=1)[0]
        return language if language in LANGUAGES else "en"

    @property
    def default_options(self) -> dict[str, Any]:
        return {tts.ATTR_VOICE: self._voices()[0]}

    def async_get_supported_voices(self, language: str) -> list[tts.Voice]:
        return [tts.Voice(voice, voice) for voice in self._voices()]

    def _voices(self) -> list[str]:
        """The model's voices, the seed's default speaker first."""
        voices = list(self.entry.runtime_data.engine.voices(self.role))
        return sorted(voices, key=lambda v: v != defaults.VOICE)

    async def async_get_tts_audio(self, message: str, language: str, options: dict[str, Any]) -> tts.TtsAudioType:
        return "wav", (await self._speak(message, options)).wav()

    async def async_stream_tts_audio(self, request: TTSAudioRequest) -> tts.TTSAudioResponse:
        return tts.TTSAudioResponse("wav", self._stream(request.message_gen, request.options))

    async def _stream(self, message: AsyncIterator[str], options: dict[str, Any]) -> AsyncGenerator[bytes]:
        chunks, said, text = _Lookahead(message), False, ""
        while (chunk := await chunks.next()) is not None:
            text += chunk
            *done, text = SENTENCE_END.split(text)
            if not done:
                continue
            if not said and await chunks.at_end():  # the message came whole: one WAV of its true length
                text = " ".join([*done, text])
                break
            speech = await self._speak(" ".join(done), options)
            if not said:
                yield wav_bytes(b"", speech.sample_rate)  # zero frames: the length is not known yet
                said = True
            yield speech.pcm
        if not sentences(text):
            if not said:
                raise HomeAssistantError(translation_domain=DOMAIN, translation_key="nothing_to_say")
            return
        speech = await self._speak(text, options)
        yield speech.pcm if said else speech.wav()

    async def _speak(self, text: str, options: dict[str, Any]) -> Speech:
        engine = self.entry.runtime_data.engine
        voice = str(options.get(tts.ATTR_VOICE) or self._voices()[0])
        if voice not in self._voices():
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="unknown_voice",
                translation_placeholders={"voice": voice, "voices": ", ".join(self._voices())},
            )
        return await engine_call(engine.speak(self.role, text, voice))


class _Lookahead:
    """The message's chunks, with one look ahead to tell whether it has ended."""

    def __init__(self, chunks: AsyncIterator[str]) -> None:
        self._chunks, self._held, self._ended = chunks, "", False
        self._holding = False

    async def next(self) -> str | None:
        if self._holding:
            self._holding = False
            return self._held
        if self._ended:
            return None
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            self._ended = True
            return None

    async def at_end(self) -> bool:
        if not self._holding and not self._ended:
            chunk = await self.next()
            if chunk is not None:
                self._held, self._holding = chunk, True
        return self._ended and not self._holding
