"""Images and video frames for analysis (HA-side I/O): camera snapshots, files, ffmpeg, selection.

Blocking work (files, Pillow, temp dirs) runs in the executor; ffmpeg runs as a subprocess.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
from dataclasses import dataclass
from functools import partial
import io
import itertools
from pathlib import Path
import shutil
import tempfile
import warnings

from homeassistant.components import camera
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from PIL import Image, ImageChops, ImageStat, UnidentifiedImageError

from .const import DOMAIN

MAX_IMAGE_BYTES = 20 * 2**20
# Decoded size is what costs memory (a 1 MB PNG can hold 144 megapixels): refuse above this before
# decoding, and send at most MAX_SIDE pixels on the longest side (the models see ~1 MP at most).
MAX_IMAGE_PIXELS = 40_000_000
MAX_SIDE = 1024
CANDIDATE_FPS = 2  # frames sampled per second of a video file before selection
MAX_CANDIDATES = 120
FFMPEG_TIMEOUT_S = 60
AUDIO_TRACK_S = 30  # of a video's sound sent with its frames: one audio window of the model


@dataclass(frozen=True, slots=True)
class Frame:
    """One image to send, with its time in the clip (seconds; 0 for still images)."""

    jpeg: bytes
    at: float = 0.0


def invalid(key: str, **placeholders: str) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders or None
    )


async def camera_frame(hass: HomeAssistant, entity_id: str, width: int | None = None) -> Frame:
    try:
        image = await camera.async_get_image(hass, entity_id, width=width)
    except HomeAssistantError as err:
        raise invalid("camera_unavailable", entity_id=entity_id, error=str(err)) from err
    return Frame(await hass.async_add_executor_job(to_jpeg, image.content, width, entity_id))


def to_jpeg(data: bytes, width: int | None, name: str) -> bytes:
    """Decode any Pillow image, shrink it to `width` (or MAX_SIDE), re-encode as JPEG.

    The dimensions are read from the header first: an image over MAX_IMAGE_PIXELS is refused
    before a byte of it is decoded; JPEGs are decoded at a reduced scale where that is enough.
    """
    side = min(width or MAX_SIDE, MAX_SIDE)
    try:
        with warnings.catch_warnings():  # Pillow warns of bombs it still opens; the check below refuses them
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise invalid("image_too_many_pixels", path=name, size=f"{img.width}x{img.height}", max_mp="40")
            img.draft("RGB", (side, side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise invalid("unsupported_image", path=name) from err
    if max(rgb.size) > side:
        rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=90)
    return out.getvalue()


def read_image_file(hass: HomeAssistant, path: str, width: int | None = None) -> Frame:
    """Blocking: allow-list, existence, size limit, then decode."""
    full = checked_file(hass, path)
    if full.stat().st_size > MAX_IMAGE_BYTES:
        raise invalid("image_too_large", path=path, max_mb=str(MAX_IMAGE_BYTES // 2**20))
    return Frame(to_jpeg(full.read_bytes(), width, path))


def checked_file(hass: HomeAssistant, path: str) -> Path:
    """Blocking: a user-given path resolved under the config dir, allow-listed and existing."""
    try:
        full = Path(path if Path(path).is_absolute() else hass.config.path(path))
        if not hass.config.is_allowed_path(str(full)):
            raise invalid("path_not_allowed", path=path)
        if not full.is_file():
            raise invalid("file_not_found", path=path)
    except (OSError, ValueError) as err:  # a NUL byte, a lone surrogate, a name too long
        raise invalid("invalid_path", path=path.encode("utf-8", "replace").decode()[:200]) from err
    return full


@contextlib.asynccontextmanager
async def temp_dir(hass: HomeAssistant, prefix: str) -> AsyncIterator[str]:
    """A private temporary folder, made and removed in the executor (never on the event loop)."""
    folder = await hass.async_add_executor_job(partial(tempfile.mkdtemp, prefix=prefix))
    try:
        yield folder
    finally:
        await hass.async_add_executor_job(partial(shutil.rmtree, folder, ignore_errors=True))


def container_format(path: Path) -> str:
    """Blocking: the demuxer for a video file, told from its first bytes; refuses anything else.

    ffmpeg's playlist and concat demuxers (HLS .m3u8, ffconcat) open the files they list: a playlist
    named clip.mp4 inside an allowed folder could make it read any file. So ffmpeg is told the
    format instead of guessing it, and only these containers, which read nothing but themselves
    (mov's external references stay off: its enable_drefs default), are accepted.
    """
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    raise invalid("video_unreadable", path=str(path.name), error="not a video container this integration reads")


async def _ffmpeg_read(hass: HomeAssistant, ffmpeg: str, path: str, output: list[str]) -> tuple[int | None, str]:
    """Run ffmpeg on an allow-listed video file, told its container and reading only that file
    (see container_format), with `output` arguments; (return code, or None after the timeout;
    its error output)."""
    full = await hass.async_add_executor_job(checked_file, hass, path)
    demuxer = await hass.async_add_executor_job(container_format, full)
    if not await hass.async_add_executor_job(shutil.which, ffmpeg):
        raise invalid("ffmpeg_missing", binary=ffmpeg)
    proc = await asyncio.create_subprocess_exec(
        ffmpeg,
        *("-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer, "-i", str(full)),
        *output,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), FFMPEG_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, "ffmpeg timed out"
    return proc.returncode, err.decode(errors="replace").strip()[-200:]


async def video_file_frames(hass: HomeAssistant, ffmpeg: str, path: str, width: int) -> list[Frame]:
    """Sample a video file at CANDIDATE_FPS with ffmpeg, scaled to `width`."""
    async with temp_dir(hass, "sarai_frames_") as out:
        scale = ["-vf", f"fps={CANDIDATE_FPS},scale={width}:-2", "-frames:v", str(MAX_CANDIDATES)]
        code, err = await _ffmpeg_read(hass, ffmpeg, path, [*scale, "-q:v", "3", f"{out}/f%04d.jpg"])
        if code is None:
            raise invalid("video_unreadable", path=path, error=err)
        frames = await hass.async_add_executor_job(_read_frames, Path(out))
    if code != 0 or not frames:
        raise invalid("video_unreadable", path=path, error=err or "no frames")
    return frames


async def video_file_audio(hass: HomeAssistant, ffmpeg: str, path: str, folder: str) -> Path | None:
    """The file's audio track, its first AUDIO_TRACK_S, as 16 kHz mono WAV in `folder`; None when
    the file has no audio (or ffmpeg cannot read it: the frames still go)."""
    out = Path(folder) / "track.wav"
    wav = ["-vn", "-ac", "1", "-ar", "16000", "-t", str(AUDIO_TRACK_S), "-y", str(out)]
    code, _ = await _ffmpeg_read(hass, ffmpeg, path, wav)
    return out if code == 0 and await hass.async_add_executor_job(out.is_file) else None


def _read_frames(folder: Path) -> list[Frame]:
    files = sorted(folder.glob("f*.jpg"))
    return [Frame(f.read_bytes(), i / CANDIDATE_FPS) for i, f in enumerate(files)]


def select_frames(frames: list[Frame], count: int) -> list[Frame]:
    """Keep the first frame and the `count - 1` frames that differ most from the frame before them
    (scene changes), oldest to newest. Difference: mean absolute difference of 32x32 colour
    thumbnails (colour, not luma: a red-to-green cut has almost the same grey level)."""
    if len(frames) <= count:
        return frames
    thumbs = [_thumb(f.jpeg) for f in frames]
    change = [sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) for a, b in itertools.pairwise(thumbs)]
    ranked = sorted(range(1, len(frames)), key=lambda i: change[i - 1], reverse=True)[: count - 1]
    return [frames[i] for i in sorted([0, *ranked])]


def _thumb(jpeg: bytes) -> Image.Image:
    with Image.open(io.BytesIO(jpeg)) as img:
        thumb: Image.Image = img.convert("RGB").resize((32, 32))
        return thumb


def write_frames(frames: list[Frame], folder: str) -> list[str]:
    """Blocking: the frames as files the worker reads."""
    paths = []
    for i, frame in enumerate(frames):
        path = Path(folder) / f"frame{i:02d}.jpg"
        path.write_bytes(frame.jpeg)
        paths.append(str(path))
    return paths
