"""Drift of the model's own outputs: any model, images included.

The joint test is a kernel maximum mean discrepancy (MMD, Gretton et al., JMLR 13, 2012) between the
model's softmax outputs on the reference and the field data, taken on a log scale (log p, p floored
at ``LOG_FLOOR``), with a Gaussian kernel whose bandwidth is the median pairwise distance of the
pooled sample, and a permutation test (``permutations`` random relabellings, fixed seed;
p = (1 + #{MMD_perm >= MMD}) / (1 + permutations), exact at any size).

Chosen by measurement (``benchmarks/monitoring.py`` part 3, digits example, field batches of 200,
30 per shift, level 0.05): on raw softmax vectors the MMD barely sees brightness +0.2 or noise
sigma 0.2 (power 0.17 and 0.07): a confident model's outputs crowd into the corners of the simplex
and the kernel sees little but the predicted class. On log p the same test reaches 0.97 and 1.00,
against 0.60 and 0.33 for a classifier two-sample test (logistic regression on log p, half the
sample to train), in comparable or less time (0.02-0.05 s against 0.03-0.3 s per test on a loaded
2-core machine), with no training loop, no held-out split and an exact permutation p-value (300
same-distribution splits: 3% rejected at 0.05).

Beside it: the shift in predicted-class frequencies (chi-squared, Cramér's V) and in confidence
(two-sample KS on the maximum softmax probability).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist, pdist
from scipy.stats import ks_2samp

from nnassay.schemas.monitoring import DriftFinding, FindingKind
from nnassay.tasks.monitoring.distribution import histograms, shares
from nnassay.tasks.monitoring.tabular import chi_squared

LOG_FLOOR = 1e-6  # softmax values below this count as this (log p >= -13.8)
MAX_POOLED = 3000  # rows of the kernel matrix; larger samples are subsampled (fixed seed)


def mmd_permutation_test(
    a: np.ndarray, b: np.ndarray, *, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(squared MMD, permutation p-value) of two samples of row vectors (biased V-statistic).

    All permutations are scored at once: with w the signed weights (1/n for a, -1/m for b),
    MMD^2 = w' K w, so a (N x permutations) weight matrix gives every statistic from one K @ W.
    """
    a, b = _cap(a, b, rng)
    pooled = np.concatenate([a, b]).astype(np.float64)
    kernel = gaussian_kernel(pooled)
    n = len(a)
    labels = np.zeros(len(pooled), bool)
    labels[:n] = True
    weights = np.stack([_weights(rng.permutation(labels), n) for _ in range(permutations)], axis=1)
    observed = float(_weights(labels, n) @ kernel @ _weights(labels, n))
    permuted = np.einsum("ij,ij->j", kernel @ weights, weights)
    p_value = (1 + int(np.sum(permuted >= observed - 1e-12))) / (1 + permutations)
    return max(observed, 0.0), float(p_value)


def _cap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger samples so that the kernel matrix stays within ``MAX_POOLED`` rows."""
    half = MAX_POOLED // 2
    if len(a) + len(b) <= MAX_POOLED:
        return a, b
    keep_b = min(len(b), half)
    keep_a = min(len(a), MAX_POOLED - keep_b)
    return a[rng.choice(len(a), keep_a, replace=False)], b[rng.choice(len(b), keep_b, replace=False)]


def gaussian_kernel(x: np.ndarray) -> np.ndarray:
    """exp(-d^2 / (2 s^2)) with s the median pairwise distance (1 when all points coincide)."""
    distances = pdist(x)
    positive = distances[distances > 0]
    scale = float(np.median(positive)) if len(positive) else 1.0
    return np.exp(-(cdist(x, x, "sqeuclidean")) / (2 * scale**2))


def _weights(labels: np.ndarray, n: int) -> np.ndarray:
    return np.where(labels, 1.0 / n, -1.0 / (len(labels) - n))


def output_findings(
    reference: np.ndarray, field: np.ndarray, *, permutations: int, rng: np.random.Generator
) -> list[DriftFinding]:
    """MMD on softmax vectors, predicted-class frequencies and confidence, with raw p-values."""
    return [
        _mmd_finding(reference, field, permutations, rng),
        _class_finding(reference, field),
        _confidence_finding(reference.max(axis=1), field.max(axis=1)),
    ]


def _mmd_finding(
    reference: np.ndarray, field: np.ndarray, permutations: int, rng: np.random.Generator
) -> DriftFinding:
    ref_log, field_log = (np.log(np.clip(p, LOG_FLOOR, None)) for p in (reference, field))
    mmd2, p_value = mmd_permutation_test(ref_log, field_log, permutations=permutations, rng=rng)
    return DriftFinding(
        what="model outputs (softmax scores)",
        kind=FindingKind.OUTPUTS,
        test=f"kernel MMD on log softmax (floor {LOG_FLOOR:g}), Gaussian kernel (median bandwidth), "
        f"permutation test ({permutations} permutations)",
        statistic=mmd2,
        p_value=p_value,
        effect_size=float(np.sqrt(mmd2)),
        effect_name="MMD (distance of the kernel mean embeddings, 0 = same distribution)",
        counts_for_verdict=True,
        drifted=False,
        sentence=f"The model's softmax scores (log scale) on the field data lie at a kernel distance of "
        f"{np.sqrt(mmd2):.3f} from those on the reference data (0: same distribution).",
    )


def _class_finding(reference: np.ndarray, field: np.ndarray) -> DriftFinding:
    classes = reference.shape[1]
    counts = np.stack([np.bincount(s.argmax(axis=1), minlength=classes) for s in (reference, field)])
    statistic, p_value, v = chi_squared(counts)
    moved = counts[1] / counts[1].sum() - counts[0] / counts[0].sum()
    top = int(np.argmax(np.abs(moved)))
    return DriftFinding(
        what="predicted-class frequencies",
        kind=FindingKind.PREDICTED_CLASSES,
        test="chi-squared (homogeneity, 2 x predicted classes)",
        statistic=statistic,
        p_value=p_value,
        effect_size=v,
        effect_name="Cramér's V",
        counts_for_verdict=True,
        drifted=False,
        sentence=f"The share of predictions per class changed with Cramér's V = {v:.3f}; the largest "
        f"change is class {top} ({moved[top]:+.1%}).",
        distribution=shares(list(range(classes)), counts, "predicted class"),
    )


def _confidence_finding(reference: np.ndarray, field: np.ndarray) -> DriftFinding:
    result = ks_2samp(reference, field)
    change = float(np.mean(field) - np.mean(reference))
    return DriftFinding(
        what="model confidence (maximum softmax probability)",
        kind=FindingKind.CONFIDENCE,
        test="kolmogorov-smirnov (two-sample, two-sided)",
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        value=float(np.mean(field)),
        reference_value=float(np.mean(reference)),
        effect_size=change,
        effect_name="difference of mean confidence (field - reference)",
        counts_for_verdict=True,
        drifted=False,
        sentence=f"Mean confidence is {np.mean(field):.3f} on the field data against "
        f"{np.mean(reference):.3f} on the reference data ({change:+.3f}).",
        distribution=histograms(reference, field, "maximum softmax probability"),
    )
