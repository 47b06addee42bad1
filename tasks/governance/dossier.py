"""Step 'report': write the dossier from the evidence bundle, signed when the run is signed.

The renderer (``nnassay.reports``) only displays: it turns the bundle into HTML, PDF bytes and a
Markdown summary. Here the documents are written atomically, and a signed run's PDF embeds an
Ed25519 signature of its evidence and the public key beside the evidence, so the PDF alone can be
checked (``nnassay evidence verify dossier.pdf --public-key PUB``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nnassay.reports.junit import junit_xml
from nnassay.reports.render import (
    PDF_VARIANT,
    EmbeddedFile,
    evidence_attachment,
    render_html,
    render_markdown,
    render_pdf,
)
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.tasks.governance.integrity import (
    EVIDENCE_SIGNATURE,
    SIGNER_KEY,
    fingerprint,
    public_pem,
    sign_bytes,
)
from nnassay.tasks.io.files import write_atomic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class DossierFiles:
    """The dossier in its three forms, and the URLs the renderer refused to load."""

    pdf: Path
    html: Path | None
    markdown: Path | None
    refused: list[str]


def write_pdf(
    html: str,
    path: Path,
    *,
    attachments: list[EmbeddedFile] | None = None,
    pdf_variant: str | None = PDF_VARIANT,
) -> tuple[Path, list[str]]:
    """Render HTML to a PDF file atomically; return the path and the URLs the fetcher refused."""
    payload, refused = render_pdf(html, attachments=attachments, pdf_variant=pdf_variant)
    write_atomic(path, payload)
    return path, refused


def signature_attachments(
    ev: EvidenceBundle, evidence_json: bytes, key: Ed25519PrivateKey | None
) -> list[EmbeddedFile]:
    """A signature of the evidence bytes and the signer's public key, when ``key`` is the key the
    evidence names as signer; nothing otherwise."""
    if key is None or fingerprint(key.public_key()) != ev.provenance.signer_public_key_sha256:
        return []
    return [
        EmbeddedFile(
            EVIDENCE_SIGNATURE,
            sign_bytes(key, evidence_json),
            "Ed25519 signature (base64) of evidence.json",
            "text/plain",
            "Supplement",
        ),
        EmbeddedFile(
            SIGNER_KEY,
            public_pem(key.public_key()),
            "Ed25519 public key (PEM) of the signer",
            "application/x-pem-file",
            "Supplement",
        ),
    ]


def write_dossier(
    ev: EvidenceBundle,
    evidence_json: bytes,
    pdf: Path,
    *,
    run_dir: Path | None = None,
    html: Path | None = None,
    markdown: Path | None = None,
    signing_key: Ed25519PrivateKey | None = None,
) -> DossierFiles:
    """PDF/A-3 with the evidence embedded (and its signature for a signed run), plus optional
    self-contained HTML and Markdown summary. Pictures are read from ``run_dir``."""
    text = render_html(ev, run_dir)
    attachments = [
        evidence_attachment(ev, evidence_json),
        *signature_attachments(ev, evidence_json, signing_key),
    ]
    _, refused = write_pdf(text, pdf, attachments=attachments)
    if html is not None:
        write_atomic(html, text)
    if markdown is not None:
        write_atomic(markdown, render_markdown(ev))
    return DossierFiles(pdf, html, markdown, refused)


def write_junit(ev: EvidenceBundle, path: Path) -> Path:
    """The JUnit XML report of the bundle: one test case per goal."""
    return write_atomic(path, junit_xml(ev))
