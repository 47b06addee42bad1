"""A registry model (models:/NAME/VERSION) is downloaded once per assessment: the CLI's preflight and
the flow share one download in the assessment's own work folder (none shared between assessments)."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest
from records_runs import register_model
from typer.testing import CliRunner

from conftest import goal


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of MLflow's artifact download (the stack of each, to see where it came from)."""
    import mlflow.artifacts

    calls: list[str] = []
    real = mlflow.artifacts.download_artifacts

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append("".join(traceback.format_stack(limit=14)))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", spy)
    return calls


@pytest.mark.slow
def test_assess_downloads_a_registry_model_once(
    tmp_path: Path, image_case: Any, spec_writer: Any, downloads: list[str]
) -> None:
    from nnassay.flows.cli.app import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model_uri = register_model(uri, image_case.model, tmp_path, "once-model")
    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    out = tmp_path / "run"
    args = ["assess", str(spec), "-o", str(out), "--mlflow-uri", uri, "--model-uri", model_uri, "--cpu"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert len(downloads) == 1, "\n-----\n".join(downloads)  # preflight and the flow share it
    copied = sorted(p.name for p in (out / "model").iterdir())
    assert copied == ["model.onnx"]  # the run folder keeps its copy; the work folder is gone


def test_one_download_per_scope_in_its_own_work_folder(
    tmp_path: Path, image_case: Any, downloads: list[str]
) -> None:
    from nnassay.tasks.io.registry_models import download_onnx, download_scope, origin

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model_uri = register_model(uri, image_case.model, tmp_path, "once-model")
    with download_scope(tmp_path / "work") as work:
        first = download_onnx(model_uri, uri)
        second = download_onnx(model_uri, uri)  # the flow after the CLI's check: the same file
        with download_scope() as inner:  # a nested scope is the outer one
            assert inner == work and download_onnx(model_uri, uri) == first
        assert first == second and first.is_relative_to(work)
        assert origin(first) is not None and origin(first)["version"] == "1"
        assert len(downloads) == 1
        first.unlink()  # a copy removed meanwhile is fetched again
        assert download_onnx(model_uri, uri) == first and first.is_file() and len(downloads) == 2
    with download_scope() as temporary:
        assert download_onnx(model_uri, uri).is_relative_to(temporary) and len(downloads) == 3
    assert not temporary.exists()  # the default work folder goes with its scope
    outside = [download_onnx(model_uri, uri) for _ in range(2)]  # no scope: a folder per call
    assert outside[0].parent != outside[1].parent and len(downloads) == 5
