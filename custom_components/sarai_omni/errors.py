"""The engine's typed errors as Home Assistant's translated ones (one mapping for every caller)."""

from __future__ import annotations

from collections.abc import Awaitable

from homeassistant.exceptions import HomeAssistantError

from .const import DOMAIN
from .engine import EngineError


def ha_error(err: EngineError) -> HomeAssistantError:
    """The translated error a person reads (each engine error carries its translation key)."""
    return HomeAssistantError(
        translation_domain=DOMAIN, translation_key=err.key, translation_placeholders=err.placeholders()
    )


async def engine_call[T](awaitable: Awaitable[T]) -> T:
    """Await an engine operation; its typed errors become translated HA errors."""
    try:
        return await awaitable
    except EngineError as err:
        raise ha_error(err) from err
