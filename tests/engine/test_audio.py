"""Audio through llama.cpp's mtmd in the worker, on the tiny Qwen2.5-Omni (thinker `qwen2vl`,
projector `qwen2.5o` whose audio tower hears; random weights). With the project's patch, clips are
encoded as transformers encodes them: 2 s windows of the clip's own frames, 25 tokens per second
(tests/engine/test_audio_fidelity.py compares the embeddings). Speech is also taken while it is
spoken: each 2 s window prefilled at once (`listen`), the transcript after the tail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custom_components.sarai_omni.engine import HEAR, ChatRequest, Engine, EngineConfig, InvalidInput, read_gguf
from custom_components.sarai_omni.engine.worker.llamacpp.media import audio_kind

from ..conftest import read_pcm, write_speechlike, write_wav
from ..specs import gguf_spec
from .conftest import HELLO
from .test_vision import SYSTEM, vision_engine

TOKENS = {1.5: 37, 2.0: 50, 5.0: 125}  # seconds -> audio tokens: 200-frame windows, conv (n+1)//2, pool //2


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
    long_clip, command = write_wav(tmp_path / "long.wav", 5.0), write_wav(tmp_path / "command.wav", 2.0)
    engine = vision_engine(omni_thinker, omni_mmproj)
    try:
        text_only = await engine.complete(
            ChatRequest(messages=[SYSTEM, {"role": "user", "content": "What was that sound? "}], grammar=HELLO)
        )
        short = await engine.complete(ChatRequest(messages=audio_turn(wav), grammar=HELLO))
        status = engine.status("fast")
        both = await engine.complete(ChatRequest(messages=audio_turn(wav, long_clip), grammar=HELLO))
        status_both = engine.status("fast")
        two_seconds = await engine.complete(ChatRequest(messages=audio_turn(command), grammar=HELLO))
    finally:
        await engine.close()
    assert short.text == "Hello there, friend."
    assert status.hearing == "faithful"  # this llama.cpp carries the patch (an unpatched one: padded_30s)
    assert short.audio_tokens == status.last.audio_tokens == TOKENS[1.5]
    # The clip's tokens, and <|audio_bos|>/<|audio_eos|> (spelled out byte by byte by the tiny tokenizer)
    assert TOKENS[1.5] <= short.prompt_tokens - text_only.prompt_tokens <= TOKENS[1.5] + 2 * len("<|audio_bos|>")
    assert both.audio_tokens == TOKENS[1.5] + TOKENS[5.0]  # proportional to length: no 30 s windows
    assert two_seconds.audio_tokens == TOKENS[2.0]
    assert status.last.audio_seconds == pytest.approx(1.5, abs=0.01)
    assert status.last.images == 0
    assert status_both.last.audio_seconds == pytest.approx(6.5, abs=0.01)


async def test_speech_is_prefilled_while_it_is_spoken(omni_thinker: Path, omni_mmproj: Path, tmp_path: Path) -> None:
    """Two 2 s windows go in while the person speaks; at the end only the 1 s tail is encoded. The
    prompt is the one a whole clip makes: the same tokens, the same audio tokens."""
    clip = write_speechlike(tmp_path / "command.wav", 5.0)
    pcm = read_pcm(clip)
    window = 2 * 16000 * 2
    engine = vision_engine(omni_thinker, omni_mmproj)
    turn = audio_turn(clip)
    try:
        whole = await engine.complete(ChatRequest(messages=turn, grammar=HELLO))
        held = [await engine.listen("fast", "s1", turn, b"")]  # the first audio: prompt up to the clip
        held += [await engine.listen("fast", "s1", turn, pcm[i : i + window]) for i in (0, window)]
        streamed = await engine.complete(
            ChatRequest(messages=turn, grammar=HELLO, listening="s1", pcm=pcm[2 * window :])
        )
    finally:
        await engine.close()
    assert [h.audio_tokens for h in held] == [0, 50, 100]
    assert streamed.audio_tokens == whole.audio_tokens == TOKENS[5.0]
    assert streamed.prompt_tokens == whole.prompt_tokens
    assert streamed.audio_seconds == pytest.approx(5.0, abs=0.01)
    assert streamed.text == whole.text == "Hello there, friend."


async def test_a_listening_session_ends_when_the_model_is_used_or_forgotten(
    omni_thinker: Path, omni_mmproj: Path, wav: Path
) -> None:
    pcm = read_pcm(wav)
    engine = vision_engine(omni_thinker, omni_mmproj)
    turn = audio_turn(wav)
    try:
        await engine.listen("fast", "s1", turn, pcm)
        between = await engine.complete(ChatRequest(messages=[SYSTEM], grammar=HELLO))  # another request
        with pytest.raises(InvalidInput, match="listening session is gone"):
            await engine.complete(ChatRequest(messages=turn, grammar=HELLO, listening="s1"))
        await engine.listen("fast", "s2", turn, pcm)
        await engine.forget("fast", "s2")
        with pytest.raises(InvalidInput, match="listening session is gone"):
            await engine.complete(ChatRequest(messages=turn, grammar=HELLO, listening="s2"))
        after = await engine.complete(ChatRequest(messages=[SYSTEM], grammar=HELLO))
    finally:
        await engine.close()
    assert between.text == after.text == "Hello there, friend."  # text turns are not disturbed


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


async def test_speech_goes_to_the_role_that_hears_soonest(omni_thinker: Path, omni_mmproj: Path) -> None:
    """Neither loaded: the smaller one (the quicker to load and run); then a loaded one (no load)."""
    big = gguf_spec("quality", str(omni_thinker), str(omni_mmproj), n_ctx=8192, n_threads=2, repack=False)
    small = gguf_spec("ears", str(omni_thinker), str(omni_mmproj), n_ctx=1024, n_threads=2, repack=False)
    engine = Engine(EngineConfig(models=(big, small), ram_budget_mb=4096))
    try:
        await engine.prepare()  # the files' headers: what each role can do, and its estimate
        assert engine.status("ears").estimate_mb < engine.status("quality").estimate_mb
        assert engine.quickest_for(HEAR) == "ears"
        await engine.load("quality")
        assert engine.quickest_for(HEAR) == "quality"
    finally:
        await engine.close()
