"""Out-of-distribution rate of the field data by the project's OOD detector, with its interval.

The detector is ``empirical.ood_detection``'s (``tasks/methods/empirical/ood.py``): a score per
input (maximum softmax probability or negative energy) and the threshold that keeps ``tpr`` (95%)
of the reference data (``fpr_at_tpr``). A field input scoring below the threshold is counted as
out-of-distribution. About 1 - tpr of reference inputs fall below it by construction, so the field
rate is compared with the reference's own rate by a one-sided Fisher exact test (field higher);
the interval of the field rate is Clopper-Pearson (``tasks/stats/intervals.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import fisher_exact

from nnassay.schemas.monitoring import DriftFinding, FindingKind
from nnassay.schemas.threats import OutOfDistribution
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.empirical.ood import fpr_at_tpr, scores
from nnassay.tasks.methods.registry import RunContext
from nnassay.tasks.stats.intervals import proportion_interval

TPR = 0.95
SCORES = ("msp", "energy")  # the keys of ood.scores


def detector_scores(model: ModelRunner, data: Dataset, score: str) -> np.ndarray:
    """The OOD detector's in-distribution score of each input (higher: more in-distribution).

    ``ood.scores`` takes a method's run context but reads only its model; a context without a
    test folder is built for it here.
    """
    ctx: RunContext[OutOfDistribution] = RunContext(
        model=model,
        data=data,
        threat=OutOfDistribution(kind="ood"),
        metric="ood_rate",
        seed=0,
        out_dir=Path("."),
        run_dir=Path("."),
    )
    return scores(ctx, data.x)[score]


def ood_rate_finding(
    model: ModelRunner,
    reference: Dataset,
    field: Dataset,
    *,
    score: str = "msp",
    confidence: float = 0.95,
) -> DriftFinding:
    """Share of field inputs the detector flags, its interval, and the test against the reference."""
    if score not in SCORES:
        raise ValueError(f"unknown OOD score {score!r}; expected one of {list(SCORES)}")
    inside = detector_scores(model, reference, score)
    outside = detector_scores(model, field, score)
    accepted, threshold = fpr_at_tpr(inside, outside, TPR)
    flagged = len(outside) - accepted
    reference_flagged = int(np.sum(inside < threshold))
    table = [[flagged, accepted], [reference_flagged, len(inside) - reference_flagged]]
    p_value = float(fisher_exact(table, alternative="greater").pvalue)
    interval = proportion_interval(flagged, len(outside), confidence)
    rate, reference_rate = flagged / len(outside), reference_flagged / len(inside)
    return DriftFinding(
        what="out-of-distribution rate",
        kind=FindingKind.OOD_RATE,
        test=f"fisher exact (one-sided: field rate higher); detector: {score} score below the threshold "
        f"keeping {TPR:.0%} of the reference data ({threshold:.4g})",
        p_value=min(p_value, 1.0),
        value=rate,
        reference_value=reference_rate,
        interval=interval,
        effect_size=rate - reference_rate,
        effect_name="difference of OOD rates (field - reference)",
        counts_for_verdict=True,
        drifted=False,
        sentence=f"The OOD detector flags {rate:.1%} of the field inputs ({interval.confidence:.0%} "
        f"interval {interval.low:.1%} to {interval.high:.1%}) against {reference_rate:.1%} of the "
        "reference inputs.",
    )
