"""The house: one import name, every package folder installed, no import circles between rooms."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOPS = ("flows", "tasks", "schemas", "reports")


def _package_folders() -> set[str]:
    found = set()
    for top in TOPS:
        for init in (REPO / top).rglob("__init__.py"):
            found.add("nnassay." + ".".join(init.parent.relative_to(REPO).parts))
    return found


def test_every_package_folder_is_installed_under_nnassay() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _package_folders()
    assert config["package-dir"] == {f"nnassay.{t}": t for t in TOPS}


def test_every_python_folder_is_a_package() -> None:
    """A folder of modules without __init__.py would be left out of the wheel."""
    for top in TOPS:
        for module in (REPO / top).rglob("*.py"):
            assert (module.parent / "__init__.py").exists(), f"{module.parent} has modules but no __init__.py"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_code_imports_only_through_the_one_name() -> None:
    """No module imports `tasks...` or `schemas...` as a top-level package any more."""
    bad = []
    for top in (*TOPS, "tests", "benchmarks"):
        for path in (REPO / top).rglob("*.py"):
            for name in _imports(path):
                if name.split(".")[0] in TOPS:
                    bad.append(f"{path.relative_to(REPO)}: import {name}")
    assert not bad, bad


def test_methods_never_import_prefect() -> None:
    methods = REPO / "tasks" / "methods"
    bad = [str(p) for p in methods.rglob("*.py") if any(n.split(".")[0] == "prefect" for n in _imports(p))]
    assert not bad, bad


def test_schemas_import_no_other_room() -> None:
    bad = []
    for path in (REPO / "schemas").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("nnassay.") and not name.startswith("nnassay.schemas"):
                bad.append(f"{path.name}: {name}")
    assert not bad, bad


def test_wheel_has_one_top_level_import_package(tmp_path: Path) -> None:
    """A non-editable install puts exactly one import package, nnassay, into site-packages."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("nnassay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"nnassay"}
    assert "nnassay/reports/templates/report.html.j2" in names
    assert "nnassay/tasks/methods/registry.py" in names
