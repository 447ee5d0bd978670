"""Unit: every stage in dvc.yaml lists, among its deps, exactly the project modules its script
imports (transitively), so a change to any of them re-runs the stage and none is stale."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PACKAGES = ("src", "contract")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a library."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"


def imports(path: Path) -> set[str]:
    """Dotted names ``path`` imports, ``from a import b`` counted as a.b when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if (f := module_file(sub)) is not None and f.exists() and f.name != "__init__.py":
                    found.add(sub)
    return found


def closure(start: Path) -> set[str]:
    """The project .py files ``start`` needs, itself included, relative to the root."""
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports(path):
            target = module_file(name)
            if target is not None and target.exists():
                todo.append(target)
    return {str(p.relative_to(ROOT)) for p in seen if p.name != "__init__.py"}


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_package_inits_carry_no_code():
    """__init__.py files are docstrings only, so leaving them out of deps loses nothing."""
    for package in PACKAGES:
        body = ast.parse((ROOT / package / "__init__.py").read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), package


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_every_module_its_script_imports(stage):
    module = re.fullmatch(r"python -m (src\.\w+)", STAGES[stage]["cmd"])
    assert module, f"{stage}: cmd is not `python -m src.<module>`"
    needed = closure(module_file(module[1]))
    declared = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    assert declared == needed
