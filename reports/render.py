"""Render the dossier from an evidence bundle alone: HTML via Jinja, PDF via WeasyPrint.

Templates only display: rounding, sorting and wording happen here, in ``ReportView``. The PDF
renderer may load only the project's own assets (templates folder) and inline data URIs. Nothing
here writes files or holds keys: attachments (the evidence, a signature) arrive as bytes, and
``nnassay.tasks.governance.dossier`` writes the documents.
"""

from __future__ import annotations

import base64
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
    "compare_text",
    "pdf_text",
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
    return env


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


def pdf_text(payload: bytes) -> str:
    """The text of every page of a PDF, as pypdf extracts it, pages joined by newlines."""
    import io

    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(payload)).pages)


def _pdf_images(payload: bytes) -> list[str]:
    """The raster images of a PDF once each, in the order the renderer added them (document order),
    as PNG data URIs. Pages share their resources, so each image is decoded once."""
    import io

    from pypdf import PdfReader

    seen: set[str] = set()
    resources: set[int | None] = set()
    found = []
    for page in PdfReader(io.BytesIO(payload)).pages:
        key = getattr(page.raw_get("/Resources"), "idnum", None)
        if key is not None and key in resources:
            continue  # the renderer shares one resource dictionary between pages: decode it once
        resources.add(key)
        for image in page.images:
            if image.name in seen:
                continue
            seen.add(image.name)
            buffer = io.BytesIO()
            assert image.image is not None, f"image {image.name} cannot be decoded"
            image.image.save(buffer, format="PNG")
            found.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return found


def compare_text(ev: EvidenceBundle, payload: bytes) -> str | None:
    """Compare a dossier PDF's text with a fresh rendering of the evidence bundle it carries.

    Pictures are taken from the PDF itself (only their size shapes the layout), matched to the
    bundle's picture artifacts by document order, skipping the rasters inside charts; so the PDF
    alone suffices. Whitespace is ignored. Returns None when equal, else where the texts first
    differ. Raises ValueError when the PDF's pictures cannot be matched to the bundle.
    """
    view = build_view(ev, None, pictures=lambda a: "")
    slots: list[tuple[Any, int] | None] = []  # (result view, picture index) per raster; None: in a chart
    for family in view.families:
        for r in family.results:
            for chart in r.charts:
                slots += [None] * base64.b64decode(chart.split(",", 1)[1]).count(b"<image")
            slots += [(r, i) for i in range(len(r.pictures))]
    images = _pdf_images(payload)
    if len(images) != len(slots):
        raise ValueError(
            f"the PDF holds {len(images)} raster images where the evidence's charts and "
            f"pictures make {len(slots)}"
        )
    for slot, uri in zip(slots, images, strict=True):
        if slot is not None:
            r, i = slot
            r.pictures[i] = (uri, r.pictures[i][1])
    fresh = pdf_text(render_pdf(_render_view(view, ev), pdf_variant=None)[0])  # text as in PDF/A
    shown = pdf_text(payload)
    a, b = "".join(shown.split()), "".join(fresh.split())
    if a == b:
        return None
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"the document shows '…{a[max(0, at - 40) : at + 40]}…' where the evidence renders '…{b[max(0, at - 40) : at + 40]}…'"
