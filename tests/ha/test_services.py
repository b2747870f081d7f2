"""Image and video analysis services on real HA, real llama.cpp (tiny VL model + projector), real ffmpeg."""

from __future__ import annotations

import io
from pathlib import Path
import subprocess
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.setup import async_setup_component
from PIL import Image
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import CONF_FAST_MMPROJ, DOMAIN
from custom_components.sarai_omni.vision import Frame, select_frames

from .conftest import GardenCamera, engine_reaches, make_entry, wait_loaded


async def call(hass: HomeAssistant, service: str, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(DOMAIN, service, data, blocking=True, return_response=True)
    assert isinstance(response, dict)
    return response


def clip(path: Path, filters: str, seconds: float = 10) -> Path:
    """Make a real video file with ffmpeg's lavfi sources."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            filters,
            "-t",
            str(seconds),
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    return path


async def test_analyze_image_on_a_camera(
    hass: HomeAssistant, vision_entry: MockConfigEntry, garden_camera: GardenCamera
) -> None:
    events: list[Any] = []
    hass.bus.async_listen("sarai_omni_analysis", events.append)
    response = await call(hass, "analyze_image", camera_entity_id="camera.garden", prompt="What do you see?")
    assert set(response) >= {"text", "model", "route_reason", "timings"}
    assert response["model"] == "fast"
    assert response["route_reason"] == "image attached; the fast model sees"  # the only role
    assert set(response["timings"]) == {"load_ms", "ttft_ms", "tokens_per_second"}
    text_only = vision_entry.runtime_data.engine
    last = text_only.pool.slot("fast").last
    # Its own prompt was evaluated; of the agent's standing prompt in the cache it shares only the
    # template's opening (the text before an image is prefix-cached like any prompt).
    assert last.cached_tokens + last.evaluated_prompt_tokens == last.prompt_tokens
    assert last.cached_tokens <= 2 < last.evaluated_prompt_tokens
    # The image's embeddings were evaluated: more prompt tokens than the same request without it.
    from custom_components.sarai_omni.engine import ChatRequest

    bare = await text_only.complete(
        ChatRequest(messages=[{"role": "user", "content": "What do you see?"}], max_tokens=1)
    )
    assert response["prompt_tokens"] >= bare.prompt_tokens + 16
    await hass.async_block_till_done()
    assert events[0].data["service"] == "analyze_image"


def bad_inputs(jpeg: Path, elsewhere: Path) -> tuple[Path, Path, Path]:
    """A non-image, an image over the size limit, and an image outside the allow-list."""
    bad = jpeg.parent / "not-an-image.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    big = jpeg.parent / "huge.png"
    Image.new("RGB", (64, 64)).save(big)
    with big.open("ab") as fh:
        fh.truncate(21 * 2**20)
    outside = elsewhere / "outside.jpg"
    outside.write_bytes(jpeg.read_bytes())
    return bad, big, outside


async def test_analyze_image_files_and_errors(
    hass: HomeAssistant, vision_entry: MockConfigEntry, jpeg: Path, garden_camera: GardenCamera, tmp_path: Path
) -> None:
    ok = await call(hass, "analyze_image", image_path=[str(jpeg), str(jpeg)])
    assert ok["model"] == "fast"
    bad, big, outside = await hass.async_add_executor_job(bad_inputs, jpeg, tmp_path)
    garden_camera.working = False
    cases: dict[str, dict[str, Any]] = {
        "no_input": {},
        "file_not_found": {"image_path": [str(jpeg.parent / "missing.jpg")]},
        "unsupported_image": {"image_path": [str(bad)]},
        "image_too_large": {"image_path": [str(big)]},
        "path_not_allowed": {"image_path": [str(outside)]},
        "camera_unavailable": {"camera_entity_id": "camera.garden"},
    }
    for key, data in cases.items():
        with pytest.raises(ServiceValidationError) as err:
            await call(hass, "analyze_image", **data)
        assert err.value.translation_key == key, key


async def test_no_vision_projector_is_a_clear_error(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, jpeg: Path
) -> None:
    hass.config.allowlist_external_dirs |= {str(jpeg.parent)}
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "analyze_image", image_path=[str(jpeg)])
    assert err.value.translation_key == "no_vision_model"
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "analyze_image", image_path=[str(jpeg)], model="quality")
    assert err.value.translation_key == "model_not_configured"


async def test_analyze_video_file_sends_max_frames(
    hass: HomeAssistant, vision_entry: MockConfigEntry, jpeg: Path
) -> None:
    video = clip(jpeg.parent / "testsrc.mp4", "testsrc=size=320x240:rate=10")
    response = await call(hass, "analyze_video", video_path=str(video), max_frames=3, target_width=160)
    assert response["frames"] == 3
    assert response["frame_times"] == sorted(response["frame_times"])
    assert response["model"] == "fast"


async def test_video_frames_chosen_at_scene_changes(
    hass: HomeAssistant, vision_entry: MockConfigEntry, jpeg: Path
) -> None:
    scenes = ";".join(f"color=c={c}:s=160x120:d=2.5[s{i}]" for i, c in enumerate(("red", "green", "blue", "white")))
    video = clip(jpeg.parent / "scenes.mp4", f"{scenes};[s0][s1][s2][s3]concat=n=4:v=1:a=0", 10)
    response = await call(hass, "analyze_video", video_path=str(video), max_frames=4, target_width=160)
    assert response["frame_times"] == [0.0, 2.5, 5.0, 7.5]  # the first frame and each cut


async def test_video_errors(hass: HomeAssistant, vision_entry: MockConfigEntry, jpeg: Path) -> None:
    corrupt = jpeg.parent / "corrupt.mp4"
    await hass.async_add_executor_job(corrupt.write_bytes, b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "analyze_video", video_path=str(corrupt))
    assert err.value.translation_key == "video_unreadable"
    video = clip(jpeg.parent / "short.mp4", "testsrc=size=64x64:rate=5", 1)
    hass.data["ffmpeg"].binary = "/nonexistent/ffmpeg"
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "analyze_video", video_path=str(video))
    assert err.value.translation_key == "ffmpeg_missing"


async def test_analyze_video_from_a_camera(
    hass: HomeAssistant, vision_entry: MockConfigEntry, garden_camera: GardenCamera
) -> None:
    response = await call(hass, "analyze_video", camera_entity_id="camera.garden", duration=0.5, max_frames=2)
    assert response["frames"] == 2


async def test_load_and_unload_model(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    loaded = await call(hass, "load_model", model="fast")
    assert loaded["state"] == "loaded"
    assert loaded["rss_mb"] > 0
    unloaded = await call(hass, "unload_model", model="fast")
    assert unloaded == {**unloaded, "state": "unloaded", "rss_mb": 0}
    with pytest.raises(HomeAssistantError):
        await call(hass, "load_model", model="quality")  # not configured


def test_select_frames_keeps_the_most_different() -> None:
    def solid(color: str) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (32, 32), color).save(out, "JPEG")
        return out.getvalue()

    frames = [Frame(solid(c), t) for t, c in enumerate(["red", "red", "blue", "blue", "blue", "white", "white"])]
    assert [f.at for f in select_frames(frames, 3)] == [0, 2, 5]
    assert select_frames(frames[:2], 4) == frames[:2]


async def quality_entry(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_mmproj: Path, tiny_qwen3: Path, *, room_for_both: bool
) -> MockConfigEntry:
    """fast + quality, both with the tiny projector; a budget that holds both, or only the fast one."""
    from custom_components.sarai_omni.const import CONF_IDLE_UNLOAD_S, CONF_QUALITY_MMPROJ, CONF_QUALITY_MODEL
    from custom_components.sarai_omni.engine import MB

    assert await async_setup_component(hass, "ffmpeg", {})
    data = {
        **entry_data,
        CONF_FAST_MMPROJ: str(tiny_mmproj),
        CONF_QUALITY_MODEL: str(tiny_qwen3),
        CONF_QUALITY_MMPROJ: str(tiny_mmproj),
        CONF_IDLE_UNLOAD_S: 1,
    }
    probe = make_entry(hass, data)
    assert await hass.config_entries.async_setup(probe.entry_id)
    await wait_loaded(probe)
    pool = probe.runtime_data.engine.pool
    need = (pool.slot("fast").estimate + pool.slot("quality").estimate) // MB
    assert await hass.config_entries.async_remove(probe.entry_id)
    entry = make_entry(hass, {**data, "ram_budget_mb": need + 20 if room_for_both else need - 20})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    return entry


async def test_image_falls_back_to_fast_vl_when_quality_cannot_fit(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_mmproj: Path, tiny_qwen3: Path, jpeg: Path
) -> None:
    hass.config.allowlist_external_dirs |= {str(jpeg.parent)}
    entry = await quality_entry(hass, entry_data, tiny_mmproj, tiny_qwen3, room_for_both=False)
    response = await call(hass, "analyze_image", image_path=[str(jpeg)])
    pool = entry.runtime_data.engine.pool
    assert response["model"] == "fast"
    assert "quality model does not fit the RAM budget" in response["route_reason"]
    assert "the fast model sees" in response["route_reason"]
    assert pool.slot("fast").loaded  # the pinned fast model was never evicted for it
    assert not pool.slot("quality").loaded
    assert pool.watchdog.measured_rss() <= pool.budget


async def test_image_loads_quality_on_demand_then_it_idles_out(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_mmproj: Path, tiny_qwen3: Path, jpeg: Path
) -> None:
    hass.config.allowlist_external_dirs |= {str(jpeg.parent)}
    entry = await quality_entry(hass, entry_data, tiny_mmproj, tiny_qwen3, room_for_both=True)
    pool = entry.runtime_data.engine.pool
    assert not pool.slot("quality").loaded
    response = await call(hass, "analyze_image", image_path=[str(jpeg)])
    assert response["model"] == "quality"
    assert response["timings"]["load_ms"] > 0  # loaded for this request
    assert pool.watchdog.measured_rss() <= pool.budget
    engine = entry.runtime_data.engine
    await engine_reaches(engine, lambda: engine.status("quality").state == "unloaded")  # idle_unload_s = 1
    assert not pool.slot("quality").loaded
    assert pool.slot("fast").loaded
