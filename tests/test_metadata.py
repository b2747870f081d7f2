"""What hassfest and the HACS action would check, checked here (they cannot run offline)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
import re
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "custom_components" / "sarai_omni"
EN = json.loads((PKG / "translations" / "en.json").read_text())
ES = json.loads((PKG / "translations" / "es.json").read_text())


def keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return {k for name, sub in tree.items() for k in keys(sub, f"{prefix}.{name}" if prefix else name)}


def test_manifest_is_ordered_and_complete() -> None:
    manifest = json.loads((PKG / "manifest.json").read_text())
    names = list(manifest)
    assert names[:2] == ["domain", "name"]
    assert names[2:] == sorted(names[2:])  # hassfest: domain, name, then alphabetical
    assert manifest["domain"] == "sarai_omni"
    for key in (
        "codeowners",
        "config_flow",
        "dependencies",
        "documentation",
        "integration_type",
        "iot_class",
        "issue_tracker",
        "requirements",
        "version",
    ):
        assert key in manifest, key
    assert "llama-cpp-python" not in " ".join(manifest["requirements"])  # HA must load without the wheel
    assert not any(r.startswith(("torch", "transformers")) for r in manifest["requirements"])


def test_spanish_has_exactly_the_english_keys() -> None:
    assert keys(ES) == keys(EN)


def test_every_translation_key_used_in_code_exists() -> None:
    used: set[str] = set()
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r'translation_key="([a-z_]+)"', text))
        used |= set(re.findall(r'invalid\("([a-z_]+)"', text))
        for cls in ast.walk(ast.parse(text)):  # engine errors carry their key as a class attribute
            for node in cls.body if isinstance(cls, ast.ClassDef) else []:
                if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["key"]:
                    used.add(ast.literal_eval(node.value))
    used -= {"ISSUE_BACKEND_MISSING", "model"}  # the issue id constant and the select selector's key
    assert used <= set(EN["exceptions"]) | set(EN["issues"]), used - set(EN["exceptions"])


def test_config_flow_errors_are_translated() -> None:
    text = (PKG / "config_flow.py").read_text() + (PKG / "validation.py").read_text()
    errors = set(
        re.findall(
            r'"(file_not_found|not_gguf|unsupported_arch|path_not_allowed|does_not_fit_budget|'
            r'budget_exceeds_ram|llama_cpp_missing)"',
            text,
        )
    )
    assert errors == set(EN["config"]["error"])


def test_services_yaml_matches_translations() -> None:
    services = yaml.safe_load((PKG / "services.yaml").read_text())
    assert set(services) == set(EN["services"]) == {"analyze_image", "analyze_video", "load_model", "unload_model"}
    for name, spec in services.items():
        assert set(spec["fields"]) == set(EN["services"][name]["fields"]), name
    icons = json.loads((PKG / "icons.json").read_text())
    assert set(icons["services"]) == set(services)


def test_hacs_json_uses_only_allowed_keys() -> None:
    allowed = {
        "name",
        "content_in_root",
        "zip_release",
        "filename",
        "hide_default_branch",
        "country",
        "homeassistant",
        "render_readme",
        "persistent_directory",
        "hacs",
    }
    hacs = json.loads((ROOT / "hacs.json").read_text())
    assert set(hacs) <= allowed
    assert hacs["name"]


def test_quality_scale_rules_have_a_status() -> None:
    rules = yaml.safe_load((PKG / "quality_scale.yaml").read_text())["rules"]
    for rule, status in rules.items():
        value = status["status"] if isinstance(status, dict) else status
        assert value in {"done", "todo", "exempt"}, rule
        if value == "exempt":
            assert status.get("comment"), rule
