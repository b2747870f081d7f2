"""Speech-to-text with the model that hears (Qwen2.5-Omni's audio encoder): an Assist pipeline's
STT stage. The entity exists only when a configured model's projector hears; the transcript is
the model's answer to a transcription instruction in the speaker's language, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterable
import logging
from pathlib import Path

from homeassistant.components import stt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .audio import MAX_STT_SECONDS, transcription_prompt, wav_bytes
from .const import DOMAIN, TITLE
from .engine import HEAR
from .models import SaraiConfigEntry
from .services import hear
from .vision import temp_dir

_LOGGER = logging.getLogger(__name__)
PARALLEL_UPDATES = 0
# Languages Qwen2.5-Omni's speech recognition was trained on (its model card), as HA language codes.
LANGUAGES = ["en", "es", "zh", "fr", "de", "it", "pt", "ru", "ja", "ko", "nl", "ar"]
RATE = 16000  # what the projector's audio encoder takes; the pipeline is asked for it
TRANSCRIPT_TOKENS = 256


def hearing_role(entry: SaraiConfigEntry) -> str | None:
    """The role to transcribe with now: a loaded one that hears first, else the largest that fits."""
    return entry.runtime_data.engine.best_for(HEAR)


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
        pcm = await _collect(stream, MAX_STT_SECONDS * RATE * 2)
        if not pcm:
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        async with temp_dir(self.hass, "sarai_stt_") as folder:
            clip = Path(folder) / "speech.wav"
            await self.hass.async_add_executor_job(clip.write_bytes, wav_bytes(pcm, RATE))
            try:
                _, result = await hear(
                    self.hass,
                    self.entry,
                    [clip],
                    prompt=transcription_prompt(metadata.language),
                    model=hearing_role(self.entry) or self.role,
                    max_tokens=TRANSCRIPT_TOKENS,
                    temperature=0.0,
                )
            except HomeAssistantError as err:  # translated: the pipeline reports it as the STT error
                _LOGGER.error("Sarai Omni could not transcribe: %s", err)
                return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        return stt.SpeechResult(result.text.strip(), stt.SpeechResultState.SUCCESS)


async def _collect(stream: AsyncIterable[bytes], limit: int) -> bytes:
    """The stream's bytes, up to `limit` (a pipeline that never stops speaking is cut there)."""
    chunks, size = [], 0
    async for chunk in stream:
        chunks.append(chunk[: max(limit - size, 0)])
        size += len(chunks[-1])
    return b"".join(chunks)
