"""The dossier PDF on its own: a PAdES-signed dossier verifies and every change after signing is
caught; an unsigned one is compared page by page with a fresh rendering of its evidence.

Each forgery is made the way an attacker would, with pypdf: a PASS stamp as an annotation, an
image merged onto a page, a glyph changed in a content stream, a picture blanked; each both as a
rewrite of the file and as an incremental update appended to it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.annotations import FreeText

from nnassay.reports.render import EmbeddedFile, render_html, render_pdf
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.results import ArtifactRef
from nnassay.tasks.governance.pdf_compare import compare_pages, rendered_revision
from nnassay.tasks.governance.pdf_keys import PdfSignatureError, key_fingerprint, self_signed_certificate
from nnassay.tasks.governance.pdf_signature import sign_pdf, verify_pdf_signature
from nnassay.tasks.io.files import sha256_bytes

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

GOLDEN = Path(__file__).parent / "golden"


@dataclass(frozen=True)
class Dossier:
    """One evidence bundle rendered twice, and the first rendering signed."""

    evidence_json: bytes
    pdf: bytes
    again: bytes
    key: Ed25519PrivateKey
    signed: bytes


def _render(ev: EvidenceBundle, folder: Path, evidence_json: bytes) -> bytes:
    attachments = [EmbeddedFile("evidence.json", evidence_json, "nnassay evidence bundle")]
    return render_pdf(render_html(ev, folder), attachments=attachments)[0]


@pytest.fixture(scope="module")
def dossier(tmp_path_factory: pytest.TempPathFactory) -> Dossier:
    """The golden bundle with one picture (so a picture can be blanked), rendered twice."""
    folder = tmp_path_factory.mktemp("dossier")
    buffer = io.BytesIO()
    Image.new("RGB", (40, 90), "navy").save(buffer, format="PNG")
    (folder / "pic.png").write_bytes(buffer.getvalue())
    picture = ArtifactRef(
        path="pic.png", sha256=sha256_bytes(buffer.getvalue()), media_type="image/png", caption="a sample"
    )
    ev = EvidenceBundle.model_validate_json((GOLDEN / "evidence_v1_before_integrity.json").read_text())
    ev = ev.model_copy(
        update={"results": [ev.results[0].model_copy(update={"artifacts": [picture]}), *ev.results[1:]]}
    )
    evidence_json = ev.model_dump_json().encode()
    pdf = _render(ev, folder, evidence_json)
    again = _render(ev, folder, evidence_json)
    key = Ed25519PrivateKey.generate()
    return Dossier(evidence_json, pdf, again, key, sign_pdf(pdf, key))


# ---------------------------------------------------------------- forgeries, as an attacker makes them


def _writer(pdf: bytes, incremental: bool) -> PdfWriter:
    if incremental:
        return PdfWriter(io.BytesIO(pdf), incremental=True)
    return PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))


def _written(writer: PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pass_stamp(pdf: bytes, incremental: bool) -> bytes:
    """A PASS stamp drawn over the first page as a FreeText annotation."""
    writer = _writer(pdf, incremental)
    writer.add_annotation(0, FreeText(text="PASS", rect=(400, 700, 550, 760), font_size="24pt"))
    return _written(writer)


def added_image(pdf: bytes, incremental: bool) -> bytes:
    """A small image merged onto the second page."""
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "green").save(buffer, format="PDF")
    writer = _writer(pdf, incremental)
    writer.pages[1].merge_page(PdfReader(buffer).pages[0])
    return _written(writer)


def changed_text(pdf: bytes, incremental: bool) -> bytes:
    """One glyph of the first page's title changed in its content stream (R -> S)."""
    writer = _writer(pdf, incremental)
    page = writer.pages[0]
    contents = page.get_contents()
    assert contents is not None
    data = contents.get_data()
    assert b"<0035>" in data
    contents.set_data(data.replace(b"<0035>", b"<0036>", 1))
    page.replace_contents(contents)
    return _written(writer)


def blanked_picture(pdf: bytes, incremental: bool) -> bytes:
    """The first picture replaced by a white one of the same size."""
    writer = _writer(pdf, incremental)
    for page in writer.pages:
        for image in page.images:
            assert image.image is not None
            image.replace(Image.new("RGB", image.image.size, "white"))
            return _written(writer)
    raise AssertionError("the dossier shows no picture")


Forgery = Callable[[bytes, bool], bytes]
FORGERIES: list[Forgery] = [pass_stamp, added_image, changed_text, blanked_picture]
WAYS = {"rewritten": False, "incremental": True}


# ---------------------------------------------------------------- signing and verifying


def test_signed_dossier_verifies_keeps_pdfa_and_its_evidence(dossier: Dossier, tmp_path: Path) -> None:
    check = verify_pdf_signature(dossier.signed)
    assert check.status == "intact" and check.exit_code == 0, check.problems
    assert check.signer_key_sha256 == key_fingerprint(dossier.key.public_key())
    assert any("checked only against the certificate the PDF carries" in n for n in check.notes)
    pub = tmp_path / "signer.pub"
    pub.write_bytes(dossier.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    assert verify_pdf_signature(dossier.signed, public_key=pub).status == "intact"
    cert = tmp_path / "signer.pem"
    cert.write_bytes(self_signed_certificate(dossier.key))
    trusted = verify_pdf_signature(dossier.signed, trusted_cert=cert)
    assert trusted.status == "intact" and not trusted.notes, trusted
    # an incremental update: the rendered revision stays in front, byte for byte
    assert dossier.signed.startswith(dossier.pdf)
    reader = PdfReader(io.BytesIO(dossier.signed))
    assert reader.attachments["evidence.json"] == [dossier.evidence_json]
    assert len(reader.pages) == len(PdfReader(io.BytesIO(dossier.pdf)).pages)
    assert reader.xmp_metadata is not None
    xmp = reader.xmp_metadata.stream.get_data().decode()
    assert 'pdfaid:part="3"' in xmp and 'pdfaid:conformance="B"' in xmp
    producer = str(reader.metadata["/Producer"]) if reader.metadata else ""
    assert f'pdf:Producer="{producer}"' in xmp  # Info and XMP agree, as PDF/A requires


def _issued(key: Ed25519PrivateKey, ca_key: Ed25519PrivateKey, ca_name: str) -> tuple[bytes, bytes]:
    """A CA certificate and a signer certificate it issued for ``key`` (PEM each)."""
    from datetime import UTC, datetime, timedelta

    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def cert(subject: str, public: Any, ca: bool) -> x509.Certificate:
        usage = x509.KeyUsage(True, True, False, False, False, ca, ca, False, False)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(ca_key, None)
        )

    return (
        cert(ca_name, ca_key.public_key(), True).public_bytes(Encoding.PEM),
        cert("assessor at example.org", key.public_key(), False).public_bytes(Encoding.PEM),
    )


def test_a_certificate_issued_by_a_ca_is_trusted_through_the_ca(dossier: Dossier, tmp_path: Path) -> None:
    ca_pem, leaf_pem = _issued(dossier.key, Ed25519PrivateKey.generate(), "example CA")
    signed = sign_pdf(dossier.pdf, dossier.key, certificate=leaf_pem + ca_pem)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    check = verify_pdf_signature(signed, trusted_cert=tmp_path / "ca.pem")
    assert check.status == "intact" and "assessor at example.org" in (check.signer_subject or ""), check
    other_ca, _ = _issued(dossier.key, Ed25519PrivateKey.generate(), "another CA")
    assert (
        verify_pdf_signature(signed, trusted_cert=x509.load_pem_x509_certificate(other_ca)).status
        == "tampered"
    )
    with pytest.raises(PdfSignatureError, match="another key"):
        sign_pdf(dossier.pdf, Ed25519PrivateKey.generate(), certificate=leaf_pem)


def test_an_ec_key_signs_too(dossier: Dossier) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    check = verify_pdf_signature(sign_pdf(dossier.pdf, key), public_key=key.public_key())
    assert check.status == "intact" and check.signer_key_sha256 == key_fingerprint(key.public_key())


def test_an_unsupported_key_type_is_refused_by_name(dossier: Dossier) -> None:
    with pytest.raises(PdfSignatureError, match="X25519PrivateKey cannot sign a PDF"):
        sign_pdf(dossier.pdf, X25519PrivateKey.generate())  # type: ignore[arg-type]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("forgery", FORGERIES, ids=lambda f: f.__name__)
def test_any_change_after_signing_is_tampering(dossier: Dossier, forgery: Forgery, way: str) -> None:
    forged = forgery(dossier.signed, WAYS[way])
    for check in (
        verify_pdf_signature(forged),
        verify_pdf_signature(forged, public_key=dossier.key.public_key()),
    ):
        assert check.status == "tampered" and check.exit_code == 1, (forgery.__name__, check)
        assert any("changed after signing" in p for p in check.problems)


def test_evidence_swapped_inside_a_signed_dossier_is_tampering(dossier: Dossier) -> None:
    writer = PdfWriter(io.BytesIO(dossier.signed), incremental=True)
    forged = dossier.evidence_json.replace(b'"overall":"fail"', b'"overall":"pass"')
    assert forged != dossier.evidence_json
    writer.add_attachment("evidence.json", forged)
    check = verify_pdf_signature(_written(writer), public_key=dossier.key.public_key())
    assert check.status == "tampered" and any("changed after signing" in p for p in check.problems)


def test_the_signed_revision_is_the_rendering_and_compares_equal(dossier: Dossier) -> None:
    assert rendered_revision(dossier.signed) == dossier.pdf
    assert compare_pages(rendered_revision(dossier.signed), dossier.again) == []
    assert compare_pages(dossier.signed, dossier.again)  # the signature's own update is a change


def test_a_dossier_rendered_again_without_its_signer_fails_against_a_trusted_key(dossier: Dossier) -> None:
    unsigned = dossier.again  # the signature removed: the evidence rendered again, not signed
    trusted_cert = x509.load_pem_x509_certificate(self_signed_certificate(dossier.key))
    for check in (
        verify_pdf_signature(unsigned, public_key=dossier.key.public_key()),
        verify_pdf_signature(unsigned, trusted_cert=trusted_cert),
        verify_pdf_signature(unsigned, declared_signer=key_fingerprint(dossier.key.public_key())),
    ):
        assert check.status == "tampered" and not check.signed, check
    alone = verify_pdf_signature(unsigned)
    assert alone.status == "unsigned" and alone.exit_code == 0 and alone.notes  # pages are compared instead


def test_a_signature_by_another_key_fails_against_the_trusted_one(dossier: Dossier) -> None:
    intruder = Ed25519PrivateKey.generate()
    forged = sign_pdf(pass_stamp(dossier.pdf, False), intruder)
    trusted_cert = x509.load_pem_x509_certificate(self_signed_certificate(dossier.key))
    for check in (
        verify_pdf_signature(forged, public_key=dossier.key.public_key()),
        verify_pdf_signature(forged, trusted_cert=trusted_cert),
        verify_pdf_signature(forged, declared_signer=key_fingerprint(dossier.key.public_key())),
    ):
        assert check.status == "tampered", check
        assert check.signer_key_sha256 == key_fingerprint(intruder.public_key())
    # without a key to trust, a valid signature by anyone is intact: the note says who signed
    alone = verify_pdf_signature(forged)
    assert alone.status == "intact" and key_fingerprint(intruder.public_key()) in alone.notes[0]


def _countersigned(pdf: bytes, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A second signature in a new field, made with pyHanko directly and its DocMDP check switched
    off, as an attacker would patch a tool (``sign_pdf`` and pyHanko both refuse)."""
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    cert = asn1_x509.Certificate.load(
        x509.load_pem_x509_certificate(self_signed_certificate(key)).public_bytes(Encoding.DER)
    )
    der_key = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    signer = signers.SimpleSigner(
        signing_cert=cert,
        signing_key=asn1_keys.PrivateKeyInfo.load(der_key),
        cert_registry=SimpleCertificateStore.from_certs([cert]),
    )
    monkeypatch.setattr(signers.PdfSigner, "_enforce_certification_constraints", lambda self, reader: None)
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    return signers.sign_pdf(
        writer, signers.PdfSignatureMetadata(field_name="auditor"), signer=signer
    ).getvalue()


def test_a_second_signature_over_a_changed_dossier_is_tampering(
    dossier: Dossier, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PdfSignatureError, match="signed already"):
        sign_pdf(dossier.signed, dossier.key)
    countersigned = _countersigned(
        pass_stamp(dossier.signed, True), Ed25519PrivateKey.generate(), monkeypatch
    )
    check = verify_pdf_signature(countersigned)
    assert check.status == "tampered"
    assert any("2 signatures" in p for p in check.problems)
    assert any("changed after signing" in p for p in check.problems)


def test_signing_and_verifying_work_inside_a_running_event_loop(dossier: Dossier) -> None:
    async def inside() -> str:
        signed = sign_pdf(dossier.pdf, dossier.key)
        return verify_pdf_signature(signed, public_key=dossier.key.public_key()).status

    assert asyncio.run(inside()) == "intact"


def test_a_file_that_is_not_a_pdf_is_unreadable() -> None:
    check = verify_pdf_signature(b"not a pdf at all")
    assert check.status == "unreadable" and check.exit_code == 2


# ---------------------------------------------------------------- an unsigned dossier, page by page


def test_two_renderings_of_the_same_evidence_compare_equal(dossier: Dossier) -> None:
    assert dossier.pdf != dossier.again  # WeasyPrint stamps dates into attachments and fonts
    assert compare_pages(dossier.pdf, dossier.again) == []


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    ("forgery", "words"),
    [
        (pass_stamp, "annotation"),
        (added_image, "image"),
        (changed_text, "the page shows '…Sobustness"),
        (blanked_picture, "image"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_every_page_change_is_reported(dossier: Dossier, forgery: Forgery, words: str, way: str) -> None:
    differences = compare_pages(forgery(dossier.pdf, WAYS[way]), dossier.again)
    assert any(words in d for d in differences), differences
    if WAYS[way]:
        assert any("changed after rendering (incremental update)" in d for d in differences), differences


def test_the_stamp_and_picture_are_described(dossier: Dossier) -> None:
    stamped = compare_pages(pass_stamp(dossier.pdf, False), dossier.again)
    assert any("page 1: annotation" in d and "added" in d and "'PASS'" in d for d in stamped), stamped
    blanked = compare_pages(blanked_picture(dossier.pdf, True), dossier.again)
    assert any("image" in d and "changed" in d and "stream sha256" in d for d in blanked), blanked


def test_a_removed_page_is_reported(dossier: Dossier) -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(dossier.pdf)))
    writer.remove_page(len(writer.pages) - 1)
    differences = compare_pages(_written(writer), dossier.again)
    assert any("pages where a rendering of its evidence has" in d for d in differences), differences
