"""The plugin boundary: ``llava/`` imports no plugin package and names no method, and no plugin imports
another. Plugins are found from ``setup.py``'s entry points (and by their folder names), so a new one is
checked without editing this file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".json", ".yaml", ".yml", ".txt", ".sh", ".cfg", ".toml"}


def entry_point_packages(setup_source: str) -> set[str]:
    """Top-level packages named by the values of ``entry_points={...}`` in a ``setup.py`` source."""
    packages = set()
    for node in ast.walk(ast.parse(setup_source)):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            for value in ast.literal_eval(node.value).values():
                for spec in value:
                    packages.add(spec.split("=", 1)[1].strip().split(":")[0].split(".")[0])
    return packages


def plugin_packages() -> set[str]:
    found = entry_point_packages((REPO / "setup.py").read_text())
    found |= {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name.endswith(("_plugin", "_reducers"))}
    return found - {"llava"}


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (any depth, relative ones resolved
    against ``module``), plus ``importlib.import_module("x")`` / ``__import__("x")`` string literals."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def forbidden_imports(package: str, forbidden: set[str]) -> list[str]:
    hits = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, name in imported_modules(path.read_text(), module_name(path)):
            if name.split(".")[0] in forbidden:
                hits.append(f"{path.relative_to(REPO)}:{line}: imports {name}")
    return hits


def test_plugins_are_discovered():
    found = plugin_packages()
    assert "hicom_plugin" in found, found


def test_the_walker_catches_every_import_form():
    source = """
import hicom_plugin
import hicom_plugin.config as cfg
from hicom_plugin.projector import HIComProjector
def later():
    from hicom_plugin import demo
    importlib.import_module("hicom_plugin.tools.release")
from .. import sibling
from ...other import thing
"""
    found = sorted(imported_modules(source, "llava.model.sub.mod"))
    assert found == [(2, "hicom_plugin"), (3, "hicom_plugin.config"), (4, "hicom_plugin.projector"),
                     (6, "hicom_plugin"), (7, "hicom_plugin.tools.release"), (8, "llava.model"), (9, "llava.other")]


def test_llava_imports_no_plugin():
    hits = forbidden_imports("llava", plugin_packages())
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("plugin", sorted(plugin_packages()))
def test_no_plugin_imports_another(plugin):
    hits = forbidden_imports(plugin, plugin_packages() - {plugin})
    assert not hits, "\n".join(hits)


def test_llava_names_no_method():
    """``grep -rniE "hicom|guide" llava/`` prints nothing (code, docs and data files alike)."""
    pattern = re.compile(r"hicom|guide", re.IGNORECASE)
    hits = []
    for path in sorted((REPO / "llava").rglob("*")):
        if path.suffix in TEXT_SUFFIXES and path.is_file():
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if pattern.search(line) or pattern.search(path.name):
                    hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
