"""The house's structure as the code has it: no import cycle, the seam kept, op names in one place,
rooms of a readable size, the worker side on Python 3.11, llama-cpp-python's internals in one adapter,
the default roles named only where they are made."""

from __future__ import annotations

import ast
from pathlib import Path
import re
import subprocess

import pytest

from tests.torch_env import MISSING, torch_python

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "custom_components" / "sarai_omni"
PACKAGE = "custom_components.sarai_omni"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """This package's modules that `path` imports when it is imported (not inside functions)."""
    name, tree = module_name(path), ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            for alias in node.names:  # `from . import x` names a module; `from .m import y` names m
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def test_no_import_cycle() -> None:
    graph = {name: top_level_imports(path) for name, path in MODULES.items()}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            cycles.append([*stack[stack.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert cycles == []
    assert f"{PACKAGE}.services" in graph[f"{PACKAGE}.integration"]  # imported at the top, like core


def test_the_ha_layer_stays_on_its_side_of_the_seam() -> None:
    reach = re.compile(r"engine\.pool\b|\.client\.|slot\.backend")
    offenders = [
        f"{p.relative_to(PKG)}:{n}"
        for p in PKG.glob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if reach.search(line)
    ]
    assert offenders == []


def test_op_names_live_only_in_protocol() -> None:
    """An op or event name spelled as a literal where it is sent or compared (not as a result key)."""
    names = "load|generate|warm|logits|bench|stats|unload|shutdown|cancel|crashed|speak|media_ready"
    used = re.compile(rf'(?:\(\s*|==\s*|"(?:op|event)":\s*)"({names})"')
    offenders = [
        f"{p.relative_to(PKG)}:{n}: {line.strip()}"
        for p in PKG.rglob("*.py")
        if p.name != "protocol.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if used.search(line)
    ]
    assert offenders == []


def test_the_engine_and_the_timeline_import_nothing_of_home_assistant() -> None:
    for path in [*(PKG / "engine").rglob("*.py"), *(PKG / "timeline").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.startswith("homeassistant")], path


# Submodules that are API names themselves: the one table of defaults, and the patched llama-cpp-python
# sources (standard library only: scripts/setup runs it as a script, the installer imports it).
API_MODULES = {f"{PACKAGE}.engine.defaults", f"{PACKAGE}.engine.llama_sources"}


def test_the_ha_layer_imports_only_the_engine_package() -> None:
    """The engine's API is its package's names (engine/__init__.py): no HA module reaches a submodule."""
    offenders = [
        f"{p.name}: {m}"
        for p in PKG.glob("*.py")
        for m in top_level_imports(p) | _function_imports(p)
        if m.startswith(f"{PACKAGE}.engine.") and m not in API_MODULES
    ]
    assert offenders == []


def _function_imports(path: Path) -> set[str]:
    """`from .engine.x import y` anywhere in `path`, as module names."""
    tree = ast.parse(path.read_text())
    return {
        f"{PACKAGE}.{n.module}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module
    }


def test_no_module_is_over_the_size_without_a_reason() -> None:
    """Over MAX_LINES lines, a module's docstring says why ("Over 400 lines because ...")."""
    offenders = []
    for path in PKG.rglob("*.py"):
        lines = path.read_text().splitlines()
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if len(lines) > MAX_LINES and not re.search(rf"^Over {MAX_LINES} lines because \S", doc, re.M):
            offenders.append(f"{path.relative_to(PKG)}: {len(lines)} lines")
    assert offenders == []


WORKER_SIDE = sorted(module_name(p) for p in (PKG / "engine" / "worker").rglob("*.py") if p.name != "__main__.py")
HOST_SIDE = (f"{PACKAGE}.engine.core", f"{PACKAGE}.engine.pool", f"{PACKAGE}.engine.backends", "aiohttp", "asyncio")


def test_the_worker_side_imports_under_python_3_11_without_the_host_side() -> None:
    """The torch worker runs the torch venv's Python 3.11: every worker module (and what it imports of
    the engine) must parse and import there, and bring none of the host side (pool, clients, asyncio)."""
    python = torch_python()
    if python is None:
        pytest.skip(MISSING)
    script = (
        "import importlib, sys\n"
        f"assert sys.version_info[:2] == (3, 11), sys.version\n"
        f"for name in {WORKER_SIDE!r}: importlib.import_module(name)\n"
        f"host = sorted(m for m in sys.modules if m.startswith({HOST_SIDE!r}))\n"
        "print(host)\n"
        "assert not host, host\n"
    )
    run = subprocess.run([str(python), "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert len(WORKER_SIDE) >= 12  # llamacpp and transformers workers, serve


LLAMA_PRIVATE = {"_ctx", "_batch", "_model", "_init_sampler"}
LLAMA_PATCHED = {"llama_model_default_params"}


def test_llama_cpp_internals_only_in_the_adapter() -> None:
    """Another object's `_ctx`/`_batch`/`_model`/`_init_sampler` (Llama's private members), or the
    patched model-defaults function, appear only in worker/llamacpp/adapter.py, which checks the version."""
    adapter = PKG / "engine" / "worker" / "llamacpp" / "adapter.py"
    offenders, seen_in_adapter = [], 0
    for path in [*PKG.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            private = isinstance(node, ast.Attribute) and node.attr in LLAMA_PRIVATE
            private = private and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))  # type: ignore[attr-defined]
            patched = isinstance(node, (ast.Attribute, ast.Name)) and (
                getattr(node, "attr", None) in LLAMA_PATCHED or getattr(node, "id", None) in LLAMA_PATCHED
            )
            if path == adapter:
                seen_in_adapter += private or patched
            elif private or patched:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")  # type: ignore[attr-defined]
    assert offenders == []
    assert seen_in_adapter >= 6  # the rule sees what the adapter does


DEFAULT_ROLE_NAMES = {"FAST", "QUALITY", "FAST_ROLE", "QUALITY_ROLE"}
WHERE_DEFAULTS_ARE_MADE = {"const.py", "engine/defaults.py", "config_flow.py", "flow_schemas.py", "settings.py"}


def test_the_default_roles_are_named_only_where_they_are_made() -> None:
    """Any role works everywhere: "fast" and "quality" appear only in the table of defaults, the setup
    flow (its form has their fields) and settings (the roles it makes and the migration to subentries)."""
    offenders = []
    for path in PKG.rglob("*.py"):
        where = str(path.relative_to(PKG))
        for node in ast.walk(ast.parse(path.read_text())):
            named = isinstance(node, ast.Name) and node.id in DEFAULT_ROLE_NAMES
            named |= isinstance(node, ast.Attribute) and node.attr in DEFAULT_ROLE_NAMES
            named |= isinstance(node, ast.Constant) and node.value in ("fast", "quality")
            if named and where not in WHERE_DEFAULTS_ARE_MADE:
                offenders.append(f"{where}:{node.lineno}")  # type: ignore[attr-defined]
    assert offenders == []
