"""A home with hundreds of exposed entities: Assist's standing prompt outgrows the default context.

The tiny model's tokens are bytes, so 200 exposed lights take far more than the default 4096-token
context, as they would with a real tokenizer somewhat past 200: the turn says why and what to change
(translated), a repair says the same, and following it (the role's context raised) answers the turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import intent, issue_registry as ir, llm
from homeassistant.helpers.translation import async_get_translations

from custom_components.sarai_omni.const import CONF_N_CTX, CONF_ROLE, DOMAIN, FAST, ISSUE_CONTEXT
from custom_components.sarai_omni.engine import defaults
from custom_components.sarai_omni.settings import role_subentries

from .conftest import make_entry, template_lights, turn, wait_loaded
from .test_assist import HELLO, force

HOME = 200


async def test_a_200_entity_home_says_why_then_answers_once_the_context_is_raised(
    hass: HomeAssistant, entry_data: dict[str, Any], tiny_qwen2: Path
) -> None:
    await template_lights(hass, *(f"lamp{i}" for i in range(HOME)))
    form = {k: v for k, v in entry_data.items() if k != CONF_N_CTX}  # the default context
    entry = make_entry(hass, form, llm_hass_api=[llm.LLM_API_ASSIST])
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_loaded(entry)
    assert entry.runtime_data.engine.pool.slot(FAST).spec.runtime.n_ctx == defaults.N_CTX

    with force(lambda _: HELLO):
        refused = await turn(hass, entry, "Turn on the lamp7 light", lambda _: None)
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_CONTEXT)
    assert issue is not None
    figures = issue.translation_placeholders or {}
    assert (figures["role"], figures["n_ctx"]) == (FAST, str(defaults.N_CTX))
    tokens, suggested = int(figures["tokens"]), int(figures["suggested"])
    assert tokens > defaults.N_CTX
    assert suggested >= tokens + int(figures["answer"])
    assert refused.response.response_type is intent.IntentResponseType.ERROR
    speech = refused.response.speech["plain"]["speech"]
    template = (await async_get_translations(hass, "en", "exceptions", [DOMAIN]))[
        f"component.{DOMAIN}.exceptions.context_too_small.message"
    ]
    assert speech == template.format(**figures)  # every figure filled in, nothing left as a brace

    # What the repair says to do: the fast role's context raised (what its reconfigure stores).
    (fast,) = (s for s in role_subentries(entry) if s.data[CONF_ROLE] == FAST)
    hass.config_entries.async_update_subentry(entry, fast, data={**fast.data, CONF_N_CTX: suggested})
    await hass.async_block_till_done()
    await wait_loaded(entry)
    assert entry.runtime_data.engine.pool.slot(FAST).spec.runtime.n_ctx == suggested
    with force(lambda _: HELLO):
        answered = await turn(hass, entry, "Turn on the lamp7 light", lambda _: None)
    assert answered.response.speech["plain"]["speech"] == "Hello there, friend."
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_CONTEXT) is None
