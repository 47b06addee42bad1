"""Render the dossier from an evidence bundle alone: HTML via Jinja, PDF via WeasyPrint.

Templates only display: rounding, sorting and wording happen here, in ``ReportView``. The PDF
renderer may load only the project's own assets (templates folder) and inline data URIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reports.view import ReportView, build_view, fmt_criterion, fmt_measure, fmt_threat
from schemas.evidence import EvidenceBundle
from tasks.files import write_atomic

TEMPLATES = Path(__file__).resolve().parent / "templates"
PDF_VARIANT = "pdf/a-3b"  # archival PDF that may carry the evidence JSON as an embedded file
__all__ = ["fmt_measure", "fmt_threat", "build_view", "ReportView", "render_html", "render_markdown",
           "write_pdf", "write_dossier", "EmbeddedFile"]


@dataclass(frozen=True)
class EmbeddedFile:
    """A file embedded in the PDF, given as bytes (never fetched from a path or URL)."""

    name: str
    payload: bytes
    description: str
    media_type: str = "application/json"
    relationship: str = "Source"  # PDF/A-3 AFRelationship: the data the document is rendered from


def environment(*, markdown: bool = False) -> Environment:
    """Jinja environment: autoescaped (Markdown: by the template's cell macro), strict about undefined
    names, project templates only."""
    escape = select_autoescape(["html", "j2"]) if not markdown else False
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=escape,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    env.filters["measure"] = fmt_measure
    env.filters["threat"] = fmt_threat
    env.filters["criterion"] = fmt_criterion
    return env


def render_html(ev: EvidenceBundle, run_dir: Path | None = None) -> str:
    """The dossier as one self-contained HTML document."""
    view = build_view(ev, run_dir)
    css = (TEMPLATES / "report.css").read_text()
    return environment().get_template("report.html.j2").render(v=view, ev=ev, css=css)


def render_markdown(ev: EvidenceBundle) -> str:
    """A short Markdown summary (MLflow run, Prefect artifact): verdicts, residual risk, digests."""
    view = build_view(ev, None)
    return environment(markdown=True).get_template("summary.md.j2").render(v=view, ev=ev)


def _fetcher_class() -> type:
    from weasyprint.urls import URLFetcher

    class AssetFetcher(URLFetcher):
        """Fetch only data URIs and files inside the templates folder; refuse everything else."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.refused: list[str] = []

        def fetch(self, url: str, headers: Any = None) -> Any:
            if url.startswith("data:") or _inside_templates(url):
                return super().fetch(url, headers)
            self.refused.append(url)
            raise ValueError(f"nnassay reports load only their own assets, refused {url[:200]}")

    return AssetFetcher


def _inside_templates(url: str) -> bool:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme != "file":
        return False
    return Path(unquote(parsed.path)).resolve().is_relative_to(TEMPLATES)


def write_pdf(html: str, path: Path, *, attachments: list[EmbeddedFile] | None = None,
              pdf_variant: str | None = PDF_VARIANT) -> tuple[Path, list[str]]:  # fmt: skip
    """Render HTML to a PDF atomically; return the path and the URLs the fetcher refused.

    Attachments are passed as bytes, so the fetcher never opens a file or URL for them.
    """
    import logging

    from weasyprint import HTML, Attachment

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    fetcher = _fetcher_class()()
    document = HTML(string=html, base_url=TEMPLATES.as_uri() + "/", url_fetcher=fetcher)
    extra = [Attachment(string=a.payload, name=a.name, description=a.description, url_fetcher=fetcher,
                        relationship=a.relationship) for a in attachments or []]  # fmt: skip
    options: dict[str, Any] = {"attachments": extra} if extra else {}
    if pdf_variant:
        options["pdf_variant"] = pdf_variant
    payload = document.write_pdf(**options)
    write_atomic(path, payload)
    return path, list(fetcher.refused)


@dataclass(frozen=True)
class DossierFiles:
    """The dossier in its three forms, and the URLs the renderer refused to load."""

    pdf: Path
    html: Path | None
    markdown: Path | None
    refused: list[str]


def write_dossier(ev: EvidenceBundle, evidence_json: bytes, pdf: Path, *, run_dir: Path | None = None,
                  html: Path | None = None, markdown: Path | None = None) -> DossierFiles:  # fmt: skip
    """PDF/A-3 with the evidence embedded, plus optional self-contained HTML and Markdown summary."""
    text = render_html(ev, run_dir)
    embedded = EmbeddedFile("evidence.json", evidence_json,
                            f"nnassay evidence bundle of assessment {ev.provenance.assessment_id}")
    _, refused = write_pdf(text, pdf, attachments=[embedded])
    if html is not None:
        write_atomic(html, text)
    if markdown is not None:
        write_atomic(markdown, render_markdown(ev))
    return DossierFiles(pdf, html, markdown, refused)
