"""End of speech → first audio out through a real Home Assistant's Assist pipeline, on the seed shapes.

`hass -c` on 127.0.0.1 (the newest release's venv) with Sarai Omni set up through its flows: the
Qwen3-VL-4B shape answers (fast, its standing prompt warm), the Qwen2.5-Omni-7B shape hears (quality,
the STT entity), the Qwen3-TTS 0.6B voice speaks (a model role added through the model flow), in a
16 GB budget (the seed's box; all three stay resident). An Assist pipeline with the three runs over
HA's websocket API, as a voice satellite drives it: espeak-ng's "Turn on the kitchen light" streamed
in real time as binary frames, the end of speech the stream's end, and the answer's audio read from
HA's TTS stream URL (announced at the run's start) as it comes. The agent answers SENTENCE_TOKENS
tokens (random weights never end a sentence by themselves): its first sentence.

Measured per run: end of speech → transcript (stt-end), → the agent's answer (intent-end), → the
first audio bytes HA sends (after the WAV header); one warm-up run first (loads, graphs).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
import shutil
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

from benchmarks import seed_models
from tests.browser.home_assistant import HomeAssistant
from tests.tiny_tts import SEED_06B, write_voice

SPOKEN = "Turn on the kitchen light"
FRAME_BYTES = 2 * 16000 // 50  # 20 ms of 16 kHz 16-bit mono, as a satellite sends it
GUARD_S = 900.0  # against a hang, not a measurement


def spoken_pcm(folder: Path) -> bytes:
    """espeak-ng's words as the pipeline takes them: 16 kHz mono 16-bit PCM."""
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        raise RuntimeError("needs espeak-ng and ffmpeg (scripts/setup installs both where it may use apt)")
    raw = folder / "spoken.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), SPOKEN], check=True, capture_output=True)
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(raw), "-ar", "16000", "-ac", "1", "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return bytes(pcm)


class Voice:
    def __init__(self, folder: Path, threads: int, sentence_tokens: int) -> None:
        self.ha = HomeAssistant(folder, seed_models.CACHE)
        self.threads, self.sentence_tokens = threads, sentence_tokens
        self.entities: dict[str, str] = {}

    def set_up(self) -> None:
        fast, quality = seed_models.ensure("qwen3vl-4b", self.threads), seed_models.ensure("omni-7b", self.threads)
        talker, projector = write_voice(seed_models.CACHE / "voices", SEED_06B)
        ha = self.ha.start()
        flow = ha.request("POST", "/api/config/config_entries/flow", {"handler": "sarai_omni"})
        data = {
            "fast_model": str(fast.model), "fast_mmproj": str(fast.mmproj), "quality_model": str(quality.model),
            "quality_mmproj": str(quality.mmproj), "ram_budget_mb": 16384, "n_threads": self.threads, "n_ctx": 4096,
        }  # fmt: skip
        result = ha.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", data, timeout=GUARD_S)
        assert result.get("type") == "create_entry", result
        entry_id = result["result"]["entry_id"]
        self._agent(entry_id)
        flows = "/api/config/config_entries/subentries/flow"
        self._loaded(entry_id)
        flow = ha.request("POST", flows, {"handler": [entry_id, "model"]})
        form = {"role": "voice", "model_path": str(talker), "mmproj_path": str(projector), "n_ctx": 2048}
        done = ha.request("POST", f"{flows}/{flow['flow_id']}", form, timeout=GUARD_S)
        assert done.get("type") == "create_entry", done
        self._ready()

    def _loaded(self, entry_id: str) -> None:
        """The entry set up again (a new subentry reloads it)."""
        guard = time.monotonic() + GUARD_S
        while time.monotonic() < guard:
            entries = self.ha.request("GET", "/api/config/config_entries/entry?domain=sarai_omni")
            if any(e["entry_id"] == entry_id and e["state"] == "loaded" for e in entries):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the entry did not load: {self.ha.log_tail()}")

    def _agent(self, entry_id: str) -> None:
        """The agent answers its first sentence only (SENTENCE_TOKENS), greedy; Assist API on."""
        ha, flows = self.ha, "/api/config/config_entries/subentries/flow"
        self._loaded(entry_id)
        flow = ha.request("POST", flows, {"handler": [entry_id, "conversation"]})
        assert "data_schema" in flow, flow
        values = {
            f["name"]: (f.get("description") or {}).get("suggested_value", f.get("default"))
            for f in flow["data_schema"]
        }
        values = {k: v for k, v in values.items() if v is not None}
        values |= {"name": "Voice agent", "max_tokens": self.sentence_tokens, "temperature": 0.0}
        done = ha.request("POST", f"{flows}/{flow['flow_id']}", values)
        assert done.get("type") == "create_entry", done

    def _ready(self) -> None:
        """The agent, the STT and TTS entities there, and the fast model loaded."""
        ha, guard = self.ha, time.monotonic() + GUARD_S
        while time.monotonic() < guard:
            found = {e.split(".")[0]: e for e in self._states() if self._ours(e)}
            agents = [
                e
                for e, s in ha.states("conversation.").items()
                if s["attributes"].get("friendly_name") == "Voice agent"
            ]
            ready = ha.states("sensor.").get(next((e for e in self._states() if e.endswith("_fast_state")), ""), {})
            if agents and "stt" in found and "tts" in found and ready.get("state") == "loaded":
                self.entities = {"agent": agents[0], "stt": found["stt"], "tts": found["tts"]}
                return
            time.sleep(0.5)
        raise RuntimeError(f"the entities were not ready: {self._states()}")

    def _states(self) -> list[str]:
        return [e for e in self.ha.states("") if "sarai" in e]

    @staticmethod
    def _ours(entity_id: str) -> bool:
        return entity_id.split(".", maxsplit=1)[0] in ("stt", "tts")

    async def run(self, pcm: bytes) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{self.ha.base}/api/websocket") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": self.ha.token})
            await ws.receive_json()
            pipeline = await self._pipeline(ws)
            return await self._one_run(session, ws, pipeline, pcm)

    async def _pipeline(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        e = self.entities
        await ws.send_json({
            "id": 1, "type": "assist_pipeline/pipeline/create", "name": "Sarai voice", "language": "en",
            "conversation_engine": e["agent"], "conversation_language": "en", "stt_engine": e["stt"],
            "stt_language": "en", "tts_engine": e["tts"], "tts_language": "en", "tts_voice": "Sarai",
            "wake_word_entity": None, "wake_word_id": None,
        })  # fmt: skip
        reply = await ws.receive_json()
        assert reply.get("success"), reply
        return str(reply["result"]["id"])

    async def _one_run(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, pipeline: str, pcm: bytes
    ) -> dict[str, Any]:
        await ws.send_json({
            "id": 2, "type": "assist_pipeline/run", "pipeline": pipeline, "start_stage": "stt", "end_stage": "tts",
            "input": {"sample_rate": 16000, "no_vad": True}, "timeout": GUARD_S,
        })  # fmt: skip
        marks: dict[str, float] = {}
        first_audio: asyncio.Task[float] | None = None
        handler = -1
        ended = 0.0
        sender: asyncio.Task[float] | None = None
        while "run-end" not in marks:
            msg = await asyncio.wait_for(ws.receive_json(), GUARD_S)
            if msg.get("type") != "event":
                assert msg.get("success", True), msg
                continue
            kind, data = msg["event"]["type"], msg["event"].get("data") or {}
            marks.setdefault(kind, time.perf_counter())
            if kind == "intent-progress" and data.get("tts_start_streaming"):
                marks["tts-streaming"] = time.perf_counter()
            if kind == "error":
                raise RuntimeError(f"the pipeline failed: {data}")
            if kind == "run-start":
                handler = int(data["runner_data"]["stt_binary_handler_id"])
                first_audio = asyncio.create_task(self._first_audio(session, data["tts_output"]["url"]))
                sender = asyncio.create_task(self._speak(ws, handler, pcm))
        assert sender is not None
        assert first_audio is not None
        ended = await sender
        audio_at = await first_audio
        return {
            "speech_s": round(len(pcm) / 32000, 2),
            "eos_to_transcript_ms": round((marks["stt-end"] - ended) * 1000, 1),
            "eos_to_answer_ms": round((marks["intent-end"] - ended) * 1000, 1),
            "eos_to_first_audio_ms": round((audio_at - ended) * 1000, 1),
            "tts_started_before_the_answer_ended": "tts-streaming" in marks,
        }

    @staticmethod
    async def _speak(ws: aiohttp.ClientWebSocketResponse, handler: int, pcm: bytes) -> float:
        """The words in real time, 20 ms frames; returns the end of speech (the stream's end sent)."""
        started = time.perf_counter()
        for i, at in enumerate(range(0, len(pcm), FRAME_BYTES)):
            await asyncio.sleep(max(0.0, started + i * 0.02 - time.perf_counter()))
            await ws.send_bytes(bytes([handler]) + pcm[at : at + FRAME_BYTES])
        await asyncio.sleep(max(0.0, started + len(pcm) / 32000 - time.perf_counter()))
        await ws.send_bytes(bytes([handler]))  # the end of the audio
        return time.perf_counter()

    async def _first_audio(self, session: aiohttp.ClientSession, url: str) -> float:
        """When HA sent the answer's first audio: the first bytes past the WAV header's `data` chunk.
        The stream is read to its end, so the next run does not share the CPU with this one's voice."""
        head, first = b"", 0.0
        async with session.get(self.ha.base + url, timeout=aiohttp.ClientTimeout(total=GUARD_S)) as response:
            async for chunk in response.content.iter_any():
                if first:
                    continue
                head += chunk
                at = head.find(b"data") if head.startswith(b"RIFF") else -8  # other formats: any byte is audio
                if len(head) > at + 8:
                    first = time.perf_counter()
            if not first:
                raise RuntimeError(
                    f"HA's TTS stream had no audio: HTTP {response.status}, {len(head)} bytes {head[:64]!r}"
                )
        return first


def round_trip(threads: int, sentence_tokens: int, runs: int = 2) -> dict[str, Any]:
    """One warm-up run, then `runs` measured ones."""
    with tempfile.TemporaryDirectory(prefix="sarai-voice-") as folder:
        voice = Voice(Path(folder), threads, sentence_tokens)
        try:
            voice.set_up()
            pcm = spoken_pcm(Path(folder))
            warm_up = asyncio.run(voice.run(pcm))
            measured = [asyncio.run(voice.run(pcm)) for _ in range(runs)]
        finally:
            voice.ha.stop()
            shutil.copy(voice.ha.config / "hass.log", Path(tempfile.gettempdir()) / "sarai-ha-voice-hass.log")
    return {"warm_up": warm_up, "runs": measured, "home_assistant": "hass -c, .venv-ha"}
