"""The suite fails when the integration triggers a Home Assistant deprecation (tests/deprecations.py).

Each way HA reports one is triggered here from code that HA takes for the integration's own (compiled
with the path of one of its modules, which is how HA finds the integration on the call stack), with
real deprecated HA APIs. The autouse guard of every test must have caught each; the list is then
emptied, or this test would fail too, which is the point.
"""

from __future__ import annotations

from typing import Any
import warnings

from homeassistant.core import HomeAssistant

from tests.deprecations import PACKAGE

# Deprecated in HA 2026.10: reading a tool result's JSON through `tool_result` (frame.report_usage),
# `llm.async_render_no_api_prompt` (a @deprecated_function), and a plain DeprecationWarning.
AS_THE_INTEGRATION = """
from homeassistant.components import conversation
from homeassistant.helpers import llm

result = conversation.ToolResultContent(
    agent_id="conversation.x", tool_call_id="1", tool_name="t", result=llm.ToolResult(data={"a": 1})
)
data = result.tool_result
llm.async_render_no_api_prompt(hass)
warnings.warn("an old way", DeprecationWarning, stacklevel=1)
"""


def _run_as_the_integration(hass: HomeAssistant) -> dict[str, Any]:
    namespace: dict[str, Any] = {"hass": hass, "warnings": warnings}
    exec(compile(AS_THE_INTEGRATION, str(PACKAGE / "entity.py"), "exec"), namespace)
    return namespace


async def test_each_kind_of_deprecation_report_fails_the_test(
    hass: HomeAssistant, no_ha_deprecations: list[str]
) -> None:
    namespace = _run_as_the_integration(hass)
    assert namespace["data"] == {"a": 1}  # the deprecated path still worked: only the guard objects
    found = "\n".join(no_ha_deprecations)
    assert "report_usage: accesses `ToolResultContent.tool_result`" in found
    assert "deprecated function async_render_no_api_prompt" in found
    assert "DeprecationWarning: an old way" in found
    # and HA's own warning lines that name the integration (what a user would find in the log)
    assert "log: Detected that custom integration 'sarai_omni' accesses `ToolResultContent.tool_result`" in found
    assert "log: The deprecated function async_render_no_api_prompt was called from sarai_omni" in found
    no_ha_deprecations.clear()


async def test_deprecations_from_other_code_are_not_blamed_on_the_integration(
    hass: HomeAssistant, no_ha_deprecations: list[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.warn("the test's own old way", DeprecationWarning, stacklevel=1)
    assert no_ha_deprecations == []
