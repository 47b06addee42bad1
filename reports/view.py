"""ReportView: everything the dossier shows, pre-formatted from the evidence bundle alone.

Rounding, sorting, verdict wording, the risk register and the crosswalk happen here; the template
only displays. Nothing here reads the clock or recomputes a measurement.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nnassay.reports import standards as st
from nnassay.reports.charts import chart_svg, group_series
from nnassay.reports.explain_view import ExplanationView, explanation_views
from nnassay.reports.pictures import PictureSource, load_picture
from nnassay.reports.plan_notes import UnitsView, explain_plan_line, fallback_line, tabular_data, units_view
from nnassay.reports.register import (
    BOUND_CLAIMS,
    LIKELIHOOD_RULE,
    CrosswalkRow,
    RiskRow,
    assessments_in_chain,
    crosswalk_rows,
    risk_rows,
)
from nnassay.reports.standards import ClauseRef, clause_ref
from nnassay.schemas.common import ClaimKind, Measurement, Verdict
from nnassay.schemas.evidence import EvidenceBundle, GoalVerdict
from nnassay.schemas.goals import Goal
from nnassay.schemas.results import MethodResult, Series

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
INDEPENDENCE_KEY = "duplicate_inputs"  # details key the runner sets: test samples repeating an earlier input
CLASS_COLUMNS = frozenset(
    {"label", "true_label", "target", "prediction", "predicted", "predicted_label", "adversarial_label"}
)


def fmt_measure(m: Measurement | None) -> str:
    """'0.9778 [0.9616, 0.9885] (95% clopper-pearson)' or the value alone."""
    if m is None:
        return "not measured"
    text = f"{m.value:.4g}"
    if m.interval:
        i = m.interval
        text += f" [{i.low:.4g}, {i.high:.4g}] ({i.confidence:.0%} {i.method})"
    return text


PER_SAMPLE_GUARANTEE = {
    ClaimKind.PROOF: "each counted sample proved by a sound verifier (counterexamples re-executed)",
    ClaimKind.CERTIFICATE: "each counted sample certified (randomized smoothing; each certificate holds "
    "with high probability)",
}


def claim_kind(m: Measurement) -> str:
    """The kind label of a number, a function of the kind of its interval and guarantee, never of the
    row it stands in: 'bound' for a share of samples each proved or certified (claim proof or
    certificate: a lower bound on the samples tested); 'estimate' for any other number with a
    confidence interval (Clopper-Pearson, Wilson, Newcombe or bootstrap intervals of a measured
    quantity: no guarantee); 'observation' or 'estimate' for a number without an interval."""
    if m.claim in BOUND_CLAIMS:
        return "bound"
    if m.interval is None and m.claim == ClaimKind.OBSERVATION:
        return "observation"
    return "estimate"


def fmt_claim(m: Measurement | None, short: bool = False) -> str:
    """What kind of statement a number makes (``claim_kind``), worded with its interval's confidence.

    Every confidence interval is worded as an estimate, whatever the method that computed it; the
    proved or certified share of samples is a bound on the samples tested."""
    if m is None:
        return "no claim: not measured"
    kind = claim_kind(m)
    conf = f"{m.interval.confidence:.0%}" if m.interval else None
    if kind == "bound":
        guarantee = PER_SAMPLE_GUARANTEE[m.claim]
        if short:
            return f"bound ({m.claim.value} per sample)" + (f"; {conf} interval: estimate" if conf else "")
        return f"bound on the samples tested: {guarantee}" + (
            f"; the {conf} {m.interval.method} interval is an estimate for the population"
            if m.interval
            else "; no interval"
        )
    if kind == "observation":
        return "observation" if short else "observation on the tested samples, no interval"
    if short:
        return f"estimate ({conf} interval)" if conf else "estimate, no interval"
    return (
        f"estimate with a {conf} {m.interval.method} confidence interval (not a guarantee)"
        if m.interval
        else "estimate, no interval (not a guarantee)"
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
    fallback: str = ""  # 'Planned as X instead of Y because ...' when the test replaces another method
    units: UnitsView | None = None  # tabular data: the unit of eps and each feature's scale and bounds
    explanation: ExplanationView | None = None  # why the goal failed, shown beside its deciding test


@dataclass
class FamilyView:
    """The results of one TR 24029-1 method family."""

    family: str
    clauses: list[ClauseRef]
    results: list[ResultView]


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
    likelihood_rule: str = LIKELIHOOD_RULE
    independence: str = ""  # what the intervals assume about the samples, and where duplicates were found
    explanations: dict[str, ExplanationView] = field(default_factory=dict)  # by goal id
    unplaced_explanations: list[ExplanationView] = field(default_factory=list)  # goals without a result
    explain_plan: str = ""  # what the plan says about explaining failures (off, or samples and estimate)

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
    view.controls, view.regulation = crosswalk_rows(ev)
    unsupported = unsupported_clauses(ev, [*view.controls, *view.regulation])
    view.sections = {
        sid: Section(
            sid,
            i + 1,
            title,
            [clause_ref(c) for c in st.section_clauses(sid) if st.label(c) not in unsupported],
        )
        for i, (sid, title) in enumerate(SECTION_TITLES)
    }
    view.families = _families(ev, run_dir, pictures)
    labels = list(ev.spec.model.labels or [])
    view.explanations = explanation_views(ev, run_dir, lambda i: class_name(i, labels), pictures)
    view.unplaced_explanations = place_explanations(ev, view.families, view.explanations)
    view.plan_rows = _plan_rows(ev)
    view.explain_plan = explain_plan_line(ev.spec, ev.plan.explain_estimate_s)
    view.criteria = criteria_rows(ev)
    start, end = ev.provenance.started_at.astimezone(UTC), ev.provenance.finished_at.astimezone(UTC)
    view.started_finished = (
        f"{start:%Y-%m-%d %H:%M:%S} UTC / {end:%Y-%m-%d %H:%M:%S} UTC ({(end - start).total_seconds():.0f} s)"
    )
    view.reproduce = reproduce_command(ev)
    view.risks = risk_rows(ev)
    view.independence = independence_statement(ev)
    view.residual = residual_statement(ev)
    view.history_rows, view.history_goals, view.history_chart = _history(ev)
    return view


def unsupported_clauses(ev: EvidenceBundle, crosswalk: list[CrosswalkRow]) -> set[str]:
    """Labels a section heading must not cite: crosswalk items the evidence does not support, and the
    lifecycle items (st.LIFECYCLE) while the chain holds a single assessment."""
    found = {r.ref.label for r in crosswalk if r.status != "evidenced"}
    if assessments_in_chain(ev) < 2:
        found |= {st.label(st.get(standard, ref)) for standard, ref in st.LIFECYCLE}
    return found


def _families(ev: EvidenceBundle, run_dir: Path | None, pictures: PictureSource | None) -> list[FamilyView]:
    tests = {t.test_id: t for t in ev.plan.tests}
    labels = list(ev.spec.model.labels or [])
    tabular = tabular_data(ev.spec)
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
                fmt_params(tests[r.test_id].params if r.test_id in tests else {}),
                per_sample_table(r, labels),
                fallback_line(tests.get(r.test_id)),
                units_view(r, tests.get(r.test_id), tabular),
            )
            for r in results
        ]
        found.append(FamilyView(family, clauses, views))
    return found


def place_explanations(
    ev: EvidenceBundle, families: list[FamilyView], explanations: dict[str, ExplanationView]
) -> list[ExplanationView]:
    """Put each goal's explanations beside its deciding (primary) test's result, else its last result;
    return those of goals with no result shown."""
    primary = {t.test_id for t in ev.plan.tests if t.primary}
    by_goal: dict[str, ResultView] = {}
    for view in (v for fam in families for v in fam.results):
        goal = view.result.goal_id
        if goal not in by_goal or by_goal[goal].result.test_id not in primary:
            by_goal[goal] = view
    unplaced = []
    for goal, explanation in explanations.items():
        if goal in by_goal:
            by_goal[goal].explanation = explanation
        else:
            unplaced.append(explanation)
    return unplaced


def _metrics(result: MethodResult) -> list[tuple[str, str, str, str]]:
    repeated = duplicate_inputs(result)
    caveat = (
        f" (assumes independent samples; {repeated} exact duplicate input(s) present)" if repeated else ""
    )
    return [
        (
            name,
            fmt_measure(m) + (f"; n = {m.n}" if m.n is not None else ""),
            fmt_claim(m),
            m.description + (caveat if m.interval else ""),
        )
        for name, m in sorted(result.metrics.items())
    ]


def duplicate_inputs(result: MethodResult) -> int | None:
    """Exact duplicate inputs among a test's samples as the runner recorded them; None: not checked."""
    found = result.details.get(INDEPENDENCE_KEY)
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def independence_statement(ev: EvidenceBundle) -> str:
    """Every interval assumes independent samples: say where exact duplicate inputs were found (their
    intervals are flagged, not recomputed), that none were, or that the run did not check."""
    counts = {r.test_id: duplicate_inputs(r) for r in ev.results}
    found = {t: n for t, n in counts.items() if n}
    if found:
        where = "; ".join(f"{t}: {n}" for t, n in found.items())
        return (
            "Every confidence interval assumes independent samples. Exact duplicate inputs were found "
            f"among the samples of these tests ({where}): their intervals are narrower than the data "
            "support and are flagged; the duplicates were not removed."
        )
    if counts and all(n is not None for n in counts.values()):
        return "Every confidence interval assumes independent samples; no test's samples hold exact duplicate inputs."
    return (
        "Every confidence interval assumes independent samples; this run did not record a check for "
        "exact duplicate inputs."
    )


PER_SAMPLE_ROWS = 25


def per_sample_table(
    result: MethodResult, labels: list[str] | None = None
) -> tuple[list[str], list[list[str]], int] | None:
    """``details.per_sample`` (a list of flat records, e.g. the formal verdict of each sample) as a
    table: columns in first-seen order, scalar cells only, at most PER_SAMPLE_ROWS rows shown; class
    indices (CLASS_COLUMNS) shown by their declared label (``model.labels``)."""
    found = result.details.get("per_sample")
    if not isinstance(found, list) or not found:
        return None
    rows = [r for r in found if isinstance(r, dict)]
    if len(rows) != len(found):
        return None
    columns: list[str] = []
    for r in rows:
        columns += [k for k, v in r.items() if k not in columns and not isinstance(v, list | dict)]
    names = labels or []
    cells = [
        [
            (class_name(r[c], names) if c in CLASS_COLUMNS else fmt_value(r[c])) if c in r else ""
            for c in columns
        ]
        for r in rows[:PER_SAMPLE_ROWS]
    ]
    return (columns, cells, len(rows)) if columns else None


def class_name(index: Any, labels: list[str]) -> str:
    """A class index as its declared label ('cat', or 'cat (3)' when the label is not the index)."""
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(labels):
        name = labels[index]
        return name if name == str(index) else f"{name} ({index})"
    return fmt_value(index)


def _charts(result: MethodResult) -> list[str]:
    return [chart_svg(group, result.test_id) for group in group_series(result.series)]


def _pictures(
    result: MethodResult, run_dir: Path | None, source: PictureSource | None = None
) -> list[tuple[str, str]]:
    found = []
    for artifact in result.artifacts:
        if artifact.media_type != "image/png":
            continue
        loaded = load_picture(artifact, run_dir, source)
        if loaded is not None:
            uri, problem = loaded
            found.append((uri, f"{artifact.caption} ({problem})" if problem else artifact.caption))
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
                    "fallback": fallback_line(t),
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
    """The install step and the command line, with paths relative to the project: never an absolute
    path of the machine that ran it.

    The project folder is the folder the command ran from (``provenance.extra['cwd']``, or derived
    from the relative spec argument and the absolute ``spec_path``) when the spec lies inside it,
    otherwise the spec's own folder. Path arguments are shown relative to that folder; an absolute
    path outside it keeps only its name (an output folder goes to ``runs/<name>``).
    """
    p = ev.provenance
    install = "pip install -c constraints.txt -e ." + (
        f"   # in a checkout of {p.code_version}" if p.code_version else ""
    )
    try:
        words = shlex.split(p.command)
    except ValueError:
        words = p.command.split()
    cwd = _command_folder(p.extra.get("cwd"), words, p.spec_path)
    spec = Path(p.spec_path) if Path(p.spec_path).is_absolute() else None
    if spec is None and cwd is not None:
        spec = Path(os.path.normpath(Path(cwd) / p.spec_path))
    inside = spec is not None and cwd is not None and spec.is_relative_to(cwd)
    root = Path(cwd) if inside and cwd else (spec.parent if spec is not None else None)
    where = "the project folder" if inside else "the spec's folder"
    shown = [_relative_word(w, prev, root, cwd) for prev, w in zip(["", *words], words, strict=False)]
    return install, shlex.join(shown) + f"   # run from {where}"


def _command_folder(recorded: Any, words: list[str], spec_path: str) -> str | None:
    """The folder the command ran from: recorded, or the absolute spec path minus its relative argument."""
    if isinstance(recorded, str) and Path(recorded).is_absolute():
        return recorded
    arg = words[words.index("assess") + 1] if "assess" in words[:-1] else None
    spec = Path(spec_path)
    if arg and spec.is_absolute() and not Path(arg).is_absolute():
        parts, tail = spec.parts, Path(arg).parts
        if ".." not in tail and len(parts) > len(tail) and parts[-len(tail) :] == tail:
            return str(Path(*parts[: -len(tail)]))
    return None


def _relative_word(word: str, previous: str, root: Path | None, cwd: str | None) -> str:
    """One word of the command with any path in it relative to ``root`` (URIs keep their scheme)."""
    for scheme in ("sqlite:///", "file://"):
        if word.startswith(scheme) and word[len(scheme) :].startswith("/"):
            return scheme + _relative_path(word[len(scheme) :], root, None, previous)
    if word.startswith("-") or "://" in word or ":" in word.split("/", 1)[0]:
        return word
    if Path(word).is_absolute() or (cwd and root and Path(cwd) != root and "/" in word):
        return _relative_path(word, root, cwd, previous)
    return word


def _relative_path(path: str, root: Path | None, cwd: str | None, previous: str) -> str:
    full = Path(os.path.normpath(Path(cwd) / path if cwd and not Path(path).is_absolute() else path))
    if root is not None and full.is_relative_to(root):
        return full.relative_to(root).as_posix() or "."
    return f"runs/{full.name}" if previous == "--output" else full.name


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
