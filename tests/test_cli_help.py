"""`nnassay --help` and every command's help render cleanly; `nnassay --version` prints the version."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from nnassay.flows.cli.app import app

RUNNER = CliRunner()
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None]
COMMANDS = [c for c in COMMANDS if c != "verify"]  # verify has its own parser (--help tested in formal tests)


def test_version() -> None:
    done = RUNNER.invoke(app, ["--version"])
    assert done.exit_code == 0
    assert done.output.strip() == f"nnassay {version('nnassay')}"


@pytest.mark.parametrize("args", [[], *[[c] for c in COMMANDS]], ids=lambda a: " ".join(a) or "nnassay")
def test_help_has_no_type_markers(args: list[str]) -> None:
    done = RUNNER.invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert done.exit_code == 0, done.output
    assert "Usage:" in done.output
    markers = re.findall(r"<(?:bool|str|path|int|float)>|\{[a-z_]+\}", done.output)
    assert not markers, f"help of {args} shows {markers}:\n{done.output}"
