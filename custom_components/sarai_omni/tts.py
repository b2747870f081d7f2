"""Text-to-speech: an Assist pipeline's TTS stage, with whichever role speaks (a Qwen3-TTS voice on
llama.cpp, Qwen2.5-Omni's talker on transformers).

The entity exists only when a configured model speaks. Input may stream (`async_stream_tts_audio`):
each sentence is spoken as soon as it is complete, and its audio goes out piece by piece as the
voice makes it, so a pipeline starts talking while the agent is still writing. A message that
arrives whole is one WAV whose header says its true length; a streamed one is a WAV header with zero
frames followed by the PCM (as HA's Wyoming integration streams WAV).
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
from .engine import SENTENCE_END, SPEAK, EngineError, Speech, defaults, sentences, speech_languages
from .errors import engine_call, ha_error
from .models import SaraiConfigEntry

_LOGGER = logging.getLogger(__name__)
PARALLEL_UPDATES = 0


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
        self._attr_supported_languages = list(speech_languages(entry.runtime_data.engine.model_files(role)))

    @property
    def default_language(self) -> str:
        language = self.hass.config.language.split("-", maxsplit=1)[0]
        return language if language in self.supported_languages else "en"

    @property
    def default_options(self) -> dict[str, Any]:
        return {tts.ATTR_VOICE: self._voices()[0]}

    def async_get_supported_voices(self, language: str) -> list[tts.Voice]:
        return [tts.Voice(voice, voice) for voice in self._voices()]

    def _voices(self) -> list[str]:
        """The model's voices, the default one first."""
        voices = list(self.entry.runtime_data.engine.voices(self.role))
        return sorted(voices, key=lambda v: v not in defaults.VOICES)

    async def async_get_tts_audio(self, message: str, language: str, options: dict[str, Any]) -> tts.TtsAudioType:
        return "wav", (await self._speak(message, language, options)).wav()

    async def async_stream_tts_audio(self, request: TTSAudioRequest) -> tts.TTSAudioResponse:
        return tts.TTSAudioResponse("wav", self._stream(request.message_gen, request.language, request.options))

    async def _stream(
        self, message: AsyncIterator[str], language: str, options: dict[str, Any]
    ) -> AsyncGenerator[bytes]:
        chunks, said, text = _Lookahead(message), False, ""
        while (chunk := await chunks.next()) is not None:
            text += chunk
            *done, text = SENTENCE_END.split(text)
            if not done:
                continue
            if not said and await chunks.at_end():  # the message came whole: one WAV of its true length
                text = " ".join([*done, text])
                break
            async for piece in self._pieces(" ".join(done), language, options, said):
                said = True
                yield piece
        if not sentences(text):
            if not said:
                raise HomeAssistantError(translation_domain=DOMAIN, translation_key="nothing_to_say")
            return
        if not said:
            yield (await self._speak(text, language, options)).wav()
            return
        async for piece in self._pieces(text, language, options, said):
            yield piece

    async def _pieces(self, text: str, language: str, options: dict[str, Any], said: bool) -> AsyncGenerator[bytes]:
        """`text`'s PCM as the voice makes it, after a zero-length WAV header if nothing was said yet."""
        engine = self.entry.runtime_data.engine
        try:
            async for piece in engine.speak_stream(self.role, text, self._voice(options), language=language):
                if not piece.pcm:
                    continue
                if not said:
                    yield wav_bytes(b"", piece.sample_rate)  # zero frames: the length is not known yet
                    said = True
                yield piece.pcm
        except EngineError as err:
            raise ha_error(err) from err

    async def _speak(self, text: str, language: str, options: dict[str, Any]) -> Speech:
        engine = self.entry.runtime_data.engine
        return await engine_call(engine.speak(self.role, text, self._voice(options), language=language))

    def _voice(self, options: dict[str, Any]) -> str:
        voice = str(options.get(tts.ATTR_VOICE) or self._voices()[0])
        if voice not in self._voices():
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="unknown_voice",
                translation_placeholders={"voice": voice, "voices": ", ".join(self._voices())},
            )
        return voice


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
