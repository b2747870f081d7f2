"""Config flow on real HA: the happy path and each error, on real GGUF files."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant import config_entries
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
import pytest

from custom_components.sarai_omni.const import (
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_N_CTX,
    CONF_N_THREADS,
    CONF_QUALITY_MMPROJ,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    DOMAIN,
    SUBENTRY_CONVERSATION,
)
from custom_components.sarai_omni.flow_schemas import options_schema
from tests.tiny_models import write_text_model

from .conftest import EN, make_entry, role_data, shown_abort, shown_errors


async def _submit(hass: HomeAssistant, data: dict[str, Any]) -> Any:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    return await hass.config_entries.flow.async_configure(result["flow_id"], data)


def _form(model: str, **extra: Any) -> dict[str, Any]:
    return {CONF_FAST_MODEL: model, CONF_RAM_BUDGET_MB: 1024, CONF_N_THREADS: 2, CONF_N_CTX: 512, **extra}


async def test_happy_path_creates_entry_and_agent(hass: HomeAssistant, tiny_qwen2: Path) -> None:
    with (
        patch("custom_components.sarai_omni.integration.async_setup_entry", return_value=True),
        patch("custom_components.sarai_omni.integration.async_unload_entry", return_value=True),
    ):
        result = await _submit(hass, _form(f"  {tiny_qwen2}  "))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Sarai Omni"
    # Trimmed, nothing the user gave is lost: setup values in data, tunables in options, the model a role.
    assert result["data"] == {CONF_RAM_BUDGET_MB: 1024, CONF_N_THREADS: 2}
    assert result["options"] == {"kv_type": "f16", "n_gpu_layers": 0}
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert [s.subentry_type for s in entry.subentries.values()] == ["model", SUBENTRY_CONVERSATION, "ai_task_data"]
    assert role_data(entry, "fast") == {
        "role": "fast", "backend": "llama_cpp", "model_path": str(tiny_qwen2), "n_ctx": 512, "n_batch": 512,
        "pinned": True,
    }  # fmt: skip


async def test_relative_path_under_config_dir(hass: HomeAssistant, tmp_path: Path) -> None:
    hass.config.config_dir = str(tmp_path)
    (tmp_path / "models").mkdir()
    write_text_model(tmp_path / "models" / "rel.gguf", "qwen3")
    hass.config.allowlist_external_dirs = {str(tmp_path / "models")}
    with patch("custom_components.sarai_omni.integration.async_setup_entry", return_value=True):
        result = await _submit(hass, _form("models/rel.gguf"))
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    ("name", "field", "error"),
    [
        ("missing.gguf", CONF_FAST_MODEL, "file_not_found"),
        ("not-a-model.gguf", CONF_FAST_MODEL, "not_gguf"),
    ],
)
async def test_file_errors(hass: HomeAssistant, model_dir: Path, name: str, field: str, error: str) -> None:
    result = await _submit(hass, _form(str(model_dir / name)))
    assert result["type"] is FlowResultType.FORM
    assert shown_errors(result) == {field: error}


async def test_path_outside_allowlist(hass: HomeAssistant, tmp_path: Path) -> None:
    outside = write_text_model(tmp_path / "elsewhere.gguf")
    result = await _submit(hass, _form(str(outside)))
    assert shown_errors(result) == {CONF_FAST_MODEL: "path_not_allowed"}


async def test_unsupported_architecture(hass: HomeAssistant, model_dir: Path) -> None:
    import gguf

    path = model_dir / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    result = await _submit(hass, _form(str(path)))
    assert shown_errors(result) == {CONF_FAST_MODEL: "unsupported_arch"}


async def test_model_given_as_projector(hass: HomeAssistant, tiny_qwen2: Path) -> None:
    result = await _submit(hass, _form(str(tiny_qwen2), **{CONF_FAST_MMPROJ: str(tiny_qwen2)}))
    assert shown_errors(result) == {CONF_FAST_MMPROJ: "unsupported_arch"}


async def test_does_not_fit_budget_states_numbers(hass: HomeAssistant, gemma: Path) -> None:
    result = await _submit(hass, _form(str(gemma), **{CONF_RAM_BUDGET_MB: 256}))
    assert shown_errors(result) == {CONF_RAM_BUDGET_MB: "does_not_fit_budget"}
    placeholders = result["description_placeholders"]
    assert int(placeholders["needed_mb"]) > 256
    assert placeholders["budget_mb"] == "256"
    assert "gemma-3-270m-q4_k_m.gguf: gemma3" in placeholders["models"]


async def test_budget_above_machine_ram(hass: HomeAssistant, tiny_qwen2: Path) -> None:
    result = await _submit(hass, _form(str(tiny_qwen2), **{CONF_RAM_BUDGET_MB: 1 << 20}))
    assert shown_errors(result) == {CONF_RAM_BUDGET_MB: "budget_exceeds_ram"}


async def test_llama_cpp_missing_at_submit(hass: HomeAssistant, tiny_qwen2: Path) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    with patch("custom_components.sarai_omni.config_flow.backend_available", return_value=False):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], _form(str(tiny_qwen2)))
    assert shown_errors(result) == {"base": "llama_cpp_missing"}


async def test_fast_model_is_required_without_a_download(hass: HomeAssistant) -> None:
    result = await _submit(hass, {CONF_RAM_BUDGET_MB: 1024, CONF_N_THREADS: 2, CONF_N_CTX: 512})
    assert shown_errors(result) == {CONF_FAST_MODEL: "fast_model_required"}


async def test_quality_projector_needs_a_quality_model(
    hass: HomeAssistant, tiny_qwen2: Path, tiny_mmproj: Path
) -> None:
    result = await _submit(hass, _form(str(tiny_qwen2), **{CONF_QUALITY_MMPROJ: str(tiny_mmproj)}))
    assert shown_errors(result) == {CONF_QUALITY_MODEL: "projector_without_model"}


async def test_form_shows_what_each_file_is_and_counts_both_models(
    hass: HomeAssistant, tiny_qwen2: Path, tiny_mmproj: Path, gemma: Path
) -> None:
    form = _form(str(tiny_qwen2), **{CONF_FAST_MMPROJ: str(tiny_mmproj), CONF_QUALITY_MODEL: str(gemma)})
    alone = await _submit(hass, {**form, CONF_QUALITY_MODEL: str(tiny_qwen2), CONF_RAM_BUDGET_MB: 256})
    both: Any = await hass.config_entries.flow.async_configure(alone["flow_id"], {**form, CONF_RAM_BUDGET_MB: 256})
    assert shown_errors(both) == {CONF_RAM_BUDGET_MB: "does_not_fit_budget"}  # gemma at 8k context is over 256 MB
    assert int(both["description_placeholders"]["needed_mb"]) > int(alone["description_placeholders"]["needed_mb"])
    placeholders = both["description_placeholders"]
    models = placeholders["models"].splitlines()
    assert models[0] == ""  # the list starts on its own line, or markdown runs it into the label
    assert models[1].startswith("- tiny-qwen2.gguf: qwen2, 108608 parameters,")
    assert "projector (vision)" in models[2]
    assert "gemma3" in models[3]
    assert "Q4_K_M" in models[3]
    assert "trained context 32768" in models[3]
    assert "0.27 B parameters" in models[3]
    assert placeholders["need"] == f"{int(placeholders['needed_mb']):,} MB"
    assert placeholders["budget"] == "256 MB"


async def test_second_setup_aborts(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    make_entry(hass, entry_data)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    assert result["type"] is FlowResultType.ABORT
    assert shown_abort(result) == "single_instance_allowed"  # manifest single_config_entry: HA refuses at once


async def test_options_flow_retunes_the_engine(hass: HomeAssistant, loaded_entry: Any) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    options = {
        "kv_type": "q8_0",
        "n_gpu_layers": 0,
        "idle_unload_s": 60,
        "request_timeout_s": 30,
        "router_short_chars": 100,
        "router_soft_threshold": 0.9,
        "prompt_lookup": False,
    }
    result = await hass.config_entries.options.async_configure(result["flow_id"], options)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()  # reloaded with the new options
    engine = loaded_entry.runtime_data.engine
    assert engine.pool.slot("fast").spec.runtime.kv_type == "q8_0"
    assert engine.pool.slot("fast").spec.runtime.prompt_lookup is False
    assert engine.config.request_timeout_s == 30
    assert engine.config.router.soft_threshold == 0.9
    assert role_data(loaded_entry, "fast")[CONF_N_CTX] == 2048  # the role is untouched


async def test_role_batch_and_prompt_lookup_option_reach_the_worker(
    hass: HomeAssistant, loaded_entry: Any, tiny_qwen2: Path
) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    options = {**options_schema()({}), "prompt_lookup": False}  # the rest as shown
    result = await hass.config_entries.options.async_configure(result["flow_id"], options)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    (fast,) = (s for s in loaded_entry.subentries.values() if s.data.get("role") == "fast")
    flow = await loaded_entry.start_subentry_reconfigure_flow(hass, fast.subentry_id)
    role = {"model_path": str(tiny_qwen2), "on_server": False, "n_ctx": 2048, "n_batch": 96, "pinned": True}
    done = await hass.config_entries.subentries.async_configure(flow["flow_id"], role)
    assert shown_abort(done, EN["config_subentries"]["model"]) == "reconfigure_successful"
    await hass.async_block_till_done()
    engine = loaded_entry.runtime_data.engine
    await engine.load("fast")
    stats = await engine.pool.slot("fast").backend.stats()  # what the worker process really runs with
    assert stats["n_batch"] == 96
    assert stats["prompt_lookup"]["enabled"] is False


async def test_reconfigure_changes_models_and_keeps_validation(
    hass: HomeAssistant, loaded_entry: Any, tiny_qwen3: Path, model_dir: Path
) -> None:
    result = await loaded_entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    assert "tiny-qwen2.gguf: qwen2" in result["description_placeholders"]["models"]  # what is configured now
    result = await hass.config_entries.flow.async_configure(result["flow_id"], _form(str(model_dir / "gone.gguf")))
    assert shown_errors(result) == {CONF_FAST_MODEL: "file_not_found"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], _form(str(tiny_qwen3)))
    assert result["type"] is FlowResultType.ABORT
    assert shown_abort(result) == "reconfigure_successful"
    await hass.async_block_till_done()
    assert role_data(loaded_entry, "fast")["model_path"] == str(tiny_qwen3)
    assert loaded_entry.runtime_data.engine.pool.slot("fast").spec.path == str(tiny_qwen3)


async def test_reconfigure_sets_the_tunables_it_asks_and_keeps_the_rest(hass: HomeAssistant, loaded_entry: Any) -> None:
    hass.config_entries.async_update_entry(loaded_entry, options={"kv_type": "q8_0", "idle_unload_s": 60})
    await hass.async_block_till_done()
    assert loaded_entry.runtime_data.engine.pool.slot("fast").spec.runtime.kv_type == "q8_0"
    options: Any = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    suggested = {str(k): k.description for k in options["data_schema"].schema}
    assert suggested["kv_type"] == {"suggested_value": "q8_0"}
    await hass.config_entries.options.async_configure(options["flow_id"], {**loaded_entry.options})
    await hass.async_block_till_done()  # reloaded with the options

    result = await loaded_entry.start_reconfigure_flow(hass)
    form = {**_form(role_data(loaded_entry, "fast")["model_path"]), "kv_type": "f16", "n_gpu_layers": 0}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], form)
    assert shown_abort(result) == "reconfigure_successful"
    await hass.async_block_till_done()
    assert loaded_entry.options["kv_type"] == "f16"  # the form asked it: the form's value is the option
    assert loaded_entry.options["idle_unload_s"] == 60  # the other tuning stays
    assert loaded_entry.runtime_data.engine.pool.slot("fast").spec.runtime.kv_type == "f16"
