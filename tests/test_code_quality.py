"""The code's own checks run with the tests: ruff (lint and format) and mypy with the project's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOPS = ("flows", "tasks", "schemas", "reports")


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def test_ruff_lint_and_format_are_clean() -> None:
    lint = _run([sys.executable, "-m", "ruff", "check", "."], REPO)
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = _run([sys.executable, "-m", "ruff", "format", "--check", "."], REPO)
    assert fmt.returncode == 0, fmt.stdout[-3000:]


@pytest.mark.slow
def test_mypy_is_clean(tmp_path: Path) -> None:
    """mypy over the installed layout: a view folder nnassay/ whose subfolders link to the top-level rooms
    (mypy does not follow the editable install's import hook)."""
    view = tmp_path / "view" / "nnassay"
    view.mkdir(parents=True)
    for top in TOPS:
        (view / top).symlink_to(REPO / top, target_is_directory=True)
    env = {**os.environ, "MYPYPATH": str(view.parent)}
    args = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")]
    args += ["--cache-dir", str(tmp_path / "cache"), "-p", "nnassay"]
    done = _run(args, view.parent, env)
    assert done.returncode == 0, done.stdout[-5000:]
