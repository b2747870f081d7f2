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


def strings(tree: Any) -> list[str]:
    return [s for v in tree.values() for s in strings(v)] if isinstance(tree, dict) else [tree]


def test_translations_parse_as_the_frontend_reads_them() -> None:
    """The frontend formats these as ICU messages: `<x>` is a tag (an unclosed one breaks the text)
    and braces hold placeholders only."""
    for lang, tree in (("en", EN), ("es", ES)):
        for text in strings(tree):
            assert "<" not in text, (lang, text)
            assert re.fullmatch(r"(?:[^{}]|\{\w+\})*", text), (lang, text)


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
    known = set(EN["exceptions"]) | set(EN["issues"]) | set(EN["device"])  # device names too
    assert used <= known, used - known


def _found(pattern: str, *files: str) -> set[str]:
    return {m for f in files for m in re.findall(pattern, (PKG / f).read_text())}


def test_config_flow_errors_aborts_and_progress_are_translated() -> None:
    flow_files = ("config_flow.py", "flow_servers.py", "validation.py", "download.py", "installer.py")
    errors = (
        _found(r'(?:ModelFileError|DownloadError)\(\s*"(\w+)"', *flow_files)
        | _found(r'errors\[[\w.]+\] = "(\w+)"', *flow_files)
        | _found(r'\{[\w."]+: "(\w+)"\}', "config_flow.py", "validation.py", "flow_servers.py")
        | _found(r'return "(\w+)"', "validation.py")  # budget_error()
    )
    assert errors == set(EN["config"]["error"])  # every error shown is translated, none is stale
    # already_configured, single_instance_allowed (single_config_entry) and reconfigure_successful
    # (async_update_and_abort) are reasons HA gives; a custom integration gets none of core's common
    # strings, so each is translated here (or the user reads the bare key)
    aborts = _found(r'reason="(\w+)"', "config_flow.py", "installer.py") | {
        "already_configured",
        "single_instance_allowed",
        "reconfigure_successful",
    }
    for kind in ("conversation", "ai_task_data"):  # the subentry flows' own aborts
        assert {"entry_not_loaded", "reconfigure_successful"} <= set(EN["config_subentries"][kind]["abort"])
    # the model-role flow: the file, budget and server errors the setup form shows too, and its own
    role_files = ("validation.py", "flow_servers.py", "subentry_flows.py")
    role_errors = (
        _found(r'ModelFileError\(\s*"(\w+)"', "validation.py")
        | _found(r'errors\[[\w.]+\] = "(\w+)"', *role_files)
        | _found(r'"base": "(\w+)"', *role_files)
        | _found(r'return "(\w+)"', "validation.py", "subentry_flows.py")
    )
    assert role_errors == set(EN["config_subentries"]["model"]["error"])
    assert aborts - {"entry_not_loaded"} == set(EN["config"]["abort"])
    assert _found(r'progress_action="(\w+)"', "config_flow.py", "installer.py") == set(EN["config"]["progress"])
    fix = EN["issues"]["llama_cpp_missing"]["fix_flow"]
    assert _found(r'reason="(\w+)"', "installer.py") == set(fix["abort"])
    assert _found(r'progress_action="(\w+)"', "installer.py") == set(fix["progress"])


def test_every_form_field_has_a_label_and_a_description() -> None:
    from custom_components.sarai_omni import flow_schemas as forms_of

    forms = {
        ("config", "user"): forms_of.user_schema(),
        ("config", "reconfigure"): forms_of.user_schema(),
        ("config", "hub"): forms_of.hub_schema(),
        ("config", "remote"): forms_of.remote_schema(),
        ("config", "remote_model"): forms_of.remote_model_schema(["m"]),
        ("options", "init"): forms_of.options_schema(torch=True),
    }
    steps = {key: EN[key[0]]["step"][key[1]] for key in forms}
    role = EN["config_subentries"]["model"]["step"]
    for step in ("role", "remote", "remote_model"):  # the model-role subentry flow's own steps
        schema = forms_of.role_schema(creating=True) if step == "role" else forms[("config", step)]
        forms[("config_subentries", step)], steps[("config_subentries", step)] = schema, role[step]
    for key, schema in forms.items():
        fields = {str(field) for field in schema.schema}
        assert set(steps[key]["data"]) == fields, key
        assert set(steps[key]["data_description"]) == fields, key


def steps(tree: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every flow step in the translations (config, options, subentries, repair fix flows)."""
    if not isinstance(tree, dict):
        return []
    found = [(name, body) for name, body in tree.get("step", {}).items()]
    return found + [s for key, sub in tree.items() if key != "step" for s in steps(sub)]


def test_every_translated_field_is_described() -> None:
    all_steps = steps(EN)
    assert len(all_steps) >= 9  # user, reconfigure, hub, install, options, 2 subentries, 2 fix flows
    for name, body in all_steps:
        assert set(body.get("data_description", {})) == set(body.get("data", {})), name


def test_selectors_translate_every_option() -> None:
    from custom_components.sarai_omni import catalog, const
    from custom_components.sarai_omni.engine import defaults
    from custom_components.sarai_omni.timeline import LABELS

    expected = {
        "download": {const.DOWNLOAD_NONE, const.DOWNLOAD_HUB, *catalog.SEEDS},
        "target": {"fast_model", "fast_mmproj", "quality_model", "quality_mmproj"},
        "kv_type": set(const.KV_TYPES),
        "model": set(const.MODEL_PREFERENCES),
        "remote_roles": {"fast", "quality"},
        "torch_dtype": set(defaults.TORCH_DTYPES),
        "torch_device": set(defaults.TORCH_DEVICES),
        "torch_quantization": set(defaults.TORCH_QUANTIZATIONS),
        "labels": set(LABELS),
    }
    assert {name: set(sel["options"]) for name, sel in EN["selector"].items()} == expected


def test_repair_issues_are_fixable_or_described() -> None:
    """hassfest: an issue has a fix flow or a description, never both; fixable ones have a flow."""
    fixable = {"llama_cpp_missing", "budget_too_small"}
    for issue_id, texts in EN["issues"].items():
        assert texts["title"], issue_id
        assert ("fix_flow" in texts) == (issue_id in fixable), issue_id
        assert ("description" in texts) != ("fix_flow" in texts), issue_id
    assert '"budget"' in (PKG / "repairs.py").read_text()  # the fix flow's step id is the translated one


def test_services_yaml_matches_translations() -> None:
    services = yaml.safe_load((PKG / "services.yaml").read_text())
    assert (
        set(services)
        == set(EN["services"])
        == {"analyze_image", "analyze_video", "analyze_audio", "load_model", "unload_model", "get_events"}
    )
    for name, spec in services.items():
        assert set(spec["fields"]) == set(EN["services"][name]["fields"]), name
    icons = json.loads((PKG / "icons.json").read_text())
    assert set(icons["services"]) == set(services)
    assert set(icons["entity"]["sensor"]) == set(EN["entity"]["sensor"])  # every sensor has its icon


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
