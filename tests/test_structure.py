"""The house's structure as the code has it: no import cycle, the seam kept, op names in one place."""

from __future__ import annotations

import ast
from pathlib import Path
import re

PKG = Path(__file__).resolve().parents[1] / "custom_components" / "sarai_omni"
PACKAGE = "custom_components.sarai_omni"


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
    names = "load|generate|warm|logits|bench|stats|unload|shutdown|cancel|crashed"
    used = re.compile(rf'(?:\(\s*|==\s*|"(?:op|event)":\s*)"({names})"')
    offenders = [
        f"{p.relative_to(PKG)}:{n}: {line.strip()}"
        for p in PKG.rglob("*.py")
        if p.name != "protocol.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if used.search(line)
    ]
    assert offenders == []


def test_the_engine_imports_nothing_of_home_assistant() -> None:
    for path in (PKG / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.startswith("homeassistant")], path
