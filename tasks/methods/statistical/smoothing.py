"""Randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019): L2 certificates of a smoothed model.

The smoothed classifier g(x) = argmax_c P(f(x + d) = c), d ~ N(0, sigma^2 I), is a different
classifier from the base ONNX model f; every number here is about g. On images noise is added in
data space (the units of the threat's eps) and is not clipped to the value range, so the base model
sees some out-of-range values.

On tabular data the smoothing happens in the scaled space z = x / scale (each feature's scale, as
the attacks use it, ``nnassay.tasks.methods.empirical.features``): d ~ N(0, sigma^2 I) over the
movable features, i.e. noise sigma x scale_j on feature j, with immutable and categorical features
held at their values. The base classifier reads each noisy input after rounding integer features and
clipping every feature to its bounds (``feature_noise``): a fixed function of the noisy input, so
Cohen et al.'s argument holds unchanged. The certified radius R is then an L2 radius in units of each
feature's scale: g is constant on sum_j ((x'_j - x_j) / scale_j)^2 <= R^2 over the movable features
(fixed features unchanged), the ellipsoid the L2 attacks search on tabular data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from scipy.stats import binomtest, norm

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.results import MethodOutcome, Series, TestStatus
from nnassay.schemas.threats import L2Ball
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.methods.statistical import sampling
from nnassay.tasks.methods.statistical.budget import budget_cut
from nnassay.tasks.methods.statistical.core import per_sample, rate
from nnassay.tasks.methods.statistical.feature_noise import (
    DATA_UNITS,
    EPS_UNITS,
    FeatureGaussian,
    FeatureNoise,
    features_of,
)
from nnassay.tasks.stats.bootstrap import bootstrap_interval
from nnassay.tasks.stats.intervals import lower_bounds

ABSTAIN = -1
SELECT, ESTIMATE, PREDICT = 1, 2, 3  # random-stream stages: n0 draws, n draws, PREDICT's draws


@dataclass(frozen=True)
class Certificates:
    """CERTIFY's output per sample: class (ABSTAIN = -1), lower bound of pA, L2 radius (0 if none)."""

    prediction: np.ndarray
    p_lower: np.ndarray
    radius: np.ndarray


def certify(
    model: ModelRunner,
    x: np.ndarray,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    *,
    seed: int,
    first_index: int = 0,
    batch: int = 10_000,
    keep_going: Callable[[], bool] = lambda: True,
    features: FeatureNoise | None = None,
) -> tuple[Certificates, int]:
    """CERTIFY of Cohen et al. (Algorithm 1) for each sample of ``x``.

    n0 noisy draws choose the class cA; n fresh draws give the one-sided (1 - alpha) Clopper-Pearson
    lower bound pA of P(f(x + d) = cA); the sample is certified at L2 radius sigma * Phi^-1(pA) when
    pA > 1/2, else CERTIFY abstains. Each certificate is wrong with probability at most alpha.
    With ``features`` (tabular data) the noise and the radius are in units of each feature's scale
    (module docstring).

    Returns:
        (certificates, done): done leading samples are valid (fewer when ``keep_going`` stopped).
    """
    noise = _noise(sigma, features)
    chosen, done0 = sampling.class_counts(
        model,
        x,
        noise,
        n0,
        seed=seed,
        stage=SELECT,
        first_index=first_index,
        batch=batch,
        keep_going=keep_going,
    )
    counts, done = sampling.class_counts(
        model,
        x[:done0],
        noise,
        n,
        seed=seed,
        stage=ESTIMATE,
        first_index=first_index,
        batch=batch,
        keep_going=keep_going,
    )
    top = np.argmax(chosen[:done], axis=1)
    p_lower = lower_bounds(counts[np.arange(done), top], n, 1 - alpha)
    certified = p_lower > 0.5
    radius = np.where(certified, sigma * norm.ppf(np.clip(p_lower, 0.5, 1.0)), 0.0)
    return Certificates(np.where(certified, top, ABSTAIN), p_lower, radius), done


def predict(
    model: ModelRunner,
    x: np.ndarray,
    sigma: float,
    n: int,
    alpha: float,
    *,
    seed: int,
    first_index: int = 0,
    batch: int = 10_000,
    features: FeatureNoise | None = None,
) -> np.ndarray:
    """PREDICT of Cohen et al.: the top class of n noisy draws when a two-sided binomial test of its
    count against the runner-up's rejects equality at level alpha, else ABSTAIN (-1).

    The returned class differs from g(x) with probability at most alpha.
    """
    counts, _ = sampling.class_counts(
        model,
        x,
        _noise(sigma, features),
        n,
        seed=seed,
        stage=PREDICT,
        first_index=first_index,
        batch=batch,
    )
    order = np.argsort(-counts, axis=1, kind="stable")
    out = np.full(len(x), ABSTAIN, np.int64)
    for i, (a, b) in enumerate(order[:, :2]):
        n_a, n_b = int(counts[i, a]), int(counts[i, b])
        if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
            out[i] = a
    return out


def _noise(sigma: float, features: FeatureNoise | None) -> sampling.Sampler:
    """Unclipped Gaussian noise in data units (images), or in feature scales, snapped (tabular)."""
    return sampling.Gaussian(sigma) if features is None else FeatureGaussian(sigma, features)


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """Largest radius CERTIFY can give with n draws: all n draws on one class."""
    p = float(lower_bounds(n, n, 1 - alpha))
    return sigma * float(norm.ppf(p)) if p > 0.5 else 0.0


class SmoothingParams(MethodParams):
    """Parameters of randomized smoothing (names as in Cohen et al.)."""

    sigma: float = Field(
        default=0.25,
        gt=0,
        description="Noise standard deviation, data units (tabular: units of each feature's scale).",
    )
    n: int = Field(default=1000, ge=1, description="Noisy draws per sample that estimate pA.")
    n0: int = Field(
        default=100, ge=1, validate_default=True, description="Noisy draws per sample that choose the class."
    )
    alpha: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        validate_default=True,
        description="Failure probability of each certificate.",
    )
    eps: float | None = Field(default=None, gt=0, description="L2 radius of the goal; from the threat.")
    predict: bool = Field(default=False, description="Also run PREDICT (n more draws per sample).")
    batch: int = Field(default=10_000, ge=1, description="Noisy inputs per ONNX Runtime call.")

    @field_validator("n0")
    @classmethod
    def _n0_at_most_n(cls, value: int, info: ValidationInfo) -> int:
        n = info.data.get("n")
        if n is not None and value > n:
            raise ValueError(
                f"n0 (draws choosing the class, {value}) must not exceed n (draws "
                f"certifying it, {n}); Cohen et al. use n0=100, n=100000"
            )
        return value

    @field_validator("alpha")
    @classmethod
    def _can_certify(cls, value: float, info: ValidationInfo) -> float:
        n = info.data.get("n")
        if n is not None and value ** (1 / n) <= 0.5:
            raise ValueError(
                f"with n={n} draws and alpha={value:g} no sample can ever be certified "
                f"(best lower bound of pA {value ** (1 / n):.3g} <= 0.5); raise n"
            )
        return value


@dataclass(frozen=True)
class SmoothingPart:
    """CERTIFY (and PREDICT) results of samples [start, start + len(prediction))."""

    start: int
    total: int
    certificates: Certificates
    smoothed: np.ndarray | None  # PREDICT's classes, when asked for


@register
class RandomizedSmoothing(RobustnessMethod[SmoothingParams, L2Ball]):
    """L2 robustness certificates of the Gaussian-smoothed classifier (randomized smoothing).

    Reference: Cohen, Rosenfeld, Kolter, "Certified Adversarial Robustness via Randomized
    Smoothing", ICML 2019 (CERTIFY and PREDICT exactly as there); ISO/IEC TR
    24029-1 5.3 (no sub-clause fits certificates: the general one).
    Threat model: L2 ball of radius eps (data units; on tabular data, units of each feature's scale:
    smoothing in the scaled space x / scale, see the module docstring). Parameters: ``sigma`` (0.25), ``n0`` (100),
    ``n`` (1000), ``alpha`` (0.001), ``predict`` (False). Result: ``certified_accuracy`` at eps
    (CERTIFY's class is right and its radius is at least eps), ``abstention_rate`` and
    ``mean_certified_radius`` (0 for wrong or abstained samples), and the certified accuracy curve
    against the radius. The certificates are about the smoothed classifier, not the base model.
    """

    name = "statistical.randomized_smoothing"
    family = MethodFamily.STATISTICAL
    clause = "5.3"  # no sub-clause fits certificates: the general one
    threats = ("l2_ball",)
    metrics = ("certified_accuracy", "abstention_rate", "mean_certified_radius")
    claim = ClaimKind.CERTIFICATE
    priority = 50
    shard_unit = 1  # every sample has its own random streams

    @classmethod
    def cost(cls, params: SmoothingParams, samples: int) -> Cost:
        """``n0`` selection draws and ``n`` estimation draws per sample (``n`` more with PREDICT)."""
        draws = params.n0 + params.n + (params.n if params.predict else 0)
        return passes(samples * draws, batch=params.batch, drawn=True)

    def derive_params(self, threat: L2Ball, overrides: dict[str, Any]) -> SmoothingParams:
        params = SmoothingParams(**{"eps": threat.eps, **overrides})
        reach = max_radius(params.sigma, params.n, params.alpha)
        if params.eps is not None and params.eps > reach:
            raise ValueError(
                f"field 'sigma': with sigma={params.sigma:g}, n={params.n} and "
                f"alpha={params.alpha:g} the largest certifiable L2 radius is {reach:.3g}, "
                f"below the goal's eps {params.eps:g}; raise sigma or n"
            )
        return params

    def run(self, ctx: RunContext[L2Ball], params: SmoothingParams) -> MethodOutcome:
        return self.merge_parts(ctx, params, [self.run_part(ctx, params, 0, len(ctx.data))])

    def run_part(
        self, ctx: RunContext[L2Ball], params: SmoothingParams, start: int, stop: int
    ) -> SmoothingPart:
        """CERTIFY (and PREDICT) on samples [start, stop); stops early when the time runs out."""
        x = ctx.data.x[start:stop]
        features = features_of(ctx)
        certs, done = certify(
            ctx.model,
            x,
            params.sigma,
            params.n0,
            params.n,
            params.alpha,
            seed=ctx.seed,
            first_index=start,
            batch=params.batch,
            keep_going=lambda: ctx.time_left() > 0,
            features=features,
        )
        smoothed = None
        if params.predict and done:
            smoothed = predict(
                ctx.model,
                x[:done],
                params.sigma,
                params.n,
                params.alpha,
                seed=ctx.seed,
                first_index=start,
                batch=params.batch,
                features=features,
            )
        ctx.progress(done, len(x))
        return SmoothingPart(start=start, total=stop - start, certificates=certs, smoothed=smoothed)

    def merge_parts(
        self, ctx: RunContext[L2Ball], params: SmoothingParams, parts: list[Any]
    ) -> MethodOutcome:
        """The outcome over all parts (concatenation of per-sample certificates: exact)."""
        kept = _prefix(sorted(parts, key=lambda p: p.start))
        certs = Certificates(
            *(
                np.concatenate([getattr(p.certificates, f) for p in kept])
                for f in ("prediction", "p_lower", "radius")
            )
        )
        n = len(certs.prediction)
        if n == 0:
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                reason="the time budget ran out before any sample was certified",
            )
        y = ctx.data.y[kept[0].start : kept[0].start + n]
        smoothed = (
            np.concatenate([p.smoothed for p in kept])
            if params.predict and all(p.smoothed is not None for p in kept)
            else None
        )
        return budget_cut(_outcome(ctx, params, certs, y, smoothed), n, len(ctx.data))


def _prefix(parts: list[SmoothingPart]) -> list[SmoothingPart]:
    kept = []
    for part in parts:
        kept.append(part)
        if len(part.certificates.prediction) < part.total:
            break
    return kept


def _outcome(
    ctx: RunContext,
    params: SmoothingParams,
    certs: Certificates,
    y: np.ndarray,
    smoothed: np.ndarray | None,
) -> MethodOutcome:
    eps = params.eps if params.eps is not None else 0.0
    n = len(y)
    correct = certs.prediction == y
    abstained = certs.prediction == ABSTAIN
    radius = np.where(correct, certs.radius, 0.0)
    at_eps = correct & (certs.radius >= eps)
    features = features_of(ctx)
    units = DATA_UNITS if features is None else EPS_UNITS
    g = f"the smoothed classifier (base model under Gaussian noise, sigma {params.sigma:g} {units})"
    l2 = f"L2 radius ({units})" if features is None else f"L2 radius (in {units}, over the movable features)"
    metrics = {
        "certified_accuracy": rate(
            int(at_eps.sum()),
            n,
            ctx,
            (
                f"Share of test samples that {g} classifies correctly with a certified {l2} of at least "
                f"{eps:g}; each certificate holds with probability at least {1 - params.alpha:g}."
            ),
            ClaimKind.CERTIFICATE,
        ),
        "abstention_rate": rate(
            int(abstained.sum()),
            n,
            ctx,
            (
                f"Share of test samples on which CERTIFY abstained (no class of {g} reaches pA > 1/2 "
                "with confidence)."
            ),
            ClaimKind.OBSERVATION,
        ),
        "mean_certified_radius": Measurement(
            value=float(radius.mean()),
            n=n,
            claim=ClaimKind.ESTIMATE,
            interval=bootstrap_interval(radius, np.mean, ctx.confidence, np.random.default_rng(ctx.seed)),
            description=f"Average certified {l2} of {g} over test samples, counting 0 for wrong or "
            "abstained samples (interval: bootstrap over samples).",
        ),
    }
    details: dict[str, Any] = {
        "certified_classifier": "smoothed",
        "sigma": params.sigma,
        "n0": params.n0,
        "n": params.n,
        "alpha": params.alpha,
        "samples_assessed": n,
        "noise": "Gaussian in data space, not clipped"
        if features is None
        else "Gaussian in the scaled space x / scale (sigma x scale on each movable feature); the base "
        "classifier rounds integer features and clips each feature to its bounds",
        "radius_units": f"L2, {units}",
        **({"eps_units": DATA_UNITS} if features is None else features.details()),
        "per_sample": per_sample(certified_accuracy=at_eps),
        "radius_quartiles": [float(q) for q in np.quantile(radius, [0.25, 0.5, 0.75])],
    }
    if smoothed is not None:
        details |= {
            "smoothed_accuracy": float((smoothed == y).mean()),
            "predict_abstention_rate": float((smoothed == ABSTAIN).mean()),
        }
    caveat = (
        f"certificates are for {g}, a different classifier from the base ONNX model: deploy the "
        "smoothed classifier to rely on them"
    )
    return MethodOutcome(
        metrics=metrics,
        series=[_curve(ctx, certs.radius, correct, eps, units)],
        details=details,
        reason=caveat,
    )


def _curve(ctx: RunContext, radius: np.ndarray, correct: np.ndarray, eps: float, units: str) -> Series:
    top = max(2 * eps, float(radius.max()) if len(radius) else 0.0, 1e-6)
    grid = sorted({*np.round(np.linspace(0.0, top, 21), 6).tolist(), eps})
    points = [rate(int((correct & (radius >= r)).sum()), len(radius), ctx, "") for r in grid]
    return Series(
        name="smoothed classifier certified accuracy",
        x_label=f"L2 radius ({units})",
        y_label="certified accuracy",
        x=[float(r) for r in grid],
        y=[p.value for p in points],
        y_low=[p.interval.low for p in points if p.interval],
        y_high=[p.interval.high for p in points if p.interval],
    )
