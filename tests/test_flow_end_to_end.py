"""End to end: the Prefect flow on the tiny model, with MLflow in a temporary SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pypdf import PdfReader

from conftest import goal
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.settings import AssessRequest

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane


@pytest.fixture(scope="module")
def prefect_harness():  # type: ignore[no-untyped-def]
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_leaves_evidence_mlflow_run_and_pdf(
    tmp_path: Path, image_case, spec_writer, prefect_harness
) -> None:
    from mlflow.tracking import MlflowClient

    from nnassay.flows.lifecycle import assess_runner

    spec = spec_writer(
        image_case,
        [
            goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
            goal("NOISY", {"kind": "gaussian_noise", "sigma": 0.05}, "label_flip_rate", "<=", 0.0001),
        ],
    )
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assess = assess_runner(None)  # the evidence, also when the flow run ends Failed (a goal failed)
    bundle = assess(AssessRequest(spec_path=spec, output=out, mlflow_tracking_uri=uri, prefer_cuda=False))

    # evidence: one verdict per goal, stored bundle equals the returned one
    stored = EvidenceBundle.model_validate_json((out / "evidence.json").read_text())
    assert stored == bundle
    verdicts = {v.goal_id: v.verdict.value for v in bundle.verdicts}
    assert verdicts["CLEAN"] == "pass" and verdicts["NOISY"] in ("fail", "inconclusive")
    assert bundle.overall.value == "fail" or verdicts["NOISY"] == "inconclusive"
    assert bundle.provenance.execution_provider == "CPUExecutionProvider"
    assert bundle.provenance.prefect_flow_run_id
    reading = bundle.provenance.extra["model_reading"]  # how the outputs were read, for the auditor
    assert isinstance(reading, dict) and reading["output_kind"] in ("logits", "probabilities")
    assert reading["output_kind_source"] and reading["n_classes"] == 3
    assert {a.role for a in bundle.manifest} >= {"spec", "model", "data", "plan", "result"}
    assert json.loads((out / "plan.json").read_text())["spec_id"] == "tiny"

    # MLflow: parent run with tags and artifacts, a nested run per test
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(bundle.provenance.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["nnassay.model_sha256"] == bundle.plan.model_sha256
    assert parent.data.tags["nnassay.verdict"] == bundle.overall.value
    assert "goal.CLEAN.accuracy" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == sorted(t.test_id for t in bundle.plan.tests)
    assert any("accuracy.ci_low" in r.data.metrics for r in children)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"evidence.json", "dossier.pdf", "plan.json"} <= names

    # PDF: every goal id, its verdict and the sections are there as text
    text = "\n".join(page.extract_text() for page in PdfReader(out / "dossier.pdf").pages)
    for needle in (
        "CLEAN",
        "NOISY",
        "Robustness goals",
        "Test plan",
        "Results",
        "Interpretation",
        "Provenance",
        bundle.plan.model_sha256[:16],
    ):
        assert needle in text, needle
