"""User strings are escaped; the renderer loads only its own assets; attachments need no fetching."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader
from records_runs import HOSTILE, Runs, assessed

from nnassay.reports.render import EmbeddedFile, render_html
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.tasks.governance.dossier import write_pdf


@pytest.fixture(scope="module")
def runs(image_case) -> Runs:  # type: ignore[no-untyped-def]
    return assessed(image_case)


def test_hostile_goal_statement_is_escaped_and_nothing_is_fetched(runs: Runs, tmp_path: Path) -> None:
    payload = (runs.a / "evidence.json").read_bytes()
    ev = EvidenceBundle.model_validate_json(payload)
    assert ev.spec.goals[0].statement == HOSTILE
    html = render_html(ev, runs.a)
    assert '<img src="file:///etc/passwd">' not in html and "<script>alert" not in html
    assert "&lt;img src=&#34;file:///etc/passwd&#34;&gt;" in html
    assert "&lt;img src=&#34;http://example.com/x.png&#34;&gt;" in html
    pdf, refused = write_pdf(
        html, tmp_path / "d.pdf", attachments=[EmbeddedFile("evidence.json", payload, "e")]
    )
    assert refused == []
    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages).replace("\n", "")
    assert '<img src="file:///etc/passwd">' in text and '<img src="http://example.com/x.png">' in text


def test_stored_html_and_markdown_are_escaped(runs: Runs) -> None:
    assert '<img src="file:///etc/passwd">' not in (runs.a / "dossier.html").read_text()
    assert '<img src="file' not in (runs.a / "summary.md").read_text()


def test_fetcher_refuses_files_and_remote_urls(tmp_path: Path) -> None:
    html = (
        '<html><body><p>x</p><img src="file:///etc/passwd"><img src="http://example.com/x.png">'
        '<link rel="stylesheet" href="https://example.com/a.css"></body></html>'
    )
    _, refused = write_pdf(html, tmp_path / "x.pdf", pdf_variant=None)
    assert "file:///etc/passwd" in refused and "http://example.com/x.png" in refused
    assert "https://example.com/a.css" in refused
