"""The house's floors: a module never imports a higher floor, nor a sibling on its own floor.

core < data < nn < training < profiling | explain | echoes < report < cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "phenolens"
FLOORS = {"core": 0, "data": 1, "nn": 2, "training": 3, "profiling": 4, "explain": 4, "echoes": 4, "report": 5, "cli": 6}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level phenolens package) of every import in `source`, at any depth (lazy imports count)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "phenolens" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def violations(root: Path = SOURCE) -> list[str]:
    """Every import that goes up a floor or sideways to a sibling package."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if len(relative.parts) < 2 or relative.parts[0] not in FLOORS:
            continue  # phenolens/__init__.py and __main__.py sit above the house
        package = relative.parts[0]
        for line, target in imported_packages(path.read_text()):
            if target not in FLOORS or target == package:
                continue
            if FLOORS[target] >= FLOORS[package]:
                found.append(f"{relative}:{line} ({package}, floor {FLOORS[package]}) imports {target} (floor {FLOORS[target]})")
    return found


def test_no_module_imports_a_higher_floor_or_a_sibling():
    assert violations() == []


@pytest.mark.parametrize(
    ("package", "code", "expected"),
    [
        ("data", "from phenolens.nn.backbones import VGG\n", "imports nn"),
        ("profiling", "def f():\n    from phenolens.echoes import simulate\n", "imports echoes"),
        ("nn", "import phenolens.report.html\n", "imports report"),
    ],
)
def test_a_deliberate_violation_is_caught(tmp_path, package, code, expected):
    (tmp_path / package).mkdir()
    (tmp_path / package / "bad.py").write_text(code)
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "fine.py").write_text("import phenolens.core.errors\n")
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0]
