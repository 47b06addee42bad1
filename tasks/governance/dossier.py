"""Step 'report': write the dossier from the evidence bundle, signed when the run is signed.

The renderer (``nnassay.reports``) only displays: it turns the bundle into HTML, PDF bytes and a
Markdown summary. Here the documents are written atomically. The PDF embeds the evidence and every
picture it shows (each checked against its digest in the evidence), so it can be rendered again
from itself alone and compared page by page (``rerender``). A signed run's PDF also embeds an
Ed25519 signature of its evidence and the public key, and is then signed as a whole with a PAdES
signature (``pdf_signature``), so any change after signing is found
(``nnassay evidence verify dossier.pdf --public-key PUB``).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nnassay.reports.junit import junit_xml
from nnassay.reports.pictures import dossier_pictures
from nnassay.reports.render import (
    PDF_VARIANT,
    EmbeddedFile,
    evidence_attachment,
    render_html,
    render_markdown,
    render_pdf,
)
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.results import ArtifactRef
from nnassay.tasks.governance.integrity import (
    EVIDENCE_SIGNATURE,
    SIGNER_KEY,
    fingerprint,
    public_pem,
    sign_bytes,
)
from nnassay.tasks.governance.pdf_signature import sign_pdf_file
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
    return _signature_files(
        {EVIDENCE_SIGNATURE: sign_bytes(key, evidence_json), SIGNER_KEY: public_pem(key.public_key())}
    )


def _signature_files(payloads: Mapping[str, bytes]) -> list[EmbeddedFile]:
    """The embedded signature files among ``payloads`` (by name), described as a signed run embeds them."""
    return [
        EmbeddedFile(name, payloads[name], description, media_type, "Supplement")
        for name, description, media_type in (
            (EVIDENCE_SIGNATURE, "Ed25519 signature (base64) of evidence.json", "text/plain"),
            (SIGNER_KEY, "Ed25519 public key (PEM) of the signer", "application/x-pem-file"),
        )
        if name in payloads
    ]


PICTURE_PREFIX = "picture--"  # embedded picture files: the prefix, then the artifact path with / as __


def picture_name(artifact: ArtifactRef) -> str:
    """The name of a picture's embedded file in the dossier."""
    return PICTURE_PREFIX + artifact.path.replace("/", "__")


def picture_artifacts(ev: EvidenceBundle) -> list[ArtifactRef]:
    """The pictures the dossier shows (PNG artifacts of the results and explanations), once each."""
    found: dict[str, ArtifactRef] = {}
    for artifact in dossier_pictures(ev):  # results' PNG artifacts, then the explanations' pictures
        found.setdefault(picture_name(artifact), artifact)
    return list(found.values())


def picture_attachments(ev: EvidenceBundle, run_dir: Path | None) -> list[EmbeddedFile]:
    """Each picture file of ``run_dir`` whose digest is the one its evidence records, to embed: the
    same pictures the pages show (a missing or changed file is neither shown nor embedded)."""
    if run_dir is None:
        return []
    root = run_dir.resolve()
    found = []
    for artifact in picture_artifacts(ev):
        path = (root / artifact.path).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            continue
        payload = path.read_bytes()
        if hashlib.sha256(payload).hexdigest() == artifact.sha256:
            found.append(
                EmbeddedFile(
                    picture_name(artifact),
                    payload,
                    f"picture {artifact.path} shown in the dossier (sha256 {artifact.sha256})",
                    "image/png",
                    "Supplement",
                )
            )
    return found


def dossier_attachments(
    ev: EvidenceBundle, evidence_json: bytes, signature: list[EmbeddedFile], run_dir: Path | None
) -> list[EmbeddedFile]:
    """Everything the dossier embeds, in order: the evidence, its signature files, the pictures."""
    return [evidence_attachment(ev, evidence_json), *signature, *picture_attachments(ev, run_dir)]


def write_dossier(
    ev: EvidenceBundle,
    evidence_json: bytes,
    pdf: Path,
    *,
    run_dir: Path | None = None,
    html: Path | None = None,
    markdown: Path | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    certificate: Path | None = None,
) -> DossierFiles:
    """PDF/A-3 with the evidence and the pictures it shows embedded, plus optional self-contained
    HTML and Markdown summary. Pictures are read from ``run_dir``. With ``signing_key`` the PDF
    also embeds a signature of the evidence and is then PAdES-signed as a whole (with
    ``certificate``, else a self-signed certificate made from the key)."""
    text = render_html(ev, run_dir)
    signature = signature_attachments(ev, evidence_json, signing_key)
    _, refused = write_pdf(text, pdf, attachments=dossier_attachments(ev, evidence_json, signature, run_dir))
    if signing_key is not None:
        sign_pdf_file(pdf, signing_key, certificate=certificate)
    if html is not None:
        write_atomic(html, text)
    if markdown is not None:
        write_atomic(markdown, render_markdown(ev))
    return DossierFiles(pdf, html, markdown, refused)


def rerender(ev: EvidenceBundle, evidence_json: bytes, embedded: Mapping[str, bytes]) -> bytes:
    """The dossier PDF as rendered again from its embedded files alone: the evidence, its signature
    files as embedded (checked elsewhere), and the embedded pictures, each used only when its digest
    is the one the evidence records (as the original rendering did with the run folder's files)."""
    signature = _signature_files(embedded)
    with tempfile.TemporaryDirectory(prefix="nnassay-rerender-") as folder:
        root = Path(folder).resolve()
        for artifact in picture_artifacts(ev):
            target = (root / artifact.path).resolve()
            payload = embedded.get(picture_name(artifact))
            if payload is None or not target.is_relative_to(root) or target == root:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload)
        text = render_html(ev, root)
        attachments = dossier_attachments(ev, evidence_json, signature, root)
        return render_pdf(text, attachments=attachments, pdf_variant=PDF_VARIANT)[0]


def write_junit(ev: EvidenceBundle, path: Path) -> Path:
    """The JUnit XML report of the bundle: one test case per goal."""
    return write_atomic(path, junit_xml(ev))
