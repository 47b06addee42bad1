"""Which way imports go: the reports only display (schemas in, documents out), and options travel as
request fields, never as module state set by the CLI."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every absolute import in a file; relative imports stay inside its package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


def _allowed_in_reports(module: str) -> bool:
    top = module.split(".")[0]
    if top == "nnassay":
        return module.startswith(("nnassay.schemas", "nnassay.reports"))
    return top not in ("flows", "tasks", "schemas", "reports")  # standard library or third party


def test_reports_import_only_schemas_and_themselves() -> None:
    modules = sorted((REPO / "reports").rglob("*.py"))
    assert len(modules) >= 5  # render, view, charts, standards, junit: the walk found the package
    bad = [
        f"{path.relative_to(REPO)}:{line}: import {name}"
        for path in modules
        for name, line in _imports(path)
        if not _allowed_in_reports(name)
    ]
    assert not bad, "reports/ may import only nnassay.schemas and nnassay.reports:\n" + "\n".join(bad)


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from nnassay.tasks.governance import integrity\nimport nnassay.tasks.io.files\n")
    names = [name for name, _ in _imports(bad)]
    assert names == ["nnassay.tasks.governance", "nnassay.tasks.io.files"]
    assert not any(_allowed_in_reports(n) for n in names)
    assert _allowed_in_reports("nnassay.schemas.evidence") and _allowed_in_reports("jinja2")


def test_importing_the_renderer_loads_no_pipeline_or_governance_module() -> None:
    import subprocess

    code = (
        "import sys, nnassay.reports.render, nnassay.reports.junit;"
        "print(sorted(m for m in sys.modules if m.startswith(('nnassay.tasks', 'nnassay.flows'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_record_options_are_declared_on_the_commands_and_the_requests() -> None:
    """--sign-key, --model-uri, --junit-xml and --dask are ordinary parameters of the commands (no
    signature rewritten at run time) and fields of the typed requests the flows take."""
    import inspect

    from nnassay.flows.cli import app as cli
    from nnassay.flows.cli import lifecycle as cli_lifecycle
    from nnassay.schemas.settings import AssessRequest, LifecycleRequest

    commands = {c.name or c.callback.__name__: c.callback for c in cli.app.registered_commands}  # type: ignore[union-attr]
    assert commands["assess"] is cli.assess
    assert commands["lifecycle"] is cli_lifecycle.lifecycle and commands["schedule"] is cli_lifecycle.schedule
    for command, names in (
        (cli.assess, {"sign_key", "model_uri", "junit_xml", "dask"}),
        (cli_lifecycle.lifecycle, {"sign_key", "model_uri", "dask"}),
        (cli_lifecycle.schedule, {"sign_key", "model_uri", "dask"}),
    ):
        assert names <= set(inspect.signature(command).parameters), command.__name__
    assert {"sign_key", "model_uri", "progress", "dask_address", "junit_xml"} <= set(
        AssessRequest.model_fields
    )
    assert {"sign_key", "model_uri", "dask_address"} <= set(LifecycleRequest.model_fields)
    help_text = CliRunner().invoke(cli.app, ["assess", "--help"]).output
    for option in ("--sign-key", "--model-uri", "--junit-xml", "--dask"):
        assert option in help_text, option


def test_no_module_level_option_state() -> None:
    """The old carriers of options are gone: no configure() setters, no progress sink list."""
    from nnassay.flows import steps
    from nnassay.tasks.governance import records
    from nnassay.tasks.io import registry_models

    for module, names in (
        (records, ("configure", "options", "signing_key", "_OPTIONS", "_KEYS")),
        (registry_models, ("configure", "_CONFIG", "_Config")),
        (steps, ("PROGRESS_SINK",)),
    ):
        assert not [n for n in names if hasattr(module, n)], module.__name__
