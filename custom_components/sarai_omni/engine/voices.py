"""The voices a Qwen3-TTS role speaks in: reference clips, one voice each, named by their file.

One ships with the integration (`Sarai`, spoken by espeak-ng: a real person's clip of 3-10 s sounds
far better); the user's own go in HA's config folder (defaults.VOICES_FOLDER). Standard library only:
the worker reads the same list.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import defaults

if TYPE_CHECKING:
    from .files import ModelFiles

SHIPPED = Path(__file__).with_name("voice_clips") / "sarai.wav"
CLIP_SUFFIXES = (".wav", ".mp3", ".flac")  # what llama.cpp's mtmd decodes
# Qwen3-TTS's ten languages, by the codes HA's pipelines ask with (llama.cpp maps them to its tokens).
QWEN3TTS_LANGUAGES = ("en", "es", "zh", "de", "it", "pt", "ja", "ko", "fr", "ru")
# Qwen2.5-Omni's talker speaks English and Chinese (its model card) and Spanish.
OMNI_LANGUAGES = ("en", "es", "zh")


def speech_languages(files: ModelFiles) -> tuple[str, ...]:
    """What the role's talker speaks: a Qwen3-TTS voice's ten languages, else Omni's."""
    return QWEN3TTS_LANGUAGES if files.gguf is not None and files.gguf.speaks else OMNI_LANGUAGES


def voice_clips(folder: str | None) -> dict[str, str]:
    """{voice: its reference clip}: the shipped voice, then the folder's clips by name."""
    clips = {defaults.CLIP_VOICE: str(SHIPPED)}
    if folder and Path(folder).is_dir():
        for path in sorted(Path(folder).iterdir()):
            if path.suffix.lower() in CLIP_SUFFIXES and path.is_file():
                clips[path.stem] = str(path)
    return clips
