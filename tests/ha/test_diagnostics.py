"""Diagnostics: useful figures, and no path, prompt or other private text."""

from __future__ import annotations

import json
from pathlib import Path

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import get_diagnostics_for_config_entry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
import yaml

from custom_components.sarai_omni.const import DOMAIN

PKG = Path(__file__).resolve().parents[2] / "custom_components" / "sarai_omni"


async def test_diagnostics_redact_paths_and_prompts(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_client: ClientSessionGenerator, model_dir: Path
) -> None:
    assert await async_setup_component(hass, "diagnostics", {})
    diag = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    dumped = json.dumps(diag)
    assert str(model_dir) not in dumped
    assert "/tmp" not in dumped
    assert "voice assistant" not in dumped  # the agent's prompt
    roles = {sub["data"]["role"]: sub["data"] for sub in diag["entry"]["subentries"].values() if "role" in sub["data"]}
    assert roles["fast"]["model_path"] == "**REDACTED**"
    assert roles["fast"]["backend"] == "llama_cpp"
    assert diag["engine"]["models"]["fast"]["state"] == "loaded"
    assert diag["models"]["fast"]["architecture"] == "qwen2"
    assert diag["system"]["physical_cores"] >= 1
    assert diag["system"]["llama_cpp_python"] == "0.3.36+sarai2"  # the patched build (engine/patches)


async def test_registered_services_match_services_yaml(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    declared = yaml.safe_load((PKG / "services.yaml").read_text())
    assert set(hass.services.async_services_for_domain(DOMAIN)) == set(declared)
