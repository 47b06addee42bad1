"""End to end: the bundled example through the Prefect flow explains its three failed goals (G3 noise
flips, G6 PGD, G8 confident garbage) in the evidence, the run folder and MLflow; the run folder
still verifies; ``explain: {enabled: false}`` gives no explanation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance.integrity import VerifyOptions, verify
from nnassay.tasks.io.files import sha256_file

pytestmark = pytest.mark.slow  # whole assessments of the example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"
FAILED = {"G3", "G6", "G8"}


@pytest.fixture(scope="module")
def prefect_harness():  # type: ignore[no-untyped-def]
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def example_spec(folder: Path, *, goals: set[str] | None = None, explain: dict | None = None) -> Path:  # type: ignore[type-arg]
    """A copy of the example spec with absolute paths, some goals only, and an explain section."""
    spec = yaml.safe_load((EXAMPLE / "assessment.yaml").read_text())
    spec["model"]["path"] = str(EXAMPLE / spec["model"]["path"])
    spec["data"]["path"] = str(EXAMPLE / spec["data"]["path"])
    for g in spec["goals"]:
        if g["threat"].get("path"):
            g["threat"]["path"] = str(EXAMPLE / g["threat"]["path"])
    if goals is not None:
        spec["goals"] = [g for g in spec["goals"] if g["id"] in goals]
    if explain is not None:
        spec["explain"] = explain
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "assessment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def assess(spec: Path, out: Path, uri: str) -> EvidenceBundle:
    from nnassay.flows.lifecycle import assess_runner

    request = AssessRequest(spec_path=spec, output=out, mlflow_tracking_uri=uri, prefer_cuda=False)
    return assess_runner(None)(request)


def test_every_failed_goal_of_the_example_is_explained(tmp_path: Path, prefect_harness) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    bundle = assess(example_spec(tmp_path / "spec"), out, uri)

    failed = {v.goal_id for v in bundle.verdicts if v.verdict.value != "pass"}
    assert failed == FAILED
    assert {es.goal_id for es in bundle.explanations} == FAILED
    for es in bundle.explanations:
        assert es.engine == "torch_executor" and set(es.methods) == {"integrated_gradients", "saliency"}
        assert sum(s.role == "failure" for s in es.samples) == 8 * len(es.methods)
        assert sum(s.role == "contrast" for s in es.samples) == 2 * len(es.methods)
        assert all(s.input_kind == "failing_input" for s in es.samples if s.role == "failure")
        assert es.faithfulness and es.sanity and es.statement and es.source
        assert es.picture is not None and sha256_file(out / es.picture.path) == es.picture.sha256
    origins = {
        es.goal_id: {s.origin for s in es.samples if s.role == "failure"} for es in bundle.explanations
    }
    assert all(o and o.startswith("invalid input: ") for o in origins["G8"])
    assert all(o and "drawn again" in o for o in origins["G3"]) and origins["G6"] == {
        "empirical.pgd_linf failing input"
    }
    digests = {a.path: a.sha256 for a in bundle.manifest if a.role == "explanation"}
    assert digests and all(sha256_file(out / p) == d for p, d in digests.items())

    # MLflow: each goal's folder under explanations/<goal> of the parent run, and its metrics
    client = MlflowClient(tracking_uri=uri)
    run_id = bundle.provenance.mlflow_run_id
    assert run_id is not None
    logged = {a.path for a in client.list_artifacts(run_id, "explanations/G6")}
    (g6,) = [es for es in bundle.explanations if es.goal_id == "G6"]
    assert g6.picture is not None and f"explanations/G6/{Path(g6.picture.path).name}" in logged
    # the dossier: each failed goal's section and its panel, read back from the PDF
    import io

    from PIL import Image
    from pypdf import PdfReader

    reader = PdfReader(out / "dossier.pdf")
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    embedded = [im.image for page in reader.pages for im in page.images if im.image is not None]
    for es in bundle.explanations:
        assert f"Explanations of {es.goal_id}" in text
        assert es.picture is not None
        panel = Image.open(io.BytesIO((out / es.picture.path).read_bytes()))
        assert any(im.size == panel.size for im in embedded), es.goal_id
    assert "beats random" in text
    metrics = client.get_run(run_id).data.metrics
    assert "explain.G6.integrated_gradients.deletion_gain_low" in metrics
    assert "explain.G3.saliency.sanity_rank_correlation" in metrics

    # the run folder, explanations included, verifies as intact
    check = verify(out, VerifyOptions(tracking_uri=uri))
    assert check.status == "intact", check.problems
    assert bundle.plan.explain_estimate_s is not None and bundle.plan.explain_estimate_s > 0


def test_switched_off_the_example_has_no_explanations(tmp_path: Path, prefect_harness) -> None:  # type: ignore[no-untyped-def]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    spec = example_spec(tmp_path / "spec", goals={"G1", "G6"}, explain={"enabled": False})
    bundle = assess(spec, out, uri)
    assert any(v.verdict.value == "fail" for v in bundle.verdicts)  # G6 fails, yet nothing is explained
    assert bundle.explanations == [] and not (out / "explanations").exists()
    assert bundle.plan.explain_estimate_s is None
    assert "explanations_not_made" not in bundle.provenance.extra
