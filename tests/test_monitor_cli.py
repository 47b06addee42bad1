"""`nnassay monitor` on the bundled example: exit codes, records that verify, MLflow metrics over batch
time, the monitoring report, the schedule, and the re-assessment of a derived spec."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner, Result

from conftest import DIGITS
from nnassay.flows.cli.monitor import register
from nnassay.schemas.monitoring import DriftVerdict, MonitoredBatch, MonitoringRecord
from nnassay.tasks.monitoring import records

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

SPEC = DIGITS / "assessment.yaml"
SAME = DIGITS / "field" / "batch-01-same.npz"
SHIFTED = DIGITS / "field" / "batch-02-shifted.npz"
LINKED_EVIDENCE = "ab" * 32  # the evidence digest of the assessment seeded into the store


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def cli() -> typer.Typer:
    """A fresh app with the monitoring commands (the main app adds them the same way)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    return app


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli(), [str(a) for a in args])


def monitor(field: Path, out: Path, uri: str | None, *extra: str) -> Result:
    tracking = ["--mlflow-uri", uri] if uri else ["--no-track"]
    return invoke("monitor", SPEC, "--field", field, "--output", out, *tracking, *extra)


def seed_assessment(uri: str) -> str:
    """A finished, tracked assessment of the spec in the store, as the assess flow tags it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("nnassay/digits-cnn")
    tags = {"nnassay.assessment_id": "seeded", "nnassay.evidence_sha256": LINKED_EVIDENCE}
    run = client.create_run(experiment, tags=tags)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


@dataclass(frozen=True)
class Run:
    result: Result
    out: Path
    uri: str
    record: MonitoringRecord


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Run:
    root = tmp_path_factory.mktemp("monitor")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    seed_assessment(uri)
    result = monitor(SHIFTED, root / "shifted", uri)
    record = MonitoringRecord.model_validate_json((root / "shifted" / records.MONITORING).read_bytes())
    return Run(result, root / "shifted", uri, record)


# ---------------------------------------------------------------- exit codes


def test_same_distribution_batch_exits_0(tmp_path: Path, prefect_harness: None) -> None:
    result = monitor(SAME, tmp_path / "out", None)
    assert result.exit_code == 0, result.output
    assert "NO DRIFT" in result.output and "batch-01-same.npz" in result.output


def test_shifted_batch_exits_1_naming_the_shift(shifted_run: Run) -> None:
    assert shifted_run.result.exit_code == 1, shifted_run.result.output
    assert "DRIFT" in shifted_run.result.output
    assert "image brightness" in shifted_run.result.output
    report = shifted_run.record.batches[0].report
    assert report.verdict == DriftVerdict.DRIFT and any("brightness" in d for d in report.drifted)


def test_three_samples_are_insufficient_data_exit_3(tmp_path: Path, prefect_harness: None) -> None:
    with np.load(DIGITS / "test.npz") as data:
        np.savez(tmp_path / "tiny.npz", x=data["x"][:3], y=data["y"][:3])
    result = monitor(tmp_path / "tiny.npz", tmp_path / "out", None)
    assert result.exit_code == 3, result.output
    assert "INSUFFICIENT DATA" in result.output and "too few samples" in result.output
    record = MonitoringRecord.model_validate_json((tmp_path / "out" / records.MONITORING).read_bytes())
    assert record.batches[0].report.needed_samples is not None


@pytest.mark.parametrize("what", ["field", "spec"])
def test_invalid_path_exits_2_in_one_line(tmp_path: Path, what: str) -> None:
    spec = tmp_path / "nope.yaml" if what == "spec" else SPEC
    field = tmp_path / "nope.npz" if what == "field" else SAME
    result = invoke("monitor", spec, "--field", field, "--output", tmp_path / "out", "--no-track")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.count("nnassay: error:") == 1 and "nope" in result.output
    assert not (tmp_path / "out" / records.MONITORING).exists()


# ---------------------------------------------------------------- records


def test_records_verify_and_link_the_assessment(shifted_run: Run) -> None:
    assert shifted_run.record.assessment_evidence_sha256 == LINKED_EVIDENCE
    verification = records.verify_monitoring(shifted_run.out, tracking_uri=shifted_run.uri)
    assert verification.status == "intact", verification.problems
    assert any("chain: the monitored assessment" in c for c in verification.checked)
    manifest = json.loads((shifted_run.out / "manifest.json").read_text())
    assert manifest["previous_evidence_sha256"] == LINKED_EVIDENCE
    assert {f["path"] for f in manifest["files"]} >= {"monitoring.json", "monitoring.pdf", str(SHIFTED)}


def test_a_changed_monitoring_json_is_detected(shifted_run: Run, tmp_path: Path) -> None:
    copy = shutil.copytree(shifted_run.out, tmp_path / "copy")
    path = copy / records.MONITORING
    path.write_text(path.read_text().replace('"verdict": "drift"', '"verdict": "no_drift"', 1))
    verification = records.verify_monitoring(copy)
    assert verification.status == "tampered"
    assert any("changed: monitoring.json" in p for p in verification.problems), verification.problems


def test_monitor_verify_command_exit_codes(shifted_run: Run, tmp_path: Path) -> None:
    intact = invoke("monitor-verify", shifted_run.out, "--mlflow-uri", shifted_run.uri)
    assert intact.exit_code == 0 and intact.output.startswith("intact"), intact.output
    copy = shutil.copytree(shifted_run.out, tmp_path / "copy")
    (copy / records.REPORT_PDF).write_bytes(b"%PDF-1.7 forged")
    tampered = invoke("monitor-verify", copy)
    assert tampered.exit_code == 1 and "changed: monitoring.pdf" in tampered.output, tampered.output
    assert invoke("monitor-verify", tmp_path / "empty").exit_code == 2


def test_an_added_file_is_detected(shifted_run: Run, tmp_path: Path) -> None:
    copy = shutil.copytree(shifted_run.out, tmp_path / "copy")
    (copy / "extra.txt").write_text("x")
    assert any("added: extra.txt" in p for p in records.verify_monitoring(copy).problems)


def test_mlflow_run_has_metrics_at_batch_time(shifted_run: Run) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=shifted_run.uri)
    run = client.get_run(str(shifted_run.record.mlflow_run_id))
    assert run.info.experiment_id == client.get_experiment_by_name("nnassay/digits-cnn").experiment_id
    assert run.data.tags["nnassay.verdict"] == "drift"
    assert run.data.tags["nnassay.assessment_evidence_sha256"] == LINKED_EVIDENCE
    history = client.get_metric_history(run.info.run_id, "drift.image_brightness_mean_pixel_value.p_value")
    modified = SHIFTED.stat().st_mtime
    assert [(m.step, m.timestamp) for m in history] == [(int(modified), int(modified * 1000))]
    assert client.get_metric_history(run.info.run_id, "drift.detected")[0].value == 1.0
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"monitoring.json", "monitoring.pdf"}


def test_batches_of_the_same_second_get_distinct_increasing_steps() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    batches = [_batch(name, when) for name in ("b", "a")] + [_batch("c", when.replace(minute=1))]
    steps = records.batch_steps(batches)
    base = int(when.timestamp())
    assert steps == [base + 1, base, base + 60]


def _batch(name: str, when: datetime) -> MonitoredBatch:
    return MonitoredBatch.model_construct(name=name, modified=when, report=None)


# ---------------------------------------------------------------- report


def test_report_shows_the_findings_in_words_and_plots(shifted_run: Run) -> None:
    html = (shifted_run.out / records.REPORT_HTML).read_text()
    report = shifted_run.record.batches[0].report
    for finding in report.findings:
        assert finding.what in html
    assert "image brightness (mean pixel value)" in html and "drift" in html
    assert html.count("data:image/svg+xml;base64,") >= len(
        [f for f in report.findings if f.drifted and f.distribution]
    )
    assert LINKED_EVIDENCE in html
    assert (shifted_run.out / records.REPORT_PDF).read_bytes().startswith(b"%PDF")


# ---------------------------------------------------------------- schedule


def test_schedule_dry_run_shows_the_deployment(tmp_path: Path) -> None:
    args = ["monitor-schedule", SPEC, "--field", DIGITS / "field", "--interval", "3600", "--output", tmp_path]
    shown = invoke(*args, "--dry-run")
    assert shown.exit_code == 0, shown.output
    plan = json.loads(shown.output)
    assert plan["flow"] == "monitor-field" and plan["schedule"] == "every 3600 s"
    assert plan["parameters"]["request"]["run_subfolder"] is True
    assert plan["parameters"]["request"]["mlflow_tracking_uri"].startswith("sqlite:///")
    from nnassay.flows.monitor import monitor_field
    from nnassay.schemas.schedule import LifecycleSchedule

    deployment = monitor_field.to_deployment(  # Prefect accepts the parameters for the flow
        name=plan["deployment"],
        schedules=[LifecycleSchedule(interval=3600).to_prefect()],
        parameters=plan["parameters"],
    )
    assert str(deployment.entrypoint).endswith("monitor.py:monitor_field")
    bad = invoke("monitor-schedule", SPEC, "--field", DIGITS / "field", "--interval", "-5", "--dry-run")
    assert bad.exit_code == 2 and "--interval" in bad.output and "Traceback" not in bad.output


# ---------------------------------------------------------------- re-assessment


@pytest.mark.slow
def test_reassess_writes_the_derived_spec_and_assesses_it(tmp_path: Path, prefect_harness: None) -> None:
    from nnassay.tasks.io.files import sha256_file
    from nnassay.tasks.io.spec_io import read_spec

    out = tmp_path / "out"
    result = monitor(SHIFTED, out, f"sqlite:///{tmp_path / 'mlflow.db'}", "--reassess")
    assert result.exit_code == 1, result.output
    record = MonitoringRecord.model_validate_json((out / records.MONITORING).read_bytes())
    again = record.reassessment
    assert again is not None and again.evidence_sha256 and again.run_folder
    derived = read_spec(out / again.derived_spec)
    assert derived.goals[-1].id == "FIELD" and derived.goals[-1].threat.kind == "domain_shift"
    evidence = out / again.run_folder / "evidence.json"
    assert sha256_file(evidence) == again.evidence_sha256
    assert records.verify_monitoring(out).status == "intact"
