"""Rare failures: adaptive multilevel splitting (Webb, Rainforth, Teh, Kumar, ICLR 2019).

Estimates the probability that an input drawn uniformly from the L-inf ball around a sample (within
the value range) violates the prediction (margin <= 0), down to probabilities far below what plain
Monte Carlo can reach, with Metropolis-Hastings moves between the levels. On tabular data the ball
is the attacks' per-feature box x +- eps x scale within each feature's bounds, fixed features
unchanged, integer features uniform over their whole values (``feature_noise.FeatureNoise.ball``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.results import MethodOutcome, Series, TestStatus
from nnassay.schemas.threats import LinfBall
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.methods.statistical import sampling
from nnassay.tasks.methods.statistical.budget import budget_cut
from nnassay.tasks.methods.statistical.core import per_sample, rate
from nnassay.tasks.methods.statistical.feature_noise import (
    BALL_RULE,
    DATA_UNITS,
    EPS_UNITS,
    FeatureNoise,
    features_of,
)
from nnassay.tasks.stats.bootstrap import bootstrap_interval

Score = Callable[[np.ndarray], np.ndarray]  # inputs (N, ...) -> violation score (N,), >= 0 violates


@dataclass(frozen=True)
class AmsEstimate:
    """One AMS run: log-probability of a violation (natural log) and how it ended."""

    log_p: float
    levels: int
    reached: bool  # the final level (score >= 0) was reached
    floored: bool  # stopped because the estimate fell below the floor (log_p is then the floor)
    acceptance: float  # mean MH acceptance rate over the levels
    evaluations: int  # model evaluations (rows)


def ams(
    score: Score,
    low: np.ndarray,
    high: np.ndarray,
    rng: np.random.Generator,
    *,
    particles: int = 500,
    rho: float = 0.1,
    mh_steps: int = 10,
    log_floor: float = math.log(1e-30),
    max_levels: int = 2000,
    keep_going: Callable[[], bool] = lambda: True,
) -> AmsEstimate:
    """Adaptive multilevel splitting estimate of log P(score(X) >= 0), X uniform on [low, high].

    Each level kills the particles below the rho-quantile of the scores (so about 1 - rho survive),
    multiplies the estimate by the surviving fraction, refills the killed particles with copies of
    survivors, and moves every particle with ``mh_steps`` Metropolis-Hastings steps targeting the
    uniform distribution restricted to {score >= level}: a reflected Gaussian random walk inside the
    box, accepted when it stays above the level. The step width adapts between levels to keep the
    acceptance rate between 0.15 and 0.4. The run ends when the level reaches 0 (the last factor is
    the fraction of particles with score >= 0), or when the estimate falls below ``log_floor``.
    """
    span = (high - low).astype(np.float32)
    x = (low + rng.random((particles, *low.shape), dtype=np.float32) * span).astype(np.float32)
    s = score(x)
    log_p, width, evaluations = 0.0, 0.1, particles
    accepted: list[float] = []
    for level_index in range(1, max_levels + 1):
        level = min(0.0, float(np.sort(s)[int(math.floor(rho * particles))]))
        alive = s >= level
        log_p += math.log(alive.mean())
        if level >= 0.0:
            return AmsEstimate(log_p, level_index, True, False, _mean(accepted), evaluations)
        if log_p < log_floor or not keep_going():
            floored = log_p < log_floor
            return AmsEstimate(
                max(log_p, log_floor) if floored else log_p,
                level_index,
                False,
                floored,
                _mean(accepted),
                evaluations,
            )
        source = rng.choice(np.flatnonzero(alive), size=int((~alive).sum()))
        x[~alive], s[~alive] = x[source], s[source]
        moved = 0
        for _ in range(mh_steps):
            step = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(width) * span
            proposal = _reflect(x + step, low, high)
            proposed = score(proposal)
            ok = proposed >= level
            x[ok], s[ok] = proposal[ok], proposed[ok]
            moved += int(ok.sum())
        evaluations += mh_steps * particles
        accepted.append(moved / (mh_steps * particles))
        width = width * (0.7 if accepted[-1] < 0.15 else 1.3 if accepted[-1] > 0.4 else 1.0)
        width = min(width, 1.0)
    return AmsEstimate(log_p, max_levels, False, False, _mean(accepted), evaluations)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 1.0


def _reflect(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Fold points back into [low, high] by reflection at the faces (keeps the walk symmetric)."""
    span = np.maximum(high - low, np.float32(1e-12))
    t = np.mod(x - low, 2 * span)
    return (low + np.where(t > span, 2 * span - t, t)).astype(np.float32)


def violation_score(model: ModelRunner, label: int) -> Score:
    """max_{j != label} logit_j - logit_label on ONNX Runtime: >= 0 exactly when the label loses."""

    def score(x: np.ndarray) -> np.ndarray:
        logits = model.logits(x, batch_size=len(x)).astype(np.float64)
        own = logits[:, label].copy()
        logits[:, label] = -np.inf
        return logits.max(axis=1) - own

    return score


def snapped(score: Score, features: FeatureNoise, low: np.ndarray, high: np.ndarray) -> Score:
    """``score`` of the points after integer features are rounded and every feature clipped to
    [low, high] (the whole values of the ball): uniform points of the sampling box then score as
    uniform valid points of the ball."""

    def inner(x: np.ndarray) -> np.ndarray:
        valid = x.copy()
        features.snap(valid, low, high)
        return score(valid)

    return inner


def region(
    sample: np.ndarray, label: int, eps: float, ctx: RunContext, features: FeatureNoise | None
) -> tuple[Score, np.ndarray, np.ndarray]:
    """The violation score and the box AMS samples uniformly: the L-inf ball within the value range
    (images), or the per-feature ball with integer features snapped to whole values (tabular)."""
    score = violation_score(ctx.model, label)
    if features is None:
        low, high = sampling.box(sample, eps, ctx.model.value_range)
        return score, low, high
    low, high, snap_low, snap_high = (v.astype(np.float32) for v in features.ball(sample, eps))
    return snapped(score, features, snap_low, snap_high), low, high


class AmsParams(MethodParams):
    """Parameters of adaptive multilevel splitting (names as in Webb et al.)."""

    eps: float | None = Field(default=None, gt=0, description="L-inf radius; from the threat.")
    particles: int = Field(default=300, ge=10, description="Particles N.")
    rho: float = Field(default=0.1, gt=0, lt=1, description="Quantile killed per level.")
    mh_steps: int = Field(default=5, ge=1, description="Metropolis-Hastings steps M per level.")
    log10_floor: float = Field(default=-10.0, lt=0, description="Stop below this log10 probability.")
    tolerated_probability: float = Field(
        default=1e-6, gt=0, lt=1, description="A sample counts as robust when its estimate is below this."
    )
    max_samples: int = Field(default=10, ge=1, description="Assess at most this many (the first) samples.")


@register
class RareEventAms(RobustnessMethod[AmsParams, LinfBall]):
    """Probability of a rare violation under uniform inputs in the L-inf ball, by multilevel splitting.

    Reference: Webb, Rainforth, Teh, Kumar, "A Statistical Approach to Assessing Neural Network
    Robustness", ICLR 2019 (adaptive multilevel splitting with Metropolis-Hastings moves); ISO/IEC
    TR 24029-1 5.3.2 (contrastive). Threat model: inputs uniform over the L-inf ball of radius eps
    within the value range (a distribution, not a worst case); a violation is a margin <= 0 of the clean
    prediction. On tabular data eps is in units of each feature's scale (the attacks' box; fixed
    features unchanged, integer features uniform over their whole values). Parameters: ``particles`` (300), ``rho`` (0.1), ``mh_steps`` (5), ``log10_floor``
    (-10), ``tolerated_probability`` (1e-6), ``max_samples`` (10). Result: per-sample estimates
    of the violation probability: their mean, the worst log10, and the share below the tolerance.
    The estimates carry no guarantee: they are consistent but their error is not bounded.
    """

    name = "statistical.rare_event_ams"
    family = MethodFamily.STATISTICAL
    clause = "5.3.2"  # contrastive: how often a perturbation changes the clean prediction
    threats = ("linf_ball",)
    metrics = ("violation_probability", "worst_log10_violation_probability", "rare_event_robust_fraction")
    claim = ClaimKind.ESTIMATE
    priority = 60
    default = False  # costly; chosen when a goal names it

    @classmethod
    def cost(cls, params: AmsParams, samples: int) -> Cost:
        """Per sample (at most ``max_samples``), the particles moved ``mh_steps`` times at each level
        down to the floor: about log(floor) / log(1 - rho) levels for a robust sample (a sample that
        breaks ends sooner, so this is the upper end)."""
        scored = min(samples, params.max_samples)
        levels = math.ceil(params.log10_floor * math.log(10) / math.log(1 - params.rho))
        calls = 1 + levels * params.mh_steps
        rows = float(scored * params.particles * calls)
        return passes(samples) + Cost(forwards=rows, forward_calls=float(scored * calls), draws=rows)

    def derive_params(self, threat: LinfBall, overrides: dict[str, Any]) -> AmsParams:
        return AmsParams(**{"eps": threat.eps, **overrides})

    def run(self, ctx: RunContext[LinfBall], params: AmsParams) -> MethodOutcome:
        assert params.eps is not None
        x = ctx.data.x[: params.max_samples]
        clean = ctx.model.predict(x)
        estimates: list[AmsEstimate] = []
        features = features_of(ctx)
        for i, (sample, label) in enumerate(zip(x, clean, strict=True)):
            if ctx.time_left() <= 0:
                break
            score, low, high = region(sample, int(label), params.eps, ctx, features)
            estimates.append(
                ams(
                    score,
                    low,
                    high,
                    sampling.stream(ctx.seed, 4, i),
                    particles=params.particles,
                    rho=params.rho,
                    mh_steps=params.mh_steps,
                    log_floor=params.log10_floor * math.log(10),
                    keep_going=lambda: ctx.time_left() > 0,
                )
            )
            ctx.progress(i + 1, len(x))
        complete = [e for e in estimates if e.reached or e.floored]
        if not complete:
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                reason="the time budget ran out before any sample's estimate ended",
            )
        return budget_cut(_outcome(ctx, params, complete, features), len(complete), len(x))


def _outcome(
    ctx: RunContext, params: AmsParams, estimates: list[AmsEstimate], features: FeatureNoise | None
) -> MethodOutcome:
    log10 = np.array([e.log_p / math.log(10) for e in estimates])
    p = np.where([e.floored for e in estimates], 0.0, 10.0**log10)
    robust = p < params.tolerated_probability
    where = f"inputs drawn uniformly from the L-inf ball of radius {params.eps:g} within the value range"
    if features is not None:
        where = (
            f"inputs drawn uniformly from the L-inf ball of radius {params.eps:g} in {EPS_UNITS} within "
            "each feature's bounds (integer features: its whole values; fixed features unchanged)"
        )
    metrics = {
        "violation_probability": Measurement(
            value=float(p.mean()),
            n=len(p),
            claim=ClaimKind.ESTIMATE,
            interval=bootstrap_interval(p, np.mean, ctx.confidence, np.random.default_rng(ctx.seed)),
            description=f"Average over test samples of the estimated probability that {where} change "
            "the prediction (multilevel splitting; interval: bootstrap over samples only).",
        ),
        "worst_log10_violation_probability": Measurement(
            value=float(log10.max()),
            n=len(p),
            claim=ClaimKind.ESTIMATE,
            description=f"Largest log10 estimated probability, over test samples, that {where} change "
            f"the prediction (estimates below 1e{params.log10_floor:g} are cut at it).",
        ),
        "rare_event_robust_fraction": rate(
            int(robust.sum()),
            len(p),
            ctx,
            (
                f"Share of test samples whose estimated probability that {where} change the prediction "
                f"is below {params.tolerated_probability:g} (estimates, not bounds)."
            ),
            ClaimKind.ESTIMATE,
        ),
    }
    order = np.argsort(log10)
    series = Series(
        name="estimated violation probability per sample",
        kind="bar",
        x_label="test sample (sorted)",
        y_label="log10 violation probability",
        x=[float(i) for i in range(len(p))],
        y=[float(v) for v in log10[order]],
    )
    details: dict[str, Any] = {
        "log10_violation_probability": [float(v) for v in log10],
        "levels": [e.levels for e in estimates],
        "evaluations": int(sum(e.evaluations for e in estimates)),
        "mean_acceptance": float(np.mean([e.acceptance for e in estimates])),
        "below_floor": int(sum(e.floored for e in estimates)),
        "per_sample": per_sample(rare_event_robust_fraction=robust),
        **({"eps_units": DATA_UNITS} if features is None else features.details(BALL_RULE)),
    }
    return MethodOutcome(metrics=metrics, series=[series], details=details)
