"""Defects a first look at the UI found (issue 17), each pinned by a test at the HA level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant import config_entries
from homeassistant.components import conversation
from homeassistant.components.conversation import ConversationEntityFeature
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, llm
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.sarai_omni.const import DOMAIN
from custom_components.sarai_omni.engine.prompts import ThinkFilter

from .conftest import EN, PKG, agent_id, shown_abort, shown_errors
from .test_assist import force

ES = json.loads((PKG / "translations" / "es.json").read_text())
NO_SETUP = (
    patch("custom_components.sarai_omni.integration.async_setup_entry", return_value=True),
    patch("custom_components.sarai_omni.integration.async_unload_entry", return_value=True),
)


async def _form(hass: HomeAssistant) -> Any:
    return await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})


async def test_a_flow_left_open_does_not_block_another(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    """1. A tab closed mid-flow used to block setup with the raw key already_in_progress."""
    left_open = await _form(hass)
    second = await _form(hass)
    assert second["type"] is FlowResultType.FORM
    with NO_SETUP[0], NO_SETUP[1]:
        done = await hass.config_entries.flow.async_configure(second["flow_id"], entry_data)
    assert done["type"] is FlowResultType.CREATE_ENTRY
    assert left_open["flow_id"] not in {f["flow_id"] for f in hass.config_entries.flow.async_progress()}  # HA ended it
    again = await _form(hass)  # single_config_entry: HA says so before any form
    assert shown_abort(again) == "single_instance_allowed"


async def test_the_default_agent_can_control_the_home(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    """5. The agent made with the entry had the Assist API off: "This assistant cannot control your
    home" in the first Assist dialog, although the README promises tools."""
    result = await hass.config_entries.flow.async_configure((await _form(hass))["flow_id"], entry_data)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    entry = result["result"]
    agent = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    assert agent.data[CONF_LLM_HASS_API] == [llm.LLM_API_ASSIST]
    state = hass.states.get(agent_id(hass, entry))
    assert state is not None
    assert state.attributes["supported_features"] & ConversationEntityFeature.CONTROL
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_options_saved_unchanged_keep_the_engine(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    """Seen in the browser: Submit on the options form as shown reloaded the entry, and an Assist turn
    in those seconds failed with "Oops, an error has occurred". Unchanged options keep the engine."""
    engine = loaded_entry.runtime_data.engine
    for changes in ({}, {"router_short_chars": 300}):
        flow = await hass.config_entries.options.async_init(loaded_entry.entry_id)
        assert flow["data_schema"] is not None
        shown = {k.schema: k.default() for k in flow["data_schema"].schema if callable(getattr(k, "default", None))}
        await hass.config_entries.options.async_configure(flow["flow_id"], {**shown, **changes})
        await hass.async_block_till_done()
        assert loaded_entry.state is ConfigEntryState.LOADED
        assert (loaded_entry.runtime_data.engine is engine) is (not changes)


async def test_model_summary_in_spanish_without_english_grouping(
    hass: HomeAssistant, entry_data: dict[str, Any]
) -> None:
    """2. The summary was English in a Spanish UI, and "2,048 MB" reads as two MB in Spanish."""
    hass.config.language = "es"
    result = await hass.config_entries.flow.async_configure(
        (await _form(hass))["flow_id"], {**entry_data, "ram_budget_mb": 256_000}
    )
    placeholders = dict(result["description_placeholders"] or {})
    assert "parámetros" in placeholders["models"]
    assert "contexto de entrenamiento" in placeholders["models"]
    assert "parameters" not in placeholders["models"]
    assert placeholders["budget"] == "256000 MB"
    assert "," not in placeholders["need"]


@pytest.mark.parametrize("texts", [EN, ES], ids=["en", "es"])
def test_plain_text_messages_have_no_markdown(texts: dict[str, Any]) -> None:
    """3. HA shows flow errors, aborts and exceptions as plain text: backticks stay literal."""
    sections = [
        texts["config"]["error"],
        texts["config"]["abort"],
        {k: v["message"] for k, v in texts["exceptions"].items()},
    ]
    offenders = [f"{key}: {text}" for section in sections for key, text in section.items() if "`" in text]
    assert offenders == []


async def test_form_shows_the_budget_before_validation_and_names_the_architecture(
    hass: HomeAssistant, model_dir: Path
) -> None:
    """7. "RAM: — budget" although the default is known; unsupported_arch did not say what it found."""
    form = await _form(hass)
    assert form["description_placeholders"]["budget"].endswith(" MB")
    assert form["description_placeholders"]["budget"] != "— MB"
    import gguf

    bert = model_dir / "bert-ui.gguf"
    writer = gguf.GGUFWriter(str(bert), "bert")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    data = {"fast_model": str(bert), "ram_budget_mb": 1024, "n_threads": 2, "n_ctx": 512}
    result = await hass.config_entries.flow.async_configure(form["flow_id"], data)
    assert shown_errors(result) == {"fast_model": "unsupported_arch"}
    shown = EN["config"]["error"]["unsupported_arch"].format(**(result["description_placeholders"] or {}))
    assert "(bert)" in shown


@pytest.mark.parametrize("texts", [EN, ES], ids=["en", "es"])
def test_labels_not_raw_keys_and_one_kv_help(texts: dict[str, Any]) -> None:
    """8. Raw keys auto/fast/quality in the services' help; two different KV cache help texts."""
    for service in ("analyze_image", "analyze_video"):
        help_text = texts["services"][service]["fields"]["model"]["description"]
        labels = texts["selector"]["model"]["options"].values()
        assert all(label.split(" (")[0] in help_text for label in labels), help_text
    steps = texts["config"]["step"]
    helps = {steps["user"]["data_description"]["kv_type"], steps["reconfigure"]["data_description"]["kv_type"],
             texts["options"]["step"]["init"]["data_description"]["kv_type"]}  # fmt: skip
    assert len(helps) == 1


async def test_device_names_are_translated(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    """9. "Sarai Omni engine" and "llama.cpp model pool" were hard-coded English."""
    device = dr.async_get(hass).async_get_device_by_identifier((DOMAIN, loaded_entry.entry_id), loaded_entry.entry_id)
    assert device is not None
    assert device.name == EN["device"]["engine"]["name"]  # from the translation, in HA's language
    assert device.model == "llama.cpp"
    assert ES["device"]["engine"]["name"] == "Motor de Sarai Omni"


async def test_reasoning_is_not_spoken(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    """10. Qwen3's <think>...</think> reached the speech and the service results."""
    with force(lambda _: 'root ::= "<think>the user greets me</think>Hello there."'):
        result = await conversation.async_converse(hass, "hi", None, Context(), agent_id=agent_id(hass, loaded_entry))
    assert result.response.speech["plain"]["speech"] == "Hello there."


def test_think_filter_streams() -> None:
    thinking = ThinkFilter()
    pieces = ["<th", "ink>plan", "ning</thi", "nk>Hel", "lo <", "b>"]
    assert "".join(thinking.feed(p) for p in pieces) + thinking.flush() == "Hello <b>"
    unclosed = ThinkFilter()
    assert unclosed.feed("A<think>never closed") + unclosed.flush() == "A"


@pytest.mark.parametrize("texts", [EN, ES], ids=["en", "es"])
def test_sensor_names_fit_the_device_card(texts: dict[str, Any]) -> None:
    """11. "Fast model: time to first ..." was cut in the device card."""
    names = {key: value["name"] for key, value in texts["entity"]["sensor"].items()}
    assert max(len(n) for n in names.values()) <= 20, names
