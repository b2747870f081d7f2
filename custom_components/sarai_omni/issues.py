"""Repair issues the engine's state raises: each is raised by its condition and deleted once fixed.

llama-cpp-python missing or unusable here, a model file gone, a budget too small for the pinned roles,
a worker crash loop, a server down, a torch venv that cannot import torch. Issues with a fix flow in
repairs.py are fixable; `data` is what that flow needs.
"""

from __future__ import annotations

import logging
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .const import (
    DOMAIN,
    ISSUE_BACKEND_MISSING,
    ISSUE_BACKEND_UNUSABLE,
    ISSUE_BUDGET,
    ISSUE_CRASH_LOOP,
    ISSUE_MODEL_MISSING,
    ISSUE_REMOTE_DOWN,
    ISSUE_TORCH_MISSING,
    REMOTE_DOWN_AFTER,
)
from .engine import STATE_ERROR, STATE_LOADED, STATE_REMOTE, Engine, ModelNotFound, ModelStatus
from .installer import torch_problem

_LOGGER = logging.getLogger(__name__)
CRASH_LOOP_COUNT, CRASH_LOOP_WINDOW_S = 3, 600


def raise_issue(hass: HomeAssistant, issue_id: str, data: dict[str, Any] | None = None, **placeholders: str) -> None:
    """Raise a repair issue (its translation says what to do)."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        data=data,
        is_fixable=issue_id in (ISSUE_BACKEND_MISSING, ISSUE_BUDGET),
        severity=ir.IssueSeverity.ERROR,
        translation_key=issue_id,
        translation_placeholders=placeholders or None,
    )


def clear(hass: HomeAssistant, *issue_ids: str) -> None:
    for issue_id in issue_ids:
        ir.async_delete_issue(hass, DOMAIN, issue_id)


def check_budget(hass: HomeAssistant, entry: ConfigEntry, engine: Engine) -> None:
    """The budget must at least hold the pinned roles together, or what they serve never answers."""
    needed_mb = sum(engine.needed_mb(r) for r in engine.roles if engine.status(r).pinned)
    if needed_mb > engine.budget_mb:
        data = {"entry_id": entry.entry_id, "needed_mb": needed_mb}
        raise_issue(hass, ISSUE_BUDGET, data, needed_mb=str(needed_mb), budget_mb=str(engine.budget_mb))
    else:
        clear(hass, ISSUE_BUDGET)


@callback
def on_engine_change(hass: HomeAssistant, engine: Engine, unavailable: set[str]) -> None:
    """What a change of the engine's state says: logged availability, files, crashes, backend, servers."""
    statuses = {role: engine.status(role) for role in engine.roles}  # read once per change
    _log_availability(statuses, unavailable)
    if missing := [s.error for s in statuses.values() if s.error_key == ModelNotFound.key]:
        raise_issue(hass, ISSUE_MODEL_MISSING, error=str(missing[0]))  # a file that vanished after setup
    if (crashes := engine.crashes_within(CRASH_LOOP_WINDOW_S)) >= CRASH_LOOP_COUNT:
        raise_issue(hass, ISSUE_CRASH_LOOP, count=str(crashes), minutes=str(CRASH_LOOP_WINDOW_S // 60))
    if (problem := engine.backend_problem()) is not None:  # installed, but unusable (CPU, native library)
        raise_issue(hass, ISSUE_BACKEND_UNUSABLE, error=problem)
    elif engine.any_loaded():  # it ran: whatever it was is fixed
        clear(hass, ISSUE_BACKEND_UNUSABLE)
    _check_remote(hass, statuses)


def _check_remote(hass: HomeAssistant, statuses: dict[str, ModelStatus]) -> None:
    """A server that failed REMOTE_DOWN_AFTER requests in a row gets a repair; it goes when one answers."""
    down = [s for s in statuses.values() if s.remote and s.failures >= REMOTE_DOWN_AFTER]
    if down:
        servers = ", ".join(down[0].servers) or str(down[0].server)  # every one of them failed
        raise_issue(hass, ISSUE_REMOTE_DOWN, role=down[0].role, server=servers, count=str(down[0].failures))
    elif all(s.failures == 0 for s in statuses.values()):
        clear(hass, ISSUE_REMOTE_DOWN)


def _log_availability(statuses: dict[str, ModelStatus], unavailable: set[str]) -> None:
    """Quality rule log-when-unavailable: a role that fails is logged once, and once when it is back."""
    for role, status in statuses.items():
        if status.state == STATE_ERROR and role not in unavailable:
            unavailable.add(role)
            _LOGGER.warning("The %s model is unavailable: %s", role, status.error)
        elif status.state in (STATE_LOADED, STATE_REMOTE) and role in unavailable:
            unavailable.discard(role)
            _LOGGER.info("The %s model is available again", role)


async def check_torch(hass: HomeAssistant, python: str) -> None:
    """A model folder needs a Python that imports torch and transformers: say so if it cannot."""
    if (problem := await torch_problem(python)) is None:
        clear(hass, ISSUE_TORCH_MISSING)
    else:
        _LOGGER.warning("The transformers model cannot run: %s", problem)
        raise_issue(hass, ISSUE_TORCH_MISSING, python=python or "-", error=problem)
