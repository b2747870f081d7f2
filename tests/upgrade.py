"""What a user's Home Assistant stored with this integration's release before HA 2026.9 support, and
the model it stored it for: the upgrade test (tests/test_upgrade.py) boots the newest HA on it.

`python -m tests.upgrade --release DIR --hass PATH` made tests/fixtures/upgrade_2026_2/ once: DIR is a
checkout of that release (commit 4bb4c06), PATH the `hass` of a venv with Home Assistant 2026.2.3 and
its requirements. It drives that HA over REST and its websocket as a user would (config flow, options,
an extra agent with the cameras API, an entity renamed and one disabled, two Assist turns) with
repacking made to crash (SARAI_OMNI_FAULTS), so the calibration remembers a ruled-out variant, then
stops HA and keeps what it stored: the config entries, the entity and device registries, the
calibration and the KV snapshots. The model is a tiny fixture, rewritten identically by the test at
the same path and with the same modification time (KV snapshots and calibrations are keyed by both).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
import json
import os
from pathlib import Path
import shutil
import signal
import tempfile
from typing import Any

import aiohttp

from scripts.demo_driver import HA, free_port, say
from tests.tiny_models import write_text_model

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "upgrade_2026_2"
MODELS = Path("/tmp/sarai-omni-upgrade-models")  # the path the stored entry names
MODEL = MODELS / "tiny-qwen2.gguf"
MODEL_MTIME_NS = 1_764_547_200 * 10**9  # 2025-12-01: fixed, so the stored keys match the rewritten file
STORED = ("core.config_entries", "core.entity_registry", "core.device_registry")
GUARD_S = 120.0  # against a hang, not a measurement


def _pinned(package: str, requirements: Path) -> str:
    for line in requirements.read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.partition("==")[2].strip()
    raise LookupError(f"{package} is not pinned in {requirements}")


NEWEST_HA = _pinned("homeassistant", ROOT / "requirements_ha.txt")  # what .venv-ha runs


def write_model() -> Path:
    """The tiny qwen2 model the fixture's entry uses, byte for byte and stamp for stamp."""
    MODELS.mkdir(parents=True, exist_ok=True)
    write_text_model(MODEL, "qwen2")
    os.utime(MODEL, ns=(MODEL_MTIME_NS, MODEL_MTIME_NS))
    return MODEL


async def _ws(ha: HA, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send websocket commands (what the frontend does) and return their results."""
    results = []
    async with ha.session.ws_connect(ha.base + "/api/websocket") as ws:
        await ws.receive_json()  # auth_required
        await ws.send_json({"type": "auth", "access_token": ha.token})
        assert (await ws.receive_json())["type"] == "auth_ok"
        for n, message in enumerate(messages, start=1):
            await ws.send_json({"id": n, **message})
            while (reply := await ws.receive_json()).get("id") != n:
                pass
            if not reply.get("success"):
                raise RuntimeError(f"{message['type']}: {reply}")
            results.append(reply["result"])
    return results


async def _configure(ha: HA) -> str:
    """The user's steps: setup, options, an agent, entity customizations; returns the entry id."""
    flow = await ha.request("POST", "/api/config/config_entries/flow", json={"handler": "sarai_omni"})
    setup = {"fast_model": str(MODEL), "ram_budget_mb": 1024, "n_threads": 2, "n_ctx": 16384}
    result = await ha.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", json=setup)
    assert result["type"] == "create_entry", result
    entry_id = str(result["result"]["entry_id"])
    options = "/api/config/config_entries/options/flow"
    flow = await ha.request("POST", options, json={"handler": entry_id})
    changed = {"idle_unload_s": 900, "request_timeout_s": 90, "router_short_chars": 100, "prompt_lookup": False,
               "fast_n_batch": 256}  # fmt: skip
    result = await ha.request("POST", f"{options}/{flow['flow_id']}", json=changed)
    assert result["type"] == "create_entry", result
    await _entry_loaded(ha)  # the options reloaded it: agents are added to a loaded entry
    subentries = "/api/config/config_entries/subentries/flow"
    flow = await ha.request("POST", subentries, json={"handler": [entry_id, "conversation"]})
    agent = {"name": "Cocina", "prompt": "Eres breve.", "llm_hass_api": ["sarai_omni_cameras"],
             "model": "fast", "max_tokens": 128, "temperature": 0.3}  # fmt: skip
    result = await ha.request("POST", f"{subentries}/{flow['flow_id']}", json=agent)
    assert result["type"] == "create_entry", result
    return entry_id


async def _entry_loaded(ha: HA) -> None:
    async def loaded() -> bool:
        entries = await ha.request("GET", "/api/config/config_entries/entry?domain=sarai_omni")
        return bool(entries[0]["state"] == "loaded")

    await _poll(loaded)


async def _customize_entities(ha: HA) -> None:
    states = await ha.states()
    fast_state = next(e for e in states if e.startswith("sensor.") and e.endswith("_fast_state"))
    memory = next(e for e in states if e.startswith("sensor.") and e.endswith("_fast_memory"))
    await _ws(ha, [
        {"type": "config/entity_registry/update", "entity_id": fast_state, "name": "Cerebro rápido"},
        {"type": "config/entity_registry/update", "entity_id": memory, "disabled_by": "user"},
    ])  # fmt: skip


async def _talk(ha: HA) -> None:
    """One turn with each agent: their standing prompts leave KV snapshots on disk."""
    for state in (s for e, s in (await ha.states()).items() if e.startswith("conversation.")):
        reply = await ha.request(
            "POST", "/api/conversation/process", json={"text": "hola", "language": "es", "agent_id": state["entity_id"]}
        )
        say(f"{state['entity_id']}: {reply['response']['response_type']}")


async def _poll(check: Callable[[], Awaitable[bool]]) -> None:
    """Until `check()` holds, asked every 0.25 s (another process's state: no event to wait on)."""
    async with asyncio.timeout(GUARD_S):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.25)


def _files(folder: Path, pattern: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def there() -> bool:
        return len(await asyncio.to_thread(lambda: list(folder.glob(pattern)))) >= count

    return there


async def make(release: Path, hass: Path) -> None:
    write_model()
    with tempfile.TemporaryDirectory(prefix="sarai_upgrade_") as tmp:
        config = Path(tmp) / "config"
        (config / "custom_components").mkdir(parents=True)
        shutil.copy(release / "config" / "configuration.yaml", config / "configuration.yaml")  # HA 2026.2: http in YAML
        (config / "custom_components" / "sarai_omni").symlink_to(release / "custom_components" / "sarai_omni")
        port = free_port()
        env = {**os.environ, "SARAI_MODELS_DIR": str(MODELS), "SARAI_MEDIA_DIR": str(MODELS),
               "SARAI_HTTP_PORT": str(port), "SARAI_OMNI_FAULTS": "repack=SIGILL"}  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            str(hass), "-c", str(config), "--skip-pip", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=(config / "hass.log").open("wb"),
        )  # fmt: skip
        state = config / "sarai_omni"
        try:
            async with aiohttp.ClientSession() as session:
                ha = HA(session, f"http://127.0.0.1:{port}")
                await ha.wait_up(proc)
                await ha.onboard()
                version = (await ha.request("GET", "/api/config"))["version"]
                await _configure(ha)
                await _poll(_files(state, "calibration.json", 1))
                await _customize_entities(ha)
                await _talk(ha)
                await _poll(_files(state / "kv_cache", "state-*.kv", 2))
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        if FIXTURE.exists():
            shutil.rmtree(FIXTURE)
        (FIXTURE / ".storage").mkdir(parents=True)
        for name in STORED:
            shutil.copy(config / ".storage" / name, FIXTURE / ".storage" / name)
        shutil.copytree(state, FIXTURE / "sarai_omni", ignore=shutil.ignore_patterns("parked-*"))
        meta = {"home_assistant": version, "release": release.name, "model": str(MODEL), "mtime_ns": MODEL_MTIME_NS}
        (FIXTURE / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        files = sorted(p.name for p in FIXTURE.rglob("*") if p.is_file())
        say(f"fixture written from Home Assistant {version}: {files}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--release", type=Path, required=True, help="a checkout of the release to upgrade from")
    parser.add_argument("--hass", type=Path, required=True, help="`hass` of the Home Assistant it ran on")
    args = parser.parse_args()
    asyncio.run(make(args.release.resolve(), args.hass.resolve()))


if __name__ == "__main__":
    main()
