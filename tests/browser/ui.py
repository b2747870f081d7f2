"""What a person does in Home Assistant's UI, and what they must be able to read there.

The checks compare what the browser shows with this integration's translation files: a label or a
description the form shows must be the one `translations/<lang>.json` has for it, so a missing key
(shown raw, or in English inside the Spanish UI) fails; and no visible text may carry a raw key,
a `{placeholder}` or a Markdown backtick.
"""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import Any

from tests.browser.home_assistant import PASSWORD, USER, HomeAssistant
from tests.browser.page import Page

TRANSLATIONS = Path(__file__).resolve().parents[2] / "custom_components" / "sarai_omni" / "translations"
FLOW = "dialog-data-entry-flow"
ASSIST = "ha-voice-command-dialog"


def translations(lang: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TRANSLATIONS / f"{lang}.json").read_text())
    return data


def snake_keys(node: Any) -> set[str]:
    """Every snake_case key of the translation tree: field, error and step names a person must never see."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if "_" in key:
                found.add(key)
            found |= snake_keys(value)
    return found


def snake_words(node: Any) -> set[str]:
    """snake_case words the texts themselves use (a type such as q8_0 is a word, not a key)."""
    if isinstance(node, dict):
        return set().union(*(snake_words(v) for v in node.values()))
    return set(re.findall(r"[a-z0-9]+(?:_[a-z0-9]+)+", node)) if isinstance(node, str) else set()


RAW_KEYS = snake_keys(translations("en")) - snake_words(translations("en"))


def assert_readable(texts: list[str], where: str) -> None:
    """No raw key, no unfilled `{placeholder}`, no literal backtick in what the person reads."""
    for text in texts:
        assert not re.search(r"\{[a-z_]+\}", text), f"{where}: unfilled placeholder in {text!r}"
        assert "`" not in text, f"{where}: a Markdown backtick shown as text in {text!r}"
        assert "component.sarai_omni" not in text, f"{where}: a translation path shown: {text!r}"
        ids = re.sub(r"\b[a-z0-9_]+\.[a-z0-9_]+\b", "", text)  # action and entity ids HA shows on purpose
        words = set(re.findall(r"[a-z0-9]+(?:_[a-z0-9]+)+", ids))
        raw = words & RAW_KEYS
        assert not raw, f"{where}: raw key {sorted(raw)} shown in {text!r}"


class Person:
    """One person at one browser, reading Home Assistant in `lang`."""

    def __init__(self, page: Page, ha: HomeAssistant, lang: str) -> None:
        self.page, self.ha, self.lang = page, ha, lang
        self.strings = translations(lang)

    # --- getting in ------------------------------------------------------------------------------
    def log_in(self) -> None:
        """Through the real login page (username, password, Enter)."""
        page = self.page
        page.driver.get(self.ha.base + "/")
        page.type(page.wait_for("input[name=username]")[0], USER)
        page.type(page.wait_for("input[name=password]")[0], PASSWORD, enter=True)
        page.wait_for("ha-sidebar")

    def choose_language(self) -> None:
        """The profile's language picker fires `hass-language-select`; the server's language (set at
        onboarding) follows, so names HA stores (devices) come in it too."""
        english = self.localize("panel.config")  # the UI starts in English (the user's onboarding language)
        self.page.call(
            "hass.callWS({type: 'config/core/update', language: arguments[0]}).then(() => done(true));", self.lang
        )
        self.page.js(
            "document.querySelector('home-assistant').dispatchEvent(new CustomEvent('hass-language-select',"
            " {detail: arguments[0], bubbles: true, composed: true}));",
            self.lang,
        )
        self.page.wait(
            lambda: (
                self.page.js("return document.querySelector('home-assistant').hass?.language;") == self.lang
                and (self.lang == "en" or self.localize("panel.config") != english)
            ),
            f"the UI in {self.lang}",
        )

    def localize(self, key: str) -> str:
        """A string of HA's frontend in the page's current language (HA's own texts; a panel's strings
        arrive once the panel is shown)."""
        text: str = self.page.wait(
            lambda: self.page.js(
                "const app = document.querySelector('home-assistant');"
                " return app && app.hass ? app.hass.localize(arguments[0]) : null;",
                key,
            ),
            f"the frontend's string {key}",
        )
        return text

    # --- the config flow dialog ---------------------------------------------------------------------
    def add_integration(self, query: str = "Sarai") -> None:
        """Settings > Integrations > Add integration, search, pick Sarai Omni."""
        page = self.page
        page.driver.get(self.ha.base + "/config/integrations/dashboard")
        label = self.localize("ui.panel.config.integrations.add_integration")
        button = page.wait(
            lambda: [b for b in page.find("ha-config-integrations-dashboard", "ha-button") if b.text.strip() == label],
            f"the {label!r} button",
        )
        page.click(button[0])
        page.type(page.wait_for("dialog-add-integration", "input")[0], query)
        item = page.wait(
            lambda: [i for i in page.find("dialog-add-integration", "ha-integration-list-item") if "Sarai" in i.text],
            "Sarai Omni in the integration list",
        )
        page.click(item[0])
        page.wait_for(FLOW, "ha-form")

    def fields(self) -> dict[str, dict[str, str]]:
        """The form's fields as shown: name -> label and helper text."""
        fields: dict[str, dict[str, str]] = self.page.js(
            "const dialog = deepAll(arguments[0], document)[0];"
            # a helper is a string, or a Lit template around the Markdown text (ha-markdown)
            " const markdown = (h) => typeof h === 'string' ? h : (h && h.values ? h.values.join('') : '');"
            " return Object.fromEntries(deepAll('ha-selector', dialog).filter((e) => e.schema)"
            "   .map((e) => [e.schema.name, {label: e.label || '', helper: markdown(e.helper)}]));",
            FLOW,
        )
        return fields

    def field(self, name: str) -> Any:
        return self.page.wait(
            lambda: self.page.js(
                "const s = deepAll('ha-selector', document).find((e) => e.schema && e.schema.name === arguments[0]);"
                " return s ? deepAll('input', s)[0] : null;",
                name,
            ),
            f"field {name}",
        )

    def assert_form(self, step: dict[str, Any], where: str) -> None:
        """Title, labels and help texts are the ones of `step` (a translations' step), all readable."""
        texts = self.page.texts(FLOW)
        assert step["title"] in texts, f"{where}: title {step['title']!r} not shown in {texts[:5]}"
        shown = self.fields()
        assert shown, f"{where}: no fields"
        for name, field in shown.items():
            assert name in step.get("data", {}), f"{where}: {self.lang}.json has no label for field {name!r}"
            assert field["label"] == step["data"][name], f"{where}: field {name!r} labelled {field['label']!r}"
            helper = step.get("data_description", {}).get(name, "")
            assert field["helper"] == helper, f"{where}: field {name!r} described as {field['helper']!r}"
            assert any(t.startswith(field["label"]) for t in texts), f"{where}: label {field['label']!r} not visible"
        assert_readable(texts, where)

    def dialog_button(self) -> Any:
        """The dialog's main button (Submit, Finish): its last visible one with a label. Inputs hold
        icon buttons of their own (clear, show password) since HA 2026.11."""
        return self.page.wait(
            lambda: [b for b in self.page.find(FLOW, "ha-button") if b.is_displayed() and b.text.strip()][-1:],
            "the dialog's button",
        )[0]

    def submit(self) -> None:
        self.page.click(self.dialog_button())

    def wait_step(self, element: str) -> list[str]:
        """Until the dialog shows `element` (step-flow-create-entry, step-flow-form, ...); its texts."""
        self.page.wait_for(FLOW, element)
        return self.page.texts(FLOW)

    def wait_error(self, key: str, section: str = "config") -> list[str]:
        message = self.strings[section]["error"][key]
        return self.page.wait(lambda: (t := self.page.texts(FLOW)) and message in t and t, f"error {message!r}")

    def finish_flow(self) -> None:
        self.page.click(self.dialog_button())
        self.page.wait(
            lambda: not [e for e in self.page.find(FLOW, "ha-form, ha-button") if e.is_displayed()],
            "the dialog to close",
        )

    # --- options, Assist, developer tools ---------------------------------------------------------------
    def open_options(self) -> None:
        """The integration's page, its entry's Configure (cog) button."""
        page = self.page
        page.driver.get(self.ha.base + "/config/integrations/integration/sarai_omni")
        label = self.localize("ui.panel.config.integrations.config_entry.configure")
        button = page.wait(
            lambda: [b for b in page.find("ha-icon-button") if b.get_property("label") == label and b.is_displayed()],
            f"the {label!r} button",
        )
        page.click(button[0])
        page.wait_for(FLOW, "ha-form")

    def prefer_pipeline_with(self, agent: str) -> None:
        """An Assist pipeline whose conversation agent is `agent`, made the preferred one (Settings >
        Voice assistants does the same through these two calls)."""
        pipeline = {
            "type": "assist_pipeline/pipeline/create",
            "name": f"Sarai Omni {self.lang}",
            "language": self.lang,
            "conversation_engine": agent,
            "conversation_language": self.lang,
            **dict.fromkeys(("stt_engine", "stt_language", "tts_engine", "tts_language", "tts_voice"), None),
            **dict.fromkeys(("wake_word_entity", "wake_word_id"), None),
        }
        self.page.call(
            "hass.callWS(arguments[0]).then((p) => hass.callWS({type: 'assist_pipeline/pipeline/set_preferred',"
            " pipeline_id: p.id})).then(() => done(true));",
            pipeline,
        )

    def ask_assist(self, text: str) -> tuple[list[str], str]:
        """Overview, the Assist shortcut ("a"), type and send; the dialog's texts before and the reply."""
        page = self.page
        page.driver.get(self.ha.base + "/home/overview")
        page.wait_for("ha-sidebar")

        def opened() -> list[Any]:
            page.press("a")  # HA's keyboard shortcut for Assist
            return [e for e in page.find(ASSIST, "input") if e.is_displayed()]

        page.wait(opened, "the Assist dialog")
        before = page.texts(ASSIST)
        page.type(page.wait_for(ASSIST, "input")[0], text, enter=True)

        def replies() -> list[str]:
            texts = [r.text.strip() for r in page.find(ASSIST, ".message.hass")]
            return [t for t in texts if t not in ("", "…")][1:]  # after the greeting

        # A streamed reply ends with "…" until the turn's end (intent-end) puts the whole speech there.
        page.wait(lambda: (r := replies()) and not r[-1].endswith("…"), "the end of the agent's reply")
        return before, replies()[-1]

    def open_action(self, action: str) -> None:
        """Developer tools > Actions, the action picked from the picker by typing its id."""
        page = self.page
        page.driver.get(self.ha.base + "/developer-tools/action")
        page.click(page.wait_for("ha-service-picker", "ha-picker-field")[0])
        page.type(page.wait_for("ha-service-picker", "input")[0], action)
        item = page.wait(
            lambda: [i for i in page.find("ha-combo-box-item") if i.is_displayed() and action in i.text],
            f"{action} in the picker",
        )
        page.click(item[0])
        page.wait_for("ha-service-control", "ha-settings-row")

    def perform_action(self) -> list[str]:
        label = self.localize("ui.panel.config.tools.tabs.actions.call_service")
        buttons = [b for b in self.page.wait_for("tools-action", "ha-button") if b.text.strip() == label]
        assert buttons, f"no {label!r} button"
        self.page.click(buttons[0])
        return self.page.texts("tools-action")
