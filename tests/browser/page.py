"""Debian's Chromium driven by Selenium, with queries that pierce Home Assistant's shadow DOM.

HA's frontend is Lit web components: almost everything sits in shadow roots, which CSS selectors
and `innerText` do not cross. `find(*steps)` searches each step deeply inside the previous one's
matches; `texts()` lists the visible text nodes in document order, as a person reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import shutil
import tempfile
import time
from typing import Any, Literal, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
    "--lang=en-US",
]
WAIT_GUARD_S = 90.0  # a guard against a hang on a busy machine, not a measurement
T = TypeVar("T")

DEEP_JS = r"""
const deepAll = (selector, root) => {
  const found = [];
  const walk = (node) => {
    found.push(...node.querySelectorAll(selector));
    for (const el of node.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot);
  };
  walk(root.shadowRoot || root);
  return found;
};
// A <slot> is laid out as its contents (display: contents), so it never reports itself visible: a
// text inside one is shown where the slot is assigned (HA 2026.11's inputs put their labels so).
const shownIn = (el) => {
  while (el && el.tagName === 'SLOT') {
    if (el.assignedSlot) el = el.assignedSlot.parentElement || el.assignedSlot.getRootNode().host;
    else if (el.hasAttribute('slot')) return null;  // slotted nowhere: not rendered
    else el = el.parentElement || el.getRootNode().host;
  }
  return el;
};
const visibleTexts = (root) => {
  const out = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      const text = node.textContent.trim(), parent = shownIn(node.parentElement || node.parentNode.host);
      if (text && parent && parent.checkVisibility({visibilityProperty: true})) out.push(text);
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE) return;
    if (['STYLE', 'SCRIPT', 'TEMPLATE'].includes(node.tagName)) return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(root);
  return out;
};
"""


class Page:
    """One browser with a fresh profile; `close()` ends it and removes the profile."""

    def __init__(self, screenshots: Path) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="sarai_chromium_"))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in [*FLAGS, f"--user-data-dir={self.profile}"]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.screenshots = screenshots

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def js(self, code: str, *args: Any) -> Any:
        return self.driver.execute_script(DEEP_JS + code, *args)

    def call(self, code: str, *args: Any) -> Any:
        """Run async JS in the page (`done(value)` answers); for the frontend's own `hass` object."""
        return self.driver.execute_async_script(
            DEEP_JS + "const done = arguments[arguments.length - 1];"
            " const hass = document.querySelector('home-assistant').hass;" + code,
            *args,
        )

    def find(self, *steps: str) -> list[WebElement]:
        found: list[WebElement] = self.js(
            "let roots = [document];"
            " for (const step of arguments[0]) roots = roots.flatMap((r) => deepAll(step, r));"
            " return roots;",
            list(steps),
        )
        return found

    def texts(self, *steps: str) -> list[str]:
        """Visible texts inside the first match of `steps` (the whole page without steps)."""
        roots = self.find(*steps) if steps else [self.js("return document.body;")]
        if not roots:
            return []
        texts: list[str] = self.js("return visibleTexts(arguments[0].shadowRoot || arguments[0]);", roots[0])
        return texts

    def values(self, *steps: str) -> list[str]:
        """The values of the visible inputs inside the first match of `steps` (texts a person reads too)."""
        roots = self.find(*steps)
        values: list[str] = (
            self.js(
                "return deepAll('input', arguments[0]).filter((e) => e.checkVisibility()).map((e) => e.value);",
                roots[0],
            )
            if roots
            else []
        )
        return values

    def wait(self, probe: Callable[[], T | Literal[False] | None], what: str) -> T:
        """Poll until `probe` gives something truthy (elements re-render under us: retried)."""
        guard = time.monotonic() + WAIT_GUARD_S
        while time.monotonic() < guard:
            try:
                if result := probe():
                    return result
            except StaleElementReferenceException:
                pass
            time.sleep(0.2)
        self.shot("timeout")
        raise AssertionError(f"waited {WAIT_GUARD_S:.0f} s for {what}; visible: {self.texts()[:80]}")

    def wait_for(self, *steps: str) -> list[WebElement]:
        return self.wait(lambda: [e for e in self.find(*steps) if e.is_displayed()], " > ".join(steps))

    def click(self, element: WebElement) -> None:
        """A real click once the element is in view and nothing covers it. A sticky bar that
        WebDriver counts as covering (HA's action bar) gets the click on the button in the element's
        shadow root, then a DOM click: the same click event either way."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        inner = self.js("return (arguments[0].shadowRoot && deepAll('button', arguments[0])[0]) || null;", element)
        targets = [element, *([inner] if inner else [])]
        guard = time.monotonic() + WAIT_GUARD_S
        while time.monotonic() < guard:
            for target in targets:
                try:
                    target.click()
                except ElementClickInterceptedException, ElementNotInteractableException:
                    continue
                except StaleElementReferenceException:
                    return  # it re-rendered under the click: the click landed
                return
            if time.monotonic() > guard - WAIT_GUARD_S + 5:
                self.driver.execute_script("arguments[0].click();", targets[-1])
                return
            time.sleep(0.2)

    def type(self, element: WebElement, text: str, enter: bool = False) -> None:
        """Replace a field's text as a person would (clear, then type); Lit fields need the input event."""
        self.driver.execute_script(
            "arguments[0].value = ''; arguments[0].dispatchEvent(new Event('input', {bubbles: true, composed: true}));",
            element,
        )
        element.send_keys(text, *([Keys.ENTER] if enter else []))

    def press(self, keys: str) -> None:
        ActionChains(self.driver).send_keys(keys).perform()

    def reveal(self, text: str) -> None:
        """Scroll the innermost element showing `text` into view (for the screenshot a person sees)."""
        self.js(
            "const hits = deepAll('*', document).filter((e) => [...e.childNodes].some("
            "  (n) => n.nodeType === Node.TEXT_NODE && n.textContent.includes(arguments[0])));"
            " if (hits.length) hits[hits.length - 1].scrollIntoView({block: 'center'});",
            text,
        )

    def shot(self, name: str) -> Path:
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path
