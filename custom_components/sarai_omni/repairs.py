"""Fix flows for the repair issues that the integration can fix itself.

`llama_cpp_missing`: install llama-cpp-python (same steps as the config flow), then reload.
`budget_too_small`: enter a budget that holds the fast model; the entry reloads with it.
The others (model missing, crash loop, unusable backend) say what to do in their description.
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.repairs import ConfirmRepairFlow, RepairsFlow, RepairsFlowResult
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers.selector import NumberSelector, NumberSelectorConfig, NumberSelectorMode
import probatio

from .const import CONF_RAM_BUDGET_MB, DOMAIN, ISSUE_BACKEND_MISSING, ISSUE_BUDGET
from .installer import InstallSteps
from .validation import budget_error, machine_ram_mb


class BackendMissingFlow(InstallSteps[RepairsFlowResult], RepairsFlow):
    """Install llama-cpp-python, then set the entry up again."""

    install_next_step = "done"

    async def async_step_init(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        return await self.async_step_install()

    async def async_step_done(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        for entry in self.hass.config_entries.async_entries(DOMAIN):
            if entry.state is not ConfigEntryState.LOADED:
                await self.hass.config_entries.async_reload(entry.entry_id)
        return self.async_create_entry(data={})


class BudgetFlow(RepairsFlow):
    """Raise the RAM budget to what the fast model needs (never above the machine's RAM)."""

    def __init__(self, entry_id: str, needed_mb: int) -> None:
        self._entry_id, self._needed_mb = entry_id, needed_mb

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> RepairsFlowResult:
        return await self.async_step_budget()  # the init step gets the issue's id, not a form

    async def async_step_budget(self, user_input: dict[str, Any] | None = None) -> RepairsFlowResult:
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None:
            return self.async_abort(reason="entry_removed")
        ram = await self.hass.async_add_executor_job(machine_ram_mb)
        placeholders = {"needed_mb": str(self._needed_mb), "ram_mb": str(ram)}
        errors: dict[str, str] = {}
        if user_input is not None:
            budget = int(user_input[CONF_RAM_BUDGET_MB])
            if error := budget_error(budget, self._needed_mb, ram):
                errors[CONF_RAM_BUDGET_MB] = error
            else:  # the update listener reloads the entry, which clears the issue by itself
                self.hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_RAM_BUDGET_MB: budget})
                return self.async_create_entry(data={})
        suggested = -(-self._needed_mb // 64) * 64  # the need, rounded up to a round number
        schema = probatio.Schema(
            {
                probatio.Required(CONF_RAM_BUDGET_MB, default=suggested): NumberSelector(
                    NumberSelectorConfig(min=1, max=1 << 20, step=1, mode=NumberSelectorMode.BOX)
                )
            }
        )
        return self.async_show_form(
            step_id="budget", data_schema=schema, errors=errors, description_placeholders=placeholders
        )


async def async_create_fix_flow(hass: HomeAssistant, issue_id: str, data: dict[str, Any] | None) -> RepairsFlow:
    if issue_id == ISSUE_BACKEND_MISSING:
        return BackendMissingFlow()
    if issue_id == ISSUE_BUDGET and data:
        return BudgetFlow(str(data["entry_id"]), int(data["needed_mb"]))
    return ConfirmRepairFlow()
