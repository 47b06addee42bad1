"""A dossier whose every sentence is true: each statement of the crosswalk, the risk register, the
claim labels, the per-sample tables, the reproduce command, the attachments and the cited clauses
follows from the evidence. Views are built from stored evidence (tests/golden), never rerun."""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pypdf import PdfReader

from nnassay.reports import standards as st
from nnassay.reports.register import crosswalk_rows, risk_rows
from nnassay.reports.render import EmbeddedFile, render_html, render_pdf
from nnassay.reports.view import (
    ReportView,
    build_view,
    claim_kind,
    fmt_claim,
    per_sample_table,
    reproduce_command,
)
from nnassay.schemas.common import ClaimKind, Verdict
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.results import MethodResult, TestStatus
from nnassay.tasks.io.data_io import Dataset, repeated_inputs
from nnassay.tasks.methods.registry import get_method, list_methods
from nnassay.tasks.pipeline.interpret import interpret_goal

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = GOLDEN / "digits_evidence.json"  # `nnassay assess examples/digits/assessment.yaml --no-track`
SNAPSHOT = GOLDEN / "digits_crosswalk_register.json"
STANDARDS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "STANDARDS.md"


@cache
def example() -> EvidenceBundle:
    return EvidenceBundle.model_validate_json(EXAMPLE.read_text())


def view_of(ev: EvidenceBundle) -> ReportView:
    return _example_view() if ev is example() else build_view(ev, None)


@cache
def _example_view() -> ReportView:
    return build_view(example(), None)


def statuses(ev: EvidenceBundle) -> dict[str, str]:
    controls, regulation = crosswalk_rows(ev)
    return {r.ref.label: r.status for r in [*controls, *regulation]}


def with_results(ev: EvidenceBundle, goal_ids: set[str], **update: Any) -> EvidenceBundle:
    results = [r.model_copy(update=update) if r.goal_id in goal_ids else r for r in ev.results]
    return ev.model_copy(update={"results": results})


def with_verdicts(ev: EvidenceBundle, goal_ids: set[str], **update: Any) -> EvidenceBundle:
    verdicts = [v.model_copy(update=update) if v.goal_id in goal_ids else v for v in ev.verdicts]
    return ev.model_copy(update={"verdicts": verdicts})


# --- crosswalk: evidenced only by decided goals that measured something ---------------------------


def test_lifecycle_items_need_two_assessments_in_the_chain() -> None:
    ev = example()
    assert not ev.history and ev.previous_evidence_sha256 is None
    first = statuses(ev)
    assert first["42001 A.6.2.6"].startswith("not evidenced (1 assessment in the chain")
    assert first["AI Act Art. 15(1)"].startswith("not evidenced (1 assessment in the chain")
    row = {"assessment_id": "earlier", "started_ms": 1, "verdict": "fail", "goals": {}, "metrics": {}}
    chained = ev.model_copy(update={"history": [row], "previous_evidence_sha256": "0" * 64})
    second = statuses(chained)
    assert second["42001 A.6.2.6"] == "evidenced" and second["AI Act Art. 15(1)"] == "evidenced"
    headings = {c.label for s in view_of(ev).sections.values() for c in s.clauses}
    assert "AI Act Art. 15(1)" not in headings and not view_of(ev).sections["history"].clauses
    later = {c.label for c in build_view(chained, None).sections["history"].clauses}
    assert {"42001 A.6.2.6", "AI Act Art. 15(1)"} <= later


def test_attack_and_formal_goals_that_measured_nothing_evidence_nothing() -> None:
    adversarial = {"G5", "G6", "G10"}  # proofs, an attack and certificates: the Art. 15(5) goals
    ev = with_results(example(), adversarial, status=TestStatus.ERROR, metrics={}, reason="crashed")
    ev = with_verdicts(ev, adversarial, verdict=Verdict.INCONCLUSIVE, measured=None)
    found = statuses(ev)
    for item in ("AI Act Art. 15(5)", "NIST MEASURE 2.7"):
        assert found[item].startswith("not evidenced (") and "G6 inconclusive" in found[item], found[item]
    assert found["42001 A.6.2.4"] == "evidenced"  # the other goals still measured
    evidence = {r.ref.label: r.evidence for r in crosswalk_rows(ev)[1]}["AI Act Art. 15(5)"]
    assert "0 of 3 goal(s)" in evidence


def test_a_decided_goal_on_zero_samples_or_an_unfinished_test_does_not_count() -> None:
    ev = example()
    g9 = next(v for v in ev.verdicts if v.goal_id == "G9")
    assert g9.measured is not None
    zero = with_verdicts(ev, {"G9"}, measured=g9.measured.model_copy(update={"n": 0}))
    assert statuses(zero)["42001 A.7.4"] == "not evidenced (G9 measured 0 samples)"
    unfinished = with_results(ev, {"G9"}, status=TestStatus.INCONCLUSIVE)
    assert statuses(unfinished)["42001 A.7.4"] == "not evidenced (G9's test inconclusive)"


def test_record_items_are_not_evidenced_by_what_was_not_declared() -> None:
    ev = example()
    model = ev.spec.model.model_copy(update={"intended_use": None, "operating_domain": None})
    ev = ev.model_copy(update={"spec": ev.spec.model_copy(update={"model": model})})
    found = statuses(ev)
    assert found["42001 A.9.4"] == "not evidenced (intended use not declared)"
    assert found["NIST MEASURE 2.3"] == "not evidenced (no operating domain declared)"


# --- risk register: one status per risk, likelihood from the measured rate's interval -------------


def test_one_row_and_one_status_per_risk() -> None:
    view = view_of(example())
    ids = [r.risk_id for r in view.risks]
    assert len(ids) == len(set(ids)) == len({g.risk.id for g in example().spec.goals})
    by_id = {r.risk_id: r for r in view.risks}
    assert by_id["R-02"].goal_ids == ["G2", "G3", "G7"]
    assert by_id["R-02"].status == "open: exceeds tolerance (G3)"  # G2 and G7 passed, G3 failed
    assert by_id["R-05"].status == "open: exceeds tolerance (G6)"
    assert by_id["R-01"].status == "within tolerance"


def test_an_inconclusive_goal_keeps_its_risk_open() -> None:
    ev = with_verdicts(example(), {"G9"}, verdict=Verdict.INCONCLUSIVE)
    row = next(r for r in risk_rows(ev) if r.risk_id == "R-07")
    assert row.status == "open: undetermined (G9)" and row.likelihood == "not quantified"


def test_likelihood_is_not_drawn_from_a_proved_share() -> None:
    by_id = {r.risk_id: r for r in view_of(example()).risks}
    # G5 passed with 90% proved: the unproved 10% (up to 32%) are not failures, so no "likely"
    assert by_id["R-04"].likelihood == "not quantified"
    assert "not proved (a bound, not a failure rate)" in by_id["R-04"].failure
    assert by_id["R-05"].likelihood == "likely"  # from G6's attack, not from G10's certificates
    html = render_html(example())
    assert "A proved or certified share (a bound) is not a failure rate" in html


# --- one kind label per kind of interval ----------------------------------------------------------


def test_the_same_kind_of_interval_gets_the_same_label_everywhere() -> None:
    ev = example()
    labels: dict[str, set[str]] = {}
    for r in ev.results:
        for m in r.metrics.values():
            if m.interval and m.claim not in (ClaimKind.PROOF, ClaimKind.CERTIFICATE):
                labels.setdefault(m.interval.method.split(" ")[0], set()).add(fmt_claim(m, short=True))
    assert labels["clopper-pearson"] == {"estimate (95% interval)"}, labels  # G1, G6, G8 alike
    assert labels["bootstrap"] == {"estimate (95% interval)"}, labels
    g1, g8 = (next(r for r in ev.results if r.goal_id == g) for g in ("G1", "G8"))
    assert (
        claim_kind(g1.metrics["accuracy"]) == claim_kind(g8.metrics["confident_garbage_rate"]) == "estimate"
    )
    g5 = next(r for r in ev.results if r.goal_id == "G5")
    assert claim_kind(g5.metrics["verified_fraction"]) == "bound"


# --- declared class labels ------------------------------------------------------------------------


def test_per_sample_tables_show_declared_class_labels() -> None:
    ev = example()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    model = ev.spec.model.model_copy(update={"labels": names})
    ev = ev.model_copy(update={"spec": ev.spec.model_copy(update={"model": model})})
    g5 = next(r for r in ev.results if r.goal_id == "G5")
    table = per_sample_table(g5, names)
    assert table is not None
    columns, rows, _ = table
    first = g5.details["per_sample"][0]  # type: ignore[index]
    cell = rows[0][columns.index("label")]
    assert cell == f"{names[first['label']]} ({first['label']})"  # type: ignore[call-overload,index]
    shown = next(r for f in view_of(ev).families for r in f.results if r.result.goal_id == "G5")
    assert shown.per_sample is not None and shown.per_sample[1][0][columns.index("label")] == cell


# --- reproduce command ----------------------------------------------------------------------------


def test_reproduce_command_holds_no_absolute_path_of_the_machine() -> None:
    ev = example()
    assert ev.provenance.extra["cwd"] and "/tmp/h13run" in ev.provenance.command
    _, command = reproduce_command(ev)
    assert command == (
        "nnassay assess examples/digits/assessment.yaml --output runs/h13run --no-track"
        "   # run from the project folder"
    )
    p = ev.provenance.model_copy(
        update={
            "command": "nnassay assess /srv/p/specs/a.yaml --output /srv/p/runs/x "
            "--mlflow-uri sqlite:////srv/p/mlflow.db",
            "spec_path": "/srv/p/specs/a.yaml",
            "extra": {"cwd": "/srv/p"},
        }
    )
    _, command = reproduce_command(ev.model_copy(update={"provenance": p}))
    assert (
        "/srv" not in command and "specs/a.yaml --output runs/x --mlflow-uri sqlite:///mlflow.db" in command
    )


# --- attachments ----------------------------------------------------------------------------------


def test_attachments_carry_their_mime_type_and_are_listed_once_in_af() -> None:
    files = [
        EmbeddedFile("evidence.json", b"{}", "evidence"),
        EmbeddedFile("evidence.json.sig", b"c2ln", "signature", "text/plain", "Supplement"),
        EmbeddedFile("signer.pub", b"-----BEGIN PUBLIC KEY-----", "key", relationship="Supplement"),
        EmbeddedFile("picture.png", b"\x89PNG\r\n", "picture", relationship="Supplement"),
        EmbeddedFile("summary.md", b"# summary", "summary", relationship="Supplement"),
        EmbeddedFile("report.pdf", b"%PDF-1.7", "a pdf", relationship="Supplement"),
    ]
    payload, _ = render_pdf("<html><body><p>x</p></body></html>", attachments=files)
    root = PdfReader(io.BytesIO(payload)).trailer["/Root"]
    listed = [ref.get_object() for ref in root["/AF"]]
    names = [str(spec["/F"]) for spec in listed]
    assert sorted(names) == sorted(f.name for f in files), names  # each once
    subtypes = {str(spec["/F"]): str(spec["/EF"]["/F"].get_object()["/Subtype"]) for spec in listed}
    assert subtypes == {
        "evidence.json": "/application/json",
        "evidence.json.sig": "/text/plain",
        "signer.pub": "/application/x-pem-file",
        "picture.png": "/image/png",
        "summary.md": "/text/markdown",
        "report.pdf": "/application/pdf",
    }


# --- every clause a method cites is in STANDARDS.md -----------------------------------------------


@cache
def tr1_clauses() -> dict[str, tuple[str, str]]:
    """TR 24029-1 clause -> (title, mark) from the section 1 table of STANDARDS.md (mark: the
    section's [C] unless the row says otherwise)."""
    text = STANDARDS.read_text()
    section = text.split("## 1. ISO/IEC TR 24029-1", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"\d+(\.\d+)*", cells[0]):
            mark = re.search(r"\[([CSU])\b", cells[1])
            found[cells[0]] = (re.sub(r"\s*\[[CSU][^\]]*\]", "", cells[1]), mark[1] if mark else "C")
    return found


@pytest.mark.parametrize("name", list_methods())
def test_every_cited_clause_is_in_the_standards_map_with_its_title_and_mark(name: str) -> None:
    clause = get_method(name).clause
    listed = tr1_clauses()
    assert clause in listed, f"{name} cites TR 24029-1 {clause}, not in STANDARDS.md: {sorted(listed)}"
    title, mark = listed[clause]
    shown = st.tr_clause(clause)  # what the plan and the dossier print for it
    assert shown is not None and (shown.title, shown.mark) == (title, mark), (name, shown, title, mark)
    assert "interpolation" not in title.lower(), (
        f"{name} assesses a classifier but cites {clause} '{title}' (regression metrics)"
    )


def test_the_plan_prints_the_title_of_the_standards_map() -> None:
    rows = view_of(example()).plan_rows
    g10 = next(r for r in rows if r["test"].goal_id == "G10")
    assert g10["clause"] is not None
    assert g10["clause"].title == tr1_clauses()[g10["test"].clause][0]


# --- duplicate inputs: detected at load, flagged in every interval they touch ---------------------


def test_exact_duplicate_inputs_are_counted_at_load_and_per_subset() -> None:
    x = np.random.default_rng(0).random((54, 1, 8, 8), dtype=np.float32)
    tiled = np.tile(x, (100, 1, 1, 1))
    repeats = repeated_inputs(tiled)
    assert int(repeats.sum()) == 54 * 99 and not repeats[:54].any()
    data = Dataset(
        tiled, np.zeros(len(tiled), np.int64), x.dtype, "image", Path("t.npz"), "", repeats=repeats
    )  # type: ignore[arg-type]
    assert data.duplicates == 5346 and data.subset(54).duplicates == 0 and data.subset(60).duplicates == 6


def test_load_dataset_records_the_duplicates_of_the_example_tiled(tmp_path: Path) -> None:
    from nnassay.tasks.io.data_io import load_dataset
    from nnassay.tasks.io.model_io import ModelRunner
    from nnassay.tasks.io.spec_io import read_spec

    spec = read_spec(Path(__file__).resolve().parents[1] / "examples" / "digits" / "assessment.yaml")
    with np.load(spec.data.path) as archive:
        x, y = archive["x"], archive["y"]
    np.savez(tmp_path / "tiled.npz", x=np.tile(x, (10,) + (1,) * (x.ndim - 1)), y=np.tile(y, 10))
    data_spec = spec.data.model_copy(update={"path": str(tmp_path / "tiled.npz")})
    data = load_dataset(data_spec, ModelRunner(spec.model, prefer_cuda=False))
    assert data.duplicates == 9 * len(x)


def flagged(ev: EvidenceBundle, goal: str, count: int) -> EvidenceBundle:
    def mark(r: MethodResult) -> MethodResult:
        return (
            r.model_copy(update={"details": {**r.details, "duplicate_inputs": count}})
            if r.goal_id == goal
            else r
        )

    return ev.model_copy(update={"results": [mark(r) for r in ev.results]})


def test_interpretation_flags_the_interval_of_a_test_with_duplicates() -> None:
    ev = flagged(example(), "G1", 4860)
    goal = next(g for g in ev.spec.goals if g.id == "G1")
    verdict = interpret_goal(goal, [r for r in ev.results if r.goal_id == "G1"])
    assert verdict.findings and "assumes independent samples; 4860 exact duplicate" in verdict.findings[0]
    clean = interpret_goal(goal, [r for r in example().results if r.goal_id == "G1"])
    assert clean.findings == [] and clean.measured == verdict.measured  # flagged, never recomputed


def test_the_dossier_flags_every_interval_touched_by_duplicates() -> None:
    view = view_of(flagged(example(), "G1", 4860))
    assert "G1/statistical.clean_accuracy: 4860" in view.independence
    g1 = next(r for f in view.families for r in f.results if r.result.goal_id == "G1")
    assert all("4860 exact duplicate input(s) present" in meaning for *_, meaning in g1.metrics)
    others = [r for f in view.families for r in f.results if r.result.goal_id != "G1"]
    assert not any("duplicate" in meaning for r in others for *_, meaning in r.metrics)
    assert "did not record a check" in view_of(example()).independence


# --- golden: the example's crosswalk and risk register --------------------------------------------


def snapshot(view: ReportView) -> dict[str, Any]:
    def row(r: Any) -> dict[str, str]:
        return {"ref": r.ref.label, "mark": r.ref.mark, "evidence": r.evidence, "status": r.status}

    risks = [
        {k: v for k, v in asdict(r).items() if k != "source_ref"}
        | {"source_ref": r.source_ref.label if r.source_ref else None}
        for r in view.risks
    ]
    return {
        "controls": [row(r) for r in view.controls],
        "regulation": [row(r) for r in view.regulation],
        "risks": risks,
    }


def test_golden_crosswalk_and_risk_register_of_the_example() -> None:
    assert snapshot(view_of(example())) == json.loads(SNAPSHOT.read_text())
