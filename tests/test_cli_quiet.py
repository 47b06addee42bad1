"""Third-party noise stays hidden unless --verbose: MLflow's INFO lines, run links and download bars,
Prefect's INFO lines, ONNX Runtime's warnings (the quantiser's pre-processing advice); nnassay's own
progress lines always show. `--debug` shows everything too."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from records_runs import register_model

from conftest import REPO, goal

NOISE = (
    "INFO mlflow",  # MLflow's INFO lines ("Creating initial MLflow database tables...")
    "Creating initial MLflow database tables",
    "Downloading artifacts",  # MLflow's tqdm bars for models:/ URIs
    "View run",  # MLflow's run links (tracking servers)
    "View experiment",
    "Please consider to run pre-processing before quantization",  # onnxruntime.quantization
    "| INFO",  # Prefect's INFO lines
    "Error logging to API",  # run logs sent after the embedded server stopped: lost (and slow retries)
)
QUIET_ENV = (
    "MLFLOW_LOGGING_LEVEL",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
    "PREFECT_LOGGING_LEVEL",
    "NNASSAY_QUIETED",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The variables `quiet_libraries` sets, unset (restored afterwards), and the root logger's filters."""
    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    root = logging.getLogger()
    filters = list(root.filters)
    yield
    root.filters[:] = filters


def _quantiser_warning(model: Path, out: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        quantize_dynamic(os.fspath(model), os.fspath(out), weight_type=QuantType.QInt8)
    return [r.getMessage() for r in caplog.records if "pre-processing" in r.getMessage()]


def test_quiet_hides_library_noise_and_verbose_shows_it(
    clean_env: None,
    image_case,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow.tracking  # noqa: F401  (imported: its logger is configured, quiet_libraries sets its level)
    import onnxruntime

    from nnassay.flows.cli.options import ORT_ERROR, ORT_WARNING, quiet_libraries

    severities: list[int] = []
    original = onnxruntime.set_default_logger_severity
    monkeypatch.setattr(
        onnxruntime, "set_default_logger_severity", lambda s: (severities.append(s), original(s))
    )

    quiet_libraries(debug=False, verbose=False)
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "WARNING"
    assert logging.getLogger("mlflow").getEffectiveLevel() == logging.WARNING
    assert severities == [ORT_ERROR]
    assert _quantiser_warning(image_case.model, tmp_path / "q1.onnx", caplog) == []

    quiet_libraries(debug=False, verbose=True)  # a later --verbose command in the same process
    for key in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        assert key not in os.environ
    assert logging.getLogger("mlflow").getEffectiveLevel() == logging.INFO
    assert severities == [ORT_ERROR, ORT_WARNING]
    shown = _quantiser_warning(image_case.model, tmp_path / "q2.onnx", caplog)
    assert len(shown) == 1 and "Please consider to run pre-processing" in shown[0]


def test_a_level_the_user_set_is_kept(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnassay.flows.cli.options import quiet_libraries

    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "ERROR")
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")
    quiet_libraries(debug=True, verbose=False)
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "ERROR"
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"  # the user's, even with --debug
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # --debug shows everything


def _assess(spec: Path, out: Path, uri: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (*QUIET_ENV, "MLFLOW_TRACKING_URI")}
    args = [sys.executable, "-m", "nnassay.flows", "assess", str(spec), "--output", str(out)]
    args += ["--mlflow-uri", uri, "--cpu", *extra]
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_output_is_quiet_unless_verbose(tmp_path: Path, image_case, spec_writer) -> None:
    """A new store (MLflow's INFO lines), an int8 deployment (the quantiser's warning, in the child
    process that converts) and a registry model (download bars): none of it reaches the terminal;
    nnassay's per-test and overall progress lines do. --verbose brings MLflow's and Prefect's lines back."""
    clean = goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)
    int8 = goal("INT8", {"kind": "deployment", "variants": ["int8_dynamic"]}, "disagreement_rate", "<=", 0.5)
    new_store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    quiet = _assess(spec_writer(image_case, [clean, int8]), tmp_path / "new" / "run", new_store)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert [n for n in NOISE if n in quiet.stdout + quiet.stderr] == [], quiet.stdout + quiet.stderr
    for line in ("CLEAN/statistical.clean_accuracy: completed", "test 1 of 2 done", "test 2 of 2 done"):
        assert line in quiet.stderr, quiet.stderr
    assert "overall: PASS" in quiet.stdout

    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    model_uri = ("--model-uri", register_model(registry, image_case.model, tmp_path, "quiet-model"))
    spec = spec_writer(image_case, [clean])
    quiet = _assess(spec, tmp_path / "q", registry, *model_uri)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert [n for n in NOISE if n in quiet.stdout + quiet.stderr] == [], quiet.stdout + quiet.stderr
    loud = _assess(spec, tmp_path / "v", registry, *model_uri, "--verbose")
    assert loud.returncode == 0, loud.stderr[-3000:]
    for line in ("Downloading artifacts", "| INFO", "test 1 of 1 done"):
        assert line in loud.stderr, loud.stderr


@pytest.mark.parametrize("command", ["assess", "lifecycle", "schedule", "monitor", "monitor-schedule"])
def test_commands_that_run_assessments_take_verbose(command: str) -> None:
    from typer.testing import CliRunner

    from nnassay.flows.cli.app import app

    done = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert done.exit_code == 0 and "--verbose" in done.output, done.output


def test_help_lists_each_command_in_whole_sentences() -> None:
    """The command list reflows each docstring's first paragraph: on a wide terminal every command
    takes one line (a docstring's own line breaks would cut sentences into several)."""
    from typer.testing import CliRunner

    from nnassay.flows.cli.app import app

    done = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "600"})
    assert done.exit_code == 0
    panel = done.output.split("Commands")[1].split("╰")[0].splitlines()[1:]
    names = [line[2:].split(" ")[0] for line in panel]  # "│ name  summary"; "│      more" continues
    assert "" not in names, "\n".join(panel)  # a continuation line
    assert {"assess", "verify", "monitor", "plan", "evidence"} <= set(names)
