"""Are the attributions evidence? Deletion/insertion scores against random orders (Samek et al. 2017,
Petsiuk et al. 2018) and the model-randomisation sanity check (Adebayo et al. 2018).

Scores use the deployed model (ONNX Runtime) and the probability of the class the model chose, so
they are comparable across samples and mean the same whichever engine made the attributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from scipy.stats import spearmanr

from nnassay.schemas.explain import (
    AttributionMethodName,
    FaithfulnessSummary,
    SampleFaithfulness,
    SanityCheck,
)
from nnassay.tasks.explain.attributions import Scorer, Units
from nnassay.tasks.stats.bootstrap import bootstrap_interval

MAX_STEPS = 32  # deletion/insertion curve points beyond the start (units are removed in chunks)
MIN_SAMPLES_TO_CLAIM = 3  # fewer explained failures: no claim that attributions beat random


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def step_counts(n_units: int, max_steps: int = MAX_STEPS) -> np.ndarray:
    """How many units are removed at each curve point: 0, ..., n_units (at most max_steps + 1 points)."""
    return np.unique(np.linspace(0, n_units, min(n_units, max_steps) + 1).round().astype(int))


def _curve_inputs(
    x: np.ndarray, baseline: np.ndarray, units: Units, order: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Deletion inputs (x with the first c units of ``order`` set to baseline), then insertion inputs
    (baseline with the first c units taken from x), for each count c."""
    ranked = units.masks[order]
    removed = np.stack([ranked[:c].any(axis=0) for c in counts])  # (len(counts), *shape)
    deletion = np.where(removed, baseline[None], x[None])
    insertion = np.where(removed, x[None], baseline[None])
    return np.concatenate([deletion, insertion])


def sample_faithfulness(
    model: Scorer,
    x: np.ndarray,
    chosen: int,
    unit_scores: np.ndarray,
    units: Units,
    baseline: np.ndarray,
    *,
    rng: np.random.Generator,
    random_orders: int = 5,
) -> SampleFaithfulness:
    """Deletion AOPC and insertion AUC of one sample's ranking (highest attribution first), and the
    same for ``random_orders`` random rankings. One ORT call."""
    counts = step_counts(len(units.masks))
    orders = [np.argsort(-unit_scores, kind="stable")]
    orders += [rng.permutation(len(units.masks)) for _ in range(random_orders)]
    batch = np.concatenate([_curve_inputs(x, baseline, units, o, counts) for o in orders])
    probs = softmax(model.logits(batch.astype(np.float32)).astype(np.float64))[:, chosen]
    curves = probs.reshape(len(orders), 2, len(counts))
    deletion = curves[:, 0, 0:1] - curves[:, 0, :]  # drop from the full input (count 0)
    aopc, auc = deletion.mean(axis=1), curves[:, 1, :].mean(axis=1)
    return SampleFaithfulness(
        deletion_aopc=float(aopc[0]),
        deletion_aopc_random=float(aopc[1:].mean()) if random_orders else 0.0,
        insertion_auc=float(auc[0]),
        insertion_auc_random=float(auc[1:].mean()) if random_orders else 0.0,
    )


def summarise(
    method: AttributionMethodName,
    scores: Sequence[SampleFaithfulness],
    *,
    confidence: float = 0.95,
    rng: np.random.Generator,
) -> FaithfulnessSummary:
    """Means over samples, bootstrap intervals of the AOPC and of its gain over random order."""
    aopc = np.array([s.deletion_aopc for s in scores], np.float64)
    random = np.array([s.deletion_aopc_random for s in scores], np.float64)
    if not len(aopc):
        raise ValueError("summarise needs at least one explained sample, got none")
    aopc_ci = bootstrap_interval(aopc, np.mean, confidence, rng, n_resamples=1000)
    gain_ci = bootstrap_interval(aopc - random, np.mean, confidence, rng, n_resamples=1000)
    return FaithfulnessSummary(
        method=method,
        samples=len(aopc),
        deletion_aopc=float(aopc.mean()),
        deletion_aopc_interval=aopc_ci,
        deletion_aopc_random=float(random.mean()),
        gain_interval=gain_ci,
        insertion_auc=float(np.mean([s.insertion_auc for s in scores])),
        insertion_auc_random=float(np.mean([s.insertion_auc_random for s in scores])),
        beats_random=len(aopc) >= MIN_SAMPLES_TO_CLAIM and gain_ci.low > 0.0,
    )


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman correlation of |first| and |second| (flattened); 0 when either is constant."""
    a, b = np.abs(first).reshape(-1), np.abs(second).reshape(-1)
    if len(a) < 2 or np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def active_units(x: np.ndarray, baseline: np.ndarray, units: Units) -> np.ndarray:
    """Units where the input differs from the baseline. Elsewhere Integrated Gradients and occlusion
    give 0 by construction, whatever the weights, which would make any two models look alike."""
    differs = (x != baseline).reshape(-1)
    active = units.masks.reshape(len(units.masks), -1)[:, differs].any(axis=1)
    return np.asarray(active) if active.sum() >= 3 else np.ones(len(units.masks), bool)


def sanity_check(
    method: AttributionMethodName,
    original: np.ndarray,
    randomised: np.ndarray,
    *,
    x: np.ndarray,
    baseline: np.ndarray,
    units: Units,
    threshold: float = 0.5,
) -> SanityCheck:
    """Pass when the median per-sample rank correlation of |unit attributions| between the model and
    its weight-randomised copy stays below ``threshold``: the ranking depends on what was learned.
    Units are compared where the input differs from the baseline (``active_units``)."""
    per_sample = []
    for sample, o, r in zip(x, original, randomised, strict=True):
        keep = active_units(sample, baseline, units)
        per_sample.append(rank_correlation(units.scores(o)[keep], units.scores(r)[keep]))
    median = float(np.median(per_sample)) if per_sample else 1.0
    return SanityCheck(method=method, rank_correlation=median, threshold=threshold, passed=median < threshold)


def not_applicable(method: AttributionMethodName, note: str, threshold: float = 0.5) -> SanityCheck:
    """The record of a sanity check that could not be run, with the reason (``note``); the rank
    correlation is 1 because the 'randomised' copy is the model itself."""
    return SanityCheck(
        method=method,
        rank_correlation=1.0,
        threshold=threshold,
        passed=False,
        applicable=False,
        note=note,
    )


def shufflable(array: np.ndarray) -> bool:
    """A weight tensor the sanity check shuffles: float, rank 2 or more, more than one value."""
    return array.ndim >= 2 and array.dtype.kind == "f" and array.size > 1


def weight_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the initializers ``shuffled_weights`` would shuffle (none for e.g. a tree ensemble)."""
    from onnx import numpy_helper

    return [init.name for init in model.graph.initializer if shufflable(numpy_helper.to_array(init))]


def shuffled_weights(model: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    """A copy whose weight tensors (float initializers of rank 2 or more: matrices, kernels) have
    their values shuffled: same distribution, learned structure destroyed; biases stay."""
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        array = numpy_helper.to_array(init)
        if shufflable(array):
            shuffled = rng.permutation(array.reshape(-1)).reshape(array.shape)
            init.CopyFrom(numpy_helper.from_array(shuffled.astype(array.dtype), init.name))
    return copy


def write_randomised(source: Path, folder: Path, seed: int) -> Path:
    """Write the weight-shuffled copy of the ONNX file ``source`` into ``folder``; returns its path."""
    path = folder / f"randomised_{source.stem}.onnx"
    onnx.save(shuffled_weights(onnx.load(str(source)), np.random.default_rng(seed)), str(path))
    return path
