"""Render the dossier from an evidence bundle alone: HTML via Jinja, PDF via WeasyPrint.

Templates only display: rounding, sorting and wording happen here, in ``ReportView``. The PDF
renderer may load only the project's own assets (templates folder) and inline data URIs. Nothing
here writes files or holds keys: attachments (the evidence, a signature) arrive as bytes, and
``nnassay.tasks.governance.dossier`` writes the documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from nnassay.reports.view import ReportView, build_view, fmt_claim, fmt_criterion, fmt_measure, fmt_threat
from nnassay.schemas.evidence import EvidenceBundle

TEMPLATES = Path(__file__).resolve().parent / "templates"
PDF_VARIANT = "pdf/a-3b"  # archival PDF that may carry the evidence JSON as an embedded file
__all__ = [
    "fmt_measure",
    "fmt_threat",
    "build_view",
    "ReportView",
    "render_html",
    "render_markdown",
    "render_pdf",
    "EmbeddedFile",
    "evidence_attachment",
]


@dataclass(frozen=True)
class EmbeddedFile:
    """A file embedded in the PDF, given as bytes (never fetched from a path or URL)."""

    name: str
    payload: bytes
    description: str
    media_type: str = ""  # MIME type written as the embedded file's /Subtype; empty: from the name
    relationship: str = "Source"  # PDF/A-3 AFRelationship: the data the document is rendered from

    @property
    def mime(self) -> str:
        """The declared MIME type, else the one of the name's suffix (MEDIA_TYPES), else octet-stream."""
        return self.media_type or MEDIA_TYPES.get(Path(self.name).suffix.lower(), "application/octet-stream")


MEDIA_TYPES = {  # by suffix: what an auditor's PDF reader shows and opens attachments with
    ".json": "application/json",
    ".png": "image/png",
    ".md": "text/markdown",
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".sig": "text/plain",
    ".pub": "application/x-pem-file",
    ".pem": "application/x-pem-file",
    ".html": "text/html",
    ".xml": "application/xml",
    ".csv": "text/csv",
    ".yaml": "application/yaml",
    ".npz": "application/octet-stream",
}


def _attachment_finisher(files: list[EmbeddedFile]) -> Any:
    """A WeasyPrint finisher: each embedded file's /Subtype is its MIME type (WeasyPrint guesses from
    the name), and the catalog's /AF lists each file once (WeasyPrint adds each twice)."""
    import hashlib

    by_checksum = {f"<{hashlib.md5(a.payload, usedforsecurity=False).hexdigest()}>": a.mime for a in files}

    def finish(document: Any, pdf: Any) -> None:
        for obj in pdf.objects:
            if isinstance(obj, dict) and obj.get("Type") == "/Filespec" and "EF" in obj:
                stream = pdf.objects[int(obj["EF"]["F"].split()[0])]  # b"12 0 R", as WeasyPrint reads it
                mime = by_checksum.get(stream.extra["Params"]["CheckSum"])
                if mime:
                    stream.extra["Subtype"] = "/" + mime.replace("/", "#2f")
        listed = pdf.catalog.get("AF")
        if listed:
            unique = list({_ref_key(ref): ref for ref in listed}.values())  # first-seen order
            listed.clear()
            listed.extend(unique)

    return finish


def _ref_key(ref: Any) -> str:
    return ref.decode() if isinstance(ref, bytes) else str(ref)


def environment(*, markdown: bool = False) -> Environment:
    """Jinja environment: autoescaped (Markdown: by the template's cell macro), strict about undefined
    names, project templates only."""
    escape = select_autoescape(["html", "j2"]) if not markdown else False
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=escape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["measure"] = fmt_measure
    env.filters["threat"] = fmt_threat
    env.filters["criterion"] = fmt_criterion
    env.filters["claim"] = fmt_claim
    env.filters["md_cell"] = md_cell
    return env


_ENTITY = re.compile(r"&(?=#?\w+;)")  # '&' that would start a character reference
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # '<' that would open an HTML tag, comment or autolink


def md_cell(text: object) -> str:
    """Text safe inside one Markdown table cell: no HTML tag, entity or autolink can start (those
    '<' and '&' are escaped), '|' cannot split the cell, newlines cannot end it. Plain comparisons
    such as '<=' or 'a < b' stay readable instead of showing as '&lt;='."""
    out = _TAG.sub("&lt;", _ENTITY.sub("&amp;", str(text)))
    return out.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def render_html(ev: EvidenceBundle, run_dir: Path | None = None) -> str:
    """The dossier as one self-contained HTML document."""
    return _render_view(build_view(ev, run_dir), ev)


def _render_view(view: ReportView, ev: EvidenceBundle) -> str:
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


def render_pdf(
    html: str, *, attachments: list[EmbeddedFile] | None = None, pdf_variant: str | None = PDF_VARIANT
) -> tuple[bytes, list[str]]:
    """Render HTML to PDF bytes in memory; return them and the URLs the fetcher refused.

    Attachments are passed as bytes, so the fetcher never opens a file or URL for them.
    """
    import logging

    from weasyprint import HTML, Attachment

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    fetcher = _fetcher_class()()
    document = HTML(string=html, base_url=TEMPLATES.as_uri() + "/", url_fetcher=fetcher)
    extra = [
        Attachment(
            string=a.payload,
            name=a.name,
            description=a.description,
            url_fetcher=fetcher,
            relationship=a.relationship,
        )
        for a in attachments or []
    ]
    options: dict[str, Any] = {"attachments": extra} if extra else {}
    if pdf_variant:
        options["pdf_variant"] = pdf_variant
    finisher = _attachment_finisher(attachments or [])
    return document.write_pdf(finisher=finisher, **options), list(fetcher.refused)


def evidence_attachment(ev: EvidenceBundle, evidence_json: bytes) -> EmbeddedFile:
    """The evidence bundle's bytes as the PDF/A-3 source file of the dossier."""
    return EmbeddedFile(
        "evidence.json", evidence_json, f"nnassay evidence bundle of assessment {ev.provenance.assessment_id}"
    )
