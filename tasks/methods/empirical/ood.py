"""Out-of-distribution detection (MSP and energy scores) and accuracy under a named domain shift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, JsonValue
from scipy.special import logsumexp
from scipy.stats import rankdata

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.goals import DataSpec
from nnassay.schemas.results import MethodOutcome, Series, TestStatus
from nnassay.schemas.threats import DomainShift, OutOfDistribution
from nnassay.tasks.errors import AssessmentError
from nnassay.tasks.io.data_limits import check_npz
from nnassay.tasks.io.model_io import to_probabilities
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.empirical.common import rate, rows_interval
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.stats.contrast import compare_rates


def scores(ctx: RunContext, x: np.ndarray) -> dict[str, np.ndarray]:
    """In-distribution scores (higher = more in-distribution): max softmax probability, -energy.

    The negative energy is ``logsumexp`` of the logits (temperature 1, Liu et al. 2020). A model
    whose output is already probabilities has lost its logits: the runner's ``logits`` gives
    log-probabilities for it (their logsumexp is 0 for every input, so energy cannot separate anything
    there, as it should not: the information is gone), and their softmax is the probabilities again.
    """
    out = ctx.model.logits(x).astype(np.float64)
    out = np.nan_to_num(out, nan=0.0, posinf=1e30, neginf=-1e30)
    return {"msp": to_probabilities(out, "logits").max(axis=1), "energy": logsumexp(out, axis=1)}


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve, in-distribution positive (Mann-Whitney U, ties count half)."""
    ranks = rankdata(np.concatenate([in_scores, out_scores]))
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> tuple[int, float]:
    """OOD inputs accepted at the threshold keeping ``tpr`` of in-distribution inputs: (count, threshold)."""
    threshold = float(np.quantile(in_scores, 1 - tpr, method="lower"))
    return int((out_scores >= threshold).sum()), threshold


def generated_sets(
    x: np.ndarray,
    names: list[str],
    value_range: tuple[float, float],
    rng: np.random.Generator,
    *,
    nhwc: bool = False,
) -> dict[str, np.ndarray]:
    """Synthetic OOD inputs shaped like x: noise, pixels (or features) shuffled per sample, blank."""
    low, high = value_range
    out = {}
    for name in names:
        if name == "gaussian_noise":
            out[name] = np.clip(rng.normal((low + high) / 2, (high - low) / 4, x.shape), low, high)
        elif name == "uniform_noise":
            out[name] = rng.uniform(low, high, x.shape)
        elif name == "shuffled_pixels":
            out[name] = _shuffle(x, rng, nhwc)
        elif name == "blank":
            out[name] = np.broadcast_to(rng.uniform(low, high, (len(x),) + (1,) * (x.ndim - 1)), x.shape)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _shuffle(x: np.ndarray, rng: np.random.Generator, nhwc: bool) -> np.ndarray:
    """Permute positions within each sample (pixels keep their channels for images)."""
    if x.ndim == 4:
        img = x if nhwc else np.transpose(x, (0, 2, 3, 1))
        pixels = img.reshape(len(x), -1, img.shape[-1])
        mixed = np.stack([f[rng.permutation(len(f))] for f in pixels]).reshape(img.shape)
        return mixed if nhwc else np.transpose(mixed, (0, 3, 1, 2))
    flat = x.reshape(len(x), -1)
    return np.stack([f[rng.permutation(len(f))] for f in flat]).reshape(x.shape)


def _resolve(path: Path, ctx: RunContext) -> Path:
    return path if path.is_absolute() or path.exists() else ctx.data.path.parent / path


def _set_facts(ctx: RunContext, inside: np.ndarray, outside: np.ndarray) -> dict[str, JsonValue]:
    """AUROC and FPR at 95% TPR of one OOD set and score; the FPR with its interval (a rate)."""
    accepted, _ = fpr_at_tpr(inside, outside)
    fpr = rate(accepted, len(outside), ctx, "")
    return {
        "auroc": auroc(inside, outside),
        "fpr_at_95_tpr": fpr.value,
        "fpr_at_95_tpr_interval": [fpr.interval.low, fpr.interval.high] if fpr.interval else None,
        "interval_method": fpr.interval.method if fpr.interval else None,
        "ood_inputs": len(outside),
    }


OOD_STATISTICS_S = 0.3  # bootstrap interval of the AUROC and the histograms


class OodParams(MethodParams):
    """Parameters of the OOD detection test."""

    path: str | None = Field(
        default=None, description="OOD npz file with array x (data space, model layout)."
    )
    generated: list[str] = Field(
        default_factory=lambda: ["uniform_noise", "shuffled_pixels", "blank"],
        description="Synthetic OOD sets used when no file is named.",
    )
    score: str = Field(default="msp", description="Headline score: 'msp' or 'energy'.")


@register
class OodDetection(RobustnessMethod[OodParams, OutOfDistribution]):
    """How well the model's own confidence separates in-distribution data from OOD inputs.

    Reference: ISO/IEC TR 24029-1 7.3; Hendrycks & Gimpel, "A Baseline for Detecting Misclassified
    and Out-of-Distribution Examples", ICLR 2017 (maximum softmax probability); Liu et al.,
    "Energy-based Out-of-distribution Detection", NeurIPS 2020 (energy score). Threat model: a named
    OOD file (npz with ``x``) or generated sets (noise, shuffled pixels, blank). Parameters:
    ``path``, ``generated``, ``score`` (msp). Result: ``auroc`` (in-distribution positive, pooled
    over OOD sets, bootstrap interval) and ``fpr_at_95_tpr`` (share of OOD inputs accepted when 95%
    of the test data are, Clopper-Pearson interval); per set and both scores in ``details``; score
    histograms as charts.
    """

    name = "empirical.ood_detection"
    family = MethodFamily.EMPIRICAL
    clause = "7.3"
    threats = ("ood",)
    metrics = ("auroc", "fpr_at_95_tpr")
    priority = 20

    @classmethod
    def cost(cls, params: OodParams, samples: int) -> Cost:
        """The test data and each OOD set (a file or a generated set, about as large) scored once."""
        sets = 1 if params.path else len(params.generated)
        return passes(samples) + passes(samples, sets, drawn=True) + Cost(fixed_s=OOD_STATISTICS_S)

    def derive_params(self, threat: OutOfDistribution, overrides: dict[str, Any]) -> OodParams:
        return OodParams(
            **{
                "path": str(threat.path) if threat.path else None,
                "generated": threat.generated,
                "score": threat.score,
                **overrides,
            }
        )

    def run(self, ctx: RunContext[OutOfDistribution], params: OodParams) -> MethodOutcome:
        x = ctx.data.x
        try:
            sets = self._ood_sets(ctx, params)
        except (OSError, ValueError, KeyError) as exc:
            return MethodOutcome(
                status=TestStatus.ERROR, reason=f"cannot use the OOD file {params.path}: {exc}"
            )
        inside = scores(ctx, x)
        outside = {name: scores(ctx, xo) for name, xo in sets.items()}
        pooled = np.concatenate([o[params.score] for o in outside.values()])
        head_in = inside[params.score]
        fp, threshold = fpr_at_tpr(head_in, pooled)
        details: dict[str, JsonValue] = {
            "threshold_at_95_tpr": threshold,
            "score": params.score,
            "sets": {
                name: {s: _set_facts(ctx, inside[s], o[s]) for s in ("msp", "energy")}
                for name, o in outside.items()
            },
        }
        return MethodOutcome(
            metrics={
                "auroc": self._auroc_measurement(ctx, head_in, pooled, params.score),
                "fpr_at_95_tpr": rate(
                    fp,
                    len(pooled),
                    ctx,
                    f"Share of OOD inputs scored ({params.score}) "
                    "at least as in-distribution as the threshold that keeps 95% of "
                    "the test data.",
                    ClaimKind.ESTIMATE,
                ),
            },
            series=self._histograms(head_in, {k: v[params.score] for k, v in outside.items()}, params.score),
            details=details,
        )

    def _ood_sets(self, ctx: RunContext, params: OodParams) -> dict[str, np.ndarray]:
        if params.path:
            path = _resolve(Path(params.path), ctx)
            check_npz(path, ("x",))  # sizes from the headers, against the memory budget, before loading
            with np.load(path, allow_pickle=False) as archive:
                xo = np.asarray(archive["x"], dtype=np.float32)
            if xo.shape[1:] != ctx.data.x.shape[1:] and xo.ndim == 4:
                xo = np.transpose(xo, (0, 3, 1, 2) if ctx.data.x.shape[1] == xo.shape[3] else (0, 2, 3, 1))
            if xo.shape[1:] != ctx.data.x.shape[1:]:
                raise ValueError(
                    f"OOD samples have shape {list(xo.shape[1:])}, the model takes "
                    f"{list(ctx.data.x.shape[1:])}"
                )
            return {path.stem: np.ascontiguousarray(xo)}
        return generated_sets(
            ctx.data.x,
            params.generated,
            ctx.model.value_range,
            ctx.rng,
            nhwc=ctx.model.layout.value == "NHWC",
        )

    @staticmethod
    def _auroc_measurement(
        ctx: RunContext, head_in: np.ndarray, pooled: np.ndarray, score: str
    ) -> Measurement:
        values = np.concatenate(
            [np.stack([head_in, np.ones_like(head_in)], 1), np.stack([pooled, np.zeros_like(pooled)], 1)]
        )

        def stat(v: np.ndarray) -> float:
            pos, neg = v[v[:, 1] == 1, 0], v[v[:, 1] == 0, 0]
            return auroc(pos, neg) if len(pos) and len(neg) else 0.5

        value = auroc(head_in, pooled)
        interval = rows_interval(values, stat, ctx, 5, n_resamples=500)
        return Measurement(
            value=value,
            interval=interval,
            n=len(values),
            claim=ClaimKind.ESTIMATE,
            description=f"Probability that a test sample scores ({score}) higher than an OOD "
            "input (AUROC; 1 = perfectly separated, 0.5 = chance).",
        )

    @staticmethod
    def _histograms(inside: np.ndarray, outside: dict[str, np.ndarray], score: str) -> list[Series]:
        everything = np.concatenate([inside, *outside.values()])
        edges = np.histogram_bin_edges(everything, bins=20)
        label = "max softmax probability" if score == "msp" else "negative energy (logsumexp of logits)"
        return [
            Series(
                name=name,
                x_label=label,
                y_label="inputs",
                x=[float(e) for e in edges[1:]],
                y=[float(c) for c in np.histogram(values, bins=edges)[0]],
                kind="histogram",
            )
            for name, values in {"test data (in-distribution)": inside, **outside}.items()
        ]


class ShiftParams(MethodParams):
    """Parameters of the domain-shift test."""

    path: str | None = Field(default=None, description="Shifted data file (npz or csv like data).")


@register
class DomainShiftAccuracy(RobustnessMethod[ShiftParams, DomainShift]):
    """Accuracy on a shifted data set (same labels, other conditions) against clean accuracy.

    Reference: ISO/IEC TR 24029-1 7.2 (field trials) and 5.3.2 (contrastive measures). Threat model:
    the named data set, loaded and checked exactly like the test data. Parameters: ``path``. Result:
    ``accuracy`` on the shifted data (Clopper-Pearson) and ``accuracy_difference`` (shifted - clean,
    Newcombe interval, Fisher's exact test in ``details``; the two sets are treated as independent).
    """

    name = "empirical.domain_shift"
    family = MethodFamily.EMPIRICAL
    clause = "7.2"
    threats = ("domain_shift",)
    metrics = ("accuracy", "accuracy_difference")
    priority = 20

    @classmethod
    def cost(cls, params: ShiftParams, samples: int) -> Cost:
        """The test data and the shifted data (assumed about as large) predicted once each."""
        return passes(samples, 2)

    def derive_params(self, threat: DomainShift, overrides: dict[str, Any]) -> ShiftParams:
        return ShiftParams(**{"path": str(threat.path), **overrides})

    def run(self, ctx: RunContext[DomainShift], params: ShiftParams) -> MethodOutcome:
        from nnassay.tasks.io.data_io import load_dataset

        if not params.path:
            return MethodOutcome(status=TestStatus.ERROR, reason="no shifted data file named (threat.path)")
        try:
            shifted = load_dataset(DataSpec(path=_resolve(Path(params.path), ctx)), ctx.model)
        except AssessmentError as exc:
            return MethodOutcome(status=TestStatus.ERROR, reason=f"the shifted data cannot be used: {exc}")
        k_clean = int((ctx.model.predict(ctx.data.x) == ctx.data.y).sum())
        k_shift = int((ctx.model.predict(shifted.x) == shifted.y).sum())
        n_clean, n_shift = len(ctx.data), len(shifted)
        contrast = compare_rates(k_clean, n_clean, k_shift, n_shift, ctx.confidence)
        return MethodOutcome(
            metrics={
                "accuracy": rate(k_shift, n_shift, ctx, "Accuracy on the shifted data set."),
                "accuracy_difference": Measurement(
                    value=contrast.difference,
                    interval=contrast.interval,
                    n=n_shift,
                    description="Shifted accuracy minus clean accuracy (negative: the shift costs accuracy).",
                ),
            },
            details={
                "clean_accuracy": k_clean / n_clean,
                "shifted_samples": n_shift,
                "shifted_sha256": shifted.sha256,
                "p_value": contrast.p_value,
                "test": contrast.test,
                "significant": contrast.significant,
            },
        )
