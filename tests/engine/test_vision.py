"""Images through llama.cpp's mtmd in the worker, with the tiny projector (real encoder, random weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custom_components.sarai_omni.engine import ChatRequest, Engine, EngineConfig, InvalidInput, read_gguf
from tests.specs import gguf_spec

from .conftest import HELLO

SYSTEM = {"role": "system", "content": "You describe what the home's cameras see."}


def vision_engine(model: Path, mmproj: Path | None) -> Engine:
    spec = gguf_spec(
        "fast", str(model), str(mmproj) if mmproj else None, n_ctx=2048, n_threads=2, pinned=True, repack=False
    )
    return Engine(EngineConfig(models=(spec,), ram_budget_mb=4096))


def image_turn(image: Path, count: int = 1) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What do you see? "}]
    parts += [{"type": "image", "path": str(image)}] * count
    return [SYSTEM, {"role": "user", "content": parts}]


def test_projector_header(tiny_mmproj: Path) -> None:
    info = read_gguf(tiny_mmproj)
    assert info.is_projector
    assert info.has_vision
    assert not info.has_audio


async def test_image_tokens_are_evaluated(tiny_qwen2: Path, tiny_mmproj: Path, jpeg: Path) -> None:
    engine = vision_engine(tiny_qwen2, tiny_mmproj)
    try:
        text_only = await engine.complete(
            ChatRequest(
                messages=[SYSTEM, {"role": "user", "content": "What do you see? "}], grammar=HELLO, temperature=0
            )
        )
        one = await engine.complete(ChatRequest(messages=image_turn(jpeg), grammar=HELLO, temperature=0))
        two = await engine.complete(ChatRequest(messages=image_turn(jpeg, 2), grammar=HELLO, temperature=0))
    finally:
        await engine.close()
    assert one.text == "Hello there, friend."
    image_tokens = one.prompt_tokens - text_only.prompt_tokens
    assert image_tokens >= 16  # (32 / 8)^2 patches of the tiny encoder, at least
    assert two.prompt_tokens - one.prompt_tokens == pytest.approx(image_tokens, abs=2)  # several images per prompt


async def test_image_request_keeps_the_text_cache(tiny_qwen2: Path, tiny_mmproj: Path, jpeg: Path) -> None:
    engine = vision_engine(tiny_qwen2, tiny_mmproj)
    chat = [SYSTEM, {"role": "user", "content": "hello"}]
    try:
        first = await engine.complete(ChatRequest(messages=chat, grammar=HELLO, temperature=0))
        await engine.complete(ChatRequest(messages=image_turn(jpeg), grammar=HELLO, temperature=0))
        follow = [*chat, {"role": "assistant", "content": first.text}, {"role": "user", "content": "and now?"}]
        after = await engine.complete(ChatRequest(messages=follow, grammar=HELLO, temperature=0))
    finally:
        await engine.close()
    assert after.cached_tokens >= first.prompt_tokens  # the image turn did not evict the conversation


async def test_image_without_projector_is_a_clear_error(tiny_qwen2: Path, jpeg: Path) -> None:
    engine = vision_engine(tiny_qwen2, None)
    try:
        with pytest.raises(InvalidInput, match="no vision projector"):
            await engine.complete(ChatRequest(messages=image_turn(jpeg)))
        after = await engine.complete(ChatRequest(messages=[SYSTEM], grammar=HELLO, temperature=0))
    finally:
        await engine.close()
    assert after.text == "Hello there, friend."  # the worker survived the bad request


async def test_camera_question_evaluates_only_the_image_and_question(
    tiny_qwen2: Path, tiny_mmproj: Path, jpeg: Path, tmp_path: Path
) -> None:
    """After the standing prompt is warm, an image question evaluates the image and the question only
    and answers as from scratch; the same frame asked about again reuses its encoder output."""
    from PIL import Image

    other = tmp_path / "other.jpg"
    Image.new("RGB", (96, 64), (20, 90, 200)).save(other, "JPEG")

    def ask(image: Path) -> ChatRequest:
        return ChatRequest(messages=image_turn(image), temperature=0, max_tokens=6, ignore_eos=True)

    fresh = vision_engine(tiny_qwen2, tiny_mmproj)
    try:
        cold = await fresh.complete(ask(jpeg))
    finally:
        await fresh.close()
    engine = vision_engine(tiny_qwen2, tiny_mmproj)
    try:
        standing = await engine.warm("fast", [SYSTEM])
        warm = await engine.complete(ask(jpeg))
        again = await engine.complete(ask(jpeg))
        changed = await engine.complete(ask(other))
        await engine.warm("fast", [SYSTEM])
        text = await engine.complete(  # how much of the same turn a text prompt finds cached
            ChatRequest(messages=[SYSTEM, {"role": "user", "content": "What do you see? "}], max_tokens=1)
        )
    finally:
        await engine.close()
    assert cold.evaluated_prompt_tokens == cold.prompt_tokens
    assert warm.prompt_tokens == cold.prompt_tokens
    assert standing.prompt_tokens > text.cached_tokens > 0
    assert warm.cached_tokens == text.cached_tokens  # the system prompt was not evaluated again
    assert warm.evaluated_prompt_tokens == warm.prompt_tokens - warm.cached_tokens
    assert warm.text == cold.text == again.text
    assert (warm.stages["images_reused"], again.stages["images_reused"], changed.stages["images_reused"]) == (0, 1, 0)
    assert warm.stages["encoder_ms"] > 0
    assert again.stages["encoder_ms"] == 0 < changed.stages["encoder_ms"]
