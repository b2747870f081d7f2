"""A voice on llama.cpp (issue 28): Qwen3-TTS's talker and projector, written as the vendored converter
writes them (tests/tiny_tts.py), loaded and run by the vendored llama.cpp's audio generation in the
worker. Random weights: the sound is noise; the names, shapes, the 24 kHz PCM and its timing are real."""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from custom_components.sarai_omni.engine import (
    CHAT,
    HEAR,
    SPEAK,
    CapabilityMissing,
    Engine,
    EngineConfig,
    InvalidInput,
    WorkerCrashed,
    estimate_bytes,
    read_files,
    read_gguf,
    speech_languages,
)
from custom_components.sarai_omni.engine.voices import QWEN3TTS_LANGUAGES
from custom_components.sarai_omni.engine.worker.llamacpp.speech import FIRST_PIECE, PIECE, Voice, exact_pieces
from tests.engine.test_audio_fidelity import LLAMA_CPP
from tests.specs import gguf_spec

LONG = "Esta frase es bastante larga para que el audio salga en trozos, antes de que la voz termine de hablar."
# The converter's names (gguf-py's TENSOR_NAMES) as patterns, and which of them the talker's
# architecture holds; printed by the vendored gguf-py (PyPI's predates Qwen3-TTS).
NAMES = """
import json, gguf
names = {t: n for t, n in gguf.TENSOR_NAMES.items()}
talker = [names[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN3TTS]]
print(json.dumps({"all": sorted(set(names.values())), "talker": talker}))
"""


def voice_engine(voice: tuple[Path, Path], voices_dir: Path | None = None, **config: Any) -> Engine:
    talker, projector = voice
    spec = gguf_spec("voice", str(talker), str(projector), n_ctx=1024, voices_dir=str(voices_dir or ""))
    return Engine(EngineConfig(models=(spec,), ram_budget_mb=2048, **config))


def _patterns(names: list[str]) -> list[re.Pattern[str]]:
    return [re.compile(re.escape(n).replace(r"\{bid\}", r"\d+").replace(r"\{xid\}", r"\d+")) for n in names]


def test_the_fixture_has_the_converters_names_and_llama_cpp_reads_it(voice: tuple[Path, Path]) -> None:
    """Every tensor is named as conversion/qwen3tts.py names it; the headers say what the files are."""
    out = subprocess.run(
        [sys.executable, "-c", NAMES], check=True, capture_output=True, text=True,
        env=os.environ | {"PYTHONPATH": str(LLAMA_CPP / "gguf-py")},
    )  # fmt: skip
    names = json.loads(out.stdout)
    talker, projector = (read_gguf(p) for p in voice)
    assert talker.architecture == "qwen3tts"
    assert talker.speaks
    assert projector.generates_audio
    assert not projector.has_audio  # its audio encoder hears who speaks (a reference clip), not speech
    for info, allowed in ((talker, names["talker"]), (projector, names["all"])):
        patterns = _patterns(allowed)
        for name in _tensor_names(info.path):
            stem = name if name.endswith(".gamma") else name.rsplit(".", 1)[0]  # less .weight/.bias/.alpha/.beta
            assert any(p.fullmatch(stem) for p in patterns), f"{name} is not a name the converter writes"


def _tensor_names(path: Path) -> list[str]:
    import gguf

    return [t.name for t in gguf.GGUFReader(path).tensors]


async def test_a_voice_loads_in_llama_cpp_and_speaks_in_pieces(voice: tuple[Path, Path]) -> None:
    engine = voice_engine(voice)
    try:
        await engine.prepare()
        assert engine.pool.slot("voice").capabilities == frozenset({SPEAK})  # not CHAT, not HEAR
        assert engine.best_for(SPEAK) == "voice"
        assert engine.best_for(CHAT) is None
        assert engine.best_for(HEAR) is None
        assert speech_languages(engine.model_files("voice")) == QWEN3TTS_LANGUAGES
        short = await engine.speak("voice", "Hola, ¿qué tal?", language="es")
        pieces = [p async for p in engine.speak_stream("voice", LONG, language="es")]
    finally:
        await engine.close()
    assert short.sample_rate == 24000
    assert short.voice == "Sarai"  # the shipped reference clip
    assert short.seconds > 0.5
    assert len(short.pcm) % (2 * 1920) == 0  # whole 80 ms frames of 24 kHz
    audio = [p for p in pieces if p.pcm]
    assert len(audio) >= 2  # code2wav's first 72 frames went out before the voice had finished
    assert sum(p.seconds for p in audio) > 72 / 12.5
    assert pieces[-1].ms > 0  # the last piece says what it all took


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    """A folder of voices: a user's clip (espeak-ng) beside a file that is none."""
    folder = tmp_path / "voices"
    folder.mkdir()
    subprocess.run(["espeak-ng", "-w", str(folder / "Ana.wav"), "Hola, soy Ana."], check=True)
    (folder / "notes.txt").write_text("not a voice")
    return folder


async def test_a_users_clip_is_a_voice(voice: tuple[Path, Path], clips: Path) -> None:
    engine = voice_engine(voice, clips)
    try:
        await engine.prepare()
        assert set(engine.voices("voice")) == {"Sarai", "Ana"}
        speech = await engine.speak("voice", "Buenos días.", "Ana", language="es")
        with pytest.raises(InvalidInput, match="Nobody"):
            await engine.speak("voice", "Hi.", "Nobody")
        with pytest.raises(InvalidInput, match="not 'xx'"):
            await engine.speak("voice", "Hi.", language="xx")
    finally:
        await engine.close()
    assert speech.voice == "Ana"
    assert speech.seconds > 0


async def test_a_worker_killed_mid_sentence_is_a_clear_error_and_the_next_sentence_is_spoken(
    voice: tuple[Path, Path],
) -> None:
    engine = voice_engine(voice)
    try:
        await engine.prepare()
        await engine.load("voice")
        backend = engine.pool.slot("voice").backend
        pid = backend.pid  # type: ignore[attr-defined]

        async def speak_and_kill() -> None:
            async for piece in engine.speak_stream("voice", LONG, language="es"):
                if piece.pcm:  # mid-sentence: the first window is out, the rest is being written
                    os.kill(pid, signal.SIGKILL)

        with pytest.raises(WorkerCrashed, match="SIGKILL"):
            await speak_and_kill()
        after = await engine.speak("voice", "La siguiente frase.", language="es")
        assert backend.pid != pid  # type: ignore[attr-defined]
    finally:
        await engine.close()
    assert after.seconds > 0


async def test_a_model_that_does_not_speak_is_refused(voice: tuple[Path, Path], tiny_qwen2: Path) -> None:
    engine = Engine(
        EngineConfig(models=(gguf_spec("fast", str(tiny_qwen2), pinned=True, n_ctx=512),), ram_budget_mb=2048)
    )
    try:
        with pytest.raises(CapabilityMissing):
            await engine.speak("fast", "Hi.")
    finally:
        await engine.close()


def test_speech_in_pieces_is_the_speech_decoded_whole(voice: tuple[Path, Path]) -> None:
    """code2wav carries its state from piece to piece exactly (this project's patch; another build pads
    each piece to a 72-frame window and carries the padded window's state): the same codes streamed in
    pieces or decoded at the end give the same PCM."""
    import llama_cpp

    talker, projector = voice
    assert exact_pieces(llama_cpp.__version__)
    spoken = Voice(llama_cpp, {"model_path": str(talker), "mmproj_path": str(projector), "n_ctx": 1024})
    runs: list[list[np.ndarray]] = []
    try:
        # mtmd reseeds the code predictor's sampler only when the seed changes: 5, 6, 5 gives the
        # first and last runs the same codes
        for seed, first, every in ((5, FIRST_PIECE, PIECE), (6, FIRST_PIECE, PIECE), (5, 10**6, 10**6)):
            spoken.first_piece, spoken.piece = first, every
            pieces: list[np.ndarray] = []
            spoken.speak(LONG, "es", "Sarai", seed=seed, on_audio=pieces.append, cancelled=lambda: False)
            runs.append(pieces)
    finally:
        spoken.close()
    streamed, _, whole = runs
    assert len(whole) == 1
    assert len(streamed) >= 4
    assert len(streamed[0]) == FIRST_PIECE * 1920  # the first piece: 0.8 s, out before the rest was written
    joined = np.concatenate(streamed)
    assert joined.shape == whole[0].shape
    sound = float(np.std(whole[0]))
    assert sound > 0.003  # a waveform, not a constant: the comparison can fail
    # Only rounding differs (kernels for 10 frames and for 72 accumulate in another order): a piece
    # decoded with the wrong carried state (a padded window's) would differ by about the sound itself.
    assert float(np.abs(joined - whole[0]).max()) < 0.05 * sound


async def test_a_voice_that_takes_another_roles_room_says_so(voice: tuple[Path, Path], tiny_qwen2: Path) -> None:
    """The fast role is pinned; the voice fits beside it only in place of the quality role, and the
    speech's reason says whose room it took."""
    talker, projector = voice
    specs = (
        gguf_spec("fast", str(tiny_qwen2), pinned=True, n_ctx=512),
        gguf_spec("quality", str(tiny_qwen2), n_ctx=512),
        gguf_spec("voice", str(talker), str(projector), n_ctx=1024),
    )
    sizes = {s.role: estimate_bytes(s, read_files(s)) // 2**20 for s in specs}
    budget = sizes["fast"] + max(sizes["quality"], sizes["voice"]) + 8  # two fit, never all three
    engine = Engine(EngineConfig(models=specs, ram_budget_mb=budget))
    try:
        await engine.load("fast")
        await engine.load("quality")
        await engine.speak("voice", "Hola.", language="es")
        took = engine.status("voice").last.route_reason
        await engine.speak("voice", "Otra vez.", language="es")
        again = engine.status("voice").last.route_reason
        quality = engine.status("quality").state
    finally:
        await engine.close()
    assert took == "voice speaks (text to speech); loaded in place of quality (least recently used) within the budget"
    assert again == "voice speaks (text to speech)"  # already loaded: it took nobody's room this time
    assert quality == "unloaded"
