"""Upgrade without loss: what the release before HA 2026.9 support stored on HA 2026.2.3 (options,
agents, renamed and disabled entities, a calibration with a ruled-out variant, KV snapshots; made by
tests/upgrade.py) is booted by the newest Home Assistant release with this release of the integration.

A real `hass` process on 127.0.0.1 (as a user restarts after upgrading), then what it stored is read
back: nothing the user configured may be lost, and the remembered calibration is used, not redone.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
import shutil
import time
from typing import Any

import pytest

from custom_components.sarai_omni.engine.pool.calibration import calibration_key
from tests.browser.home_assistant import HomeAssistant
from tests.upgrade import FIXTURE, MODEL, NEWEST_HA, write_model

pytestmark = pytest.mark.usefixtures("socket_enabled")
GUARD_S = 180.0  # against a hang, not a measurement


def _stored(folder: Path, name: str) -> Any:
    return json.loads((folder / ".storage" / name).read_text())["data"]


def _entry(folder: Path) -> dict[str, Any]:
    (entry,) = (e for e in _stored(folder, "core.config_entries")["entries"] if e["domain"] == "sarai_omni")
    return dict(entry)


def _calibration(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "sarai_omni" / "calibration.json").read_text()))


@pytest.fixture
def upgraded(tmp_path: Path) -> Iterator[HomeAssistant]:
    """The newest HA on a copy of the stored config. The calibration's key is made this machine's
    (it hashes the CPU's flags): the fixture plays the user's own box, upgraded in place."""
    write_model()
    ha = HomeAssistant(tmp_path, MODEL.parent)
    shutil.copytree(FIXTURE / ".storage", ha.config / ".storage", dirs_exist_ok=True)
    shutil.copytree(FIXTURE / "sarai_omni", ha.config / "sarai_omni")
    (record,) = _calibration(FIXTURE).values()
    (ha.config / "sarai_omni" / "calibration.json").write_text(json.dumps({calibration_key(str(MODEL), 2): record}))
    ha.start()
    try:
        yield ha
    finally:
        ha.stop()


def _loaded_fast_state(ha: HomeAssistant) -> dict[str, Any] | None:
    states = ha.states("sensor.").values()
    return next((s for s in states if s["entity_id"].endswith("_fast_state") and s["state"] == "loaded"), None)


def _wait(ha: HomeAssistant, done: Any) -> Any:
    guard = time.monotonic() + GUARD_S
    while time.monotonic() < guard:
        if found := done():
            return found
        time.sleep(0.25)
    raise AssertionError(f"not reached within {GUARD_S} s: {ha.log_tail()}")


def test_a_2026_2_entry_loads_on_the_newest_ha_with_nothing_lost(upgraded: HomeAssistant) -> None:
    ha = upgraded
    assert ha.request("GET", "/api/config")["version"] == NEWEST_HA
    old = _entry(FIXTURE)
    assert json.loads((FIXTURE / "meta.json").read_text())["home_assistant"] == "2026.2.3"
    _wait(ha, lambda: ha.request("GET", "/api/config/config_entries/entry?domain=sarai_omni")[0]["state"] == "loaded")
    state = _wait(ha, lambda: _loaded_fast_state(ha))
    assert state["attributes"]["friendly_name"] == "Cerebro rápido"  # the user's name for it
    assert state["attributes"]["repack"] is False  # the remembered rule-out holds ...
    assert "repack" in state["attributes"]["unusable_variants"]
    agents = {s["attributes"]["friendly_name"]: e for e, s in ha.states("conversation.").items()}
    reply = ha.request(
        "POST", "/api/conversation/process", {"text": "hola", "language": "es", "agent_id": agents["Cocina"]}
    )
    assert reply["response"]["response_type"] != "error", reply
    ha.stop()

    new = _entry(ha.config)
    assert (new["version"], new["minor_version"]) == (1, 4)
    # 1.4: setup values stay in data, tunables in options, each model a role (its batch size with it).
    assert new["data"] == {k: old["data"][k] for k in ("ram_budget_mb", "n_threads")}
    assert new["options"] == {k: v for k, v in old["options"].items() if not k.endswith("_n_batch")}
    before = {s["subentry_id"]: s for s in old["subentries"]}
    after = {s["subentry_id"]: s for s in new["subentries"] if s["subentry_type"] != "model"}
    roles = [s for s in new["subentries"] if s["subentry_type"] == "model"]
    assert [(r["title"], r["unique_id"], r["data"]) for r in roles] == [
        ("fast", "fast", {
            "role": "fast", "backend": "llama_cpp", "model_path": old["data"]["fast_model"],
            "n_ctx": old["data"]["n_ctx"], "n_batch": int(old["options"]["fast_n_batch"]), "pinned": True,
        }),
    ]  # fmt: skip
    assert after.keys() == before.keys()
    for sid, sub in before.items():
        moved = sub["data"].get("llm_hass_api") == ["sarai_omni_cameras"]  # 1.3: the tool is in Assist now
        expected = {**sub, "data": {**sub["data"], "llm_hass_api": ["assist"]}} if moved else sub
        assert after[sid] == expected
    entities = {e["unique_id"]: e for e in _stored(ha.config, "core.entity_registry")["entities"]}
    for e in _stored(FIXTURE, "core.entity_registry")["entities"]:
        if e["platform"] == "sarai_omni":
            kept = entities[e["unique_id"]]
            assert (kept["entity_id"], kept["name"], kept["disabled_by"]) == (
                e["entity_id"],
                e["name"],
                e["disabled_by"],
            )
    assert any(e["name"] == "Cerebro rápido" for e in entities.values())
    assert any(e["disabled_by"] == "user" for e in entities.values() if e["platform"] == "sarai_omni")
    # ... because the stored calibration was used as it was: no second measurement, the rule-out kept
    assert _calibration(ha.config) == {calibration_key(str(MODEL), 2): next(iter(_calibration(FIXTURE).values()))}
    snapshots = {p.name for p in (ha.config / "sarai_omni" / "kv_cache").glob("state-*.kv")}
    assert {p.name for p in (FIXTURE / "sarai_omni" / "kv_cache").glob("state-*.kv")} <= snapshots
