"""Qwen2.5-Omni hears in llama.cpp as in transformers: the same audio tokens, the same embeddings.

The oracle is transformers itself (tests/omni_audio_oracle.py, in the torch venv) on the tiny random
Qwen2.5-Omni; llama.cpp encodes the same clips with the projector that the vendored converter
(`convert_hf_to_gguf.py --mmproj`) makes from the same weights (tests/mtmd_audio_embed.py, in a
process of its own). The 5 s clip is also encoded as the STT entity streams it, window by window:
the same embeddings (up to the STFT at the cuts). On llama.cpp without this project's patch every clip
under 30 s is 750 tokens and this test fails (run it with MTMD_CPP_LIB and LLAMA_CPP_LIB_PATH set to
an unpatched build's lib/).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest

from custom_components.sarai_omni.engine import llama_sources
from tests.conftest import read_pcm, save_wav, write_speechlike
from tests.tiny_models import VL_TEMPLATE, write_text_model
from tests.torch_env import CACHE

ROOT = Path(__file__).resolve().parents[2]
LLAMA_CPP = CACHE / "sources" / f"llama_cpp_python-{llama_sources.patched_version()}" / "vendor" / "llama.cpp"
# seconds -> audio tokens in transformers: 200-frame windows, conv (n + 1) // 2, pool // 2
CLIPS = {1.3: 32, 2.0: 50, 5.0: 125, 31.0: 775}
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def converted(tiny_omni: Path, torch_venv_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Omni's projector, converted by llama.cpp's own converter (as the seed's is)."""
    folder = tmp_path_factory.mktemp("converted")
    hf = shutil.copytree(tiny_omni, folder / "hf")
    config = json.loads((hf / "config.json").read_text())
    config["architectures"] = ["Qwen2_5OmniModel"]  # what the seed's repository names (the converter's key)
    (hf / "config.json").write_text(json.dumps(config))
    out = folder / "mmproj-tiny-omni-f32.gguf"
    subprocess.run(
        [str(torch_venv_python), str(LLAMA_CPP / "convert_hf_to_gguf.py"), str(hf), "--mmproj",
         "--outtype", "f32", "--outfile", str(out)],
        check=True, capture_output=True, timeout=300, env=os.environ | {"PYTHONPATH": str(LLAMA_CPP / "gguf-py")},
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [write_speechlike(folder / f"clip-{s}s.wav", s, seed=i) for i, s in enumerate(CLIPS)]


def pieces(clip: Path, seconds: float = 2.0) -> list[Path]:
    """The clip cut where the STT entity cuts a stream: each 2 s window its own WAV, the tail last."""
    pcm, size = read_pcm(clip), int(seconds * 16000) * 2
    return [
        save_wav(clip.with_name(f"{clip.stem}-piece{i}.wav"), pcm[start : start + size])
        for i, start in enumerate(range(0, len(pcm), size))
    ]


def _run(args: list[str], out: Path) -> dict[str, np.ndarray]:
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    with np.load(out) as found:
        return {name: found[name] for name in found.files}


def test_llama_cpp_encodes_omni_audio_as_transformers_does(
    converted: Path, clips: list[Path], tiny_omni: Path, torch_venv_python: Path, tmp_path: Path
) -> None:
    model = write_text_model(tmp_path / "thinker.gguf", "qwen2vl", chat_template=VL_TEMPLATE)  # its width: 64
    oracle = _run(
        [str(torch_venv_python), str(ROOT / "tests" / "omni_audio_oracle.py"), str(tiny_omni),
         str(tmp_path / "oracle.npz"), *map(str, clips)], tmp_path / "oracle.npz",
    )  # fmt: skip
    streamed = pieces(clips[2])  # the 5 s clip as the STT entity hands it over: 2 s, 2 s, 1 s
    ours = _run(
        [sys.executable, str(ROOT / "tests" / "mtmd_audio_embed.py"), str(model), str(converted),
         str(tmp_path / "ours.npz"), *map(str, [*clips, *streamed])], tmp_path / "ours.npz",
    )  # fmt: skip
    ours[f"streamed {clips[2].name}"] = np.concatenate([ours.pop(p.name) for p in streamed])
    oracle[f"streamed {clips[2].name}"] = oracle[clips[2].name]
    lowest = 1.0
    for name, tokens in [
        *zip((c.name for c in clips), CLIPS.values(), strict=True),
        (f"streamed {clips[2].name}", 125),
    ]:
        want, got = oracle[name], ours[name]
        assert want.shape[0] == tokens, f"{name}: the oracle itself gives {want.shape[0]} tokens"
        assert got.shape == want.shape, f"{name}: llama.cpp gives {got.shape[0]} audio tokens, transformers {tokens}"
        cosine = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
        assert cosine.min() >= MIN_COSINE, f"{name}: token {cosine.argmin()} has cosine {cosine.min():.4f}"
        lowest = min(lowest, float(cosine.min()))
    print(f"fidelity_cos_min {lowest:.6f}")  # benchmarks/bench_audio.py reports it
