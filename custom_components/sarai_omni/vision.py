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

from homeassistant.components import camera
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from PIL import Image, ImageChops, ImageStat, UnidentifiedImageError

from .const import DOMAIN

MAX_IMAGE_BYTES = 20 * 2**20
CANDIDATE_FPS = 2  # frames sampled per second of a video file before selection
MAX_CANDIDATES = 120
FFMPEG_TIMEOUT_S = 60


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
    """Decode any Pillow image, shrink it to `width` (keeping the aspect), re-encode as JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise invalid("unsupported_image", path=name) from err
    if width and rgb.width > width:
        rgb = rgb.resize((width, max(1, round(rgb.height * width / rgb.width))), Image.Resampling.LANCZOS)
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
    full = Path(path if Path(path).is_absolute() else hass.config.path(path))
    if not hass.config.is_allowed_path(str(full)):
        raise invalid("path_not_allowed", path=path)
    if not full.is_file():
        raise invalid("file_not_found", path=path)
    return full


@contextlib.asynccontextmanager
async def temp_dir(hass: HomeAssistant, prefix: str) -> AsyncIterator[str]:
    """A private temporary folder, made and removed in the executor (never on the event loop)."""
    folder = await hass.async_add_executor_job(partial(tempfile.mkdtemp, prefix=prefix))
    try:
        yield folder
    finally:
        await hass.async_add_executor_job(partial(shutil.rmtree, folder, ignore_errors=True))


async def video_file_frames(hass: HomeAssistant, ffmpeg: str, path: str, width: int) -> list[Frame]:
    """Sample a video file at CANDIDATE_FPS with ffmpeg, scaled to `width`."""
    full = await hass.async_add_executor_job(checked_file, hass, path)
    if not await hass.async_add_executor_job(shutil.which, ffmpeg):
        raise invalid("ffmpeg_missing", binary=ffmpeg)
    async with temp_dir(hass, "sarai_frames_") as out:
        proc = await asyncio.create_subprocess_exec(
            ffmpeg,
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(full),
            "-vf",
            f"fps={CANDIDATE_FPS},scale={width}:-2",
            "-frames:v",
            str(MAX_CANDIDATES),
            "-q:v",
            "3",
            f"{out}/f%04d.jpg",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), FFMPEG_TIMEOUT_S)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise invalid("video_unreadable", path=path, error="ffmpeg timed out") from exc
        frames = await hass.async_add_executor_job(_read_frames, Path(out))
    if proc.returncode != 0 or not frames:
        raise invalid("video_unreadable", path=path, error=err.decode(errors="replace").strip()[-200:] or "no frames")
    return frames


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
