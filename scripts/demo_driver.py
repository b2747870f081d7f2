"""Drive a real Home Assistant through the sarai_omni main job (see scripts/demo).

Progress goes to stdout as `[demo] ...` lines; the last line is the JSON result of
shared/notes/interface.md: {"reply", "model", "load_ms", "ttft_ms", "tokens_per_second"}; with
`--say TEXT`, {"audio_path", "seconds", "sample_rate", "role", "voice"} of the WAV HA's TTS wrote and
the role that spoke: a Qwen3-TTS voice on llama.cpp (the tiny fixture unless --voice-model is given; no
torch), or with --omni, Qwen2.5-Omni's talker on transformers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any
import wave

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
PROMPTS = {"en": "What is the capital of France?", "es": "¿Cuál es la capital de Francia?"}
BOOT_TIMEOUT_S = 120
# The newest Home Assistant release runs the demo (scripts/setup's .venv-ha); the suite's own HA is
# the one the newest pytest-homeassistant-custom-component pins.
HASS = ROOT / ".venv-ha" / "bin" / "hass"
LOAD_TIMEOUT_S = 120


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config_dir(tmp: Path, port: int) -> Path:
    """A throwaway copy of config/ with this integration linked in, serving on 127.0.0.1:`port`."""
    config = tmp / "config"
    (config / "custom_components").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "configuration.yaml", config / "configuration.yaml")
    (config / "custom_components" / "sarai_omni").symlink_to(ROOT / "custom_components" / "sarai_omni")
    write_http_config(config, port)
    return config


def write_http_config(config: Path, port: int) -> None:
    """HA's HTTP settings where HA 2026.11 keeps them: its storage, confirmed (`stable`).

    Since 2026.11 an `http:` section in YAML is migrated once into storage as a *pending* trial that
    must be confirmed in the UI, or HA restarts on its previous settings five minutes later; and the
    YAML is deprecated. So the settings a person would have confirmed are written here instead.
    """
    stable = {
        "server_host": ["127.0.0.1"], "server_port": port, "cors_allowed_origins": ["https://cast.home-assistant.io"],
        "login_attempts_threshold": -1, "ip_ban_enabled": True, "ssl_profile": "intermediate_v6",
        "use_x_frame_options": True, "created_at": "2026-12-01T00:00:00+00:00", "error": None, "error_message": None,
    }  # fmt: skip
    data = {"stable": stable, "pending": None, "yaml_migration_done": True}
    storage = config / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    stored = {"version": 3, "minor_version": 1, "key": "http", "data": data}
    (storage / "http").write_text(json.dumps(stored, indent=2))


class HA:
    """A tiny REST client for the booted Home Assistant."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base, self.token = session, base, ""

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {await resp.text()}")
            return await resp.json()

    async def wait_up(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"Home Assistant exited with code {proc.returncode}")
            try:
                async with self.session.get(self.base + "/api/onboarding") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError("Home Assistant did not answer in time")

    async def onboard(self) -> None:
        client_id = self.base + "/"
        user = await self.request(
            "POST",
            "/api/onboarding/users",
            json={
                "client_id": client_id,
                "name": "Demo",
                "username": "demo",
                "password": "demo-password-1",
                "language": "en",
            },
        )
        token = await self.request(
            "POST",
            "/auth/token",
            data={"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id},
        )
        self.token = token["access_token"]

    async def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in await self.request("GET", "/api/states")}

    async def wait_for(self, prefix: str, suffix: str) -> dict[str, Any]:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            try:
                return await self.find(prefix, suffix)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)

    async def find(self, prefix: str, suffix: str) -> dict[str, Any]:
        for entity_id, state in (await self.states()).items():
            if entity_id.startswith(prefix) and entity_id.endswith(suffix) and "sarai" in entity_id:
                return state
        raise RuntimeError(f"no entity {prefix}*{suffix}")


async def set_up_integration(
    ha: HA,
    model: Path,
    mmproj: Path | None = None,
    *,
    remote: str | None = None,
    remote_model: str | None = None,
    quality: Path | None = None,
) -> None:
    """The config flow over REST; with `remote`, the fast role goes to that server (its two steps);
    `quality` is a model folder (transformers) for the quality role."""
    flow = await ha.request("POST", "/api/config/config_entries/flow", json={"handler": "sarai_omni"})
    data: dict[str, Any] = {"ram_budget_mb": 4096, "n_threads": os.cpu_count() or 2, "n_ctx": 2048}
    if quality:
        data["quality_model"] = str(quality)
    if remote:
        data["remote_roles"] = ["fast"]
    else:
        data["fast_model"] = str(model)
    if mmproj:
        data["fast_mmproj"] = str(mmproj)
    step = f"/api/config/config_entries/flow/{flow['flow_id']}"
    result = await ha.request("POST", step, json=data)
    if remote:
        result = await ha.request("POST", step, json={"url": remote})
        if result.get("step_id") != "remote_model":
            raise RuntimeError(f"the server at {remote} was refused: {result.get('errors') or result}")
        listed = result["description_placeholders"]["models"].split(", ")
        chosen = remote_model or listed[0]
        say(f"the server lists {', '.join(listed)}: the fast role is {chosen}")
        result = await ha.request("POST", step, json={"model": chosen, "vision": False, "audio": False})
    if result.get("type") != "create_entry":
        raise RuntimeError(f"config flow did not create the entry: {result.get('errors') or result}")


async def wait_loaded(ha: HA) -> dict[str, Any]:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            state = await ha.find("sensor.", "_fast_state")
        except RuntimeError:
            state = {"state": "absent"}
        if state["state"] in ("loaded", "remote"):
            return state
        if state["state"] == "error":
            raise RuntimeError(f"fast model failed to load: {state['attributes'].get('error')}")
        await asyncio.sleep(0.25)
    raise RuntimeError("the fast model did not load in time")


def speaking_model(args: argparse.Namespace) -> tuple[Path, Path]:
    """(the Qwen2.5-Omni folder, the torch venv's Python) for --omni."""
    sys.path.insert(0, str(ROOT))
    from tests.torch_env import MISSING, torch_python

    python = args.torch_python or torch_python()
    if python is None or not Path(python).is_file():
        raise RuntimeError(MISSING)
    return args.omni, Path(python)


def voice_model(args: argparse.Namespace) -> tuple[Path, Path]:
    """(talker, projector) of the Qwen3-TTS voice: given, or the tiny fixture (said so)."""
    if args.voice_model:
        if not args.voice_mmproj:
            raise RuntimeError("--voice-model needs its projector (--voice-mmproj)")
        return args.voice_model, args.voice_mmproj
    sys.path.insert(0, str(ROOT))
    from tests.tiny_tts import write_voice

    say(
        "no Qwen3-TTS voice given (--voice-model): using the tiny random-weight fixture (written with gguf-py,"
        " no torch); its sound is noise, while llama.cpp's audio generation, HA's TTS path and timings are real"
    )
    return write_voice(ROOT / "models" / "tiny-voice-fixture")


async def add_voice_role(ha: HA, talker: Path, projector: Path) -> str:
    """The model subentry flow over REST: a role named `voice` on the Qwen3-TTS pair."""
    entries = await ha.request("GET", "/api/config/config_entries/entry?domain=sarai_omni")
    flows = "/api/config/config_entries/subentries/flow"
    flow = await ha.request("POST", flows, json={"handler": [entries[0]["entry_id"], "model"]})
    form = {"role": "voice", "model_path": str(talker), "mmproj_path": str(projector), "n_ctx": 2048}
    result = await ha.request("POST", f"{flows}/{flow['flow_id']}", json=form)
    if result.get("type") != "create_entry":
        raise RuntimeError(f"the model flow refused the voice: {result.get('errors') or result}")
    return "voice"


async def prepare_speaker(ha: HA, args: argparse.Namespace) -> None:
    """The role that will speak: Omni's folder (the torch venv set in the options), else a voice role."""
    if args.omni:
        await set_torch_python(ha, args.torch_python)
        args.speaker = "quality"
    else:
        say(f"adding a voice role on {args.voice_model.name} through the model flow")
        args.speaker = await add_voice_role(ha, args.voice_model, args.voice_mmproj)


async def set_torch_python(ha: HA, python: Path) -> None:
    """The options flow over REST: the torch venv's Python (the flow checks that it imports torch)."""
    entries = await ha.request("GET", "/api/config/config_entries/entry?domain=sarai_omni")
    options = "/api/config/config_entries/options/flow"
    flow = await ha.request("POST", options, json={"handler": entries[0]["entry_id"]})
    result = await ha.request("POST", f"{options}/{flow['flow_id']}", json={"torch_python": str(python)})
    if result.get("type") != "create_entry":
        raise RuntimeError(f"the options flow refused the torch venv: {result.get('errors') or result}")


async def speak(ha: HA, args: argparse.Namespace) -> dict[str, Any]:
    """Speech through HA's TTS (REST: tts_get_url, then the audio), written to a WAV file."""
    engine = (await ha.wait_for("tts.", ""))["entity_id"]  # a new role reloads the entry: its entity comes back
    say(f"asking {engine} to say ({args.language}): {args.say}")
    t0 = time.monotonic()
    options = {"preferred_format": "wav", **({"voice": args.voice} if args.voice else {})}
    url = await ha.request(
        "POST",
        "/api/tts_get_url",
        json={"engine_id": engine, "message": args.say, "language": args.language, "options": options},
    )
    async with ha.session.get(ha.base + url["path"]) as resp:  # its url names HA's own host, not 127.0.0.1
        if resp.status >= 400:
            raise RuntimeError(f"TTS audio: HTTP {resp.status}: {await resp.text()}")
        audio = await resp.read()
    args.out.write_bytes(audio)
    with wave.open(str(args.out)) as clip:
        rate, seconds = clip.getframerate(), clip.getnframes() / clip.getframerate()
    say(f"spoken in {time.monotonic() - t0:.2f} s: {seconds:.2f} s of audio at {rate} Hz")
    state: dict[str, Any] = {}
    for _ in range(40):  # the role's state sensor follows the engine's status within a moment
        state = (await ha.find("sensor.", f"_{args.speaker}_state"))["attributes"]
        if state.get("voice"):
            break
        await asyncio.sleep(0.25)
    return {
        "audio_path": str(args.out),
        "seconds": round(seconds, 3),
        "sample_rate": rate,
        "voice": state.get("voice"),
        "role": args.speaker,
    }


def vision_models(args: argparse.Namespace) -> tuple[Path, Path]:
    """The configured vision model, or the tiny random-weight test fixture (said so)."""
    if args.mmproj:
        return args.model, args.mmproj
    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import write_mmproj, write_text_model

    folder = ROOT / "models" / "tiny-vl-fixture"
    folder.mkdir(parents=True, exist_ok=True)
    say(
        "no vision model given (--mmproj): using the tiny random-weight test fixture; its words are noise,"
        " while the image path, routing and timings are real"
    )
    return write_text_model(folder / "tiny-qwen2.gguf"), write_mmproj(folder / "tiny-mmproj.gguf")


async def analyze(ha: HA, args: argparse.Namespace) -> dict[str, Any]:
    """Call the analysis service over REST and return its response data."""
    data: dict[str, Any]
    if args.image:
        service, data = "analyze_image", {"image_path": [str(args.image)]}
    else:
        service, data = "analyze_video", {"video_path": str(args.video), "max_frames": args.max_frames}
    if args.prompt:
        data["prompt"] = args.prompt
    say(f"calling sarai_omni.{service} on {args.image or args.video}")
    answer = await ha.request("POST", f"/api/services/sarai_omni/{service}?return_response", json=data)
    return dict(answer["service_response"])


def check_inputs(args: argparse.Namespace) -> None:
    """Before HA boots: the files exist; --image/--video get a vision model (the fixture if none)."""
    media: Path | None = args.image or args.video
    if media is not None and not media.is_file():
        raise RuntimeError(f"file not found: {media}")
    if media is not None:
        args.model, args.mmproj = vision_models(args)
    if args.say is not None and args.omni:
        args.omni, args.torch_python = speaking_model(args)
    elif args.say is not None:
        args.voice_model, args.voice_mmproj = voice_model(args)
    if not args.remote and not args.model.is_file():
        raise RuntimeError(f"model not found: {args.model} (run scripts/setup)")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    media: Path | None = args.image or args.video
    model, mmproj = args.model, args.mmproj
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sarai_demo_") as tmp:
        config = make_config_dir(Path(tmp), port)
        env = {
            **os.environ,
            "SARAI_MODELS_DIR": str(model.parent),
            "SARAI_HTTP_PORT": str(port),
            "SARAI_MEDIA_DIR": str(media.parent if media else args.omni.parent if args.omni else ROOT / "models"),
        }
        say(f"booting Home Assistant on 127.0.0.1:{port} (config {config})")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(HASS),
            "-c",
            str(config),
            "--skip-pip",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(config / "demo-hass.log").open("wb"),
        )
        try:
            async with aiohttp.ClientSession() as session:
                ha = HA(session, f"http://127.0.0.1:{port}")
                await ha.wait_up(proc)
                say(f"Home Assistant is up after {time.monotonic() - started:.1f} s; onboarding a demo user")
                await ha.onboard()
                version = str((await ha.request("GET", "/api/config"))["version"])
                say(f"Home Assistant {version}")
                where = f"the server at {args.remote}" if args.remote else model.name
                say(f"setting up sarai_omni through its config flow with {where}")
                await set_up_integration(
                    ha, model, mmproj, remote=args.remote, remote_model=args.remote_model, quality=args.omni
                )
                if args.say is not None:
                    await prepare_speaker(ha, args)
                state = await wait_loaded(ha)
                say(f"fast model {'reached' if args.remote else 'loaded'} in {state['attributes']['load_ms']:.0f} ms")
                if media:
                    return {**await analyze(ha, args), "home_assistant": version}
                if args.say is not None:
                    return {**await speak(ha, args), "home_assistant": version}
                agent = (await ha.find("conversation.", ""))["entity_id"]
                prompt = args.prompt or PROMPTS[args.language]
                say(f"asking {agent} ({args.language}): {prompt}")
                t0 = time.monotonic()
                answer = await ha.request(
                    "POST",
                    "/api/conversation/process",
                    json={"text": prompt, "language": args.language, "agent_id": agent},
                )
                say(f"answered in {time.monotonic() - t0:.2f} s")
                reply = answer["response"]["speech"]["plain"]["speech"]
                if answer["response"]["response_type"] == "error":
                    raise RuntimeError(f"the agent answered with an error: {reply}")
                # The speed and TTFT sensors are disabled by default: the state sensor carries both.
                attributes = (await ha.find("sensor.", "_fast_state"))["attributes"]
                result = {
                    "reply": reply.strip(),
                    "model": attributes["model"],
                    "load_ms": round(float(attributes["load_ms"]), 1),
                    "ttft_ms": round(float(attributes["ttft_ms"]), 1),
                    "tokens_per_second": round(float(attributes["tokens_per_second"]), 2),
                    "home_assistant": version,
                }
                if attributes.get("remote"):
                    result["server"] = attributes["server"]
                return result
        finally:
            say("stopping Home Assistant")
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 60)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt", help="what to ask (default: a question in --language)")
    parser.add_argument("--language", choices=sorted(PROMPTS), default="en")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="fast model GGUF")
    parser.add_argument("--mmproj", type=Path, help="vision projector of --model (for --image/--video)")
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--image", type=Path, help="run sarai_omni.analyze_image on this file instead of a chat turn")
    media.add_argument("--video", type=Path, help="run sarai_omni.analyze_video on this file")
    parser.add_argument("--max-frames", type=int, default=4, help="frames sent for --video")
    parser.add_argument("--remote", metavar="URL", help="the fast role on this OpenAI-compatible server (.../v1)")
    parser.add_argument("--remote-model", metavar="ID", help="the server's model for it (default: the first listed)")
    parser.add_argument("--say", metavar="TEXT", help="speak TEXT through HA's TTS (a Qwen3-TTS voice by default)")
    parser.add_argument("--voice-model", type=Path, help="Qwen3-TTS talker GGUF for --say (default: tiny fixture)")
    parser.add_argument("--voice-mmproj", type=Path, help="its projector (speaker encoder, code predictor, code2wav)")
    parser.add_argument("--omni", type=Path, help="speak with this Qwen2.5-Omni folder's talker on transformers")
    parser.add_argument("--voice", help="the voice for --say (default: the role's default, Sarai or Chelsie)")
    parser.add_argument("--torch-python", type=Path, help="the torch venv's Python (default: scripts/setup's)")
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "sarai-omni-say.wav", help="the WAV --say writes"
    )
    args = parser.parse_args()
    if args.remote and (args.image or args.video):
        parser.error("--remote runs the Assist turn on the server; --image/--video run on local models")
    if args.say is not None and (args.image or args.video or args.remote):
        parser.error("--say speaks through a local role: no --image/--video/--remote with it")
    paths = ("image", "video", "model", "mmproj", "omni", "voice_model", "voice_mmproj", "out")
    for name in paths:  # HA needs absolute, allow-listed paths
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    try:
        check_inputs(args)
        result = asyncio.run(run(args))
    except (RuntimeError, aiohttp.ClientError, OSError) as err:
        say(f"failed: {err}")
        return 1
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
