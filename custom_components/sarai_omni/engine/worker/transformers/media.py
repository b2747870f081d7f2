"""Images and clips for the thinker's encoders, read without torchvision: PIL images, and audio as
16 kHz mono float32 (WAV natively; other formats through soundfile where the torch venv has it)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
import wave

from ...errors import InvalidInput

AUDIO_RATE = 16000  # the Whisper-style encoder's input rate


def image(path: str) -> Any:
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise InvalidInput(f"not an image: {Path(path).name}") from err


def audio(path: str) -> Any:
    """A clip as 16 kHz mono float32 (WAV here; other formats through soundfile when installed)."""
    import numpy as np  # noqa: PLC0415

    data = Path(path).read_bytes()
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
        kinds = {1: np.uint8, 2: np.int16, 4: np.int32}
        samples: Any = np.frombuffer(raw, dtype=kinds[width]).astype(np.float32)
        samples = (samples - 128) / 128 if width == 1 else samples / float(2 ** (8 * width - 1))
        samples = samples.reshape(-1, channels).mean(axis=1)
    except (wave.Error, EOFError, KeyError):
        samples, rate = soundfile_clip(data, path)
    if rate != AUDIO_RATE:  # linear resampling: speech sits far below either Nyquist
        n = round(len(samples) * AUDIO_RATE / rate)
        samples = np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples)
    return samples.astype(np.float32)


def soundfile_clip(data: bytes, path: str) -> tuple[Any, int]:
    try:
        import soundfile  # noqa: PLC0415
    except ImportError as err:
        raise InvalidInput(f"{Path(path).name}: only WAV is read without soundfile in the torch venv") from err
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except RuntimeError as err:
        raise InvalidInput(f"not audio: {Path(path).name}") from err
    return samples.mean(axis=1), int(rate)
