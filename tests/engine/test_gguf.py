"""The GGUF header reader on real files: tiny generated models and the real gemma 270m."""

from __future__ import annotations

from pathlib import Path

import pytest

from custom_components.sarai_omni.engine import InvalidModelFile, ModelFiles, estimate_bytes, read_gguf
from tests.specs import gguf_spec
from tests.tiny_models import vocabulary


def test_tiny_qwen3_header(tiny_qwen3: Path) -> None:
    info = read_gguf(tiny_qwen3)
    assert info.architecture == "qwen3"
    assert info.name == "tiny-qwen3"
    assert info.file_type == "F32"
    assert info.context_length == 32768
    assert (info.block_count, info.head_count, info.head_count_kv) == (2, 4, 2)
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template
    assert info.is_supported_text_model
    assert not info.is_projector
    n_vocab = len(vocabulary()[0])
    per_layer = 64 * 64 * 2 + 32 * 64 * 2 + 64 * 128 * 3 + 64 * 2 + 16 * 2
    assert info.parameter_count == 2 * n_vocab * 64 + 64 + 2 * per_layer
    assert info.tensor_bytes == pytest.approx(info.parameter_count * 4, rel=0.01)  # F32
    assert info.metadata["tokenizer.ggml.tokens"] == n_vocab  # long arrays: only the length is kept


def test_kv_bytes_per_token(tiny_qwen2: Path) -> None:
    info = read_gguf(tiny_qwen2)
    # 2 layers x 2 kv heads x (16 + 16) dims x 2 bytes (f16)
    assert info.kv_bytes_per_token(2.0) == 2 * 2 * 32 * 2


def test_gemma_header(gemma: Path) -> None:
    info = read_gguf(gemma)
    assert info.architecture == "gemma3"
    assert info.file_type == "Q4_K_M"
    assert info.chat_template is None  # a base model: the integration must not use a chat template
    assert 250e6 < info.parameter_count < 300e6
    assert info.context_length == 32768
    assert info.summary()["quantization"] == "Q4_K_M"


def test_estimate_grows_with_context(gemma: Path) -> None:
    info = read_gguf(gemma)
    files = ModelFiles(gguf=info)
    small = estimate_bytes(gguf_spec("fast", str(gemma), n_ctx=1024), files)
    large = estimate_bytes(gguf_spec("fast", str(gemma), n_ctx=8192), files)
    repack = estimate_bytes(gguf_spec("fast", str(gemma), n_ctx=1024, repack=True), files)
    assert large - small == 7168 * info.kv_bytes_per_token(2.0)
    assert repack - small == info.tensor_bytes  # repacking keeps a second copy of the weights


def test_not_gguf_is_refused(model_dir: Path) -> None:
    with pytest.raises(InvalidModelFile, match="not a GGUF"):
        read_gguf(model_dir / "not-a-model.gguf")


def test_truncated_header_is_refused(tiny_qwen2: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_qwen2.read_bytes()[:200])
    with pytest.raises(InvalidModelFile, match="truncated"):
        read_gguf(cut)
