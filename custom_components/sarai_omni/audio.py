"""Audio for the model that hears (HA-side I/O): pipeline PCM as WAV, allow-listed audio files,
media-source audio, and the transcription prompt of each language.

llama.cpp's mtmd decodes WAV, MP3 and FLAC itself and resamples to the projector's rate (16 kHz
for Qwen2.5-Omni), so files are handed over as they are, after a look at their first bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
import wave

from homeassistant.components import media_source
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError

from .engine import audio_kind
from .vision import checked_file, invalid

MAX_AUDIO_BYTES = 32 * 2**20  # ~16 min of 16 kHz 16-bit mono WAV; longer clips cannot fit a context
MAX_STT_SECONDS = 120  # of pipeline audio kept for one transcription
TRANSCRIBE = {
    "en": "Transcribe exactly what is said in this audio. Reply with the transcript only.",
    "es": "Transcribe exactamente lo que se dice en este audio. Responde solo con la transcripción.",
}


def transcription_prompt(language: str) -> str:
    """The instruction in the speaker's language (Omni follows it best in that language)."""
    base = language.split("-", maxsplit=1)[0]
    return TRANSCRIBE.get(base, f"{TRANSCRIBE['en']} The speech is in the language with code {language}.")


def wav_bytes(pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> bytes:
    """Raw little-endian PCM (what an Assist pipeline streams) wrapped as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def checked_audio_file(hass: HomeAssistant, path: str) -> Path:
    """Blocking: an allow-listed audio file of a kind the model's decoder reads, within the size limit."""
    return _audio_file(checked_file(hass, path), path)


def _audio_file(full: Path, path: str) -> Path:
    if not full.is_file():
        raise invalid("file_not_found", path=path)
    if full.stat().st_size > MAX_AUDIO_BYTES:
        raise invalid("audio_too_large", path=path, max_mb=str(MAX_AUDIO_BYTES // 2**20))
    with full.open("rb") as fh:
        if audio_kind(fh.read(16)) is None:
            raise invalid("unsupported_audio", path=path)
    return full


async def resolve_audio(hass: HomeAssistant, source: str) -> Path:
    """A file path or a media-source id (local media) to a checked audio file on this machine."""
    if not media_source.is_media_source_id(source):
        return await hass.async_add_executor_job(checked_audio_file, hass, source)
    try:
        media = await media_source.async_resolve_media(hass, source, None)
    except HomeAssistantError as err:
        raise invalid("file_not_found", path=source) from err
    if media.path is None:  # not local media: nothing on this machine to hand over
        raise invalid("unsupported_audio", path=source)
    return await hass.async_add_executor_job(_audio_file, Path(media.path), source)  # media source authorized it
