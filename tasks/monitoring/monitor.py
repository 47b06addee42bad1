"""Monitor one field batch against the reference data: every test, one corrected verdict, one report.

``monitor`` is pure given its inputs (seeded): the CLI, the records and the re-assessment are wired
around it. ``load_field`` (``field_io.py``) reads the field path into batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nnassay.schemas.monitoring import DriftFinding, DriftVerdict, MonitoringReport
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.monitoring import verdict
from nnassay.tasks.monitoring.accuracy import accuracy_finding, cbpe_finding
from nnassay.tasks.monitoring.field_io import UNLABELLED, FieldBatch, load_batch, load_field
from nnassay.tasks.monitoring.ood_rate import ood_rate_finding
from nnassay.tasks.monitoring.outputs import output_findings
from nnassay.tasks.monitoring.tabular import feature_findings, image_findings

__all__ = ["FieldBatch", "MonitorOptions", "load_batch", "load_field", "monitor"]

MIN_TESTED = 5  # fewer field samples than this: no test is run at all


@dataclass(frozen=True)
class MonitorOptions:
    """Settings of a monitoring run (benchmarks/monitoring.py measured calibration and power with
    these defaults but 200 permutations; the accuracy estimate does not enter the verdict)."""

    alpha: float = 0.05  # family-wise false-alarm rate of the verdict
    seed: int = 0
    confidence: float = 0.95  # of the intervals
    permutations: int = 500  # of the MMD test: p-values down to 1/501
    min_effect: float = verdict.MIN_EFFECT  # shift (standard deviations) the sample-size rule targets
    power: float = verdict.POWER
    ood_score: str = "msp"  # the OOD detector's score: 'msp' or 'energy'
    estimate_accuracy: bool = True  # CBPE (1000 bootstrap resamples; skip it for speed)


def monitor(
    reference: Dataset,
    field: Dataset,
    model: ModelRunner,
    *,
    alpha: float | None = None,
    seed: int | None = None,
    field_name: str = "",
    assessment_evidence_sha256: str | None = None,
    options: MonitorOptions | None = None,
) -> MonitoringReport:
    """Compare a field batch with the reference data; labels are used when ``field.y`` has them.

    ``alpha`` and ``seed``, when given, replace those of ``options`` (the other settings, defaults
    ``MonitorOptions()``). Reference rows repeated exactly in the field batch are dropped first:
    two-sample tests assume independent samples, and shared rows would hide drift. With fewer than
    ``MIN_TESTED`` field (or remaining reference) samples no test is run: insufficient data.
    """
    options = options or MonitorOptions()
    options = replace(
        options,
        alpha=options.alpha if alpha is None else alpha,
        seed=options.seed if seed is None else seed,
    )
    reference, removed = drop_overlap(reference, field)
    rng = np.random.default_rng(options.seed)
    testable = min(len(field), len(reference)) >= MIN_TESTED
    findings = _findings(reference, field, model, options, rng) if testable else []
    counted = max(sum(f.counts_for_verdict for f in findings), 1)
    needed = verdict.needed_samples(
        len(reference), counted, options.alpha, min_effect=options.min_effect, power=options.power
    )
    needed = max(needed, MIN_TESTED) if needed is not None and len(reference) >= MIN_TESTED else None
    findings = verdict.correct(findings, options.alpha)
    outcome, drifted, summary = verdict.decide(findings, len(field), needed)
    return MonitoringReport(
        verdict=outcome,
        summary=summary,
        drifted=drifted,
        findings=findings,
        alpha=options.alpha,
        correction=f"holm (family-wise error rate at alpha over the {counted} tests of the verdict)",
        reference_samples=len(reference),
        field_samples=len(field),
        overlap_removed=removed,
        needed_samples=needed if outcome == DriftVerdict.INSUFFICIENT_DATA else None,
        power_rule=verdict.power_rule(
            options.alpha, counted, min_effect=options.min_effect, power=options.power
        ),
        labelled=is_labelled(field),
        reference_sha256=reference.sha256,
        field_sha256=field.sha256,
        field_name=field_name or field.path.name,
        model_sha256=model.sha256,
        assessment_evidence_sha256=assessment_evidence_sha256,
        seed=options.seed,
    )


def is_labelled(data: Dataset) -> bool:
    """True when every sample carries a label (not ``UNLABELLED``)."""
    return bool(len(data) and np.all(data.y != UNLABELLED))


def drop_overlap(reference: Dataset, field: Dataset) -> tuple[Dataset, int]:
    """The reference without rows that the field batch repeats exactly, and how many were dropped."""
    seen = {row.tobytes() for row in field.x.reshape(len(field), -1)}
    keep = np.array([row.tobytes() not in seen for row in reference.x.reshape(len(reference), -1)], bool)
    removed = int((~keep).sum())
    return (replace(reference, x=reference.x[keep], y=reference.y[keep]) if removed else reference), removed


def _findings(
    reference: Dataset, field: Dataset, model: ModelRunner, options: MonitorOptions, rng: np.random.Generator
) -> list[DriftFinding]:
    findings: list[DriftFinding] = []
    if reference.kind == "tabular" and reference.x.ndim == 2:
        findings += feature_findings(reference.x, field.x, reference.feature_names, reference.features)
    else:
        findings += image_findings(reference.x, field.x)
    ref_p, field_p = model.probabilities(reference.x), model.probabilities(field.x)
    findings += output_findings(ref_p, field_p, permutations=options.permutations, rng=rng)
    findings.append(
        ood_rate_finding(model, reference, field, score=options.ood_score, confidence=options.confidence)
    )
    return findings + _accuracy_findings(reference, field, ref_p, field_p, options, rng)


def _accuracy_findings(
    reference: Dataset,
    field: Dataset,
    ref_p: np.ndarray,
    field_p: np.ndarray,
    options: MonitorOptions,
    rng: np.random.Generator,
) -> list[DriftFinding]:
    ref_correct = ref_p.argmax(axis=1) == reference.y
    out = []
    if is_labelled(field):
        out.append(
            accuracy_finding(ref_correct, field_p.argmax(axis=1) == field.y, confidence=options.confidence)
        )
    if options.estimate_accuracy:
        out.append(
            cbpe_finding(
                ref_p.max(axis=1), ref_correct, field_p.max(axis=1), confidence=options.confidence, rng=rng
            )
        )
    return out
