"""The tiny fixtures have the seeds' own layouts: Qwen3-VL-4B-Instruct (text `qwen3vl` with deepstack +
projector `qwen3vl_merger`) and Qwen2.5-Omni-7B (thinker `qwen2vl` + projector `qwen2.5o` that sees
and hears), as llama.cpp's converter writes them, and the real llama.cpp runs them.

The layout is checked against gguf-py (the converter's own tensor names and keys): every tensor of a
fixture is one gguf-py knows for its architecture, with the converter's suffixes.
"""

from __future__ import annotations

from pathlib import Path
import re
from typing import Any

import gguf
import pytest

from custom_components.sarai_omni.engine import ChatRequest, read_gguf

from ..conftest import write_wav
from .conftest import HELLO
from .test_vision import vision_engine

SUFFIXES = (".weight", ".bias", ".weight.1")  # .weight.1: the second half of a split Conv3D patch embedding


def tensor_names(path: Path) -> set[str]:
    return {t.name for t in gguf.GGUFReader(path).tensors}


def known(arch: gguf.MODEL_ARCH) -> re.Pattern[str]:
    """gguf-py's tensor names of `arch`, as a pattern ({bid} any block index)."""
    names = [re.escape(gguf.TENSOR_NAMES[t]).replace(r"\{bid\}", r"\d+") for t in gguf.MODEL_TENSORS[arch]]
    return re.compile(rf"(?:{'|'.join(names)})(?:{'|'.join(re.escape(s) for s in SUFFIXES)})")


def field(path: Path, key: str) -> Any:
    reader = gguf.GGUFReader(path)
    f = reader.get_field(key)
    assert f is not None, f"{path.name} has no {key}"
    return f.contents()


@pytest.mark.parametrize(
    ("model", "arch", "projector", "projector_type"),
    [
        ("qwen3vl_model", gguf.MODEL_ARCH.QWEN3VL, "qwen3vl_mmproj", "qwen3vl_merger"),
        ("omni_thinker", gguf.MODEL_ARCH.QWEN2VL, "omni_mmproj", "qwen2.5o"),
    ],
)
def test_layouts_are_the_converters(
    request: pytest.FixtureRequest, model: str, arch: gguf.MODEL_ARCH, projector: str, projector_type: str
) -> None:
    text, mmproj = Path(request.getfixturevalue(model)), Path(request.getfixturevalue(projector))
    name = gguf.MODEL_ARCH_NAMES[arch]
    assert read_gguf(text).architecture == name
    sections = field(text, f"{name}.rope.dimension_sections")
    head_dim = field(text, f"{name}.embedding_length") // field(text, f"{name}.attention.head_count")
    assert len(sections) == 4  # M-RoPE: time, height, width (and 0), as the converter pads it
    assert sum(sections) == head_dim // 2
    assert field(mmproj, "clip.projector_type") == projector_type
    unknown = {t for t in tensor_names(text) if not known(arch).fullmatch(t)}
    assert not unknown, f"tensors gguf-py does not know for {name}: {sorted(unknown)}"
    unknown = {t for t in tensor_names(mmproj) if not known(gguf.MODEL_ARCH.MMPROJ).fullmatch(t)}
    assert not unknown, f"projector tensors gguf-py does not know: {sorted(unknown)}"
    names = tensor_names(mmproj)
    assert {"v.patch_embd.weight", "v.patch_embd.weight.1"} <= names  # the converter's split Conv3D


def test_qwen3vl_has_deepstack_and_omni_hears(qwen3vl_model: Path, qwen3vl_mmproj: Path, omni_mmproj: Path) -> None:
    deepstack = field(qwen3vl_mmproj, "clip.vision.is_deepstack_layers")
    assert field(qwen3vl_model, "qwen3vl.n_deepstack_layers") == sum(deepstack) > 0
    assert {f"v.deepstack.{i}.fc2.weight" for i, on in enumerate(deepstack) if on} <= tensor_names(qwen3vl_mmproj)
    assert field(omni_mmproj, "clip.has_audio_encoder") is True
    assert field(omni_mmproj, "clip.vision.n_wa_pattern") >= 1  # Qwen2.5-VL's windowed attention
    info = read_gguf(omni_mmproj)
    assert info.has_vision
    assert info.has_audio


async def test_llama_cpp_sees_with_qwen3vl(qwen3vl_model: Path, qwen3vl_mmproj: Path, jpeg: Path) -> None:
    engine = vision_engine(qwen3vl_model, qwen3vl_mmproj)
    image = [{"role": "user", "content": [{"type": "text", "text": "What? "}, {"type": "image", "path": str(jpeg)}]}]
    try:
        text = await engine.complete(ChatRequest(messages=[{"role": "user", "content": "What? "}], grammar=HELLO))
        seen = await engine.complete(ChatRequest(messages=image, grammar=HELLO))
    finally:
        await engine.close()
    assert seen.text == "Hello there, friend."
    assert seen.prompt_tokens > text.prompt_tokens  # the image's merged patches


async def test_llama_cpp_sees_and_hears_with_omni(
    omni_thinker: Path, omni_mmproj: Path, jpeg: Path, tmp_path: Path
) -> None:
    clip = write_wav(tmp_path / "clip.wav", 2.0)
    parts = [
        {"type": "text", "text": "What? "},
        {"type": "image", "path": str(jpeg)},
        {"type": "audio", "path": str(clip)},
    ]
    engine = vision_engine(omni_thinker, omni_mmproj)
    try:
        both = await engine.complete(ChatRequest(messages=[{"role": "user", "content": parts}], grammar=HELLO))
        status = engine.status("fast")
    finally:
        await engine.close()
    assert both.text == "Hello there, friend."
    assert status.last.images == 1
    assert status.last.audio_seconds == pytest.approx(2.0, abs=0.01)
    assert both.audio_tokens == 50  # 2 s of audio: 25 tokens per second
    assert both.prompt_tokens > 50  # and the image
