"""Render the monitoring report from a monitoring record alone: HTML via Jinja, PDF via WeasyPrint.

Wording, rounding and the choice of plots happen here, in ``MonitoringView``; the template
(``monitoring.html.j2``) only displays. Plots are the stored distributions of the drifted findings,
drawn by ``charts.chart_svg`` as SVG data URIs (the PDF renderer loads nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nnassay.reports.charts import chart_svg
from nnassay.reports.render import TEMPLATES, environment, render_pdf
from nnassay.schemas.monitoring import DriftFinding, DriftVerdict, MonitoringRecord, MonitoringReport

VERDICT_WORDS = {
    DriftVerdict.NO_DRIFT: "no drift",
    DriftVerdict.DRIFT: "drift",
    DriftVerdict.INSUFFICIENT_DATA: "insufficient data",
}
VERDICT_CLASS = {  # the dossier's verdict colours: pass, fail, inconclusive
    DriftVerdict.NO_DRIFT: "pass",
    DriftVerdict.DRIFT: "fail",
    DriftVerdict.INSUFFICIENT_DATA: "inconclusive",
}
MEANING = {
    DriftVerdict.NO_DRIFT: "none of the tests found a change at the stated false-alarm rate, and the batch"
    " was large enough for them to find a shift of the stated size (exit code 0)",
    DriftVerdict.DRIFT: "at least one test found a change after the correction for multiple tests; the"
    " model meets data unlike those it was assessed on (exit code 1)",
    DriftVerdict.INSUFFICIENT_DATA: "no change was found, but the batch is too small for the tests to be"
    " trusted: nothing reliable was measured (exit code 3)",
}
MAX_PLOTS = 12  # per batch: the drifted findings with the smallest adjusted p-values


@dataclass
class FindingRow:
    """One finding as the report's table shows it."""

    what: str
    test: str
    statistic: str
    p_value: str
    adjusted: str
    effect: str
    interval: str
    drifted: str
    counts: bool
    sentence: str


@dataclass
class BatchView:
    """One batch: its verdict in words, the findings, and the plots of what drifted."""

    name: str
    time: str
    verdict: str
    verdict_class: str
    summary: str
    meaning: str
    facts: list[tuple[str, str]]
    rows: list[FindingRow]
    plots: list[tuple[str, str]] = field(default_factory=list)  # (data URI, caption)


@dataclass
class MonitoringView:
    """Everything the template shows, already worded."""

    title: str
    verdict: str
    verdict_class: str
    summary: str
    facts: list[tuple[str, str]]
    batches: list[BatchView]


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _row(f: DriftFinding) -> FindingRow:
    effect = f"{_num(f.effect_size)} ({f.effect_name})" if f.effect_size is not None else "–"
    interval = (
        f"{_num(f.value, 4)} [{_num(f.interval.low, 4)}, {_num(f.interval.high, 4)}] "
        f"({f.interval.confidence:.0%} {f.interval.method})"
        if f.interval
        else _num(f.value, 4)
    )
    return FindingRow(
        what=f.what,
        test=f.test,
        statistic=_num(f.statistic),
        p_value=_num(f.p_value),
        adjusted=_num(f.adjusted_p_value) if f.counts_for_verdict else "informs only",
        effect=effect,
        interval=interval,
        drifted="yes" if f.drifted else "no",
        counts=f.counts_for_verdict,
        sentence=f.sentence,
    )


def _plots(report: MonitoringReport) -> list[tuple[str, str]]:
    drifted = sorted(
        (f for f in report.findings if f.drifted and f.distribution),
        key=lambda f: f.adjusted_p_value if f.adjusted_p_value is not None else 1.0,
    )
    return [
        (
            chart_svg(list(f.distribution), f"{f.what}: reference vs field"),
            f"{f.what} (adjusted p = {_num(f.adjusted_p_value)}): {f.sentence}",
        )
        for f in drifted[:MAX_PLOTS]
    ]


def _batch(name: str, time: str, report: MonitoringReport) -> BatchView:
    facts = [
        ("Field samples", f"{report.field_samples} ({'labelled' if report.labelled else 'no labels'})"),
        ("Reference samples", f"{report.reference_samples} ({report.overlap_removed} repeated ones dropped)"),
        ("False-alarm rate", f"{report.alpha:g}, {report.correction}"),
        ("Sample size rule", report.power_rule),
        ("Field data sha256", report.field_sha256),
    ]
    if report.needed_samples is not None:
        facts.insert(1, ("Samples needed", f"about {report.needed_samples}"))
    return BatchView(
        name=name,
        time=time,
        verdict=VERDICT_WORDS[report.verdict],
        verdict_class=VERDICT_CLASS[report.verdict],
        summary=report.summary,
        meaning=MEANING[report.verdict],
        facts=facts,
        rows=[_row(f) for f in report.findings],
        plots=_plots(report),
    )


def _facts(record: MonitoringRecord) -> list[tuple[str, str]]:
    link = (
        f"evidence sha256 {record.assessment_evidence_sha256}"
        + (f" (MLflow run {record.assessment_run_id})" if record.assessment_run_id else "")
        if record.assessment_evidence_sha256
        else "no tracked assessment of this spec was found: the monitoring is not chained to one"
    )
    facts = [
        ("Spec id / monitoring id", f"{record.spec_id} / {record.monitoring_id}"),
        ("Monitored", f"{record.created_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("Spec", record.spec_path),
        ("Field data", record.field_path),
        ("Assessment monitored", link),
        ("MLflow run", record.mlflow_run_id or "not tracked"),
    ]
    r = record.reassessment
    if r is not None:
        done = (
            f"{r.run_folder}: overall {r.overall}, evidence sha256 {r.evidence_sha256}"
            if r.evidence_sha256
            else f"not run: {r.reason}"
        )
        facts.append(("Re-assessment", f"derived spec {r.derived_spec} (batch {r.batch}); {done}"))
    return facts


def build_monitoring_view(record: MonitoringRecord) -> MonitoringView:
    """The worded view of a monitoring record."""
    return MonitoringView(
        title=f"Field monitoring of {record.spec_id}",
        verdict=VERDICT_WORDS[record.verdict],
        verdict_class=VERDICT_CLASS[record.verdict],
        summary=record.summary,
        facts=_facts(record),
        batches=[_batch(b.name, f"{b.modified:%Y-%m-%d %H:%M:%S} UTC", b.report) for b in record.batches],
    )


def render_monitoring_html(record: MonitoringRecord) -> str:
    """The monitoring report as one self-contained HTML document."""
    css = (TEMPLATES / "report.css").read_text()
    view = build_monitoring_view(record)
    return environment().get_template("monitoring.html.j2").render(v=view, css=css)


def render_monitoring_pdf(record: MonitoringRecord) -> bytes:
    """The monitoring report as PDF bytes (no attachments: monitoring.json sits beside it)."""
    pdf, refused = render_pdf(render_monitoring_html(record), pdf_variant=None)
    if refused:  # the template embeds everything: a refusal is a bug, not a missing picture
        raise ValueError(f"the monitoring report asked for outside resources: {refused}")
    return pdf
