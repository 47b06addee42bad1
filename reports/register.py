"""The risk register and the controls crosswalk: which statements the evidence supports.

A clause or control is evidenced by goals only when they reached a decided verdict (pass or fail) from
a test that measured something; lifecycle items need at least two assessments in the chain; a risk
has one status from all its goals and a likelihood from measured failure rates (LIKELIHOOD_RULE).
Pure functions of the evidence bundle, as the rest of the view.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nnassay.reports import standards as st
from nnassay.reports.standards import ClauseRef, clause_ref
from nnassay.schemas.common import ClaimKind, Verdict
from nnassay.schemas.evidence import EvidenceBundle, GoalVerdict
from nnassay.schemas.goals import Goal
from nnassay.schemas.results import TestStatus

LIKELIHOOD = [(0.2, "likely"), (0.05, "possible"), (0.01, "unlikely"), (0.0, "rare")]
LIKELIHOOD_RULE = (
    "Likelihood of a risk: the highest band reached by the upper end of the confidence interval of "
    "the failure rate its decided goals measured (1 minus the metric for rates where higher is better, "
    "the metric itself otherwise): likely at 0.2 or more, possible from 0.05, unlikely from 0.01, rare "
    "below. A proved or certified share (a bound) is not a failure rate: the samples it leaves out "
    "include clean misclassifications and undecided samples, so it sets no likelihood. Inconclusive "
    "goals and metrics that are not rates set none either. Status of a risk, from all its goals: open "
    "when any goal failed (exceeds tolerance) or is inconclusive (undetermined), within tolerance only "
    "when every goal passed. Both describe the tested threats and data only."
)
ADVERSARIAL_THREATS = frozenset({"linf_ball", "l2_ball", "vnnlib"})  # worst-case sets: AI Act 15(5)
BOUND_CLAIMS = (ClaimKind.PROOF, ClaimKind.CERTIFICATE)
PASSED_WORD = {ClaimKind.PROOF: "proved", ClaimKind.CERTIFICATE: "certified"}


@dataclass
class RiskRow:
    """One risk of the register (ISO/IEC 23894 6.4.2 to 6.5), with one status from all its goals."""

    goal_ids: list[str]
    risk_id: str
    description: str
    source: str
    source_ref: ClauseRef | None
    failure: str
    likelihood: str
    impact: str
    treatment: str
    status: str


@dataclass
class CrosswalkRow:
    """One control or paragraph with the evidence in this dossier that supports it."""

    ref: ClauseRef
    evidence: str
    status: str


def failure_rate(gv: GoalVerdict) -> tuple[float, float] | None:
    """The measured failure rate and its conservative (upper) end, when the metric is a rate."""
    m = gv.measured
    if m is None or not m.is_rate:
        return None
    if gv.criterion.comparator.higher_is_better:
        return 1.0 - m.value, 1.0 - (m.interval.low if m.interval else m.value)
    return m.value, m.interval.high if m.interval else m.value


def goal_failure(gv: GoalVerdict) -> tuple[str, str | None]:
    """One goal's part of a risk's likelihood (LIKELIHOOD_RULE): the failure rate as text and its
    band, or why it sets no band."""
    rate = failure_rate(gv)
    if gv.verdict == Verdict.INCONCLUSIVE or gv.measured is None:
        return f"{gv.goal_id}: undetermined", None
    if rate is None:
        return f"{gv.goal_id}: not a rate", None
    if gv.measured.claim in BOUND_CLAIMS:
        return (
            f"{gv.goal_id}: up to {rate[1]:.3g} not {PASSED_WORD[gv.measured.claim]} (a bound, not a failure rate)",
            None,
        )
    band = next(word for floor, word in LIKELIHOOD if rate[1] >= floor)
    return f"{gv.goal_id}: {rate[0]:.3g} (up to {rate[1]:.3g})", band


def risk_rows(ev: EvidenceBundle) -> list[RiskRow]:
    """One row per risk id, in the order the spec first names it; status and likelihood from all its
    goals (LIKELIHOOD_RULE)."""
    goals: dict[str, list[Goal]] = {}
    for g in ev.spec.goals:
        goals.setdefault(g.risk.id, []).append(g)
    verdicts = {v.goal_id: v for v in ev.verdicts}
    return [_risk_row([g for g in gs if g.id in verdicts], verdicts) for gs in goals.values() if gs]


def _risk_row(goals: list[Goal], verdicts: dict[str, GoalVerdict]) -> RiskRow:
    risk = goals[0].risk
    decided = [verdicts[g.id] for g in goals]
    failed = [v for v in decided if v.verdict == Verdict.FAIL]
    undecided = [v for v in decided if v.verdict == Verdict.INCONCLUSIVE]
    parts = [goal_failure(v) for v in decided]
    bands = {band for _, band in parts if band}
    likelihood = next((word for _, word in LIKELIHOOD if word in bands), "not quantified")
    if failed:
        status = "open: exceeds tolerance (" + ", ".join(v.goal_id for v in failed) + ")"
        treatment = "treat, then re-test: " + "; ".join(_distinct(v.recommendation for v in failed))
    elif undecided:
        status = "open: undetermined (" + ", ".join(v.goal_id for v in undecided) + ")"
        treatment = "decide first: " + "; ".join(_distinct(v.recommendation for v in undecided))
    else:
        status, treatment = "within tolerance", "accept; keep monitoring by re-assessment"
    sources = _distinct(g.risk.source for g in goals)
    source = next((s for s in map(st.risk_source, sources) if s), None)
    return RiskRow(
        [g.id for g in goals],
        risk.id,
        " ".join(_sentence(d) for d in _distinct(g.risk.description for g in goals if g.risk.description)),
        "; ".join(sources),
        clause_ref(source) if source else None,
        "; ".join(text for text, _ in parts),
        likelihood,
        " / ".join(_distinct(g.risk.impact for g in goals)),
        treatment,
        status,
    )


def _distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def goal_gap(ev: EvidenceBundle, gv: GoalVerdict) -> str | None:
    """None when the goal can evidence a clause: a decided verdict (pass or fail) from a test that
    measured something (completed, metrics present, more than 0 samples); else why it cannot."""
    results = {r.test_id: r for r in ev.results}
    primary = results.get(gv.tests[0]) if gv.tests else None
    if gv.verdict == Verdict.INCONCLUSIVE:
        return f"{gv.goal_id} inconclusive"
    if primary is None:
        return f"{gv.goal_id} has no test result"
    if primary.status != TestStatus.COMPLETED:
        return f"{gv.goal_id}'s test {primary.status.value}"
    if not primary.metrics or gv.measured is None:
        return f"{gv.goal_id} measured nothing"
    if gv.measured.n is not None and gv.measured.n <= 0:
        return f"{gv.goal_id} measured 0 samples"
    return None


def assessments_in_chain(ev: EvidenceBundle) -> int:
    """This assessment and the earlier ones of the same spec the evidence links to (history rows, or
    at least the previous evidence digest)."""
    return 1 + max(len(ev.history), 1 if ev.previous_evidence_sha256 else 0)


def _by_goals(ev: EvidenceBundle, goal_ids: list[str], what: str = "") -> tuple[str, str]:
    """Evidence text and status of an item evidenced only by decided goals that measured something."""
    verdicts = [v for v in ev.verdicts if v.goal_id in goal_ids]
    gaps = {v.goal_id: goal_gap(ev, v) for v in verdicts}
    counted = [g for g, gap in gaps.items() if gap is None]
    missing = [gap for gap in gaps.values() if gap]
    text = (what.rstrip(".") + "; " if what else "") + (
        f"{len(counted)} of {len(verdicts)} goal(s) decided on a measurement"
        + (f": {', '.join(counted)}" if counted else "")
        + (f"; not counted: {', '.join(missing)}" if missing else "")
        if verdicts
        else "no goal addresses it"
    )
    if counted:
        return text, "evidenced"
    return text, "not evidenced (" + ("; ".join(missing) if missing else "no goal addresses it") + ")"


def _by_record(text: str, present: bool, why: str) -> tuple[str, str]:
    """Evidence text and status of an item evidenced by the record itself (a digest, a declaration)."""
    return text, "evidenced" if present else f"not evidenced ({why})"


def _lifecycle(ev: EvidenceBundle, goal_ids: list[str]) -> tuple[str, str]:
    """Items about the whole lifecycle: at least two assessments in the chain, and decided goals."""
    count = assessments_in_chain(ev)
    text, status = _by_goals(
        ev, goal_ids, f"{count} assessment(s) of spec {ev.spec.id} in the chain (section 11)"
    )
    if count < 2:
        return text, "not evidenced (1 assessment in the chain; lifecycle evidence needs at least two)"
    return text, status


def crosswalk_rows(ev: EvidenceBundle) -> tuple[list[CrosswalkRow], list[CrosswalkRow]]:
    goals_for: dict[str, list[str]] = {}
    for g in ev.spec.goals:
        for c in g.controls:
            goals_for.setdefault(c, []).append(g.id)
    p, s = ev.provenance, ev.spec
    every = [g.id for g in s.goals]
    roles = "; ".join(f"{k}: {v}" for k, v in s.roles.model_dump().items() if v)
    decided_gate = ev.overall != Verdict.INCONCLUSIVE
    gate = (
        f"registry model {p.model_registry_uri} tagged with verdict {ev.overall.value}"
        if p.model_registry_uri
        else f"overall verdict {ev.overall.value} recorded as the release gate input"
    )
    gate_text, gate_status = _by_goals(ev, every, gate)
    rows: dict[str, tuple[str, str]] = {
        "A.3.2": _by_record(roles or "no roles declared", bool(roles), "no roles declared"),
        "A.4.3": _by_record(f"data {Path(p.data_path).name} sha256 {p.data_sha256[:16]}…", True, ""),
        "A.4.4": _by_record(
            f"{p.code_version}; {len(p.packages)} package versions; constraints sha256 "
            f"{(p.constraints_sha256 or 'not recorded')[:16]}",
            True,
            "",
        ),
        "A.4.5": _by_record(f"{p.device}; {p.execution_provider}", True, ""),
        "A.6.1.2": _by_record(f"{len(s.goals)} robustness goals (section 3)", bool(s.goals), "no goals"),
        "A.6.2.2": _by_record("goals with acceptance criteria (sections 2, 3)", bool(s.goals), "no goals"),
        "A.6.2.4": _by_goals(ev, every, "verification and validation results (sections 4 to 6)"),
        "A.6.2.5": (
            gate_text,
            gate_status if decided_gate else "not evidenced (overall verdict inconclusive)",
        ),
        "A.6.2.6": _lifecycle(ev, every),
        "A.6.2.7": _by_record("this dossier with the evidence bundle embedded", True, ""),
        "A.6.2.8": _by_record(
            f"MLflow run {p.mlflow_run_id or 'not tracked'}; Prefect flow run "
            f"{p.prefect_flow_run_id or 'none'}; timestamps (section 10)",
            True,
            "",
        ),
        "A.7.5": _by_record(
            f"data sha256 {p.data_sha256[:16]}…; source: {s.data.source or 'not declared'}", True, ""
        ),
        "A.7.6": _by_record("perturbation parameters and seeds per test (section 4)", True, ""),
        "A.9.4": _by_record(
            f"intended use: {s.model.intended_use or 'not declared'}",
            bool(s.model.intended_use),
            "intended use not declared",
        ),
    }
    for ref, ids in goals_for.items():
        if ref not in rows:
            rows[ref] = _by_goals(ev, ids)
    controls = []
    for ref in sorted(rows, key=_control_order):
        control = st.control(ref)
        cref = (
            clause_ref(control)
            if control
            else ClauseRef(f"42001 {ref}", "not in the standards map", "U", True)
        )
        text, status = rows[ref]
        if ref in goals_for:
            text += "; declared by goal(s) " + ", ".join(goals_for[ref])
        controls.append(CrosswalkRow(cref, text, status))
    return controls, _regulation(ev)


def _control_order(ref: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else 0 for x in ref.removeprefix("A.").split("."))


def _regulation(ev: EvidenceBundle) -> list[CrosswalkRow]:
    every = [g.id for g in ev.spec.goals]
    adversarial = [g.id for g in ev.spec.goals if g.threat.kind in ADVERSARIAL_THREATS]
    faults = [g.id for g in ev.spec.goals if g.threat.kind not in ADVERSARIAL_THREATS | {"none"}]
    domain = ev.spec.model.operating_domain
    measure_23 = _by_goals(ev, every, f"operating domain: {domain or 'not declared'}")
    rows = [
        (st.AIA, "Art. 15(1)", _lifecycle(ev, every)),
        (
            st.AIA,
            "Art. 15(3)",
            _by_goals(ev, every, "metrics with intervals and conditions of measurement (sections 4, 5)"),
        ),
        (st.AIA, "Art. 15(4)", _by_goals(ev, faults, "errors, faults, noise, shifted and invalid input")),
        (
            st.AIA,
            "Art. 15(5)",
            _by_goals(ev, adversarial, "worst-case perturbations: attacks, proofs, certificates"),
        ),
        (st.NIST, "MEASURE 2.1", _by_record("data, metrics and tool versions (sections 4, 9)", True, "")),
        (
            st.NIST,
            "MEASURE 2.3",
            measure_23 if domain else (measure_23[0], "not evidenced (no operating domain declared)"),
        ),
        (st.NIST, "MEASURE 2.5", _by_goals(ev, every, "validity and reliability results (sections 4 to 6)")),
        (
            st.NIST,
            "MEASURE 2.6",
            _by_goals(ev, every, "residual-risk statement (section 1) and risk register (section 7)"),
        ),
        (
            st.NIST,
            "MEASURE 2.7",
            _by_goals(ev, adversarial, "security and resilience: worst-case perturbations"),
        ),
    ]
    return [CrosswalkRow(clause_ref(st.get(std, ref)), text, status) for std, ref, (text, status) in rows]
