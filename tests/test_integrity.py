"""Tamper evidence: manifest digests, hash chain, signature and MLflow anchor, each mismatch named."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from records_runs import Runs, assessed
from typer.testing import CliRunner

from nnassay.schemas.evidence import EvidenceBundle
from nnassay.tasks.governance.integrity import (
    KeyPermissionWarning,
    Verification,
    VerifyOptions,
    generate_key,
    load_signing_key,
    verify,
)
from nnassay.tasks.io.files import sha256_file

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

OFFLINE = VerifyOptions(use_tracker=False)


@pytest.fixture(scope="module")
def runs(image_case) -> Runs:  # type: ignore[no-untyped-def]
    return assessed(image_case)


@pytest.fixture
def copy_b(runs: Runs, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs.b, tmp_path / "b"))


def flip_byte(path: Path, at: int = -2) -> None:
    payload = bytearray(path.read_bytes())
    payload[at] ^= 0x01
    path.write_bytes(bytes(payload))


def problems(v: Verification) -> str:
    return "\n".join(v.problems)


def test_runs_finish_signed_and_chained(runs: Runs) -> None:
    assert runs.exit_codes == (1, 1), runs.outputs
    a = EvidenceBundle.model_validate_json((runs.a / "evidence.json").read_text())
    b = EvidenceBundle.model_validate_json((runs.b / "evidence.json").read_text())
    assert b.previous_evidence_sha256 == sha256_file(runs.a / "evidence.json")
    assert (
        a.provenance.signer_public_key_sha256
        and a.provenance.signer_public_key_sha256 == b.provenance.signer_public_key_sha256
    )
    for name in (
        "manifest.json",
        "manifest.sig",
        "manifest.pub",
        "dossier.pdf",
        "dossier.html",
        "summary.md",
    ):
        assert (runs.b / name).is_file(), name


def test_intact_run_verifies_with_chain_through_mlflow(runs: Runs) -> None:
    v = verify(runs.b, VerifyOptions(tracking_uri=runs.uri))
    assert v.status == "intact", v
    text = "\n".join(v.checked)
    assert "signature valid" in text and "1 earlier assessment(s) linked" in text
    assert "records the same manifest sha256" in text


def test_mlflow_tags_and_artifacts(runs: Runs) -> None:
    from mlflow.tracking import MlflowClient

    b = EvidenceBundle.model_validate_json((runs.b / "evidence.json").read_text())
    client = MlflowClient(tracking_uri=runs.uri)
    run = client.get_run(b.provenance.mlflow_run_id)
    assert run.data.tags["nnassay.manifest_sha256"] == sha256_file(runs.b / "manifest.json")
    assert run.data.tags["nnassay.evidence_sha256"] == sha256_file(runs.b / "evidence.json")
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "manifest.sig", "dossier.html", "summary.md", "dossier.pdf"} <= names


@pytest.mark.parametrize(
    "name",
    [
        "evidence.json",
        "dossier.pdf",
        "plan.json",
        "spec.yaml",
        "summary.md",
        "dossier.html",
        "results",
        "model",
    ],
)
def test_one_changed_byte_is_named(copy_b: Path, name: str) -> None:
    target = copy_b / name
    if target.is_dir():
        target = sorted(p for p in target.rglob("*") if p.is_file())[0]
    flip_byte(target, at=len(target.read_bytes()) // 2)
    v = verify(copy_b, OFFLINE)
    rel = str(target.relative_to(copy_b))
    assert v.exit_code == 1 and f"changed: {rel}" in problems(v), v


def test_deleted_file_is_named(copy_b: Path) -> None:
    victim = sorted((copy_b / "results").iterdir())[0]
    victim.unlink()
    v = verify(copy_b, OFFLINE)
    assert v.exit_code == 1 and f"deleted: results/{victim.name}" in problems(v)


def test_rewritten_manifest_is_caught_by_signature_and_mlflow(copy_b: Path, runs: Runs) -> None:
    manifest = copy_b / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"role": "plan"', '"role": "plan "'))
    v = verify(copy_b, VerifyOptions(tracking_uri=runs.uri))
    assert "manifest.sig: the signature does not match" in problems(v)
    assert "records manifest sha256" in problems(v)


def test_swapped_signature(copy_b: Path, runs: Runs) -> None:
    shutil.copyfile(runs.a / "manifest.sig", copy_b / "manifest.sig")
    v = verify(copy_b, OFFLINE)
    assert v.exit_code == 1 and "manifest.sig: the signature does not match manifest.json" in problems(v)


def test_wrong_public_key_fails(runs: Runs, tmp_path: Path) -> None:
    _, other = generate_key(tmp_path / "other.pem")
    v = verify(runs.b, VerifyOptions(use_tracker=False, public_key=other))
    assert v.exit_code == 1
    assert "is not the key the run was signed with" in problems(v)
    assert "signature does not match" in problems(v)


def test_deleted_past_assessment_in_history_folders(runs: Runs, tmp_path: Path) -> None:
    hist = tmp_path / "hist"
    shutil.copytree(runs.b, hist / "b")
    v = verify(hist / "b", VerifyOptions(history=(hist,), use_tracker=False))
    a_id = EvidenceBundle.model_validate_json((runs.a / "evidence.json").read_text()).provenance.assessment_id
    assert v.exit_code == 1 and "missing" in problems(v) and a_id in problems(v), v


def test_altered_past_assessment_in_history_folders(runs: Runs, tmp_path: Path) -> None:
    hist = Path(shutil.copytree(runs.root / "hist", tmp_path / "hist"))
    evidence = hist / "a" / "evidence.json"
    evidence.write_text(
        evidence.read_text().replace('"title": "Tiny assessment"', '"title": "Tiny assessment!"')
    )
    v = verify(hist / "b", VerifyOptions(history=(hist,), use_tracker=False))
    assert v.exit_code == 1 and "was altered" in problems(v) and str(evidence) in problems(v), v
    assert verify(runs.b, VerifyOptions(history=(runs.root / "hist",), use_tracker=False)).exit_code == 0


def test_deleted_past_run_in_mlflow(runs: Runs, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    shutil.copyfile(runs.root / "mlflow.db", db)
    uri = f"sqlite:///{db}"
    a = EvidenceBundle.model_validate_json((runs.a / "evidence.json").read_text())
    MlflowClient(tracking_uri=uri).delete_run(a.provenance.mlflow_run_id)
    v = verify(runs.b, VerifyOptions(tracking_uri=uri))
    assert v.exit_code == 1 and "chain:" in problems(v) and a.provenance.assessment_id in problems(v), v


def test_dossier_pdf_verifies_and_names_a_changed_pdf(runs: Runs, copy_b: Path) -> None:
    assert verify(runs.b / "dossier.pdf", OFFLINE).exit_code == 0
    flip_byte(copy_b / "dossier.pdf", at=len((copy_b / "dossier.pdf").read_bytes()) // 3)
    v = verify(copy_b / "dossier.pdf", OFFLINE)
    assert v.exit_code in (1, 2)
    if v.exit_code == 1:
        assert "changed: dossier.pdf" in problems(v)


def test_unreadable_inputs_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pdf").write_bytes(b"not a pdf at all")
    (tmp_path / "junk.json").write_text("{not json")
    for path in (tmp_path / "missing", tmp_path / "empty", tmp_path / "junk.pdf", tmp_path / "junk.json"):
        assert verify(path, OFFLINE).exit_code == 2, path


def test_cli_exit_codes(runs: Runs, copy_b: Path, tmp_path: Path) -> None:
    from nnassay.flows.cli.app import app

    runner = CliRunner()
    ok = runner.invoke(app, ["evidence", "verify", str(runs.b), "--mlflow-uri", runs.uri])
    assert ok.exit_code == 0 and "intact" in ok.output, ok.output
    flip_byte(copy_b / "plan.json")
    bad = runner.invoke(app, ["evidence", "verify", str(copy_b), "--no-mlflow"])
    assert bad.exit_code == 1 and "TAMPERED changed: plan.json" in bad.output, bad.output
    missing = runner.invoke(app, ["evidence", "verify", str(tmp_path / "nothing")])
    assert missing.exit_code == 2


def test_loose_key_permissions_warn(tmp_path: Path) -> None:
    key, _ = generate_key(tmp_path / "k.pem")
    load_signing_key(key)  # mode 600: no warning expected
    os.chmod(key, 0o644)
    with pytest.warns(KeyPermissionWarning, match="chmod 600"):
        load_signing_key(key)


def test_registry_model_onnx_only_copied_and_tagged(runs: Runs) -> None:
    """The version's folder is downloaded whole (external-data files), but only ONNX is loaded: the
    pickle beside it is neither loaded nor copied into the run's records."""
    from mlflow.tracking import MlflowClient

    b = EvidenceBundle.model_validate_json((runs.b / "evidence.json").read_text())
    assert b.provenance.model_registry_uri == "models:/tiny-model/1"
    assert not list((runs.b / "model").glob("*.pkl"))
    assert not any(a.path.endswith(".pkl") for a in b.manifest)
    assert (runs.b / "model" / "model.onnx").is_file()
    version = MlflowClient(tracking_uri=runs.uri, registry_uri=runs.uri).get_model_version("tiny-model", "1")
    assert version.tags["nnassay.verdict"] == b.overall.value
    assert version.tags["nnassay.gate"] == "blocked"
    assert version.tags["nnassay.evidence_sha256"] == sha256_file(runs.b / "evidence.json")
    assert version.tags["nnassay.mlflow_run_id"] == b.provenance.mlflow_run_id


def _forged_pdf(runs: Runs, target: Path) -> None:
    """A dossier whose pages say something else than the evidence it embeds (a forged reason)."""
    from nnassay.reports.render import EmbeddedFile, render_html
    from nnassay.tasks.governance.dossier import picture_attachments, write_pdf

    payload = (runs.b / "evidence.json").read_bytes()
    ev = EvidenceBundle.model_validate_json(payload)
    forged = ev.model_copy(
        update={"verdicts": [ev.verdicts[0].model_copy(update={"reason": "forged reason"}), *ev.verdicts[1:]]}
    )
    pictures = picture_attachments(ev, runs.b)  # as a forger keeps them: only the text is forged
    write_pdf(
        render_html(forged, runs.b),
        target,
        attachments=[EmbeddedFile("evidence.json", payload, "e"), *pictures],
    )


def test_dossier_pdf_alone_compares_its_pages_with_the_embedded_evidence(runs: Runs, tmp_path: Path) -> None:
    alone = tmp_path / "alone" / "dossier.pdf"
    alone.parent.mkdir()
    shutil.copy(runs.b / "dossier.pdf", alone)
    v = verify(alone, OFFLINE)
    assert v.status == "intact", v
    assert any("equals a fresh rendering" in c for c in v.checked), v.checked
    forged = tmp_path / "forged" / "dossier.pdf"
    forged.parent.mkdir()
    _forged_pdf(runs, forged)
    v = verify(forged, OFFLINE)
    assert v.status == "tampered", v
    assert "differs from a rendering" in problems(v) and "forgedreason" in problems(v)


def test_signed_dossier_pdf_alone_carries_a_signature_of_its_evidence(runs: Runs, tmp_path: Path) -> None:
    from pypdf import PdfReader

    from nnassay.reports.render import EmbeddedFile, render_html
    from nnassay.tasks.governance.dossier import write_pdf

    reader = PdfReader(runs.b / "dossier.pdf")
    assert {"evidence.json", "evidence.json.sig", "signer.pub"} <= set(reader.attachments)
    alone = tmp_path / "alone" / "dossier.pdf"
    alone.parent.mkdir()
    shutil.copy(runs.b / "dossier.pdf", alone)
    trusted = VerifyOptions(use_tracker=False, public_key=runs.key.with_name(runs.key.name + ".pub"))
    v = verify(alone, trusted)
    assert v.status == "intact", v
    assert any("signature valid" in c for c in v.checked), v.checked
    # evidence rewritten consistently (pages and embedded bundle), the old signature kept: caught
    payload = (runs.b / "evidence.json").read_bytes()
    ev = EvidenceBundle.model_validate_json(payload)
    forged = (
        ev.model_copy(
            update={"verdicts": [ev.verdicts[0].model_copy(update={"reason": "forged"}), *ev.verdicts[1:]]}
        )
        .model_dump_json()
        .encode()
    )
    keep = [
        EmbeddedFile(name, reader.attachments[name][0], name, relationship="Supplement")
        for name in ("evidence.json.sig", "signer.pub")
    ]
    target = tmp_path / "forged" / "dossier.pdf"
    target.parent.mkdir()
    write_pdf(
        render_html(EvidenceBundle.model_validate_json(forged), runs.b),
        target,
        attachments=[EmbeddedFile("evidence.json", forged, "e"), *keep],
    )
    v = verify(target, trusted)
    assert v.status == "tampered" and "evidence.json.sig does not match" in problems(v), v
    # a wrong trusted key is named
    _, other_pub = generate_key(tmp_path / "keys" / "other.pem")
    v = verify(alone, VerifyOptions(use_tracker=False, public_key=other_pub))
    assert v.status == "tampered" and "is not the key the evidence names" in problems(v), v


def test_report_re_renders_a_signed_dossier_with_its_key_only(runs: Runs, tmp_path: Path) -> None:
    from pypdf import PdfReader

    from nnassay.flows.cli.app import app

    out = tmp_path / "again.pdf"
    args = ["report", str(runs.b / "evidence.json"), "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--sign-key", str(runs.key)])
    assert result.exit_code == 0, result.output
    assert "evidence.json.sig" in PdfReader(out).attachments
    generate_key(tmp_path / "keys" / "other.pem")
    result = CliRunner().invoke(app, [*args, "--sign-key", str(tmp_path / "keys" / "other.pem")])
    assert result.exit_code == 2 and "is not the key that signed this run" in result.output


def test_written_files_get_the_umask_mode_and_a_new_key_is_private(tmp_path: Path) -> None:
    from nnassay.tasks.governance.integrity import generate_key
    from nnassay.tasks.io.files import write_atomic

    plain = (tmp_path / "plain.txt").open("w")
    plain.close()
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert write_atomic(tmp_path / "evidence.json", "{}").stat().st_mode & 0o777 == expected
    key, pub = generate_key(tmp_path / "signing.pem")
    assert key.stat().st_mode & 0o777 == 0o600
    assert pub.stat().st_mode & 0o777 == expected
