"""scripts/demo's main-job contracts in a real `hass` process: `--say` (the config and model flows over
REST, a Qwen3-TTS voice through HA's TTS; the last line is {audio_path, seconds, sample_rate, voice,
role}) and `--remote`
against the project-built llama-server (the flow's server steps over REST, the turn answered there)."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import wave

import pytest

from tests.conftest import GEMMA
from tests.openai_server import LlamaServer
from tests.torch_env import ROOT
from tests.upgrade import NEWEST_HA


def test_demo_say_prints_the_wav_a_qwen3_tts_voice_wrote_through_ha(tmp_path: Path) -> None:
    """The voice fixture on llama.cpp (gguf-py wrote it; no torch anywhere): a 24 kHz WAV through HA's
    TTS API, and the last line names the role that spoke."""
    out = tmp_path / "hola.wav"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_driver.py"), "--say", "Hola, ¿qué tal?", "--language", "es",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "torch" not in done.stdout.replace("no torch", "")
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(last) == {"audio_path", "seconds", "sample_rate", "voice", "role", "home_assistant"}
    assert (last["role"], last["voice"]) == ("voice", "Sarai")
    assert last["home_assistant"] == NEWEST_HA  # the newest release runs the demo
    assert Path(last["audio_path"]) == out
    with wave.open(str(out)) as clip:
        assert clip.getframerate() == last["sample_rate"] == 24000
        assert clip.getnframes() / clip.getframerate() == pytest.approx(last["seconds"], abs=0.001)
    assert last["seconds"] > 0


@pytest.mark.usefixtures("socket_enabled")
def test_demo_remote_on_the_project_built_llama_server(tmp_path: Path) -> None:
    server = LlamaServer(tmp_path, GEMMA, "gemma", extra=("-n", "48")).start()
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "demo_driver.py"), "--remote", server.url],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout[-2000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert (last["model"], last["server"], last["home_assistant"]) == ("gemma", server.url, NEWEST_HA)
    assert last["reply"]
    assert last["tokens_per_second"] > 0  # llama-server's own timings
