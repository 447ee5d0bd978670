"""Unit: the module boundaries the architecture promises, read from the imports themselves.

src/ (pipeline) and api/ (service) never import each other; contract/ (what both need of the
artifact) imports only numpy, the standard library and itself, so a deploy host needs no
pipeline package.
"""

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(("package", "forbidden"), [("api", "src"), ("src", "api")])
def test_pipeline_and_service_never_import_each_other(package, forbidden):
    offenders = [str(p.relative_to(ROOT)) for p in modules(package) if forbidden in imported(p)]
    assert offenders == []


def test_contract_needs_only_numpy_and_the_standard_library():
    allowed = {"numpy", "contract", "__future__"} | set(sys.stdlib_module_names)
    found = {str(p.relative_to(ROOT)): imported(p) - allowed for p in modules("contract")}
    assert {path: names for path, names in found.items() if names} == {}
    assert len(found) >= 4


def imported_modules(path: Path) -> set[str]:
    """Full dotted names of every module ``path`` imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


PROTOCOL_NEUTRAL = [
    "api/core.py",
    "api/problems.py",
    "api/runners.py",
    "api/batching.py",
    "api/shadowing.py",
    "api/oip.py",
    "api/store.py",
    "api/backends.py",
]


@pytest.mark.parametrize("module", PROTOCOL_NEUTRAL)
def test_the_core_and_what_it_runs_know_no_protocol(module):
    tops = imported(ROOT / module)
    assert tops & {"fastapi", "starlette", "grpc", "uvicorn", "gunicorn"} == set()
    assert not any(m.startswith("api.protocols") for m in imported_modules(ROOT / module))


def test_every_adapter_is_found_and_nothing_else_names_one():
    from api.protocols import adapters

    found = [m.__name__.rsplit(".", 1)[1] for m in adapters()]
    assert found == ["docs", "lookup", "mlflow", "oip_grpc", "oip_rest", "page", "rest"]
    files = {p.stem for p in (ROOT / "api" / "protocols").glob("*.py")} - {"__init__"}
    assert set(found) == files  # a module there is an adapter
    adapter_paths = [["api", "protocols", name] for name in found]
    outside = [
        str(p.relative_to(ROOT))
        for p in modules("api")
        if "protocols" not in p.parts
        and any(m.split(".")[:3] in adapter_paths for m in imported_modules(p))
    ]
    assert outside == []
