"""Forgeries of an assessment's records, each made as an attacker would, each caught by verification.

Two tiny assessments (one signed, one unsigned) with a picture-producing attack goal and a
domain-shift goal; every test copies what it tampers with. The dossier PDF on its own: a PASS
stamp (signed and unsigned), an added image, a blanked picture, a text change, a re-rendering
without the signer, changed evidence with the signer kept. The run folder: an added result, an
added dot-file, replaced shift data. The copies: an MLflow artifact, a cached result, a pickle
planted in the result cache (never loaded; the test is computed again and the evidence says so).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pypdf import PdfReader, PdfWriter
from test_pdf_signature import _issued, added_image, blanked_picture, pass_stamp
from typer.testing import CliRunner

from conftest import TinyCase, goal, write_spec
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.tasks.governance.integrity import Verification, VerifyOptions, generate_key, verify

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

OFFLINE = VerifyOptions(use_tracker=False)


@dataclass(frozen=True)
class Made:
    """The assessments shared by the tests."""

    root: Path
    spec: Path
    shift: Path
    uri: str
    key: Path
    pub: Path
    signed: Path
    unsigned: Path


def _assess(spec: Path, out: Path, uri: str, *extra: str) -> Any:
    from nnassay.flows.cli.app import app

    args = ["assess", str(spec), "--output", str(out), "--mlflow-uri", uri, "--cpu", *extra]
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def made(harness: None, image_case: TinyCase, tmp_path_factory: pytest.TempPathFactory) -> Made:
    root = tmp_path_factory.mktemp("forgeries")
    with np.load(image_case.data) as data:
        x, y = data["x"], data["y"]
    shift = root / "shift.npz"
    np.savez(shift, x=np.clip(x + 0.05, 0.0, 1.0).astype(np.float32), y=y)
    goals = [
        goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
        goal(
            "ATTACK",
            {"kind": "linf_ball", "eps": 0.05},
            "robust_accuracy",
            ">=",
            0.0,
            methods=[{"name": "empirical.fgsm"}],
        ),
        goal("SHIFT", {"kind": "domain_shift", "path": str(shift)}, "accuracy", ">=", 0.5),
    ]
    spec = write_spec(root / "spec", image_case, goals)
    key, pub = generate_key(root / "keys" / "sign.pem")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    signed = _assess(spec, root / "signed", uri, "--sign-key", str(key))
    assert signed.exit_code in (0, 1), signed.output
    unsigned = _assess(spec, root / "unsigned", uri)
    assert unsigned.exit_code in (0, 1), unsigned.output
    return Made(root, spec, shift, uri, key, pub, root / "signed", root / "unsigned")


def problems(v: Verification) -> str:
    return "\n".join(v.problems)


def _alone(pdf: bytes, tmp_path: Path, name: str = "alone") -> Path:
    """A dossier PDF in a folder of its own (no manifest beside it)."""
    target = tmp_path / name / "dossier.pdf"
    target.parent.mkdir(parents=True)
    target.write_bytes(pdf)
    return target


def _tampered(v: Verification, *words: str) -> None:
    assert v.exit_code == 1 and v.status == "tampered", v
    for word in words:
        assert word in problems(v), (word, v)


def _cli(*args: str) -> Any:
    from nnassay.flows.cli.app import app

    return CliRunner().invoke(app, ["evidence", "verify", *args])


# ---------------------------------------------------------------- the intact records


def test_intact_records_verify(made: Made, tmp_path: Path) -> None:
    for run in (made.signed, made.unsigned):
        v = verify(run, VerifyOptions(tracking_uri=made.uri))
        assert v.exit_code == 0, v
        assert any("stored file(s) compared with manifest.json" in c for c in v.checked), v.checked
    signed = verify(_alone((made.signed / "dossier.pdf").read_bytes(), tmp_path), OFFLINE)
    assert signed.exit_code == 0, signed
    assert any("PDF signature valid" in c for c in signed.checked), signed.checked
    assert any("every page (its signed revision) equals" in c for c in signed.checked), signed.checked
    trusted = VerifyOptions(use_tracker=False, public_key=made.pub)
    assert verify(_alone((made.signed / "dossier.pdf").read_bytes(), tmp_path, "t"), trusted).exit_code == 0
    unsigned = verify(_alone((made.unsigned / "dossier.pdf").read_bytes(), tmp_path, "u"), OFFLINE)
    assert unsigned.exit_code == 0, unsigned
    assert any("every page (the whole file) equals" in c for c in unsigned.checked), unsigned.checked


def test_the_dossier_embeds_its_pictures_and_stays_pdfa(made: Made) -> None:
    reader = PdfReader(made.signed / "dossier.pdf")
    pictures = [n for n in reader.attachments if n.startswith("picture--")]
    assert pictures, list(reader.attachments)
    assert reader.xmp_metadata is not None
    xmp = reader.xmp_metadata.stream.get_data().decode()
    assert 'pdfaid:part="3"' in xmp and 'pdfaid:conformance="B"' in xmp
    assert reader.get_fields() and "nnassay-dossier-signature" in reader.get_fields()
    ev = EvidenceBundle.model_validate_json((made.signed / "evidence.json").read_bytes())
    assert any(a.role.startswith("goal input (SHIFT)") and a.path == str(made.shift) for a in ev.manifest)


def test_sign_cert_is_checked_before_the_run(made: Made, tmp_path: Path) -> None:
    from nnassay.flows.cli.app import app

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    other = tmp_path / "other.pem"
    other.write_bytes(_issued(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), "CA")[1])
    base = ["assess", str(made.spec), "--output", str(tmp_path / "out"), "--no-track", "--cpu"]
    for extra, words in (
        (["--sign-key", str(made.key), "--sign-cert", str(junk)], "not an X.509 certificate"),
        (["--sign-key", str(made.key), "--sign-cert", str(other)], "for another key"),
        (["--sign-cert", str(other)], "--sign-cert needs --sign-key"),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2 and words in result.output, result.output
        assert not (tmp_path / "out" / "evidence.json").exists()


def test_dossier_signed_with_a_given_certificate(made: Made, tmp_path: Path) -> None:
    """`nnassay report --sign-key --sign-cert` signs the dossier with the CA-issued certificate;
    verify trusts it through the CA, and refuses another CA."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from nnassay.flows.cli.app import app

    key = load_pem_private_key(made.key.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    ca_pem, leaf_pem = _issued(key, Ed25519PrivateKey.generate(), "example CA")
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "chain.pem").write_bytes(leaf_pem + ca_pem)
    out = tmp_path / "again" / "dossier.pdf"
    args = ["report", str(made.signed / "evidence.json"), "--output", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--sign-key", str(made.key), "--sign-cert", str(tmp_path / "chain.pem")]
    )
    assert result.exit_code == 0, result.output
    v = verify(out, VerifyOptions(use_tracker=False, trusted_cert=tmp_path / "ca.pem"))
    assert v.exit_code == 0 and any("chains to the trusted certificate" in c for c in v.checked), v
    (tmp_path / "other.pem").write_bytes(_issued(key, Ed25519PrivateKey.generate(), "another CA")[0])
    _tampered(
        verify(out, VerifyOptions(use_tracker=False, trusted_cert=tmp_path / "other.pem")), "does not chain"
    )
    result = _cli(str(out), "--no-mlflow", "--trusted-cert", str(tmp_path / "other.pem"))
    assert result.exit_code == 1, result.output
    # a run folder's dossier is held to the trusted certificate too (the run's own is self-signed)
    _tampered(
        verify(made.signed, VerifyOptions(use_tracker=False, trusted_cert=tmp_path / "ca.pem")),
        "does not chain",
    )


# ---------------------------------------------------------------- the dossier PDF alone


@pytest.mark.parametrize("incremental", [False, True], ids=["rewritten", "incremental"])
def test_pass_stamp_on_a_signed_dossier(made: Made, tmp_path: Path, incremental: bool) -> None:
    forged = pass_stamp((made.signed / "dossier.pdf").read_bytes(), incremental)
    _tampered(verify(_alone(forged, tmp_path), OFFLINE), "changed after signing")


def test_pass_stamp_on_an_unsigned_dossier(made: Made, tmp_path: Path) -> None:
    forged = pass_stamp((made.unsigned / "dossier.pdf").read_bytes(), False)
    _tampered(verify(_alone(forged, tmp_path), OFFLINE), "annotation")
    result = _cli(str(tmp_path / "alone" / "dossier.pdf"), "--no-mlflow")
    assert result.exit_code == 1 and "TAMPERED" in result.output, result.output


def test_added_image_on_an_unsigned_dossier(made: Made, tmp_path: Path) -> None:
    forged = added_image((made.unsigned / "dossier.pdf").read_bytes(), False)
    _tampered(verify(_alone(forged, tmp_path), OFFLINE), "differs from a rendering")


def test_blanked_picture_on_an_unsigned_dossier(made: Made, tmp_path: Path) -> None:
    forged = blanked_picture((made.unsigned / "dossier.pdf").read_bytes(), False)
    _tampered(verify(_alone(forged, tmp_path), OFFLINE), "differs from a rendering")


def test_blanked_picture_and_its_embedded_file(made: Made, tmp_path: Path) -> None:
    """The picture blanked on the page and in its embedded file: the file no longer has its digest."""
    pdf = (made.unsigned / "dossier.pdf").read_bytes()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(blanked_picture(pdf, False))))
    name = next(n for n in writer.attachments if n.startswith("picture--"))
    blank = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), "white").save(blank, format="PNG")
    writer.attachments[name][0]  # noqa: B018 (the attachment exists)
    _replace_attachment(writer, name, blank.getvalue())
    out = io.BytesIO()
    writer.write(out)
    _tampered(verify(_alone(out.getvalue(), tmp_path), OFFLINE), "embedded picture")


def _replace_attachment(writer: PdfWriter, name: str, payload: bytes) -> None:
    from pypdf.generic import NameObject

    names = writer.root_object["/Names"]["/EmbeddedFiles"]["/Names"]
    for i in range(0, len(names), 2):
        if names[i] == name:
            stream = names[i + 1].get_object()["/EF"][NameObject("/F")].get_object()
            stream.set_data(payload)
            return
    raise AssertionError(name)


def test_text_change_on_an_unsigned_dossier(made: Made, tmp_path: Path) -> None:
    reader = PdfReader(io.BytesIO((made.unsigned / "dossier.pdf").read_bytes()))
    writer = PdfWriter(clone_from=reader)
    page = writer.pages[0]
    contents = page.get_contents()
    assert contents is not None
    data = contents.get_data()
    glyph = re.search(rb"<([0-9a-fA-F]{4})>", data)
    assert glyph is not None
    changed = b"<%04x>" % ((int(glyph.group(1), 16) + 1) % 0x10000)
    contents.set_data(data[: glyph.start()] + changed + data[glyph.end() :])
    page.replace_contents(contents)
    out = io.BytesIO()
    writer.write(out)
    _tampered(verify(_alone(out.getvalue(), tmp_path), OFFLINE), "content")


def _render(ev: EvidenceBundle, payload: bytes, run_dir: Path, target: Path, keep: dict[str, bytes]) -> Path:
    """A dossier rendered from (changed) evidence as an attacker would, keeping some embedded files."""
    from nnassay.reports.render import EmbeddedFile, render_html
    from nnassay.tasks.governance.dossier import picture_attachments, write_pdf

    kept = [EmbeddedFile(n, b, n, relationship="Supplement") for n, b in keep.items()]
    attachments = [EmbeddedFile("evidence.json", payload, "e"), *kept, *picture_attachments(ev, run_dir)]
    target.parent.mkdir(parents=True)
    write_pdf(render_html(ev, run_dir), target, attachments=attachments)
    return target


def test_rerendered_without_signer_fails_with_public_key(made: Made, tmp_path: Path) -> None:
    trusted = VerifyOptions(use_tracker=False, public_key=made.pub)
    payload = (made.signed / "evidence.json").read_bytes()
    ev = EvidenceBundle.model_validate_json(payload)
    # the same evidence rendered again, without the key: no PDF signature
    same = _render(ev, payload, made.signed, tmp_path / "same" / "dossier.pdf", {})
    _tampered(verify(same, trusted), "carries no PDF signature")
    _tampered(verify(same, OFFLINE), "names signer key")
    # the signer removed from the evidence too: only the trusted key shows it
    unsigned = ev.model_copy(
        update={"provenance": ev.provenance.model_copy(update={"signer_public_key_sha256": None})}
    )
    forged = unsigned.model_dump_json().encode()
    target = _render(unsigned, forged, made.signed, tmp_path / "nosigner" / "dossier.pdf", {})
    _tampered(verify(target, trusted), "carries no PDF signature")
    result = _cli(str(target), "--no-mlflow", "--public-key", str(made.pub))
    assert result.exit_code == 1, result.output


@pytest.mark.parametrize(
    "keep_signature_files", [False, True], ids=["rendered-again", "signature-files-kept"]
)
def test_evidence_changed_signer_kept(made: Made, tmp_path: Path, keep_signature_files: bool) -> None:
    """The evidence changed (a verdict's reason), its signer kept, rendered again as a consistent
    PDF: with or without the old embedded signature files, it is tampering, also without a key."""
    reader = PdfReader(made.signed / "dossier.pdf")
    payload = (made.signed / "evidence.json").read_bytes()
    ev = EvidenceBundle.model_validate_json(payload)
    forged_ev = ev.model_copy(
        update={"verdicts": [ev.verdicts[0].model_copy(update={"reason": "forged"}), *ev.verdicts[1:]]}
    )
    forged = forged_ev.model_dump_json().encode()
    names = ("evidence.json.sig", "signer.pub") if keep_signature_files else ()
    keep = {n: reader.attachments[n][0] for n in names}
    target = _render(forged_ev, forged, made.signed, tmp_path / "forged" / "dossier.pdf", keep)
    _tampered(verify(target, OFFLINE), "carries no signature")
    _tampered(verify(target, VerifyOptions(use_tracker=False, public_key=made.pub)), "no PDF signature")
    result = _cli(str(target), "--no-mlflow")
    assert result.exit_code == 1 and "TAMPERED" in result.output, result.output


# ---------------------------------------------------------------- the run folder


@pytest.fixture
def copy_signed(made: Made, tmp_path: Path) -> Path:
    return Path(shutil.copytree(made.signed, tmp_path / "signed"))


def test_added_result_file(copy_signed: Path) -> None:
    forged = copy_signed / "results" / "G99__forged.json"
    forged.write_text(json.dumps({"test_id": "G99/forged", "status": "passed"}))
    _tampered(verify(copy_signed, OFFLINE), "added: results/G99__forged.json")
    result = _cli(str(copy_signed), "--no-mlflow")
    assert result.exit_code == 1 and "TAMPERED added: results/G99__forged.json" in result.output


def test_added_dot_file(copy_signed: Path) -> None:
    (copy_signed / ".hidden").write_text("x")
    (copy_signed / "results" / ".also").write_text("x")
    _tampered(verify(copy_signed, OFFLINE), "added: .hidden", "added: results/.also")


def test_replaced_shift_data(made: Made, tmp_path: Path) -> None:
    original = made.shift.read_bytes()
    try:
        with np.load(made.shift) as data:
            np.savez(made.shift, x=np.zeros_like(data["x"]), y=data["y"])
        _tampered(verify(made.signed, OFFLINE), f"changed: {made.shift}")
    finally:
        made.shift.write_bytes(original)
    assert verify(made.signed, OFFLINE).exit_code == 0


# ---------------------------------------------------------------- the copies


def _artifact_copy(made: Made, run: Path, name: str) -> Path:
    from mlflow.tracking import MlflowClient

    ev = EvidenceBundle.model_validate_json((run / "evidence.json").read_bytes())
    uri = MlflowClient(tracking_uri=made.uri).get_run(ev.provenance.mlflow_run_id).info.artifact_uri
    return Path(uri.removeprefix("file://")) / name


@pytest.mark.parametrize("name", ["plan.json", "results", "goals.json"])
def test_changed_mlflow_artifact_copy(made: Made, name: str) -> None:
    """A copy on the parent run, a test's result on its nested run, the goal table for the UI."""
    from mlflow.tracking import MlflowClient

    ev = EvidenceBundle.model_validate_json((made.unsigned / "evidence.json").read_bytes())
    run_id = str(ev.provenance.mlflow_run_id)
    client = MlflowClient(tracking_uri=made.uri)
    if name == "results":
        (child, *_) = client.search_runs(
            [client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
        )
        folder = Path(child.info.artifact_uri.removeprefix("file://"))
        copy = next(p for p in sorted(folder.iterdir()) if p.suffix == ".json")
    else:
        copy = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / name
    original = copy.read_bytes()
    changes = {"plan.json": b"tiny", "results": b"seed", "goals.json": b"pass"}
    forged = original.replace(changes[name], changes[name][:-1] + b"X", 1)
    assert forged != original
    try:
        copy.write_bytes(forged)
        v = verify(made.unsigned, VerifyOptions(tracking_uri=made.uri))
        _tampered(v, "changed: MLflow copy")
        for ref in (["--mlflow-run", run_id], [f"runs:/{run_id}"]):
            result = _cli(*ref, "--mlflow-uri", made.uri)
            assert result.exit_code == 1 and "changed: MLflow copy" in result.output, result.output
    finally:
        copy.write_bytes(original)
    result = _cli("--mlflow-run", run_id, "--mlflow-uri", made.uri)
    assert result.exit_code == 0, result.output


def _resumed(made: Made, tmp_path: Path, plant: Any) -> tuple[EvidenceBundle, str, Path]:
    """A copy of the unsigned run with one cache entry replaced by ``plant(entry)``, then run again
    in the same folder (resume): the evidence, the replaced entry's key, and the folder."""
    from nnassay.tasks.governance.resume import cache_dir

    run = Path(shutil.copytree(made.unsigned, tmp_path / "run"))
    entries = sorted(p for p in cache_dir(run).iterdir() if p.is_file())
    assert entries, "the run persisted no result"
    victim = entries[0]
    victim.write_bytes(plant(victim.read_bytes()))
    _tampered(verify(run, OFFLINE), f"changed: .nnassay-cache/{victim.name}")
    result = _assess(made.spec, run, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.exit_code in (0, 1), result.output
    return EvidenceBundle.model_validate_json((run / "evidence.json").read_bytes()), victim.name, run


def _refused(ev: EvidenceBundle, key: str) -> str:
    notes = ev.provenance.extra.get("result_cache_refused")
    assert isinstance(notes, list), ev.provenance.extra
    found = [n for n in notes if isinstance(n, dict) and n.get("key") == key]
    assert found, notes
    return str(found[0]["reason"])


def test_tampered_cached_result_is_recomputed(made: Made, tmp_path: Path) -> None:
    def tamper(entry: bytes) -> bytes:
        record = json.loads(entry)
        envelope = json.loads(record["result"])
        swapped = re.sub(
            r'"status": "(\w+)"',
            lambda m: f'"status": "{"failed" if m[1] == "passed" else "passed"}"',
            envelope["value"],
            count=1,
        )
        assert swapped != envelope["value"]
        envelope["value"] = swapped  # the value changed, its digest kept
        record["result"] = json.dumps(envelope)
        return json.dumps(record).encode()

    original = EvidenceBundle.model_validate_json((made.unsigned / "evidence.json").read_bytes())
    ev, key, run = _resumed(made, tmp_path, tamper)
    assert "digest mismatch" in _refused(ev, key)
    assert [r.status for r in ev.results] == [r.status for r in original.results]
    assert verify(run, OFFLINE).exit_code == 0  # recomputed, and the cache holds a good entry again


def _pickle_record(marker: Path, compressed: bool) -> bytes:
    """A Prefect result record naming the pickle serializer (bare or compressed), whose unpickling
    creates ``marker``: what Prefect itself would write with its default serializer."""
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import CompressedSerializer, PickleSerializer, Serializer

    class Bomb:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return (Path.touch, (marker,))

    serializer: Serializer[Any] = PickleSerializer()
    if compressed:
        serializer = CompressedSerializer(serializer=serializer)
    metadata = ResultRecordMetadata(storage_key=str(marker.parent / "key"), serializer=serializer)
    return ResultRecord(metadata=metadata, result=Bomb()).serialize()


@pytest.mark.parametrize("compressed", [False, True], ids=["pickle", "compressed-pickle"])
def test_planted_pickle_is_never_loaded(made: Made, tmp_path: Path, compressed: bool) -> None:
    marker = tmp_path / "unpickled.marker"
    planted = _pickle_record(marker, compressed)
    assert not marker.exists()
    ev, key, _ = _resumed(made, tmp_path, lambda entry: planted)
    assert not marker.exists(), "the planted pickle was loaded"
    reason = _refused(ev, key)
    assert ("'compressed'" if compressed else "'pickle'") in reason, reason
