"""Audio through llama.cpp's mtmd in the worker, on the tiny Qwen2.5-Omni (thinker `qwen2vl`,
projector `qwen2.5o` whose audio tower hears; random weights); clips are encoded in 30 s windows
of 750 tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custom_components.sarai_omni.engine import ChatRequest, InvalidInput, read_gguf
from custom_components.sarai_omni.engine.worker.llamacpp.media import audio_kind

from ..conftest import write_wav
from .conftest import HELLO
from .test_vision import SYSTEM, vision_engine

WINDOW_TOKENS = 750  # one 30 s window after the encoder's stride-2 convolution and pooling


def audio_turn(*clips: Path) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What was that sound? "}]
    parts += [{"type": "audio", "path": str(c)} for c in clips]
    return [SYSTEM, {"role": "user", "content": parts}]


def test_omni_projector_header(omni_mmproj: Path) -> None:
    info = read_gguf(omni_mmproj)
    assert info.is_projector
    assert info.has_vision
    assert info.has_audio


async def test_audio_tokens_and_seconds(omni_thinker: Path, omni_mmproj: Path, wav: Path, tmp_path: Path) -> None:
    long_clip = write_wav(tmp_path / "long.wav", 5.0)
    engine = vision_engine(omni_thinker, omni_mmproj)
    try:
        text_only = await engine.complete(
            ChatRequest(messages=[SYSTEM, {"role": "user", "content": "What was that sound? "}], grammar=HELLO)
        )
        short = await engine.complete(ChatRequest(messages=audio_turn(wav), grammar=HELLO))
        status = engine.status("fast")
        both = await engine.complete(ChatRequest(messages=audio_turn(wav, long_clip), grammar=HELLO))
        status_both = engine.status("fast")
    finally:
        await engine.close()
    assert short.text == "Hello there, friend."
    audio_tokens = short.prompt_tokens - text_only.prompt_tokens
    # The window, and <|audio_bos|>/<|audio_eos|> (spelled out byte by byte by the tiny tokenizer)
    assert WINDOW_TOKENS <= audio_tokens <= WINDOW_TOKENS + 2 * len("<|audio_bos|>")
    assert both.prompt_tokens - short.prompt_tokens == pytest.approx(audio_tokens, abs=2)  # 5 s: one window too
    assert status.last.audio_seconds == pytest.approx(1.5, abs=0.01)
    assert status.last.images == 0
    assert status_both.last.audio_seconds == pytest.approx(6.5, abs=0.01)


async def test_a_projector_that_does_not_hear_says_so(tiny_qwen2: Path, tiny_mmproj: Path, wav: Path) -> None:
    engine = vision_engine(tiny_qwen2, tiny_mmproj)
    try:
        with pytest.raises(InvalidInput, match="cannot hear"):
            await engine.complete(ChatRequest(messages=audio_turn(wav)))
        after = await engine.complete(ChatRequest(messages=[SYSTEM], grammar=HELLO))
    finally:
        await engine.close()
    assert after.text == "Hello there, friend."  # the worker survived the bad request


async def test_a_clip_that_is_not_audio_is_a_clear_error(omni_thinker: Path, omni_mmproj: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really a wave file")
    engine = vision_engine(omni_thinker, omni_mmproj)
    try:
        with pytest.raises(InvalidInput, match="audio clip could not be decoded"):
            await engine.complete(ChatRequest(messages=audio_turn(broken)))
    finally:
        await engine.close()


def test_audio_is_told_from_images_by_mtmds_rule(wav: Path, jpeg: Path) -> None:
    """One sniff for the worker and the HA side, mtmd's own (is_audio_file): a RIFF file is audio
    only when it is WAVE, so a WEBP image is an image."""
    assert audio_kind(wav.read_bytes()[:16]) == "wav"
    assert audio_kind(b"fLaC" + bytes(12)) == "flac"
    assert audio_kind(b"ID3\x04" + bytes(12)) == "mp3"
    assert audio_kind(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None
    assert audio_kind(jpeg.read_bytes()[:16]) is None
