"""Explanation metrics a goal can set a threshold on: attribution stability under small noise, and
the faithfulness gain over random order (both measurements with bootstrap intervals)."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from nnassay.schemas.common import ClaimKind, Measurement
from nnassay.schemas.explain import AttributionMethodName, FaithfulnessSummary
from nnassay.tasks.explain.explain import ExplainOptions, attributed_classes, attributor, methods_for
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.stats.bootstrap import bootstrap_interval


def signed_rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman correlation of two unit rankings (signed); 1 when both are constant, 0 when one is."""
    flat_a, flat_b = np.ravel(first), np.ravel(second)
    constant = (np.ptp(flat_a) == 0.0, np.ptp(flat_b) == 0.0)
    if any(constant):
        return 1.0 if all(constant) else 0.0
    return float(spearmanr(flat_a, flat_b).statistic)


def _measurement(values: np.ndarray, description: str, confidence: float, seed: int) -> Measurement:
    interval = None
    if len(values) >= 2:
        rng = np.random.default_rng([seed, 7])
        interval = bootstrap_interval(values, np.mean, confidence, rng, n_resamples=1000)
    return Measurement(
        value=float(values.mean()) if len(values) else 0.0,
        interval=interval,
        claim=ClaimKind.OBSERVATION,
        n=len(values),
        description=description,
    )


def per_sample_stability(
    runner: ModelRunner,
    data: Dataset,
    indices: np.ndarray,
    *,
    sigma: float,
    draws: int = 8,
    method: AttributionMethodName | None = None,
    options: ExplainOptions | None = None,
) -> tuple[np.ndarray, AttributionMethodName]:
    """Per sample: mean rank correlation of its unit attributions with those of ``draws`` copies under
    Gaussian noise of std ``sigma`` (data units, clipped to the value range), same classes attributed."""
    options = options or ExplainOptions()
    tool, engine, _ = attributor(runner, data, options)
    chosen = method or methods_for(engine, data.kind, options)[0]
    x = data.x[indices].astype(np.float32)
    a, b = attributed_classes(runner.logits(x), data.y[indices].astype(np.int64))
    rng = np.random.default_rng([options.seed, 5])
    noisy = np.repeat(x, draws, axis=0) + rng.normal(0.0, sigma, (len(x) * draws, *x.shape[1:]))
    noisy = np.clip(noisy, *runner.value_range).astype(np.float32)
    clean = [tool.units.scores(v) for v in tool.run(chosen, x, a, b)]
    shaken = [tool.units.scores(v) for v in tool.run(chosen, noisy, np.repeat(a, draws), np.repeat(b, draws))]
    values = [signed_rank_correlation(clean[i // draws], s) for i, s in enumerate(shaken)]
    return np.asarray(values, np.float64).reshape(len(x), draws).mean(axis=1), chosen


def attribution_stability(
    runner: ModelRunner,
    data: Dataset,
    indices: np.ndarray,
    *,
    sigma: float,
    draws: int = 8,
    method: AttributionMethodName | None = None,
    options: ExplainOptions | None = None,
) -> Measurement:
    """Metric ``attribution_stability``: mean over samples of the rank correlation between clean and
    noisy attributions (1: the explanation does not move under the noise), bootstrap interval."""
    options = options or ExplainOptions()
    values, chosen = per_sample_stability(
        runner, data, indices, sigma=sigma, draws=draws, method=method, options=options
    )
    description = (
        f"Mean rank correlation of {chosen.replace('_', ' ')} attributions between each sample and "
        f"{draws} copies under Gaussian noise of sigma {sigma:g} (1: the explanation stays the same)."
    )
    return _measurement(values, description, options.confidence, options.seed)


def faithfulness_gain(summary: FaithfulnessSummary) -> Measurement:
    """Metric ``attribution_faithfulness_gain``: mean deletion AOPC minus that of random orders."""
    return Measurement(
        value=summary.deletion_aopc - summary.deletion_aopc_random,
        interval=summary.gain_interval,
        claim=ClaimKind.OBSERVATION,
        n=summary.samples,
        description=f"Mean gain of {summary.method.replace('_', ' ')} deletion AOPC over random feature "
        "order (above 0: the attributions find what the model relies on).",
    )
