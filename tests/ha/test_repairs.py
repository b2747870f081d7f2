"""Each repair issue is raised by its real condition and cleared once fixed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import json
import os
from pathlib import Path
import signal
from typing import Any

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, Event, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er, intent, issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import get_diagnostics_for_config_entry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.sarai_omni.const import CONF_FAST_MODEL, CONF_RAM_BUDGET_MB, DOMAIN, FAST
from custom_components.sarai_omni.engine.backends.client import WorkerClient
from custom_components.sarai_omni.engine.protocol import FAULTS_ENV
from tests.tiny_models import write_text_model
from tests.workers import worker

from .conftest import EN, agent_id, engine_reaches, make_entry, shown_errors, wait_loaded
from .test_install import fix_flow


def issue(hass: HomeAssistant, issue_id: str) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


async def wait_for_issue(hass: HomeAssistant, issue_id: str, timeout_s: float = 5.0) -> ir.IssueEntry:
    """Issues raised from engine callbacks (a worker dying, a background load) come a moment later."""
    raised = asyncio.Event()

    @callback
    def updated(_: Event[ir.EventIssueRegistryUpdatedData]) -> None:
        if issue(hass, issue_id) is not None:
            raised.set()

    unsubscribe = hass.bus.async_listen(ir.EVENT_REPAIRS_ISSUE_REGISTRY_UPDATED, updated)
    try:
        if issue(hass, issue_id) is None:
            async with asyncio.timeout(timeout_s):
                await raised.wait()
    finally:
        unsubscribe()
    found = issue(hass, issue_id)
    assert found is not None
    return found


async def test_model_missing_raised_and_cleared_when_the_file_is_back(
    hass: HomeAssistant, entry_data: dict[str, Any], model_dir: Path
) -> None:
    path = model_dir / "moved-away.gguf"
    entry = make_entry(hass, {**entry_data, CONF_FAST_MODEL: str(path)})
    assert not await hass.config_entries.async_setup(entry.entry_id)
    found = issue(hass, "model_missing")
    assert found is not None
    assert "moved-away.gguf" in (found.translation_placeholders or {})["error"]

    await hass.async_add_executor_job(write_text_model, path)  # the user puts the file back
    assert await hass.config_entries.async_reload(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert issue(hass, "model_missing") is None
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_budget_smaller_than_the_fast_model(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    entry = make_entry(hass, {**entry_data, CONF_RAM_BUDGET_MB: 32})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    found = issue(hass, "budget_too_small")
    assert found is not None
    assert (found.translation_placeholders or {})["budget_mb"] == "32"

    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_RAM_BUDGET_MB: 1024})  # reconfigured
    await hass.async_block_till_done()  # the update listener reloads
    assert entry.state is ConfigEntryState.LOADED
    assert issue(hass, "budget_too_small") is None
    assert await hass.config_entries.async_unload(entry.entry_id)


def crashed(client: WorkerClient, times: int) -> Callable[[], bool]:
    return lambda: client.crashes >= times


async def test_crash_loop_after_three_crashes(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    engine = loaded_entry.runtime_data.engine
    client = worker(engine, FAST)
    for crash in range(3):
        assert issue(hass, "crash_loop") is None
        pid = client.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # an idle worker dying is a crash too
        await engine_reaches(engine, crashed(client, crash + 1))
        assert engine.status(FAST).state == "unloaded"  # reported at once, not at next use
        await wait_loaded(loaded_entry)  # restarts the worker
    found = issue(hass, "crash_loop")
    assert found is not None
    assert (found.translation_placeholders or {})["count"] == "3"

    assert await hass.config_entries.async_reload(loaded_entry.entry_id)  # after fixing the cause
    assert issue(hass, "crash_loop") is None


async def test_budget_fix_flow_raises_the_budget(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, entry_data: dict[str, Any]
) -> None:
    entry = make_entry(hass, {**entry_data, CONF_RAM_BUDGET_MB: 32})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    found = issue(hass, "budget_too_small")
    assert found is not None
    assert found.is_fixable
    needed = int((found.translation_placeholders or {})["needed_mb"])

    assert await async_setup_component(hass, "repairs", {})
    client = await hass_client()
    flow = await fix_flow(client, "", {"handler": DOMAIN, "issue_id": "budget_too_small"})
    assert flow["step_id"] == "budget"
    assert flow["description_placeholders"]["needed_mb"] == str(needed)
    flow = await fix_flow(client, f"/{flow['flow_id']}", {CONF_RAM_BUDGET_MB: 1 << 20})
    fix_texts = EN["issues"]["budget_too_small"]["fix_flow"]
    assert shown_errors(flow, fix_texts) == {CONF_RAM_BUDGET_MB: "budget_exceeds_ram"}
    flow = await fix_flow(client, f"/{flow['flow_id']}", {CONF_RAM_BUDGET_MB: needed - 1})
    assert shown_errors(flow, fix_texts) == {CONF_RAM_BUDGET_MB: "does_not_fit_budget"}
    flow = await fix_flow(client, f"/{flow['flow_id']}", {CONF_RAM_BUDGET_MB: needed + 64})
    assert flow["type"] == "create_entry"
    await hass.async_block_till_done()  # the entry reloads with the new budget
    assert entry.data[CONF_RAM_BUDGET_MB] == needed + 64
    assert issue(hass, "budget_too_small") is None
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_worker_killed_by_sigill_means_unusable_backend(
    hass: HomeAssistant, entry_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model must run the safe way (calibration may pick repacking on a fast CPU, and a repacked
    # worker dying by SIGILL only rules repacking out): a repacked trial that dies ensures it.
    monkeypatch.setenv(FAULTS_ENV, "repack=SIGILL")
    entry = make_entry(hass, entry_data)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    engine = entry.runtime_data.engine
    assert engine.status(FAST).repack is False
    client = worker(engine, FAST)
    assert client.pid is not None
    os.kill(client.pid, signal.SIGILL)  # what a wheel built for another CPU does on its first AVX-512 op
    found = await wait_for_issue(hass, "llama_cpp_unusable")
    assert "SIGILL" in (found.translation_placeholders or {})["error"]

    await wait_loaded(entry)  # it loads again (here the CPU is fine): the issue clears itself
    assert issue(hass, "llama_cpp_unusable") is None
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_broken_llama_cpp_install_means_unusable_backend(
    hass: HomeAssistant, entry_data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "site" / "llama_cpp"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise OSError("libllama.so: cannot open shared object file")\n')
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))  # the workers import this one first
    entry = make_entry(hass, entry_data)
    assert await hass.config_entries.async_setup(entry.entry_id)
    found = await wait_for_issue(hass, "llama_cpp_unusable")  # the background preload fails in the worker
    assert "libllama.so" in (found.translation_placeholders or {})["error"]

    monkeypatch.delenv("PYTHONPATH")  # repaired (reinstalled)
    assert await hass.config_entries.async_reload(entry.entry_id)
    await wait_loaded(entry)
    assert issue(hass, "llama_cpp_unusable") is None
    assert await hass.config_entries.async_unload(entry.entry_id)


def state_attributes(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, Any]:
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    entity_id = next(e.entity_id for e in entities if e.unique_id == f"{entry.entry_id}_{FAST}_state")
    state = hass.states.get(entity_id)
    assert state is not None
    return dict(state.attributes)


@pytest.mark.parametrize("sig", ["SIGILL", "SIGSEGV"])
async def test_repacked_trial_dying_is_ruled_out_without_a_repair(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    entry_data: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    sig: str,
) -> None:
    """An AMX CPU whose AMX traps, injected: the model loads without repacking and answers."""
    monkeypatch.setenv(FAULTS_ENV, f"repack={sig}")
    entry = make_entry(hass, entry_data)  # no `repack` given: the first load calibrates
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent_id(hass, entry))
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert result.response.speech["plain"]["speech"].strip()
    assert issue(hass, "llama_cpp_unusable") is None
    assert issue(hass, "crash_loop") is None

    path = Path(hass.config.path(DOMAIN, "calibration.json"))
    [record] = json.loads(await hass.async_add_executor_job(path.read_text)).values()
    assert record["repack"] is False
    assert record["unusable"]["repack"].startswith(f"{sig}: ")
    attributes = state_attributes(hass, entry)
    assert attributes["repack"] is False
    assert attributes["unusable_variants"] == record["unusable"]
    assert await async_setup_component(hass, "diagnostics", {})
    diag = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diag["engine"]["models"][FAST]["unusable_variants"] == record["unusable"]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_safe_way_dying_too_raises_unusable_and_answers_with_a_clear_error(
    hass: HomeAssistant, entry_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "repack=SIGILL,plain=SIGSEGV")
    entry = make_entry(hass, entry_data)
    assert await hass.config_entries.async_setup(entry.entry_id)
    found = await wait_for_issue(hass, "llama_cpp_unusable", timeout_s=60)  # the background preload
    assert "SIGSEGV: segmentation fault" in (found.translation_placeholders or {})["error"]
    assert entry.state is ConfigEntryState.LOADED  # the entry stays: Assist says what is wrong

    result = await conversation.async_converse(hass, "hello", None, Context(), agent_id=agent_id(hass, entry))
    assert result.response.response_type is intent.IntentResponseType.ERROR
    speech = result.response.speech["plain"]["speech"]
    assert speech.startswith("The model process stopped unexpectedly")
    assert "SIGSEGV: segmentation fault" in speech
    assert "Traceback" not in speech
    unavailable = [r for r in caplog.records if r.getMessage().startswith("The fast model is unavailable")]
    assert len(unavailable) == 1  # logged once, not at every failed load (log-when-unavailable)
    assert await hass.config_entries.async_unload(entry.entry_id)
