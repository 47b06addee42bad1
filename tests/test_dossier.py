"""The dossier: every section and goal as text, embedded evidence, PDF/A-3, re-rendering, charts."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pypdf import PdfReader
from records_runs import Runs, assessed
from typer.testing import CliRunner

from nnassay.reports.charts import chart_svg
from nnassay.reports.render import render_html, render_markdown
from nnassay.reports.view import SECTION_TITLES
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.results import Series

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

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
    for needle in (
        "(uncertain)",
        "[S]",
        "[C]",
        "Residual risk",
        "A.6.2.4",
        "Art. 15(5)",
        "MEASURE 2.6",
        ev.provenance.assessment_id,
        ev.provenance.signer_public_key_sha256[:20],
        "A. Assessor",
        "B. Approver",
        "models:/tiny-model/1",
    ):
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
    from nnassay.flows.cli.app import app

    out = tmp_path / "again.pdf"
    result = CliRunner().invoke(
        app, ["report", str(runs.b / "evidence.json"), "--output", str(out), "--html"]
    )
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
    rows = [
        Series(
            name=f"severity {s}",
            kind="heatmap",
            x_label="corruption index",
            y_label="accuracy",
            x=[0.0, 1.0, 2.0],
            y=[0.9, 0.8 - s / 10, 0.5],
        )
        for s in (1, 2)
    ]
    svg = _svg(chart_svg(rows, "heat"))
    assert "severity 1" in svg and "corruption index" in svg and "0.7" in svg
    hist = Series(
        name="h",
        kind="histogram",
        x_label="flip-probability bound",
        y_label="test samples",
        x=[1e-4, 1e-3, 1e-2, 1e-1, 1.0],
        y=[3.0, 5.0, 1.0, 0.0, 2.0],
    )
    svg = _svg(chart_svg([hist], "hist"))
    assert "flip-probability bound" in svg and "test samples" in svg


def test_claims_are_worded_by_kind_with_their_confidence() -> None:
    from nnassay.reports.view import fmt_claim
    from nnassay.schemas.common import ClaimKind, Interval, Measurement

    interval = Interval(low=0.8, high=0.9, confidence=0.9, method="clopper-pearson")
    words = {kind: fmt_claim(Measurement(value=0.85, interval=interval, claim=kind)) for kind in ClaimKind}
    for kind in (ClaimKind.BOUND, ClaimKind.ESTIMATE, ClaimKind.OBSERVATION):  # one interval kind, one word
        assert (
            words[kind].startswith("estimate with a 90% clopper-pearson") and "not a guarantee" in words[kind]
        )
    assert (
        words[ClaimKind.PROOF].startswith("bound") and "proved by a sound verifier" in words[ClaimKind.PROOF]
    )
    assert words[ClaimKind.CERTIFICATE].startswith("bound") and "certified" in words[ClaimKind.CERTIFICATE]
    assert "90% clopper-pearson interval is an estimate" in words[ClaimKind.PROOF]
    assert (
        fmt_claim(Measurement(value=0.85, interval=interval, claim=ClaimKind.BOUND), short=True)
        == "estimate (90% interval)"
    )
    assert "no interval" in fmt_claim(Measurement(value=0.85, claim=ClaimKind.ESTIMATE))
    assert fmt_claim(Measurement(value=0.85, claim=ClaimKind.OBSERVATION)).startswith("observation")


def test_pdf_shows_parameters_as_text_not_json_and_claims_in_the_summary(runs: Runs) -> None:
    text = pdf_text(runs.b / "dossier.pdf")
    flat = " ".join(text.split())
    params = [line for line in text.splitlines() if line.startswith("Parameters:")]
    assert params and not any("{" in line or '"' in line for line in params), params
    assert "Kind of claim" in flat and "estimate (95% interval)" in flat
    assert "Reproduce with" in flat and "pip install -c constraints.txt -e ." in flat


def test_bar_categories_are_named_and_grouped() -> None:
    label = "case (0=nan, 1=pos_inf, 2=out_of_range)"
    bars = [
        Series(name=n, kind="bar", x_label=label, y_label="rate", x=[0.0, 1.0, 2.0], y=[1.0, 0.5, 0.2])
        for n in ("confident answers", "crashes")
    ]
    svg = _svg(chart_svg(bars, "bars"))
    assert "pos_inf" in svg and "out_of_range" in svg and "0=nan" not in svg


def test_reproduce_command_names_the_folder_it_ran_in() -> None:
    from nnassay.reports.view import reproduce_command

    ev = EvidenceBundle.model_validate_json((GOLDEN / "evidence_v1_before_integrity.json").read_text())
    p = ev.provenance.model_copy(
        update={
            "command": "nnassay assess specs/a.yaml --output run",
            "spec_path": "/srv/work/specs/a.yaml",
            "extra": {},
        }
    )
    _, command = reproduce_command(ev.model_copy(update={"provenance": p}))
    assert command == "nnassay assess specs/a.yaml --output run   # run from the project folder"
    p = p.model_copy(update={"extra": {"cwd": "/home/x y"}})  # the spec lies outside the folder it ran in
    command = reproduce_command(ev.model_copy(update={"provenance": p}))[1]
    assert command.startswith("nnassay assess a.yaml ") and command.endswith("# run from the spec's folder")
    assert "/home" not in command and "/srv" not in command


def test_residual_statement_groups_open_risks_by_verdict() -> None:
    from nnassay.reports.view import residual_statement
    from nnassay.schemas.common import Verdict

    ev = EvidenceBundle.model_validate_json((GOLDEN / "evidence_v1_before_integrity.json").read_text())
    verdicts = [
        v.model_copy(update={"verdict": Verdict.FAIL if i == 0 else Verdict.INCONCLUSIVE})
        for i, v in enumerate(ev.verdicts)
    ]
    text = residual_statement(ev.model_copy(update={"verdicts": verdicts}))
    assert "above the declared tolerance" in text and "Not yet determined" in text
    assert "(undetermined)" not in text and ev.verdicts[0].goal_id in text


def test_pictures_per_sample_rows_and_a_pdf_alone_compare(tmp_path: Path) -> None:
    """A bundle with a picture, a heat map (a raster inside a chart) and per-sample rows: all shown,
    and the PDF alone re-renders to the same text, while a forged page is found."""
    import io

    from PIL import Image

    from nnassay.schemas.results import ArtifactRef
    from nnassay.tasks.governance.dossier import dossier_attachments, rerender, write_pdf
    from nnassay.tasks.governance.pdf_compare import compare_pages
    from nnassay.tasks.governance.pdf_verify import embedded_files
    from nnassay.tasks.io.files import sha256_bytes

    ev = EvidenceBundle.model_validate_json((GOLDEN / "evidence_v1_before_integrity.json").read_text())
    buffer = io.BytesIO()
    Image.new("RGB", (40, 90), "white").save(buffer, format="PNG")
    (tmp_path / "pic.png").write_bytes(buffer.getvalue())
    picture = ArtifactRef(
        path="pic.png",
        sha256=sha256_bytes(buffer.getvalue()),
        media_type="image/png",
        caption="original next to perturbed",
    )
    heat = [
        Series(
            name=f"c{i}",
            kind="heatmap",
            x_label="severity",
            y_label="accuracy",
            x=[1.0, 2.0],
            y=[0.9, 0.5 + i / 10],
        )
        for i in range(2)
    ]
    rows = [{"index": i, "verdict": "robust" if i % 2 else "falsified", "time_s": 0.5} for i in range(30)]
    result = ev.results[0].model_copy(
        update={
            "artifacts": [picture],
            "series": [*ev.results[0].series, *heat],
            "details": {"per_sample": rows},
        }
    )
    ev = ev.model_copy(update={"results": [result, *ev.results[1:]]})
    html = render_html(ev, tmp_path)
    assert "original next to perturbed" in html and "NOT SHOWN" not in html
    assert "First 25 of 30 samples shown" in html and "falsified" in html
    payload = ev.model_dump_json().encode()
    attachments = dossier_attachments(
        ev, payload, [], tmp_path
    )  # evidence and pictures, as a run embeds them
    pdf, _ = write_pdf(html, tmp_path / "d.pdf", attachments=attachments)
    embedded = embedded_files(pdf.read_bytes())
    assert compare_pages(pdf.read_bytes(), rerender(ev, payload, embedded)) == []  # the PDF alone compares
    forged = ev.model_copy(
        update={"verdicts": [ev.verdicts[0].model_copy(update={"reason": "all fine"}), *ev.verdicts[1:]]}
    )
    pdf, _ = write_pdf(render_html(forged, tmp_path), tmp_path / "f.pdf", attachments=attachments)
    differences = compare_pages(pdf.read_bytes(), rerender(ev, payload, embedded))
    assert differences and any("allfine" in d for d in differences), differences  # whitespace dropped
