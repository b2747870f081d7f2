"""The config flow's download step, against a fake Hugging Face hub on 127.0.0.1 (HF_ENDPOINT)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
import hashlib
from pathlib import Path
import random
import shutil
from typing import Any

from homeassistant import config_entries
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.data_entry_flow import EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE, FlowResultType
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.sarai_omni import download
from custom_components.sarai_omni.catalog import SEED_FAST
from custom_components.sarai_omni.const import (
    CONF_FAST_MMPROJ,
    CONF_FAST_MODEL,
    CONF_N_CTX,
    CONF_N_THREADS,
    CONF_QUALITY_MODEL,
    CONF_RAM_BUDGET_MB,
    DOMAIN,
    FAST,
    QUALITY,
)
from tests.fake_hub import FakeHub

from .conftest import role_data, shown_errors

TWENTY_MB = 20 * 2**20
FORM = {CONF_RAM_BUDGET_MB: 1024, CONF_N_THREADS: 2, CONF_N_CTX: 512}


@pytest.fixture
async def hub(
    socket_enabled: None, monkeypatch: pytest.MonkeyPatch, hass: HomeAssistant, tmp_path: Path
) -> AsyncGenerator[FakeHub]:
    """A fake hub the integration reaches through HF_ENDPOINT; downloads go to <tmp config>/models."""
    hass.config.config_dir = str(tmp_path)
    async with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        yield fake


async def _read(hass: HomeAssistant, path: Path) -> bytes:
    return await hass.async_add_executor_job(path.read_bytes)


async def _start(hass: HomeAssistant, data: dict[str, Any]) -> dict[str, Any]:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    assert result["step_id"] == "user"
    return dict(await hass.config_entries.flow.async_configure(result["flow_id"], data))


async def _finish_progress(hass: HomeAssistant, result: dict[str, Any], *, shown: bool | None = True) -> dict[str, Any]:
    """Wait for the progress task; the flow manager then moves the flow on by itself.

    HA starts tasks eagerly: a download refused at once (no room on the disk) may have ended before
    the step returns, and then the flow goes straight on without a progress bar (`shown=None`).
    """
    if shown is not None:
        assert result["type"] is FlowResultType.SHOW_PROGRESS, result
    await hass.async_block_till_done()
    return dict(await hass.config_entries.flow.async_configure(result["flow_id"]))


async def _hub_download(hass: HomeAssistant, filename: str, target: str = CONF_FAST_MODEL) -> dict[str, Any]:
    result = await _start(hass, {"download": "hub", **FORM})
    assert result["step_id"] == "hub"
    hub_input = {"repo_id": "acme/big-GGUF", "filename": filename, "revision": "main", "target": target}
    return dict(await hass.config_entries.flow.async_configure(result["flow_id"], hub_input))


async def test_seed_download_sets_up_without_typing_a_path(
    hass: HomeAssistant, hub: FakeHub, tiny_qwen2: Path, tiny_mmproj: Path, tmp_path: Path
) -> None:
    (model_key, model), (proj_key, proj) = SEED_FAST
    hub.add(model.repo_id, model.filename, await _read(hass, tiny_qwen2))
    hub.add(proj.repo_id, proj.filename, await _read(hass, tiny_mmproj))
    result = await _finish_progress(hass, await _start(hass, {"download": "seed_fast", **FORM}))
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    fast = role_data(result["result"], FAST)  # the fast role, on the downloaded files
    assert (model_key, proj_key) == (CONF_FAST_MODEL, CONF_FAST_MMPROJ)
    assert fast["model_path"] == f"models/{model.local_name}"
    assert fast["mmproj_path"] == f"models/{proj.local_name}"
    assert await _read(hass, tmp_path / "models" / model.local_name) == await _read(hass, tiny_qwen2)
    assert fast["backend"] == "llama_cpp"


async def test_twenty_mb_arrives_with_progress_and_resumes_a_broken_connection(
    hass: HomeAssistant, hub: FakeHub, tmp_path: Path
) -> None:
    payload = random.Random(20).randbytes(TWENTY_MB)
    hub.add("acme/big-GGUF", "big.gguf", payload)
    hub.break_after = 7 * 2**20  # the first GET dies after 7 MB
    updates: list[float] = []

    @callback
    def on_progress(event: Event) -> None:
        updates.append(event.data["progress"])

    unsub = hass.bus.async_listen(EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE, on_progress)
    result = await _hub_download(hass, "big.gguf")
    result = await _finish_progress(hass, result)
    unsub()

    arrived = await _read(hass, tmp_path / "models" / "big-GGUF" / "big.gguf")
    assert hashlib.sha256(arrived).digest() == hashlib.sha256(payload).digest()
    assert len(updates) >= 5
    assert updates == sorted(updates)
    assert updates[-1] == pytest.approx(1.0)
    assert [method for method, _, _ in hub.requests].count("HEAD") == 1  # asked once, on the hub form
    ranges = [r for method, _, r in hub.requests if method == "GET" and r]
    assert ranges
    assert int(ranges[0].removeprefix("bytes=").rstrip("-")) > 0  # resumed, not restarted
    # Random bytes are no GGUF: the form comes back filled in, with the reason on the field.
    assert result["type"] is FlowResultType.FORM
    assert shown_errors(result) == {CONF_FAST_MODEL: "not_gguf"}


async def test_wrong_sha256_is_refused_and_the_form_keeps_what_was_entered(
    hass: HomeAssistant, hub: FakeHub, tmp_path: Path, tiny_qwen2: Path
) -> None:
    hub.add("acme/big-GGUF", "bad.gguf", await _read(hass, tiny_qwen2), advertised_sha256="0" * 64)
    result = await _finish_progress(hass, await _hub_download(hass, "bad.gguf"))
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert shown_errors(result) == {"base": "checksum_mismatch"}
    assert result["description_placeholders"]["file"] == "acme/big-GGUF/bad.gguf"
    assert result["description_placeholders"]["expected"] == "0" * 64
    assert not list((tmp_path / "models").rglob("bad.gguf*"))  # neither the file nor a part is kept
    suggested = {str(k): k.description for k in result["data_schema"].schema}
    assert suggested[CONF_RAM_BUDGET_MB] == {"suggested_value": 1024}


@pytest.mark.parametrize(
    ("repo_id", "filename", "error"),
    [
        ("no-slash", "x.gguf", "invalid_repo"),
        ("acme/big-GGUF", "../x.gguf", "invalid_repo"),
        ("acme/none", "x.gguf", "hub_not_found"),
    ],
)
async def test_hub_form_errors(hass: HomeAssistant, hub: FakeHub, repo_id: str, filename: str, error: str) -> None:
    result = await _start(hass, {"download": "hub", **FORM})
    hub_input = {"repo_id": repo_id, "filename": filename, "revision": "main", "target": CONF_FAST_MODEL}
    result = dict(await hass.config_entries.flow.async_configure(result["flow_id"], hub_input))
    assert result["step_id"] == "hub"
    assert shown_errors(result) == {"base": error}


async def test_hub_unreachable(hass: HomeAssistant, monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    result = await _start(hass, {"download": "hub", **FORM})
    hub_input = {"repo_id": "acme/big-GGUF", "filename": "x.gguf", "revision": "main", "target": CONF_FAST_MODEL}
    result = dict(await hass.config_entries.flow.async_configure(result["flow_id"], hub_input))
    assert shown_errors(result) == {"base": "hub_unreachable"}


async def test_projector_download_fills_its_own_field(hass: HomeAssistant, hub: FakeHub, tiny_mmproj: Path) -> None:
    hub.add("acme/big-GGUF", "mmproj.gguf", await _read(hass, tiny_mmproj))
    result = await _finish_progress(hass, await _hub_download(hass, "mmproj.gguf", CONF_FAST_MMPROJ))
    assert result["type"] is FlowResultType.FORM  # no fast model yet: the user still gives one
    assert shown_errors(result) == {}
    suggested = {str(k): k.description for k in result["data_schema"].schema}
    assert suggested[CONF_FAST_MMPROJ] == {"suggested_value": "models/big-GGUF/mmproj.gguf"}


async def test_unwritable_models_folder_is_a_clear_error(hass: HomeAssistant, hub: FakeHub, tmp_path: Path) -> None:
    hub.add("acme/big-GGUF", "x.gguf", b"GGUF" + bytes(1000))
    await hass.async_add_executor_job((tmp_path / "models").write_text, "a file where the folder should be")
    result = await _finish_progress(hass, await _hub_download(hass, "x.gguf"), shown=None)
    assert result["step_id"] == "user"
    assert shown_errors(result) == {"base": "download_failed"}
    assert "models" in result["description_placeholders"]["error"]


async def test_reconfigure_downloads_a_quality_model(
    hass: HomeAssistant, hub: FakeHub, loaded_entry: Any, tiny_qwen3: Path
) -> None:
    hub.add("acme/quality-GGUF", "q.gguf", await _read(hass, tiny_qwen3))
    result = await loaded_entry.start_reconfigure_flow(hass)
    form = {**FORM, CONF_FAST_MODEL: role_data(loaded_entry, FAST)["model_path"], "download": "hub"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], form)
    hub_input = {"repo_id": "acme/quality-GGUF", "filename": "q.gguf", "revision": "main", "target": CONF_QUALITY_MODEL}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], hub_input)
    result = await _finish_progress(hass, dict(result))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()  # reloaded with both models
    assert role_data(loaded_entry, QUALITY)["model_path"] == "models/quality-GGUF/q.gguf"
    assert set(loaded_entry.runtime_data.engine.pool.slots) == {"fast", "quality"}


async def test_forms_serialize_for_the_frontend(
    hass: HomeAssistant, hub: FakeHub, hass_client: ClientSessionGenerator
) -> None:
    """The UI talks REST: every form of the download path must serialize (selectors, defaults)."""
    assert await async_setup_component(hass, "config", {})
    assert await async_setup_component(hass, "conversation", {})  # its HTTP views before the test server starts
    client = await hass_client()
    response = await client.post("/api/config/config_entries/flow", json={"handler": DOMAIN})
    assert response.status == 200, await response.text()
    form = await response.json()
    assert [f["name"] for f in form["data_schema"]][:2] == ["download", CONF_FAST_MODEL]
    response = await client.post(f"/api/config/config_entries/flow/{form['flow_id']}", json={"download": "hub", **FORM})
    hub_form = await response.json()
    assert response.status == 200
    assert hub_form["step_id"] == "hub"
    assert {f["name"] for f in hub_form["data_schema"]} == {"repo_id", "filename", "revision", "target", "token"}


async def test_short_file_is_refused_with_its_sizes(hass: HomeAssistant, hub: FakeHub) -> None:
    hub.add("acme/big-GGUF", "short.gguf", bytes(1000), advertised_size=2000)
    result = await _finish_progress(hass, await _hub_download(hass, "short.gguf"))
    assert shown_errors(result) == {"base": "size_mismatch"}
    assert (result["description_placeholders"]["expected"], result["description_placeholders"]["got"]) == (
        "2000",
        "1000",
    )


async def test_full_disk_is_refused_before_downloading(
    hass: HomeAssistant, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("acme/big-GGUF", "big.gguf", bytes(TWENTY_MB))
    full = shutil._ntuple_diskusage(10**9, 10**9, 2**20)  # 1 MB free
    monkeypatch.setattr(f"{download.__name__}.shutil.disk_usage", lambda _: full)
    result = await _finish_progress(hass, await _hub_download(hass, "big.gguf"), shown=None)
    assert shown_errors(result) == {"base": "not_enough_disk"}
    assert not [r for r in hub.requests if r[0] == "GET"]  # nothing was fetched


async def test_default_budget_follows_the_downloaded_models(
    hass: HomeAssistant, hub: FakeHub, tiny_qwen2: Path, tiny_mmproj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 (12): the recommended pair needs more than the default budget. The form comes back
    with the budget they need, says why, and the user's submit keeps it; a budget the user typed is
    never changed."""
    from custom_components.sarai_omni import config_flow
    from custom_components.sarai_omni.catalog import SEED_QUALITY

    for _, file in (*SEED_FAST, *SEED_QUALITY):
        source = tiny_mmproj if "mmproj" in file.filename else tiny_qwen2
        hub.add(file.repo_id, file.filename, await _read(hass, source))
    monkeypatch.setattr(config_flow, "default_budget_mb", lambda: 256)  # as if 7,680 were too small
    result = await _finish_progress(
        hass, await _start(hass, {"download": "seed_both", **FORM, CONF_RAM_BUDGET_MB: 256})
    )
    assert shown_errors(result) == {"base": "budget_raised"}
    placeholders = dict(result["description_placeholders"] or {})
    assert placeholders["old_budget_mb"] == "256"
    proposed = int(placeholders["budget_mb"])
    assert proposed >= int(placeholders["needed_mb"]) > 256
    suggested = {str(k): (k.description or {}).get("suggested_value") for k in result["data_schema"].schema}
    assert suggested[CONF_RAM_BUDGET_MB] == proposed
    data = {k: v for k, v in suggested.items() if v not in (None, [])}
    done = await hass.config_entries.flow.async_configure(result["flow_id"], data)
    assert done["type"] is FlowResultType.CREATE_ENTRY
    assert done["data"][CONF_RAM_BUDGET_MB] == proposed


async def test_a_budget_the_user_typed_is_not_raised(
    hass: HomeAssistant, hub: FakeHub, tiny_qwen2: Path, tiny_mmproj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from custom_components.sarai_omni import config_flow
    from custom_components.sarai_omni.catalog import SEED_QUALITY

    for _, file in (*SEED_FAST, *SEED_QUALITY):
        source = tiny_mmproj if "mmproj" in file.filename else tiny_qwen2
        hub.add(file.repo_id, file.filename, await _read(hass, source))
    monkeypatch.setattr(config_flow, "default_budget_mb", lambda: 1024)
    result = await _finish_progress(
        hass, await _start(hass, {"download": "seed_both", **FORM, CONF_RAM_BUDGET_MB: 256})
    )
    assert shown_errors(result) == {CONF_RAM_BUDGET_MB: "does_not_fit_budget"}
