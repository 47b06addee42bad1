"""The dossier: every section and goal as text, embedded evidence, PDF/A-3, re-rendering, charts."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pypdf import PdfReader
from records_runs import Runs, assessed
from typer.testing import CliRunner

from reports.charts import chart_svg
from reports.render import render_html, render_markdown
from reports.view import SECTION_TITLES
from schemas.evidence import EvidenceBundle
from schemas.results import Series

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def runs(image_case) -> Runs:  # type: ignore[no-untyped-def]
    return assessed(image_case)


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def bundle(run: Path) -> EvidenceBundle:
    return EvidenceBundle.model_validate_json((run / "evidence.json").read_text())


def test_every_section_and_goal_is_in_the_pdf(runs: Runs) -> None:
    text = pdf_text(runs.b / "dossier.pdf")
    ev = bundle(runs.b)
    for number, (_, title) in enumerate(SECTION_TITLES, start=1):
        assert f"{number} {title}" in text, title
    for gv in ev.verdicts:
        assert gv.goal_id in text
    for needle in ("(uncertain)", "[S]", "[C]", "Residual risk", "A.6.2.4", "Art. 15(5)", "MEASURE 2.6",
                   ev.provenance.assessment_id, ev.provenance.signer_public_key_sha256[:20],
                   "A. Assessor", "B. Approver", "models:/tiny-model/1"):  # fmt: skip
        assert needle in text.replace("\n", " ") or needle in "".join(text.split()), needle


def test_history_section_shows_the_earlier_assessment(runs: Runs) -> None:
    a_id = bundle(runs.a).provenance.assessment_id
    assert bundle(runs.b).history[0]["assessment_id"] == a_id
    assert a_id in pdf_text(runs.b / "dossier.pdf")
    assert "first of its series" in pdf_text(runs.a / "dossier.pdf")


def test_embedded_evidence_equals_the_bundle_and_pdfa3_is_declared(runs: Runs) -> None:
    reader = PdfReader(runs.b / "dossier.pdf")
    embedded = reader.attachments["evidence.json"][0]
    assert embedded == (runs.b / "evidence.json").read_bytes()
    assert EvidenceBundle.model_validate_json(embedded) == bundle(runs.b)
    xmp = reader.xmp_metadata
    assert xmp is not None
    xml = xmp.rdf_root.toxml()
    assert "pdfaid" in xml and ">3<" in xml.replace('"3"', ">3<") and "B" in xml
    assert "/AF" in reader.trailer["/Root"]


def test_rerender_of_a_stored_bundle_gives_the_same_text(runs: Runs, tmp_path: Path) -> None:
    from flows.cli import app

    out = tmp_path / "again.pdf"
    result = CliRunner().invoke(app, ["report", str(runs.b / "evidence.json"), "--output", str(out), "--html"])
    assert result.exit_code == 0, result.output
    assert pdf_text(out) == pdf_text(runs.b / "dossier.pdf")
    assert out.with_suffix(".html").read_text() == (runs.b / "dossier.html").read_text()


def test_html_is_self_contained_and_summary_is_markdown(runs: Runs) -> None:
    html = (runs.b / "dossier.html").read_text()
    assert 'src="http' not in html and 'src="file' not in html and "<link" not in html
    summary = (runs.b / "summary.md").read_text()
    assert summary.startswith("# Tiny assessment") and "| CLEAN |" in summary and "| NOISY |" in summary


def test_old_schema_v1_bundle_still_renders() -> None:
    ev = EvidenceBundle.model_validate_json((GOLDEN / "evidence_v1_before_integrity.json").read_text())
    html = render_html(ev)
    assert "11 History" in html and ev.provenance.assessment_id in html
    assert "Overall verdict" in render_markdown(ev)


def _svg(uri: str) -> str:
    return base64.b64decode(uri.split(",", 1)[1]).decode()


def test_heatmap_and_histogram_series_render_with_text_labels() -> None:
    rows = [Series(name=f"severity {s}", kind="heatmap", x_label="corruption index", y_label="accuracy",
                   x=[0.0, 1.0, 2.0], y=[0.9, 0.8 - s / 10, 0.5]) for s in (1, 2)]
    svg = _svg(chart_svg(rows, "heat"))
    assert "severity 1" in svg and "corruption index" in svg and "0.7" in svg
    hist = Series(name="h", kind="histogram", x_label="flip-probability bound", y_label="test samples",
                  x=[1e-4, 1e-3, 1e-2, 1e-1, 1.0], y=[3.0, 5.0, 1.0, 0.0, 2.0])
    svg = _svg(chart_svg([hist], "hist"))
    assert "flip-probability bound" in svg and "test samples" in svg
