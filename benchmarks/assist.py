"""Assist turns through a real Home Assistant (`hass -c` on 127.0.0.1) on the 4B seed shape.

The agent has the Assist API on and sees exposed lights and switches, so its standing prompt is
Assist's real one (instructions, tools, entities). Measured from the model's state sensor after each
`/api/conversation/process` turn (the worker's TTFT and the tokens it evaluated) and by the wall
clock around the request:
- cold: nothing cached (the KV snapshot moved aside and the model unloaded first);
- warm: the standing prompt in the worker's context, a new conversation each turn;
- restored: the first turn after Home Assistant restarts, the KV state back from disk at start.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
import shutil
import statistics
import tempfile
import time
from typing import Any

import aiohttp

from benchmarks.common import median
from tests.browser.home_assistant import HomeAssistant

ROOMS = ("Kitchen", "Living room", "Bedroom", "Office", "Garage", "Hallway", "Bathroom", "Garden")
TURNS = (
    "Turn on the kitchen light",
    "Is the garage switch on?",
    "Switch off the bedroom lamp",
    "Dim the living room light",
    "Which lights are on?",
    "Turn off everything in the office",
)
READY_GUARD_S = 900.0  # a guard against a hang (the cold standing prompt takes minutes here)


def exposed_entities() -> str:
    """Template lights and switches (local, no hardware): what Assist's prompt lists."""
    noop = '        turn_on: [{delay: "00:00:00"}]\n        turn_off: [{delay: "00:00:00"}]\n'
    lights = "".join(f'      - name: "{room} light"\n{noop}' for room in ROOMS)
    switches = "".join(f'      - name: "{room} switch"\n{noop}' for room in ROOMS[:4])
    return f"\ntemplate:\n  - light:\n{lights}  - switch:\n{switches}"


class Bench:
    def __init__(self, folder: Path, model: Path, threads: int, max_tokens: int) -> None:
        self.ha = HomeAssistant(folder, model.parent)
        with (self.ha.config / "configuration.yaml").open("a") as config:
            config.write(exposed_entities())
        self.model, self.threads, self.max_tokens = model, threads, max_tokens
        self.agent = ""

    def set_up(self) -> None:
        ha = self.ha.start()
        flow = ha.request("POST", "/api/config/config_entries/flow", {"handler": "sarai_omni"})
        data = {"fast_model": str(self.model), "ram_budget_mb": 12288, "n_threads": self.threads, "n_ctx": 4096}
        result = ha.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", data)
        assert result.get("type") == "create_entry", result
        entry_id = result["result"]["entry_id"]
        self.agent = self._add_agent(entry_id)
        self._remove_default_agent(entry_id)

    def _remove_default_agent(self, entry_id: str) -> None:
        """One agent, so the standing prompt at start and after the restart is that agent's warm."""
        listed = self.ws({"type": "config_entries/subentries/list", "entry_id": entry_id})
        for sub in listed:
            if sub["subentry_type"] == "conversation" and sub["title"] != "Bench agent":
                self.ws(
                    {
                        "type": "config_entries/subentries/delete",
                        "entry_id": entry_id,
                        "subentry_id": sub["subentry_id"],
                    }
                )

    def ws(self, message: dict[str, Any]) -> Any:
        """One command over HA's websocket API (what the frontend uses for subentries)."""

        async def call() -> Any:
            async with aiohttp.ClientSession() as session, session.ws_connect(f"{self.ha.base}/api/websocket") as ws:
                await ws.receive_json()  # auth_required
                await ws.send_json({"type": "auth", "access_token": self.ha.token})
                await ws.receive_json()  # auth_ok
                await ws.send_json({"id": 1, **message})
                reply = await ws.receive_json()
                assert reply.get("success"), reply
                return reply["result"]

        return asyncio.run(call())

    def _add_agent(self, entry_id: str) -> str:
        """A conversation subentry like the default one (Assist API on), with short answers: a
        random-weight model never ends its turn by itself."""
        ha = self.ha
        flow = ha.request("POST", "/api/config/config_entries/subentries/flow", {"handler": [entry_id, "conversation"]})
        values = {
            f["name"]: (f.get("description") or {}).get("suggested_value", f.get("default"))
            for f in flow["data_schema"]
        }
        values = {k: v for k, v in values.items() if v is not None}
        values |= {"name": "Bench agent", "max_tokens": self.max_tokens, "temperature": 0.0, "llm_hass_api": ["assist"]}
        done = ha.request("POST", f"/api/config/config_entries/subentries/flow/{flow['flow_id']}", values)
        assert done.get("type") == "create_entry", done
        guard = time.monotonic() + READY_GUARD_S
        while time.monotonic() < guard:  # the entry reloads with its new agent
            agents = self.ha.states("conversation.")
            if found := [e for e, s in agents.items() if s["attributes"].get("friendly_name") == "Bench agent"]:
                return found[0]
            time.sleep(0.5)
        raise RuntimeError(f"no Bench agent entity: {list(self.ha.states('conversation.'))}")

    def fast(self) -> dict[str, Any]:
        states = self.ha.states("sensor.")
        found = [s for e, s in states.items() if e.endswith("_fast_state") and "sarai" in e]
        return found[0] if found else {"state": "absent", "attributes": {}}  # still setting up

    def wait_ready(self) -> dict[str, Any]:
        """Loaded with the standing prompt in its cache (warmed at start)."""
        guard = time.monotonic() + READY_GUARD_S
        while time.monotonic() < guard:
            state = self.fast()
            standing: dict[str, Any] | None = state["attributes"].get("standing_prompt")
            if state["state"] == "loaded" and standing:
                return standing
            time.sleep(0.5)
        raise RuntimeError(f"the fast model was not ready in time: {self.fast()}")

    def turn(self, text: str) -> dict[str, Any]:
        started = time.perf_counter()
        body = {"text": text, "agent_id": self.agent, "language": "en"}
        reply = self.ha.request("POST", "/api/conversation/process", body, timeout=READY_GUARD_S)
        wall = (time.perf_counter() - started) * 1000
        attrs = self.fast()["attributes"]
        return {
            "wall_ms": round(wall),
            "ttft_ms": round(attrs["ttft_ms"]),
            "prompt_tokens": attrs["prompt_tokens"],
            "evaluated_prompt_tokens": attrs["evaluated_prompt_tokens"],
            "response_type": reply["response"]["response_type"],
        }

    def cold_turn(self) -> dict[str, Any]:
        kv = self.ha.config / "sarai_omni" / "kv_cache"
        aside = kv.with_name("kv_cache.aside")
        shutil.move(kv, aside)
        try:
            self.ha.request("POST", "/api/services/sarai_omni/unload_model", {"model": "fast"})
            return self.turn("Turn on the kitchen light")
        finally:
            shutil.rmtree(kv, ignore_errors=True)
            shutil.move(aside, kv)


def run(model: Path, threads: int, turns: int, max_tokens: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sarai-bench-") as folder:
        bench = Bench(Path(folder), model, threads, max_tokens)
        try:
            started = time.perf_counter()
            bench.set_up()
            first_warm = bench.wait_ready()
            ready_s = time.perf_counter() - started
            cold = bench.cold_turn()
            warm = [bench.turn(TURNS[i % len(TURNS)] + f" ({i})") for i in range(turns)]
            bench.ha.restart()
            restored_warm = bench.wait_ready()
            restored = bench.turn("Turn on the kitchen light")
        finally:
            bench.ha.stop()
    walls = [t["wall_ms"] for t in warm]
    ttft_warm = median([t["ttft_ms"] for t in warm])
    return {
        "standing_prompt_tokens": cold["prompt_tokens"],
        "setup_to_ready_s": round(ready_s, 1),
        "start_warm": first_warm,
        "restart_warm": restored_warm,
        "cold": cold,
        "warm": warm,
        "restored": restored,
        "ttft_cold_ms": cold["ttft_ms"],
        "ttft_warm_ms": ttft_warm,
        "ttft_restored_ms": restored["ttft_ms"],
        "ttft_warm_over_cold": round(ttft_warm / cold["ttft_ms"], 4),
        "ttft_restored_over_cold": round(restored["ttft_ms"] / cold["ttft_ms"], 4),
        "turn_p50_ms": round(statistics.median(walls)),
        "turn_p95_ms": round(_percentile(walls, 0.95)),
        "max_tokens": max_tokens,
        "exposed_entities": len(ROOMS) + len(ROOMS[:4]),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
