"""Roles beyond the two the flow makes (issue 26): a third model role, configured as a model subentry,
is routed to by what it can do, shares the RAM budget with the others and has its own sensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeassistant.components import stt
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import CONF_QUALITY_MMPROJ, CONF_QUALITY_MODEL, CONF_RAM_BUDGET_MB, DOMAIN
from custom_components.sarai_omni.engine import HEAR, SEE, Engine
from custom_components.sarai_omni.settings import role_data

from .conftest import make_entry

EARS = "ears"


async def _entry(hass: HomeAssistant, form: dict[str, Any], ears: dict[str, Any]) -> MockConfigEntry:
    entry = make_entry(hass, form, roles=(ears,))
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


def _sensor(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> str:
    """The entity id of one of the entry's sensors, by its unique id's suffix."""
    registry = er.async_get(hass)
    (entity,) = [e for e in er.async_entries_for_config_entry(registry, entry.entry_id) if e.unique_id.endswith(key)]
    return entity.entity_id


def _within_budget(engine: Engine) -> None:
    snap = engine.snapshot()
    assert snap.used_mb <= snap.budget_mb
    assert snap.peak_rss_mb <= snap.budget_mb


async def test_a_third_role_is_routed_to_by_capability_within_the_budget(
    hass: HomeAssistant,
    *,
    entry_data: dict[str, Any],
    tiny_qwen2: Path,
    tiny_mmproj: Path,
    omni_thinker: Path,
    omni_mmproj: Path,
    wav: Path,
) -> None:
    """fast (text, pinned), quality (sees) and `ears`, a third role whose projector hears: audio goes
    to `ears` because only it hears; with a budget that holds the pinned model and one other, loading
    quality afterwards evicts `ears` (LRU), and each role's sensors show what happened."""
    form = {**entry_data, CONF_QUALITY_MODEL: str(tiny_qwen2), CONF_QUALITY_MMPROJ: str(tiny_mmproj)}
    ears = role_data(EARS, model=str(omni_thinker), mmproj=str(omni_mmproj), n_ctx=2048)
    entry = await _entry(hass, form, ears)
    engine = entry.runtime_data.engine
    assert engine.roles == ("fast", "quality", EARS)
    assert engine.best_for(HEAR) == EARS
    assert HEAR not in engine.capabilities("quality")
    assert SEE in engine.capabilities("quality")
    estimates = {role: engine.status(role).estimate_mb for role in engine.roles}
    tight = estimates["fast"] + max(estimates["quality"], estimates[EARS]) + 1
    assert tight < sum(estimates.values())  # all three never fit at once
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_RAM_BUDGET_MB: tight})
    await hass.async_block_till_done()  # the update listener reloads the entry with the new budget
    engine = entry.runtime_data.engine
    assert engine.snapshot().budget_mb == tight

    hass.config.allowlist_external_dirs |= {str(wav.parent)}
    heard = await hass.services.async_call(
        DOMAIN, "analyze_audio", {"audio_path": [str(wav)]}, blocking=True, return_response=True
    )
    assert heard is not None
    assert heard["model"] == EARS
    assert f"{EARS} model" in str(heard["route_reason"])
    assert engine.status(EARS).state == "loaded"
    _within_budget(engine)
    state = hass.states.get(_sensor(hass, entry, f"{EARS}_state"))
    assert state is not None
    assert state.state == "loaded"
    assert state.attributes["capabilities"] == sorted(engine.capabilities(EARS))
    assert state.attributes["backend"] == "llama_cpp"
    assert state.attributes["route_reason"] == heard["route_reason"]
    assert state.name is not None
    assert state.name.endswith(f"{EARS}: state")
    memory = hass.states.get(_sensor(hass, entry, f"{EARS}_rss"))
    assert memory is not None
    assert 0 < float(memory.state) <= tight

    await hass.services.async_call(DOMAIN, "load_model", {"model": "quality"}, blocking=True)
    await hass.async_block_till_done()
    assert engine.status("quality").state == "loaded"
    assert engine.status(EARS).state == "unloaded"  # least recently used, not pinned: made room
    assert engine.status("fast").state == "loaded"  # pinned
    _within_budget(engine)
    ears_state = hass.states.get(_sensor(hass, entry, f"{EARS}_state"))
    assert ears_state is not None
    assert ears_state.state == "unloaded"

    provider = stt.async_get_speech_to_text_entity(hass, _stt_entity(hass, entry))
    assert provider is not None  # speech to text exists because a role hears, whichever its name
    assert await hass.config_entries.async_unload(entry.entry_id)


def _stt_entity(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    registry = er.async_get(hass)
    (entity,) = [e for e in er.async_entries_for_config_entry(registry, entry.entry_id) if e.domain == "stt"]
    return entity.entity_id
