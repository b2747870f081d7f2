"""Fixtures for tests on a real Home Assistant (pytest-homeassistant-custom-component)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from functools import partial
import json
from pathlib import Path
import shutil
from typing import Any

from homeassistant.components import conversation
from homeassistant.components.camera import Camera
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import chat_session, entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, setup_test_component_platform

from custom_components.sarai_omni.const import (
    BACKEND_TRANSFORMERS,
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_N_CTX,
    CONF_N_THREADS,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    CONF_ROLE,
    CONF_TEMPERATURE,
    DOMAIN,
    FAST,
    OLD_REMOTE,
    OLD_ROLE_BACKENDS,
)
from custom_components.sarai_omni.engine import Engine
from custom_components.sarai_omni.settings import migrate_roles, role_subentries, role_subentry
from custom_components.sarai_omni.subentry_flows import default_ai_task, default_conversation

PKG = Path(__file__).resolve().parents[2] / "custom_components" / "sarai_omni"
EN = json.loads((PKG / "translations" / "en.json").read_text())


def shown_errors(result: Any, texts: dict[str, Any] | None = None) -> dict[str, str]:
    """The form's errors, once each (and the step's description) renders in English.

    str.format raises KeyError for a placeholder the flow did not give: the user would see `{x}`.
    """
    section = texts or EN["config"]
    placeholders = result.get("description_placeholders") or {}
    if description := section["step"].get(result["step_id"], {}).get("description"):
        description.format(**placeholders)
    for key in result["errors"].values():
        section["error"][key].format(**placeholders)
    return dict(result["errors"])


def shown_abort(result: Any, texts: dict[str, Any] | None = None) -> str:
    """The abort reason, once its English text renders with the flow's placeholders."""
    (texts or EN["config"])["abort"][result["reason"]].format(**(result.get("description_placeholders") or {}))
    return str(result["reason"])


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let HA load integrations from custom_components/ (requesting the fixture is enough)."""


@pytest.fixture(autouse=True)
async def setup_core(hass: HomeAssistant, model_dir: Path, gemma: Path) -> AsyncGenerator[None]:
    """The `homeassistant` core integration (conversation needs it) and allow-listed model dirs.

    phcc's config dir is shared by every test (it lives in the installed package): the
    integration's state (calibrations, KV snapshots) starts empty for each test and is removed after.
    """
    state_dir = hass.config.path(DOMAIN)
    await hass.async_add_executor_job(partial(shutil.rmtree, state_dir, ignore_errors=True))
    hass.config.allowlist_external_dirs = {str(model_dir), str(gemma.parent)}
    assert await async_setup_component(hass, "homeassistant", {})
    yield
    await hass.async_add_executor_job(partial(shutil.rmtree, state_dir, ignore_errors=True))


@pytest.fixture
def entry_data(tiny_qwen2: Path) -> dict[str, Any]:
    return {CONF_FAST_MODEL: str(tiny_qwen2), CONF_RAM_BUDGET_MB: 1024, CONF_N_THREADS: 2, CONF_N_CTX: 2048}


def make_entry(
    hass: HomeAssistant,
    form: dict[str, Any],
    temperature: float = 0.0,
    *,
    servers: dict[str, dict[str, Any]] | None = None,
    folders: tuple[str, ...] = (),
    roles: tuple[dict[str, Any], ...] = (),
    **agent: Any,
) -> MockConfigEntry:
    """An entry as the setup flow stores it from `form` (its fields: the default roles' models, budget,
    threads, context, KV type, GPU layers), the default roles on `servers` or their models in
    `folders` (transformers), more model roles (`roles`, settings.role_data), and one conversation
    agent (its options overridable). The agent has no tools unless `llm_hass_api` is given: the tiny
    models' byte-sized tokens would need a 16k context for the Assist API's tool definitions."""
    conv = default_conversation()
    plain = {k: v for k, v in conv["data"].items() if k != CONF_LLM_HASS_API}
    conv["data"] = {**plain, CONF_TEMPERATURE: temperature, **agent}
    data, options, defaults = migrate_roles(
        {**form, OLD_REMOTE: servers or {}, OLD_ROLE_BACKENDS: dict.fromkeys(folders, BACKEND_TRANSFORMERS)}, {}
    )
    models = [role_subentry(r) for r in (*defaults, *roles)]
    entry = MockConfigEntry(
        domain=DOMAIN, title="Sarai Omni", data=data, options=options, unique_id=DOMAIN, version=1, minor_version=4,
        subentries_data=[*models, conv, default_ai_task()],
    )  # fmt: skip
    entry.add_to_hass(hass)
    return entry


def stored_entry(
    hass: HomeAssistant, data: dict[str, Any], minor_version: int, options: dict[str, Any] | None = None, **agent: Any
) -> MockConfigEntry:
    """An entry as a release before 1.4 stored it: the roles' models, KV type and GPU layers in data,
    the batch sizes in options, one agent and the AI Task as subentries."""
    conv = default_conversation()
    conv["data"] = {**conv["data"], **agent}
    entry = MockConfigEntry(
        domain=DOMAIN, title="Sarai Omni", data=data, options=options or {}, unique_id=DOMAIN, version=1,
        minor_version=minor_version, subentries_data=[conv, default_ai_task()],
    )  # fmt: skip
    entry.add_to_hass(hass)
    return entry


def role_data(entry: ConfigEntry, role: str) -> dict[str, Any]:
    """What the entry stores of one model role (its model subentry's data)."""
    (found,) = (dict(s.data) for s in role_subentries(entry) if s.data[CONF_ROLE] == role)
    return found


async def wait_loaded(entry: MockConfigEntry, role: str = FAST) -> None:
    """Wait for the background preload (a real worker process loading a real GGUF)."""
    await entry.runtime_data.engine.load(role)


async def engine_reaches(engine: Engine, done: Callable[[], bool], guard_s: float = 60) -> None:
    """Wait until `done()` holds, checked at each change the engine reports (the guard only turns a
    hang into a failure; it is no timing claim)."""
    reached = asyncio.Event()

    def check() -> None:
        if done():
            reached.set()

    remove = engine.add_listener(check)
    check()
    try:
        async with asyncio.timeout(guard_s):
            await reached.wait()
    finally:
        remove()


@pytest.fixture
async def loaded_entry(hass: HomeAssistant, entry_data: dict[str, Any]) -> AsyncGenerator[MockConfigEntry]:
    """A set-up entry on the tiny qwen2 model, unloaded (workers stopped) afterwards."""
    entry = make_entry(hass, entry_data)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    await wait_loaded(entry)
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(entry.entry_id)


class GardenCamera(Camera):
    """A test camera serving a generated JPEG (or failing, when switched off)."""

    _attr_name = "Garden"
    _attr_unique_id = "garden_cam"

    def __init__(self, jpeg: bytes) -> None:
        super().__init__()
        self.jpeg, self.working = jpeg, True
        self.widths: list[int | None] = []  # the sizes it was asked for

    async def async_camera_image(self, width: int | None = None, height: int | None = None) -> bytes | None:
        self.widths.append(width)
        return self.jpeg if self.working else None


@pytest.fixture
async def garden_camera(hass: HomeAssistant, jpeg: Path) -> GardenCamera:
    cam = GardenCamera(await hass.async_add_executor_job(jpeg.read_bytes))
    setup_test_component_platform(hass, "camera", [cam])
    assert await async_setup_component(hass, "camera", {"camera": {"platform": "test"}})
    await hass.async_block_till_done()
    return cam


@pytest.fixture
async def vision_entry(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_mmproj: Path, jpeg: Path
) -> MockConfigEntry:
    hass.config.allowlist_external_dirs |= {str(jpeg.parent)}
    assert await async_setup_component(hass, "ffmpeg", {})
    entry = make_entry(hass, {**entry_data, CONF_FAST_MMPROJ: str(tiny_mmproj)})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    return entry


@pytest.fixture
def seed_form(
    entry_data: dict[str, Any], qwen3vl_model: Path, qwen3vl_mmproj: Path, omni_thinker: Path, omni_mmproj: Path
) -> dict[str, Any]:
    """The setup form of the seeds' pair, tiny: fast a Qwen3-VL (sees), quality a Qwen2.5-Omni (sees and hears)."""
    return {
        **entry_data,
        CONF_FAST_MODEL: str(qwen3vl_model),
        CONF_FAST_MMPROJ: str(qwen3vl_mmproj),
        CONF_QUALITY_MODEL: str(omni_thinker),
        CONF_QUALITY_MMPROJ: str(omni_mmproj),
        CONF_RAM_BUDGET_MB: 4096,
    }


@pytest.fixture
async def seed_entry(hass: HomeAssistant, seed_form: dict[str, Any]) -> MockConfigEntry:
    """The seeds' pair, tiny, set up and loaded."""
    entry = make_entry(hass, seed_form)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    return entry


async def forget_spoken_audio(hass: HomeAssistant) -> None:
    """phcc's config dir outlives the test: HA's TTS file cache there would answer instead of the model."""
    await hass.async_add_executor_job(partial(shutil.rmtree, hass.config.path("tts"), ignore_errors=True))


async def template_lights(hass: HomeAssistant, *keys: str) -> list[str]:
    """Real template lights ("<Key> light"), each backed by an input_boolean `<key>`, exposed to Assist."""
    booleans = {key: {"initial": False} for key in keys}
    assert await async_setup_component(hass, "input_boolean", {"input_boolean": booleans})
    lights = [
        {
            "name": f"{key.capitalize()} light",
            "state": f"{{{{ is_state('input_boolean.{key}', 'on') }}}}",
            "turn_on": [{"action": "input_boolean.turn_on", "target": {"entity_id": f"input_boolean.{key}"}}],
            "turn_off": [{"action": "input_boolean.turn_off", "target": {"entity_id": f"input_boolean.{key}"}}],
        }
        for key in keys
    ]
    assert await async_setup_component(hass, "template", {"template": [{"light": lights}]})
    await hass.async_block_till_done()
    entities = [f"light.{key}_light" for key in keys]
    for entity in entities:
        async_expose_entity(hass, conversation.DOMAIN, entity, True)
    return entities


@pytest.fixture
async def kitchen_light(hass: HomeAssistant) -> str:
    """A real template light backed by an input_boolean, exposed to Assist."""
    return (await template_lights(hass, "kitchen"))[0]


def entity_of(hass: HomeAssistant, entry: MockConfigEntry, domain: str) -> str | None:
    """The entry's entity of `domain` (stt, tts, ...), if it has one."""
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    return next((e.entity_id for e in entities if e.domain == domain), None)


def agent_id(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    return next(e.entity_id for e in entities if e.domain == "conversation")


async def turn(
    hass: HomeAssistant, entry: MockConfigEntry, text: str, on_delta: Callable[[dict[str, Any]], None]
) -> conversation.ConversationResult:
    """One Assist turn through the agent, with each streamed chat-log delta passed to `on_delta`."""
    agent = agent_id(hass, entry)
    entity = hass.data[conversation.DOMAIN].get_entity(agent)
    user_input = conversation.ConversationInput(
        text=text, context=Context(), conversation_id=None, device_id=None, satellite_id=None, language="en",
        agent_id=agent,
    )  # fmt: skip
    with (
        chat_session.async_get_chat_session(hass) as session,
        conversation.async_get_chat_log(
            hass, session, user_input, chat_log_delta_listener=lambda _, delta: on_delta(delta)
        ) as chat_log,
    ):
        result: conversation.ConversationResult = await entity._async_handle_message(user_input, chat_log)
    return result
