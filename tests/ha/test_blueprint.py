"""The camera-motion blueprint is valid for HA and calls our services."""

from __future__ import annotations

from pathlib import Path

from homeassistant.components.automation.config import AUTOMATION_BLUEPRINT_SCHEMA
from homeassistant.components.blueprint import models
from homeassistant.util.yaml import load_yaml_dict

BLUEPRINT = Path(__file__).resolve().parents[2] / "blueprints/automation/sarai_omni/camera_motion_analysis.yaml"


def test_blueprint_validates_and_uses_our_services() -> None:
    blueprint = models.Blueprint(
        load_yaml_dict(str(BLUEPRINT)), expected_domain="automation", schema=AUTOMATION_BLUEPRINT_SCHEMA
    )
    assert set(blueprint.inputs) >= {"motion_sensor", "camera", "notify_action", "cooldown"}
    inputs = models.BlueprintInputs(
        blueprint,
        {
            "use_blueprint": {
                "path": "x",
                "input": {
                    "motion_sensor": "binary_sensor.garden_motion",
                    "camera": "camera.garden",
                    "notify_action": "notify.phone",
                },
            }
        },
    )
    config = inputs.async_substitute()
    branches = config["actions"][0]
    assert branches["then"][0]["action"] == "sarai_omni.analyze_video"
    assert branches["then"][0]["data"]["camera_entity_id"] == "camera.garden"
    assert branches["else"][0]["action"] == "sarai_omni.analyze_image"
    assert branches["then"][0]["data"]["remember"] is True  # into the timeline, unless turned off
    assert branches["else"][0]["data"]["remember"] is True
    assert config["actions"][2]["delay"]["seconds"] == 120
