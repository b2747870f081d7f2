"""Installing llama-cpp-python from the config flow and from the repair issue.

A real install through Home Assistant's package installer (uv), of a tiny local wheel standing in
for the patched llama-cpp-python source folder (whose build takes minutes), into <config>/deps.
Preparing that folder (download, hash, patch) is tested on the real sdist in
tests/engine/test_llama_sources.py.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any
from unittest.mock import patch
import zipfile

from homeassistant import config_entries
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.sarai_omni import installer
from custom_components.sarai_omni.const import DOMAIN
from custom_components.sarai_omni.engine import llama_sources
from tests.engine.test_llama_sources import serving

from .conftest import make_entry, shown_abort


def build_wheel(folder: Path, name: str = "sarai_probe", version: str = "1.0") -> Path:
    """A minimal, valid pure-Python wheel (PEP 427) with one module."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


@pytest.fixture
def deps_install(hass: HomeAssistant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HA installs into <config>/deps (as outside a venv); the requirement is a local wheel."""
    hass.config.config_dir = str(tmp_path)
    monkeypatch.setattr("homeassistant.util.package.is_virtual_env", lambda: False)
    monkeypatch.setattr("homeassistant.util.package.is_docker_env", lambda: False)
    wheel = str(build_wheel(tmp_path))
    monkeypatch.setattr(installer, "patched_sources", lambda config_dir: wheel)
    return tmp_path / "deps"


async def fix_flow(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request to the repairs fix-flow HTTP API, as the frontend sends it."""
    response = await client.post(f"/api/repairs/issues/fix{path}", json=body)
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _user_flow(hass: HomeAssistant) -> dict[str, Any]:
    return dict(await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER}))


async def _through_progress(hass: HomeAssistant, result: Any) -> dict[str, Any]:
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    assert result["progress_action"] == "install"
    await hass.async_block_till_done()
    return dict(await hass.config_entries.flow.async_configure(result["flow_id"]))


async def test_flow_installs_the_backend_then_shows_the_form(hass: HomeAssistant, deps_install: Path) -> None:
    with patch("custom_components.sarai_omni.config_flow.backend_available", return_value=False):
        result = await _user_flow(hass)
    assert result["step_id"] == "install"
    assert result["description_placeholders"]["requirement"] == "llama-cpp-python==0.3.36 (patched: 0.3.36+sarai2)"
    with patch.object(installer, "backend_available", return_value=True):  # importable once installed
        result = await _through_progress(hass, await hass.config_entries.flow.async_configure(result["flow_id"], {}))
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert (deps_install / "sarai_probe" / "__init__.py").is_file()  # really installed by HA's installer


async def test_installed_but_not_importable_asks_for_a_restart(hass: HomeAssistant, deps_install: Path) -> None:
    with patch("custom_components.sarai_omni.config_flow.backend_available", return_value=False):
        result = await _user_flow(hass)
    with patch.object(installer, "backend_available", return_value=False):
        result = await _through_progress(hass, await hass.config_entries.flow.async_configure(result["flow_id"], {}))
    assert result["type"] is FlowResultType.ABORT
    assert shown_abort(result) == "restart_required"


async def test_failed_install_says_so(
    hass: HomeAssistant, deps_install: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(installer, "patched_sources", lambda config_dir: str(tmp_path / "missing-1.0-py3-none-any.whl"))
    with patch("custom_components.sarai_omni.config_flow.backend_available", return_value=False):
        result = await _user_flow(hass)
    result = await _through_progress(hass, await hass.config_entries.flow.async_configure(result["flow_id"], {}))
    assert result["type"] is FlowResultType.ABORT
    assert shown_abort(result) == "install_failed"
    assert result["description_placeholders"]["requirement"] == installer.REQUIREMENT


@pytest.mark.usefixtures("socket_enabled")  # to 127.0.0.1 only
async def test_sources_that_fail_their_check_are_a_failed_install(
    hass: HomeAssistant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real preparation (download, SHA-256, patch) against a "PyPI" on 127.0.0.1 that serves
    something else: nothing is installed, the flow says the install failed, nothing is left behind."""
    hass.config.config_dir = str(tmp_path)
    with serving(b"not the llama-cpp-python sdist") as url:
        monkeypatch.setattr(llama_sources, "SDIST_URL", url)
        with patch("custom_components.sarai_omni.config_flow.backend_available", return_value=False):
            result = await _user_flow(hass)
        result = await _through_progress(hass, await hass.config_entries.flow.async_configure(result["flow_id"], {}))
    assert shown_abort(result) == "install_failed"
    assert not (tmp_path / installer.BUILD_FOLDER).exists()


async def test_no_compiler_explains_instead_of_trying(
    hass: HomeAssistant, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an environment without any C++ compiler
    with patch("custom_components.sarai_omni.config_flow.backend_available", return_value=False):
        result = await _user_flow(hass)
    assert result["type"] is FlowResultType.ABORT
    assert shown_abort(result) == "no_compiler"
    assert result["description_placeholders"]["libc"] in {"glibc", "musl"}


async def test_repair_installs_the_backend_and_restarts_the_entry(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, entry_data: dict[str, Any], deps_install: Path
) -> None:
    entry = make_entry(hass, entry_data)
    with patch("custom_components.sarai_omni.integration.backend_available", return_value=False):
        assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    issue = ir.async_get(hass).async_get_issue(DOMAIN, "llama_cpp_missing")
    assert issue is not None
    assert issue.is_fixable
    assert issue.severity is ir.IssueSeverity.ERROR

    assert await async_setup_component(hass, "repairs", {})
    client = await hass_client()
    with patch.object(installer, "backend_available", return_value=True):
        flow = await fix_flow(client, "", {"handler": DOMAIN, "issue_id": "llama_cpp_missing"})
        assert flow["step_id"] == "install"
        flow = await fix_flow(client, f"/{flow['flow_id']}", {})
        assert flow["type"] == "progress"
        await hass.async_block_till_done()
        flow = await fix_flow(client, f"/{flow['flow_id']}", {})
    assert flow["type"] == "create_entry"
    await hass.async_block_till_done()
    reloaded = hass.config_entries.async_get_entry(entry.entry_id)
    assert reloaded is not None
    assert reloaded.state is ConfigEntryState.LOADED  # set up again once installed
    assert ir.async_get(hass).async_get_issue(DOMAIN, "llama_cpp_missing") is None
    assert (deps_install / "sarai_probe").is_dir()
    assert await hass.config_entries.async_unload(entry.entry_id)
