"""The transformers backend (issue 14) on a tiny random-weight Qwen2.5-Omni: a real worker process
under the torch venv's Python, driven by the engine exactly like a llama.cpp role."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
import importlib.util
import io
import os
from pathlib import Path
import signal
import sys
from typing import Any
import wave

import pytest

from custom_components.sarai_omni.engine import (
    MB,
    CapabilityMissing,
    ChatRequest,
    DoesNotFitBudget,
    Engine,
    EngineConfig,
    InvalidInput,
    WorkerCrashed,
)
from custom_components.sarai_omni.engine.backends.transformers.folder import (
    TORCH_RUNTIME_BYTES,
    read_folder,
    read_voices,
)
from custom_components.sarai_omni.engine.capabilities import CHAT, HEAR, SEE, SPEAK
from custom_components.sarai_omni.engine.errors import InvalidModelFile, TorchMissing
from tests.specs import folder_spec
from tests.workers import worker_stats

USER = [{"role": "user", "content": "Hello there"}]
Make = Callable[..., Engine]


@pytest.fixture
async def make(tiny_omni: Path, torch_venv_python: Path) -> AsyncGenerator[Make]:
    engines: list[Engine] = []

    def factory(*, budget_mb: int = 4096, python: str | None = None, **torch: str) -> Engine:
        interpreter = python or str(torch_venv_python)
        spec = folder_spec("quality", str(tiny_omni), interpreter, n_threads=2, n_ctx=2048, **torch)
        engine = Engine(EngineConfig(models=(spec,), ram_budget_mb=budget_mb))
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.close()


async def test_the_folder_is_described_without_torch(tiny_omni: Path, make: Make) -> None:
    info = read_folder(tiny_omni)
    assert (info.has_vision, info.has_audio, info.speaks) == (True, True, True)
    assert read_voices(tiny_omni) == ("Chelsie", "Ethan")
    engine = make()
    await engine.load("quality")
    stats = await worker_stats(engine, "quality")
    assert info.parameters() == stats["parameters"]  # the headers' count is the loaded model's own
    assert info.parameters("thinker") + info.parameters("talker") + info.parameters("token2wav") == info.parameters()
    assert info.weight_bytes("bfloat16") < info.weight_bytes("float32")
    assert engine.capabilities("quality") == {CHAT, SEE, HEAR, SPEAK}  # read from the folder
    assert engine.best_for(SPEAK) == "quality"
    assert engine.constraints("quality") == frozenset()  # no grammar, no JSON schema: refused, never dropped
    assert engine.status("quality").backend == "transformers"


@pytest.mark.parametrize(
    "constraint",
    [{"grammar": 'root ::= "yes"'}, {"json_schema": {"type": "object"}},
     {"json_schema": {"type": "object"}, "schema_as_tool_call": True}],
    ids=["grammar", "json_schema", "schema_as_tool_call"],
)  # fmt: skip
async def test_constrained_output_is_refused_never_dropped(make: Make, constraint: dict[str, Any]) -> None:
    """The transformers backend cannot constrain its sampling: a request that needs it is refused with
    the translated capability error before any load, and its worker refuses one that got past that."""
    engine = make()
    with pytest.raises(CapabilityMissing, match="transformers") as refused:
        await engine.complete(ChatRequest(USER, role="quality", max_tokens=4, **constraint))
    assert refused.value.key == "capability_missing"
    assert engine.status("quality").state == "unloaded"  # refused up front: nothing loaded for it
    await engine.load("quality")
    backend = engine.pool.slot("quality").backend
    with pytest.raises(InvalidInput, match="cannot constrain"):  # the worker's own guard, bypassing the engine
        async for _ in backend.generate(ChatRequest(USER, role="quality", max_tokens=4, **constraint)):
            pass
    reply = await engine.complete(ChatRequest(USER, role="quality", max_tokens=4, temperature=0.0))
    assert reply.completion_tokens > 0  # the worker still serves unconstrained requests


def test_a_folder_that_is_not_omni_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(InvalidModelFile, match="llama"):
        read_folder(tmp_path)


async def test_text_streams_and_media_add_their_tokens(make: Make, jpeg: Path, wav: Path) -> None:
    engine = make()
    stream = engine.chat(ChatRequest(USER, role="quality", max_tokens=12, temperature=0.0, ignore_eos=True))
    deltas = [d async for d in stream]
    assert stream.result is not None
    assert stream.result.completion_tokens == 12
    assert "".join(deltas) == stream.result.text
    assert stream.result.tokens_per_second > 0
    content = [{"type": "image", "path": str(jpeg)}, {"type": "audio", "path": str(wav)},
               {"type": "text", "text": "What is it?"}]  # fmt: skip
    media = await engine.complete(ChatRequest([{"role": "user", "content": content}], role="quality", max_tokens=4))
    assert media.prompt_tokens > stream.result.prompt_tokens + 20  # image patches and audio frames
    assert media.audio_seconds == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize("voice", ["Chelsie", "Ethan"])
async def test_speech_is_a_wav_with_seconds_of_audio(make: Make, voice: str) -> None:
    engine = make()
    speech = await engine.speak("quality", "Hola, ¿qué tal? Muy bien.", voice)
    assert speech.sample_rate == 24000
    assert speech.voice == voice
    with wave.open(io.BytesIO(speech.wav())) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        assert w.getnframes() / w.getframerate() == pytest.approx(speech.seconds)
    assert speech.seconds > 1.0  # two sentences said
    assert engine.status("quality").last.speech_seconds == pytest.approx(speech.seconds, abs=0.01)
    with pytest.raises(InvalidInput, match="unknown voice"):
        await engine.speak("quality", "Hi.", "Nobody")


async def test_a_worker_killed_mid_generation_is_a_clear_error_and_the_next_request_works(make: Make) -> None:
    engine = make()
    await engine.load("quality")
    pid = engine.pool.slot("quality").backend.client.pid  # type: ignore[attr-defined]
    assert pid is not None
    stream = engine.chat(ChatRequest(USER, role="quality", max_tokens=4000, ignore_eos=True))

    async def kill_after_the_first_token() -> None:
        async for _ in stream:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(WorkerCrashed, match="SIGKILL"):
        await kill_after_the_first_token()
    assert engine.status("quality").state != "loaded"
    result = await engine.complete(ChatRequest(USER, role="quality", max_tokens=3, ignore_eos=True))
    assert result.completion_tokens == 3
    assert engine.pool.slot("quality").backend.client.pid != pid  # type: ignore[attr-defined]


async def test_the_workers_measured_rss_counts_against_the_budget(make: Make) -> None:
    engine = make()
    await engine.load("quality")
    slot = engine.pool.slot("quality")
    rss = slot.backend.resident_bytes()
    assert rss > TORCH_RUNTIME_BYTES // 2  # torch and the model, measured from /proc
    assert engine.pool.used_bytes() >= rss
    assert engine.snapshot().measured_rss_mb == pytest.approx(rss / MB, abs=8)
    small = make(budget_mb=round(rss / MB) - 50)  # below what the worker measurably holds
    with pytest.raises(DoesNotFitBudget):
        await small.load("quality")


async def test_without_the_torch_venv_the_error_says_what_is_missing(make: Make, tmp_path: Path) -> None:
    missing = make(python=str(tmp_path / "no-venv" / "bin" / "python"))
    with pytest.raises(TorchMissing, match="no-venv"):
        await missing.load("quality")
    no_torch = make(python=sys.executable)  # HA's own Python: no torch there
    with pytest.raises(TorchMissing, match="cannot import torch"):
        await no_torch.load("quality")


def test_home_assistants_venv_has_no_torch() -> None:
    assert importlib.util.find_spec("torch") is None
    assert importlib.util.find_spec("transformers") is None


async def test_each_weights_type_answers_and_speaks(make: Make, tiny_omni: Path) -> None:
    info = read_folder(tiny_omni)
    assert info.weight_bytes("float32", "int8") < info.weight_bytes("float32")  # one byte a linear weight
    for options in ({"dtype": "float32"}, {"dtype": "bfloat16"}, {"quantization": "int8"}):
        engine = make(**options)
        result = await engine.complete(ChatRequest(USER, role="quality", max_tokens=3, ignore_eos=True))
        assert result.completion_tokens == 3, options
        assert (await engine.speak("quality", "Hi.")).seconds > 0, options  # talker fed by that thinker
        stats = await worker_stats(engine, "quality")
        assert stats["dtype"] == options.get("dtype", "float32"), stats  # int8 runs in float32 whatever is set
        await engine.close()
