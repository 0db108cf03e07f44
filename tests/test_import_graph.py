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


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (any depth, relative ones resolved
    against ``module``; ``is_package``: ``source`` is that package's ``__init__.py``), plus
    ``importlib.import_module("x")`` / ``__import__("x")`` string literals. ``from x import y`` gives
    ``x`` and ``x.y`` (``y`` may be a submodule)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else []
            base = ".".join(base + ([node.module] if node.module else []))
            if base:
                found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            name = node.args[0].value
            if called in ("import_module", "__import__") and isinstance(name, str):
                if name.startswith("."):  # import_module(".x", package="pkg")
                    anchor = next((k.value.value for k in node.keywords if k.arg == "package"
                                   and isinstance(k.value, ast.Constant)), ".".join(package))
                    name = f"{anchor}.{name.lstrip('.')}"
                found.append((node.lineno, name))
    return found


def module_name(path: Path, root: Path = REPO) -> tuple[str, bool]:
    """``(dotted module name, is a package's __init__)`` of a file under ``root``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def forbidden_imports(package: str, forbidden: set[str], root: Path = REPO) -> list[str]:
    """``file:line: imports name`` for each import in ``root/package`` of a package in ``forbidden``."""
    hits = []
    for path in sorted((root / package).rglob("*.py")):
        seen = set()
        for line, name in imported_modules(path.read_text(), *module_name(path, root)):
            if name.split(".")[0] in forbidden and line not in seen:
                seen.add(line)  # ``from x import y`` yields x and x.y: one hit per line
                hits.append(f"{path.relative_to(root)}:{line}: imports {name}")
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
    __import__("hicom_plugin")
from .. import sibling
from ...other import thing
class Lazy:
    def load(self):
        return import_module(".release", package="hicom_plugin.tools")
"""
    found = sorted(imported_modules(source, "llava.model.sub.mod"))
    assert found == [
        (2, "hicom_plugin"), (3, "hicom_plugin.config"),
        (4, "hicom_plugin.projector"), (4, "hicom_plugin.projector.HIComProjector"),
        (6, "hicom_plugin"), (6, "hicom_plugin.demo"), (7, "hicom_plugin.tools.release"), (8, "hicom_plugin"),
        (9, "llava.model"), (9, "llava.model.sibling"), (10, "llava.other"), (10, "llava.other.thing"),
        (13, "hicom_plugin.tools.release"),
    ]
    # in a package's __init__, "." is the package itself
    assert imported_modules("from .projector import X\nfrom . import config", "hicom_plugin", is_package=True) == [
        (1, "hicom_plugin.projector"), (1, "hicom_plugin.projector.X"), (2, "hicom_plugin"), (2, "hicom_plugin.config")]
    assert module_name(REPO / "llava" / "model" / "__init__.py") == ("llava.model", True)
    assert module_name(REPO / "llava" / "model" / "builder.py") == ("llava.model.builder", False)


def test_forbidden_imports_reports_file_line_and_import(tmp_path):
    """A plugin import hidden in a function of a core file is reported as ``file:line: imports name``."""
    core = tmp_path / "llava" / "model"
    core.mkdir(parents=True)
    (tmp_path / "llava" / "__init__.py").write_text("from . import model\n")
    (core / "__init__.py").write_text("from .builder import build\n")
    (core / "builder.py").write_text("import os\n\n\ndef build():\n    import hicom_plugin.projector as p\n"
                                     "    return p\n")
    (core / "loader.py").write_text("import importlib\nplugin = importlib.import_module('my_reducers')\n")
    assert forbidden_imports("llava", {"hicom_plugin", "my_reducers"}, root=tmp_path) == [
        "llava/model/builder.py:5: imports hicom_plugin.projector",
        "llava/model/loader.py:2: imports my_reducers",
    ]
    assert forbidden_imports("llava", {"other_plugin"}, root=tmp_path) == []


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
