"""The layout's rules, checked: the engine imports no Dagster, production code no sandbox or local infra."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reporting_assets"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def python_files(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("core"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_engine_imports_no_dagster(path: Path):
    dagster = {m for m in imported_modules(path) if m == "dagster" or m.startswith(("dagster.", "dagster_"))}
    assert not dagster, f"{path.relative_to(PACKAGE)} imports {sorted(dagster)}"
    project = {m for m in imported_modules(path) if m.startswith("reporting_assets.")}
    outside = {m for m in project if not m.startswith("reporting_assets.core")}
    assert not outside, f"{path.relative_to(PACKAGE)} imports {sorted(outside)} from outside core/"


def test_importing_the_whole_engine_loads_no_dagster():
    modules = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in python_files("core")
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + (
            "loaded = sorted(m for m in sys.modules if m == 'dagster' or m.startswith(('dagster.', 'dagster_')))\n"
            "print(','.join(loaded))\n"
        )
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"importing core/ loaded {result.stdout.strip()[:300]}"


# The local Spark session finds its Kafka connector jars in the project's Maven cache (infra/maven.py).
LOCAL_JARS = PACKAGE / "resources" / "spark.py"


@pytest.mark.parametrize(
    "path",
    [p for p in python_files("core") + python_files("defs") + python_files("resources") if p != LOCAL_JARS],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_production_code_never_imports_the_sandbox_or_local_infra(path: Path):
    stand_ins = {
        m for m in imported_modules(path) if m.startswith(("reporting_assets.sandbox", "reporting_assets.infra"))
    }
    assert not stand_ins, f"{path.relative_to(PACKAGE)} imports {sorted(stand_ins)}"


def test_dagster_private_modules_are_not_imported_by_the_package():
    private = {
        str(path.relative_to(PACKAGE)): sorted(m for m in imported_modules(path) if m.startswith("dagster._"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {path: found for path, found in private.items() if found} == {}
