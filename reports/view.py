"""ReportView: everything the dossier shows, pre-formatted from the evidence bundle alone.

Rounding, sorting, verdict wording, the risk register and the crosswalk happen here; the template
only displays. Nothing here reads the clock or recomputes a measurement.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nnassay.reports import standards as st
from nnassay.reports.charts import chart_svg, group_series
from nnassay.schemas.common import ClaimKind, Measurement, Verdict
from nnassay.schemas.evidence import EvidenceBundle, GoalVerdict
from nnassay.schemas.goals import Goal
from nnassay.schemas.results import ArtifactRef, MethodResult, Series

CLAIM_WORDING = {
    ClaimKind.ESTIMATE: "estimate",
    ClaimKind.BOUND: "bound",
    ClaimKind.CERTIFICATE: "certificate",
    ClaimKind.PROOF: "proof",
    ClaimKind.OBSERVATION: "observation",
}
SECTION_TITLES = [
    ("summary", "Summary"),
    ("scope", "Scope and context"),
    ("goals", "Robustness goals"),
    ("plan", "Test plan"),
    ("results", "Results by method family"),
    ("interpretation", "Interpretation"),
    ("risks", "Risk register"),
    ("controls", "Controls and regulation crosswalk"),
    ("provenance", "Provenance and reproducibility"),
    ("records", "Records"),
    ("history", "History"),
]
FAMILIES = ("statistical", "formal", "empirical")
LIKELIHOOD = [(0.2, "likely"), (0.05, "possible"), (0.01, "unlikely"), (0.0, "rare")]


def fmt_measure(m: Measurement | None) -> str:
    """'0.9778 [0.9616, 0.9885] (95% clopper-pearson)' or the value alone."""
    if m is None:
        return "not measured"
    text = f"{m.value:.4g}"
    if m.interval:
        i = m.interval
        text += f" [{i.low:.4g}, {i.high:.4g}] ({i.confidence:.0%} {i.method})"
    return text


SHORT_CLAIM = {
    ClaimKind.ESTIMATE: "estimate",
    ClaimKind.BOUND: "bound at {conf} confidence",
    ClaimKind.CERTIFICATE: "certificate (per sample)",
    ClaimKind.PROOF: "proof (per sample)",
    ClaimKind.OBSERVATION: "observation",
}


def fmt_claim(m: Measurement | None, short: bool = False) -> str:
    """What kind of statement a number makes, worded with its confidence: estimate, bound at a
    confidence, certificate, proof or observation (from ``Measurement.claim``, never guessed)."""
    if m is None:
        return "no claim: not measured"
    conf = f"{m.interval.confidence:.0%}" if m.interval else None
    if short:
        return SHORT_CLAIM[m.claim].format(conf=conf) if conf or m.claim != ClaimKind.BOUND else "bound"
    if m.claim == ClaimKind.BOUND:
        return (
            f"bound at {conf} confidence: the true value lies in the interval"
            if conf
            else "bound (no interval recorded)"
        )
    if m.claim == ClaimKind.CERTIFICATE:
        return "certificate per sample (randomized smoothing, holds with high probability); " + (
            f"{conf} interval for the population rate" if conf else "no interval"
        )
    if m.claim == ClaimKind.PROOF:
        return "proof per sample (sound verifier; counterexamples re-executed); " + (
            f"{conf} interval for the population rate" if conf else "no interval"
        )
    if m.claim == ClaimKind.OBSERVATION:
        return "observation on the tested samples" + (f", {conf} interval" if conf else ", no interval")
    return "estimate" + (
        f" with a {conf} interval (not a guarantee)" if conf else ", no interval (not a guarantee)"
    )


def fmt_value(v: Any) -> str:
    """A parameter value as text: numbers with :g, lists comma-separated, None as 'none'."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return ", ".join(fmt_value(x) for x in v) or "none"
    if isinstance(v, dict):
        return "; ".join(f"{k} {fmt_value(x)}" for k, x in v.items()) or "none"
    return str(v)


def fmt_params(params: dict[str, Any]) -> list[str]:
    """Method parameters as 'name = value' items, in key order (no raw JSON in the dossier)."""
    return [f"{k} = {fmt_value(v)}" for k, v in sorted(params.items())]


def fmt_threat(threat: Any) -> str:
    """'gaussian_noise: sigma=0.2' from a threat model."""
    fields = threat.model_dump(mode="json", exclude={"kind"}, exclude_none=True)
    return threat.kind + (
        ": " + "; ".join(f"{k} = {fmt_value(v)}" for k, v in fields.items()) if fields else ""
    )


def fmt_criterion(gv: GoalVerdict | Goal) -> str:
    c = gv.criterion
    return f"{gv.metric} {c.comparator.value} {c.threshold:g} at {c.confidence:.0%} confidence"


@dataclass(frozen=True)
class ClauseRef:
    """A clause as a section cites it."""

    label: str
    title: str
    mark: str
    uncertain: bool


def clause_ref(c: st.Clause) -> ClauseRef:
    return ClauseRef(st.label(c), c.title, c.mark, c.uncertain)


@dataclass
class Section:
    """One numbered dossier section and the clauses it evidences."""

    id: str
    number: int
    title: str
    clauses: list[ClauseRef]


@dataclass
class ResultView:
    """One test's display data."""

    result: MethodResult
    metrics: list[tuple[str, str, str, str]]  # name, value, claim, meaning
    charts: list[str]
    pictures: list[tuple[str, str]]  # data URI (empty: not shown), caption
    params: list[str]
    per_sample: tuple[list[str], list[list[str]], int] | None = None  # columns, rows, total rows


@dataclass
class FamilyView:
    """The results of one TR 24029-1 method family."""

    family: str
    clauses: list[ClauseRef]
    results: list[ResultView]


@dataclass
class RiskRow:
    """One line of the risk register (ISO/IEC 23894 6.4.2 to 6.5)."""

    goal_id: str
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


@dataclass
class ReportView:
    """Everything the template shows, pre-formatted."""

    ev: EvidenceBundle
    sections: dict[str, Section] = field(default_factory=dict)
    families: list[FamilyView] = field(default_factory=list)
    plan_rows: list[dict[str, Any]] = field(default_factory=list)
    criteria: list[dict[str, str]] = field(default_factory=list)
    reproduce: tuple[str, str] = ("", "")
    started_finished: str = ""
    risks: list[RiskRow] = field(default_factory=list)
    controls: list[CrosswalkRow] = field(default_factory=list)
    regulation: list[CrosswalkRow] = field(default_factory=list)
    history_rows: list[dict[str, Any]] = field(default_factory=list)
    history_goals: list[str] = field(default_factory=list)
    history_chart: str | None = None
    residual: str = ""
    model_name: str = ""
    assessed_at: str = ""

    @property
    def title(self) -> str:
        return self.ev.spec.title

    def goal(self, goal_id: str) -> Goal:
        return next(g for g in self.ev.spec.goals if g.id == goal_id)


def build_view(ev: EvidenceBundle, run_dir: Path | None, pictures: PictureSource | None = None) -> ReportView:
    """Pre-format the bundle; pictures are read from the run folder and checked against digests
    (``pictures``, when given, supplies them instead: used to re-render a dossier for comparison)."""
    view = ReportView(
        ev=ev,
        model_name=ev.spec.model.name or Path(ev.spec.model.path).name,
        assessed_at=f"{ev.provenance.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
    )
    view.sections = {
        sid: Section(sid, i + 1, title, [clause_ref(c) for c in st.section_clauses(sid)])
        for i, (sid, title) in enumerate(SECTION_TITLES)
    }
    view.families = _families(ev, run_dir, pictures)
    view.plan_rows = _plan_rows(ev)
    view.criteria = criteria_rows(ev)
    start, end = ev.provenance.started_at.astimezone(UTC), ev.provenance.finished_at.astimezone(UTC)
    view.started_finished = (
        f"{start:%Y-%m-%d %H:%M:%S} UTC / {end:%Y-%m-%d %H:%M:%S} UTC ({(end - start).total_seconds():.0f} s)"
    )
    view.reproduce = reproduce_command(ev)
    view.risks = [_risk_row(ev, gv) for gv in ev.verdicts]
    view.residual = residual_statement(ev)
    view.controls, view.regulation = _crosswalk(ev)
    view.history_rows, view.history_goals, view.history_chart = _history(ev)
    return view


def _families(ev: EvidenceBundle, run_dir: Path | None, pictures: PictureSource | None) -> list[FamilyView]:
    plan_params = {t.test_id: t.params for t in ev.plan.tests}
    found = []
    for family in FAMILIES:
        results = [r for r in ev.results if r.family.value == family]
        if not results:
            continue
        clauses = [clause_ref(st.get(st.TR1, ref)) for ref in st.FAMILY_CLAUSES[family]]
        views = [
            ResultView(
                r,
                _metrics(r),
                _charts(r),
                _pictures(r, run_dir, pictures),
                fmt_params(plan_params.get(r.test_id, {})),
                per_sample_table(r),
            )
            for r in results
        ]
        found.append(FamilyView(family, clauses, views))
    return found


def _metrics(result: MethodResult) -> list[tuple[str, str, str, str]]:
    return [
        (name, fmt_measure(m) + (f"; n = {m.n}" if m.n is not None else ""), fmt_claim(m), m.description)
        for name, m in sorted(result.metrics.items())
    ]


PER_SAMPLE_ROWS = 25


def per_sample_table(result: MethodResult) -> tuple[list[str], list[list[str]], int] | None:
    """``details.per_sample`` (a list of flat records, e.g. the formal verdict of each sample) as a
    table: columns in first-seen order, scalar cells only, at most PER_SAMPLE_ROWS rows shown."""
    found = result.details.get("per_sample")
    if not isinstance(found, list) or not found:
        return None
    rows = [r for r in found if isinstance(r, dict)]
    if len(rows) != len(found):
        return None
    columns: list[str] = []
    for r in rows:
        columns += [k for k, v in r.items() if k not in columns and not isinstance(v, list | dict)]
    cells = [[fmt_value(r[c]) if c in r else "" for c in columns] for r in rows[:PER_SAMPLE_ROWS]]
    return (columns, cells, len(rows)) if columns else None


def _charts(result: MethodResult) -> list[str]:
    return [chart_svg(group, result.test_id) for group in group_series(result.series)]


PictureSource = Callable[[ArtifactRef], str]  # picture artifact -> data URI to show in its place


def _pictures(
    result: MethodResult, run_dir: Path | None, source: PictureSource | None = None
) -> list[tuple[str, str]]:
    found = []
    for artifact in result.artifacts:
        if artifact.media_type != "image/png":
            continue
        if source is not None:
            found.append((source(artifact), artifact.caption))
            continue
        if run_dir is None:
            continue
        path = (run_dir / artifact.path).resolve()
        if not path.is_relative_to(run_dir.resolve()) or not path.is_file():
            found.append(("", f"{artifact.caption} (NOT SHOWN: file not found beside the evidence)"))
            continue
        payload = path.read_bytes()
        if hashlib.sha256(payload).hexdigest() != artifact.sha256:
            found.append(("", f"{artifact.caption} (NOT SHOWN: file changed since the assessment)"))
            continue
        found.append(("data:image/png;base64," + base64.b64encode(payload).decode(), artifact.caption))
    return found


def _plan_rows(ev: EvidenceBundle) -> list[dict[str, Any]]:
    rows = []
    for family in FAMILIES:
        for t in (t for t in ev.plan.tests if t.family.value == family):
            clause = st.tr_clause(t.clause)
            threat = t.threat.model_dump(mode="json")
            own = {
                k: v for k, v in t.params.items() if k not in threat or threat[k] != v
            }  # threat shown already
            rows.append(
                {
                    "test": t,
                    "family": family,
                    "threat": fmt_threat(t.threat),
                    "params": fmt_params(own),
                    "clause": clause_ref(clause) if clause else None,
                    "clause_text": t.clause,
                }
            )
    return rows


def criteria_rows(ev: EvidenceBundle) -> list[dict[str, str]]:
    """Acceptance criteria with the interval declared in the spec and the one actually used (a metric
    that is not a count rate, e.g. a mean or an AUROC, gets a bootstrap interval instead)."""
    used = {v.goal_id: v.measured.interval.method for v in ev.verdicts if v.measured and v.measured.interval}
    rows = []
    for g in ev.spec.goals:
        declared = g.criterion.interval
        actual = used.get(g.id)
        text = (
            declared
            if actual is None or actual == declared
            else f"{actual} (declared {declared}; applies to count rates only)"
        )
        rows.append(
            {
                "goal": g.id,
                "criterion": fmt_criterion(g),
                "interval": text if actual else f"{declared} (not measured)",
            }
        )
    return rows


def reproduce_command(ev: EvidenceBundle) -> tuple[str, str]:
    """The install step and the exact command line, run from the folder it was run from.

    The folder is ``provenance.extra['cwd']`` when recorded; otherwise it is derived from the spec
    argument of the command and the absolute ``spec_path`` (both recorded), or left out with a note.
    """
    import shlex

    p = ev.provenance
    install = "pip install -c constraints.txt -e ." + (
        f"   # in a checkout of {p.code_version}" if p.code_version else ""
    )
    recorded = p.extra.get("cwd")
    cwd = recorded if isinstance(recorded, str) else None
    if cwd is None:
        try:
            words = shlex.split(p.command)
        except ValueError:
            words = []
        arg = words[words.index("assess") + 1] if "assess" in words[:-1] else None
        spec = Path(p.spec_path)
        if arg and spec.is_absolute() and not Path(arg).is_absolute():
            parts, tail = spec.parts, Path(arg).parts
            if ".." not in tail and len(parts) > len(tail) and parts[-len(tail) :] == tail:
                cwd = str(Path(*parts[: -len(tail)]))
    if cwd is None and not Path(p.spec_path).is_absolute():
        return install, p.command + "   # run from the folder the spec path is relative to (not recorded)"
    return install, (f"cd {shlex.quote(cwd)} && " if cwd else "") + p.command


def failure_rate(gv: GoalVerdict) -> tuple[float, float] | None:
    """The measured failure rate and its conservative (upper) end, when the metric is a rate."""
    m = gv.measured
    if m is None or not m.is_rate:
        return None
    if gv.criterion.comparator.higher_is_better:
        return 1.0 - m.value, 1.0 - (m.interval.low if m.interval else m.value)
    return m.value, m.interval.high if m.interval else m.value


def _risk_row(ev: EvidenceBundle, gv: GoalVerdict) -> RiskRow:
    goal = next(g for g in ev.spec.goals if g.id == gv.goal_id)
    rate = failure_rate(gv)
    if rate is None:
        failure, likelihood = "not a rate", "not quantified"
    else:
        failure = f"{rate[0]:.3g} (up to {rate[1]:.3g})"
        likelihood = next(word for floor, word in LIKELIHOOD if rate[1] >= floor)
    source = st.risk_source(goal.risk.source)
    treatment, status = {
        Verdict.PASS: ("accept; keep monitoring by re-assessment", "within tolerance"),
        Verdict.FAIL: (f"treat, then re-test: {gv.recommendation}", "open: exceeds tolerance"),
        Verdict.INCONCLUSIVE: (f"decide first: {gv.recommendation}", "open: undetermined"),
    }[gv.verdict]
    return RiskRow(
        gv.goal_id,
        goal.risk.id,
        goal.risk.description,
        goal.risk.source,
        clause_ref(source) if source else None,
        failure,
        likelihood,
        goal.risk.impact,
        treatment,
        status,
    )


def residual_statement(ev: EvidenceBundle) -> str:
    """One paragraph: which goals pass and which risks stay above, or may be above, the tolerance."""
    total = len(ev.verdicts)
    passed = [v.goal_id for v in ev.verdicts if v.verdict == Verdict.PASS]
    text = f"{len(passed)} of {total} goals met their acceptance criteria. "
    open_rows = [v for v in ev.verdicts if v.verdict != Verdict.PASS]
    if not open_rows:
        return text + (
            "For every goal the whole confidence interval clears the threshold: the residual "
            "risk of the risks addressed is within the declared tolerance, under the tested "
            "threats and data only."
        )

    def risks(verdict: Verdict) -> str:
        by_risk: dict[str, list[str]] = {}
        impact = {}
        for v in open_rows:
            if v.verdict == verdict:
                goal = next(g for g in ev.spec.goals if g.id == v.goal_id)
                by_risk.setdefault(goal.risk.id, []).append(v.goal_id)
                impact[goal.risk.id] = goal.risk.impact
        return "; ".join(
            f"{r} ({impact[r]} impact; goal{'s' if len(g) > 1 else ''} {', '.join(g)})"
            for r, g in by_risk.items()
        )

    parts = []
    if failed := risks(Verdict.FAIL):
        parts.append(f"Residual risk above the declared tolerance: {failed}.")
    if undecided := risks(Verdict.INCONCLUSIVE):
        parts.append(f"Not yet determined (the confidence interval straddles the threshold): {undecided}.")
    return text + " ".join(parts) + " Treat and decide these before release, then re-assess."


def _crosswalk(ev: EvidenceBundle) -> tuple[list[CrosswalkRow], list[CrosswalkRow]]:
    tests = f"{len(ev.plan.tests)} planned tests, {len(ev.results)} results, {len(ev.verdicts)} goal verdicts"
    goals_for: dict[str, list[str]] = {}
    for g in ev.spec.goals:
        for c in g.controls:
            goals_for.setdefault(c, []).append(g.id)
    p, s = ev.provenance, ev.spec
    gate = (
        f"registry model {p.model_registry_uri} tagged with verdict {ev.overall.value}"
        if p.model_registry_uri
        else f"overall verdict {ev.overall.value} recorded as the release gate input"
    )
    evidence = {
        "A.3.2": "; ".join(f"{k}: {v}" for k, v in s.roles.model_dump().items() if v) or "no roles declared",
        "A.4.3": f"data {Path(p.data_path).name} sha256 {p.data_sha256[:16]}…",
        "A.4.4": f"{p.code_version}; {len(p.packages)} package versions; constraints sha256 "
        f"{(p.constraints_sha256 or 'not recorded')[:16]}",
        "A.4.5": f"{p.device}; {p.execution_provider}",
        "A.6.1.2": f"{len(s.goals)} robustness goals (section 3)",
        "A.6.2.2": "goals with acceptance criteria (sections 2, 3)",
        "A.6.2.4": tests + " (sections 4 to 6)",
        "A.6.2.5": gate,
        "A.6.2.6": f"{len(ev.history)} earlier assessment(s) of spec {s.id} (section 11)",
        "A.6.2.7": "this dossier with the evidence bundle embedded",
        "A.6.2.8": f"MLflow run {p.mlflow_run_id or 'not tracked'}; Prefect flow run "
        f"{p.prefect_flow_run_id or 'none'}; timestamps (section 10)",
        "A.7.5": f"data sha256 {p.data_sha256[:16]}…; source: {s.data.source or 'not declared'}",
        "A.7.6": "perturbation parameters and seeds per test (section 4)",
        "A.9.4": f"intended use: {s.model.intended_use or 'not declared'}",
    }
    refs = sorted(set(evidence) | set(goals_for), key=_control_order)
    controls = []
    for ref in refs:
        control = st.control(ref)
        cref = (
            clause_ref(control)
            if control
            else ClauseRef(f"42001 {ref}", "not in the standards map", "U", True)
        )
        found = evidence.get(ref, "")
        if ref in goals_for:
            found = (found + "; " if found else "") + "declared by goal(s) " + ", ".join(goals_for[ref])
        controls.append(CrosswalkRow(cref, found, "evidenced" if ref in evidence else "declared only"))
    return controls, _regulation(ev, tests)


def _control_order(ref: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else 0 for x in ref.removeprefix("A.").split("."))


def _regulation(ev: EvidenceBundle, tests: str) -> list[CrosswalkRow]:
    by_family = {f: [r.test_id for r in ev.results if r.family.value == f] for f in FAMILIES}
    attacks = by_family["empirical"] + by_family["formal"]
    rows = [
        (
            st.AIA,
            "Art. 15(1)",
            f"{len(ev.history) + 1} assessment(s) of this spec in the record series",
            True,
        ),
        (st.AIA, "Art. 15(3)", "metrics with intervals and conditions of measurement (sections 4, 5)", True),
        (
            st.AIA,
            "Art. 15(4)",
            "perturbation tests: " + (", ".join(by_family["statistical"]) or "none"),
            bool(by_family["statistical"]),
        ),
        (
            st.AIA,
            "Art. 15(5)",
            "adversarial/formal tests: " + (", ".join(attacks) or "none in this plan"),
            bool(attacks),
        ),
        (st.NIST, "MEASURE 2.1", "data, metrics and tool versions (sections 4, 9)", True),
        (
            st.NIST,
            "MEASURE 2.3",
            f"operating domain: {ev.spec.model.operating_domain or 'not declared'}",
            ev.spec.model.operating_domain is not None,
        ),
        (st.NIST, "MEASURE 2.5", tests, True),
        (st.NIST, "MEASURE 2.6", "residual-risk statement (section 1) and risk register (section 7)", True),
        (
            st.NIST,
            "MEASURE 2.7",
            "adversarial tests: " + (", ".join(by_family["empirical"]) or "none"),
            bool(by_family["empirical"]),
        ),
    ]
    return [
        CrosswalkRow(clause_ref(st.get(std, ref)), text, "evidenced" if found else "not evidenced")
        for std, ref, text, found in rows
    ]


def _history(ev: EvidenceBundle) -> tuple[list[dict[str, Any]], list[str], str | None]:
    if not ev.history:
        return [], [], None
    goals = [v.goal_id for v in ev.verdicts]
    metric = {v.goal_id: v.metric for v in ev.verdicts}
    rows: list[dict[str, Any]] = []
    for h in ev.history:
        when = h.get("started_ms")
        metrics = h.get("metrics") or {}
        goal_cells = {}
        for g in goals:
            value = metrics.get(f"goal.{g}.{metric[g]}") if isinstance(metrics, dict) else None
            recorded_goals = h.get("goals")
            verdict = recorded_goals.get(g, "") if isinstance(recorded_goals, dict) else ""
            goal_cells[g] = (f"{value:.4g} " if isinstance(value, int | float) else "") + str(verdict)
        rows.append(
            {
                "when": f"{datetime.fromtimestamp(when / 1000, UTC):%Y-%m-%d %H:%M}"
                if isinstance(when, int)
                else "",
                "assessment_id": h.get("assessment_id", ""),
                "verdict": h.get("verdict") or "",
                "values": {g: _num(metrics, g, metric[g]) for g in goals},
                "goals": goal_cells,
            }
        )
    current = {v.goal_id: v.measured.value if v.measured else None for v in ev.verdicts}
    rows.append(
        {
            "when": f"{ev.provenance.started_at.astimezone(UTC):%Y-%m-%d %H:%M}",
            "assessment_id": f"{ev.provenance.assessment_id} (this)",
            "verdict": ev.overall.value,
            "values": current,
            "goals": {
                v.goal_id: (f"{current[v.goal_id]:.4g} " if current[v.goal_id] is not None else "")
                + v.verdict.value
                for v in ev.verdicts
            },
        }
    )
    series = []
    for g in goals:
        points = [(i + 1, r["values"][g]) for i, r in enumerate(rows) if r["values"].get(g) is not None]
        if points:
            series.append(
                Series(
                    name=f"{g} {metric[g]}",
                    x_label="assessment (oldest first)",
                    y_label="measured value",
                    x=[float(x) for x, _ in points],
                    y=[float(y) for _, y in points],
                )
            )
    chart = chart_svg(series, f"Trend of the goal metrics of {ev.spec.id}") if series else None
    return rows, goals, chart


def _num(metrics: Any, goal: str, metric: str) -> float | None:
    value = metrics.get(f"goal.{goal}.{metric}") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None
