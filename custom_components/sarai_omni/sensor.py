"""Sensors: per model state, RSS, decode speed and TTFT; RAM budget used. Pushed on engine changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfInformation, UnitOfTime
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .const import DEFAULT_ROLES, DOMAIN, SIGNAL_ENGINE_UPDATED, TITLE
from .engine import MODEL_STATES, EngineStatus, ModelStatus
from .models import SaraiConfigEntry

PARALLEL_UPDATES = 0
SCAN_INTERVAL = timedelta(seconds=30)  # RSS drifts while a model works: re-read it now and then


@dataclass(frozen=True, kw_only=True)
class ModelSensorDescription(SensorEntityDescription):
    """A value read from one role's status."""

    value_fn: Callable[[ModelStatus], StateType]


MODEL_SENSORS = (
    ModelSensorDescription(
        key="state", device_class=SensorDeviceClass.ENUM, options=list(MODEL_STATES), value_fn=lambda s: s.state
    ),
    ModelSensorDescription(
        key="rss",
        native_unit_of_measurement=UnitOfInformation.MEGABYTES,
        device_class=SensorDeviceClass.DATA_SIZE,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda s: s.rss_mb,
    ),
    ModelSensorDescription(
        key="tokens_per_second",
        native_unit_of_measurement="tok/s",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,  # per-request figures: the state's attributes carry them too
        value_fn=lambda s: s.last.tokens_per_second,
    ),
    ModelSensorDescription(
        key="ttft",
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        device_class=SensorDeviceClass.DURATION,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda s: s.last.ttft_ms,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant, entry: SaraiConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    roles = entry.runtime_data.engine.roles
    entities: list[SensorEntity] = [ModelSensor(entry, role, d) for role in roles for d in MODEL_SENSORS]
    entities.append(BudgetSensor(entry))
    async_add_entities(entities)


class EngineSensor(SensorEntity):
    """A sensor of the engine device, refreshed whenever the engine reports a change."""

    _attr_has_entity_name = True

    def __init__(self, entry: SaraiConfigEntry, key: str) -> None:
        self.entry = entry
        self._attr_unique_id = f"{entry.entry_id}_{key}"
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, entry.entry_id)},
            translation_key="engine",
            manufacturer=TITLE,
            model="llama.cpp",
            entry_type=dr.DeviceEntryType.SERVICE,
        )

    @property
    def snapshot(self) -> EngineStatus:
        return self.entry.runtime_data.engine.snapshot()

    async def async_added_to_hass(self) -> None:
        signal = f"{SIGNAL_ENGINE_UPDATED}_{self.entry.entry_id}"
        self.async_on_remove(async_dispatcher_connect(self.hass, signal, self._engine_changed))

    @callback
    def _engine_changed(self) -> None:
        self.async_write_ha_state()


class ModelSensor(EngineSensor):
    """One figure of one model role."""

    entity_description: ModelSensorDescription

    def __init__(self, entry: SaraiConfigEntry, role: str, description: ModelSensorDescription) -> None:
        super().__init__(entry, f"{role}_{description.key}")
        self.role = role
        self.entity_description = description
        if role in DEFAULT_ROLES:
            self._attr_translation_key = f"{role}_{description.key}"
        else:  # "<role>: state", ... with the role's own name
            self._attr_translation_key = f"role_{description.key}"
            self._attr_translation_placeholders = {"role": role}

    @property
    def status(self) -> ModelStatus:
        return self.entry.runtime_data.engine.status(self.role)

    @property
    def native_value(self) -> StateType:
        return self.entity_description.value_fn(self.status)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        if self.entity_description.key != "state":
            return None
        status = self.status.as_attributes()
        keys = (
            "model",
            "load_ms",
            "estimate_mb",
            "pinned",
            "queue",
            "crashes",
            "error",
            "prompt_tokens",
            "evaluated_prompt_tokens",
            "cached_tokens",
            "images",
            "audio_seconds",
            "audio_tokens",
            "hearing",
            "cameras",
            "ttft_ms",
            "tokens_per_second",
            "route_reason",
            "repack",
            "flash_attn",
            "unusable_variants",
            "remote",
            "server",
            "servers",
            "standing_prompt",
            "backend",
            "capabilities",
            "voices",
            "speech_seconds",
            "speech_ms",
            "voice",
        )
        return {k: status[k] for k in keys if k in status}


class BudgetSensor(EngineSensor):
    """Share of the RAM budget that loaded models take."""

    _attr_translation_key = "budget_used"
    _attr_native_unit_of_measurement = PERCENTAGE
    _attr_state_class = SensorStateClass.MEASUREMENT
    _attr_suggested_display_precision = 1

    def __init__(self, entry: SaraiConfigEntry) -> None:
        super().__init__(entry, "budget_used")

    @property
    def native_value(self) -> StateType:
        return float(self.snapshot.used_pct)

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "budget_mb": snap.budget_mb,
            "used_mb": snap.used_mb,
            "measured_rss_mb": snap.measured_rss_mb,
            "peak_rss_mb": snap.peak_rss_mb,  # the highest sum the memory watchdog sampled
        }
