"""A person sets up and uses Sarai Omni in a real browser (Debian's Chromium) on a real Home Assistant,
in English and in Spanish: add the integration, read the form, make a mistake, succeed, change the
options, talk to the agent in the Assist dialog and open an action in the developer tools. Every
step's screen is checked for what the person reads and saved as a screenshot (`SARAI_SCREENSHOTS`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.home_assistant import HomeAssistant
from tests.browser.page import Page
from tests.browser.ui import ASSIST, FLOW, Person, assert_readable

QUESTION = {"en": "What is the capital of France?", "es": "¿Cuál es la capital de Francia?"}


@pytest.fixture
def person(request: pytest.FixtureRequest, page: Page, home_assistant: HomeAssistant) -> Person:
    """Logged in, in the test's language, on a Home Assistant without a Sarai Omni entry."""
    home_assistant.remove_entries("sarai_omni")
    who = Person(page, home_assistant, request.param)
    who.log_in()
    who.choose_language()
    return who


@pytest.mark.parametrize("person", ["en", "es"], indirect=True)
def test_setup_options_assist_and_action(person: Person, gemma: Path) -> None:
    lang, strings, page = person.lang, person.strings, person.page
    user_step = strings["config"]["step"]["user"]

    person.add_integration()
    person.assert_form(user_step, "setup form")
    page.shot(f"{lang}-1-setup-form")

    person.page.type(person.field("fast_model"), str(gemma.parent / "missing-model.gguf"))
    person.submit()
    texts = person.wait_error("file_not_found")
    assert_readable(texts, "setup form with an error")
    page.reveal(strings["config"]["error"]["file_not_found"])
    page.shot(f"{lang}-2-setup-error")

    person.page.type(person.field("fast_model"), str(gemma))
    person.submit()
    texts = person.wait_step("step-flow-create-entry")
    assert_readable(texts, "setup done")
    engine = strings["device"]["engine"]["name"]
    names = page.values(FLOW)
    assert engine in names, f"the engine device is not named {engine!r} in {lang}: {names}"
    assert_readable(names, "device names")
    page.shot(f"{lang}-3-setup-done")
    person.finish_flow()

    person.open_options()
    person.assert_form(strings["options"]["step"]["init"], "options form")
    page.shot(f"{lang}-4-options")
    person.submit()
    assert_readable(person.wait_step("step-flow-create-entry"), "options saved")
    person.finish_flow()

    agent = next(iter(person.ha.states("conversation.sarai_omni")))
    person.prefer_pipeline_with(agent)
    before, reply = person.ask_assist(QUESTION[lang])
    no_control = person.localize("ui.dialogs.voice_command.conversation_no_control")
    assert no_control not in before, "the default agent cannot control the home (Assist API off)"
    assert reply, "no reply"
    assert reply != person.localize("ui.dialogs.voice_command.error"), f"the turn failed: {person.ha.log_tail()}"
    assert_readable(page.texts(ASSIST), "Assist dialog")
    page.shot(f"{lang}-5-assist")

    person.open_action("sarai_omni.analyze_image")
    service = strings["services"]["analyze_image"]
    expected = [service["name"], service["description"]] + [f["name"] for f in service["fields"].values()]
    texts = page.wait(
        lambda: (t := page.texts("ha-service-control")) and all(e in t for e in expected) and t,
        f"the action form with {expected}",
    )
    for field in service["fields"].values():
        assert field["description"] in texts, f"action form: {field['description']!r} not shown"
    texts = person.perform_action()
    error = strings["exceptions"]["no_input"]["message"]
    assert error in " ".join(texts), f"no translated error: {texts}"
    page.reveal(error)
    assert_readable(texts, "action form")
    page.shot(f"{lang}-6-action")
    assert not page.find(FLOW, "ha-form")
