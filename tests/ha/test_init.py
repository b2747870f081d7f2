"""Setting up and unloading the entry on real HA with real worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import CONF_FAST_MODEL, CONF_QUALITY_MODEL, DOMAIN, FAST, QUALITY
from custom_components.sarai_omni.engine.procmem import rss_bytes
from tests.openai_server import OpenAIServer
from tests.workers import worker

from .conftest import make_entry, role_data, stored_entry


async def test_setup_preloads_fast_model_and_unload_stops_worker(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    engine = loaded_entry.runtime_data.engine
    client = worker(engine, FAST)
    pid = client.pid
    assert pid is not None
    assert client.rss_bytes() > 0
    assert engine.status(FAST).state == "loaded"
    entities = er.async_entries_for_config_entry(er.async_get(hass), loaded_entry.entry_id)
    assert {e.domain for e in entities} == {"ai_task", "calendar", "conversation", "sensor"}

    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    assert loaded_entry.state is ConfigEntryState.NOT_LOADED
    assert not client.running
    assert rss_bytes(pid) is None  # the worker process is gone, its memory freed


async def test_sensors_report_the_loaded_model(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    registry = er.async_get(hass)
    ids = {e.unique_id: e.entity_id for e in er.async_entries_for_config_entry(registry, loaded_entry.entry_id)}
    await hass.async_block_till_done()
    state = hass.states.get(ids[f"{loaded_entry.entry_id}_fast_state"])
    assert state is not None
    assert state.state == "loaded"
    assert state.attributes["model"] == "tiny-qwen2.gguf"
    assert state.attributes["load_ms"] > 0
    rss = hass.states.get(ids[f"{loaded_entry.entry_id}_fast_rss"])
    assert rss is not None
    assert float(rss.state) > 10
    budget = hass.states.get(ids[f"{loaded_entry.entry_id}_budget_used"])
    assert budget is not None
    assert 0 < float(budget.state) < 100


async def test_missing_model_file_fails_setup_clearly(
    hass: HomeAssistant, entry_data: dict[str, Any], tmp_path: Path
) -> None:
    entry = make_entry(hass, {**entry_data, CONF_FAST_MODEL: str(tmp_path / "gone.gguf")})
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.reason is not None
    assert "gone.gguf" in entry.reason


def test_engine_imports_without_home_assistant() -> None:
    """Worker processes import the engine; it must not drag Home Assistant in."""
    import subprocess
    import sys

    code = "import custom_components.sarai_omni.engine, sys; assert 'homeassistant' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


async def test_version_1_1_entries_are_migrated(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    entry = stored_entry(hass, entry_data, minor_version=1)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.minor_version == 4
    assert dict(entry.data) == {"ram_budget_mb": 1024, "n_threads": 2}
    assert role_data(entry, FAST) == {
        "role": FAST, "backend": "llama_cpp", "model_path": entry_data[CONF_FAST_MODEL], "n_ctx": 2048,
        "n_batch": 512, "pinned": True,
    }  # fmt: skip
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_a_1_3_entry_keeps_everything_as_roles_and_options(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_qwen3: Path, openai_server: OpenAIServer
) -> None:
    """What the 1.3 release stored: both models in data, a server for quality, tuned batches."""
    server = {"url": openai_server.url, "model": "tiny-vision", "vision": True, "audio": False, "api_key": ""}
    data = {
        **entry_data, "backend": "llama_cpp", "kv_type": "q8_0", "n_gpu_layers": 0,
        CONF_QUALITY_MODEL: str(tiny_qwen3), "remote": {QUALITY: server},
    }  # fmt: skip
    options = {"fast_n_batch": 256.0, "quality_n_batch": 1024.0, "kv_type": "f16", "idle_unload_s": 60.0}
    entry = stored_entry(hass, data, minor_version=3, options=options)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.minor_version == 4
    assert dict(entry.data) == {"ram_budget_mb": 1024, "n_threads": 2}
    # The option the user tuned later wins over the setup form's value, as it did before.
    assert dict(entry.options) == {"kv_type": "f16", "n_gpu_layers": 0, "idle_unload_s": 60.0}
    assert role_data(entry, FAST)["n_batch"] == 256
    assert role_data(entry, QUALITY) == {
        "role": QUALITY, "backend": "remote", "server": server, "n_ctx": 8192, "n_batch": 1024, "pinned": False,
    }  # fmt: skip
    engine = entry.runtime_data.engine
    assert engine.pool.slot(FAST).spec.runtime.kv_type == "f16"
    assert engine.status(QUALITY).backend == "remote"
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize("apis", [["sarai_omni_cameras"], ["assist", "sarai_omni_cameras"]])
async def test_agents_with_the_old_cameras_api_get_assist_which_now_carries_the_tool(
    hass: HomeAssistant, entry_data: dict[str, Any], apis: list[str]
) -> None:
    """1.2 → 1.3: the cameras tool moved into HA's Assist API (the `llm` tool platform). An agent
    that chose the old "Sarai Omni cameras" API keeps its tool through Assist, once."""
    entry = stored_entry(hass, {"backend": "llama_cpp", **entry_data}, minor_version=2, llm_hass_api=apis)
    agent = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    before = dict(agent.data)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.minor_version == 4
    after = dict(entry.subentries[agent.subentry_id].data)
    assert after.pop("llm_hass_api") == ["assist"]
    assert after == {k: v for k, v in before.items() if k != "llm_hass_api"}  # nothing else touched
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_entry_from_a_newer_release_is_left_alone(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    entry = MockConfigEntry(domain=DOMAIN, data=entry_data, version=2, unique_id=DOMAIN)
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.MIGRATION_ERROR
    assert entry.data == entry_data


async def test_unknown_backend_fails_setup_clearly(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    entry = stored_entry(hass, {**entry_data, "backend": "openai_remote"}, minor_version=3)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.reason is not None
    assert "openai_remote" in entry.reason


async def test_per_request_figure_sensors_are_disabled_by_default(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    registry = er.async_get(hass)
    entries = {e.unique_id: e for e in er.async_entries_for_config_entry(registry, loaded_entry.entry_id)}
    prefix = f"{loaded_entry.entry_id}_fast"
    for key in ("tokens_per_second", "ttft"):
        assert entries[f"{prefix}_{key}"].disabled_by is er.RegistryEntryDisabler.INTEGRATION
    for key in ("state", "rss"):
        assert entries[f"{prefix}_{key}"].disabled_by is None


async def test_clock_pattern_matches_what_home_assistant_renders(hass: HomeAssistant) -> None:
    """entity.CLOCK moves HA's time line out of the system prompt (or the prompt cache is lost every
    turn): a rewording of llm.DATE_TIME_PROMPT in HA must fail here, loudly."""
    from homeassistant.helpers import llm, template
    from homeassistant.util import dt as dt_util

    from custom_components.sarai_omni.entity import CLOCK, clock_line

    rendered = template.Template(llm.DATE_TIME_PROMPT, hass).async_render(parse_result=False)
    assert CLOCK.fullmatch(rendered)
    assert CLOCK.fullmatch(clock_line(dt_util.utcnow()) + "\n")  # and the line each user turn carries
