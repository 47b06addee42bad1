"""Probabilistic robustness: how likely a random perturbation is to change a prediction.

ISO/IEC TR 24029-1 5.3.2 (contrastive measures: the prediction under a perturbation distribution
contrasted with the clean prediction).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from nnassay.schemas.common import ClaimKind, Confidence, MethodFamily
from nnassay.schemas.results import MethodOutcome, Series, TestStatus
from nnassay.schemas.threats import GaussianNoise, LinfBall, UniformNoise
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.methods.statistical import sampling
from nnassay.tasks.methods.statistical.budget import budget_cut
from nnassay.tasks.methods.statistical.core import per_sample, rate
from nnassay.tasks.methods.statistical.feature_noise import (
    BALL_RULE,
    DATA_UNITS,
    FeatureBall,
    FeatureGaussian,
    FeatureNoise,
    FeatureUniform,
    features_of,
)
from nnassay.tasks.stats.intervals import upper_bounds


class ProbabilisticParams(MethodParams):
    """Parameters of the probabilistic robustness estimate."""

    strength: float | None = Field(default=None, gt=0, description="Sigma or eps; from the threat.")
    draws: int = Field(default=1000, ge=1, le=10_000_000, description="Random perturbations per sample.")
    bound_confidence: Confidence | None = Field(
        default=None, description="Confidence of each per-sample upper bound; default: the goal's."
    )
    tolerated_flip_probability: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        validate_default=True,
        description="A sample counts as robust when its flip probability's upper bound is at most this.",
    )
    batch: int = Field(default=10_000, ge=1, description="Perturbed inputs per ONNX Runtime call.")

    @field_validator("tolerated_flip_probability")
    @classmethod
    def _reachable(cls, value: float, info: ValidationInfo) -> float:
        draws, confidence = info.data.get("draws"), info.data.get("bound_confidence") or 0.95
        if draws is not None and float(upper_bounds(0, draws, confidence)) > value:
            floor = float(upper_bounds(0, draws, confidence))
            needed = int(np.ceil(np.log(1 - confidence) / np.log(1 - value)))
            raise ValueError(
                f"with {draws} draws the smallest possible {confidence:.0%} upper bound is "
                f"{floor:.3g}, above the tolerated {value:g}, so no sample could count as "
                f"robust; use at least {needed} draws"
            )
        return value


@dataclass(frozen=True)
class FlipPart:
    """Per-sample flip counts of samples [start, start + done)."""

    start: int
    flips: np.ndarray  # int64 per complete sample
    total: int  # samples asked for
    time_s: float = 0.0


Random = GaussianNoise | UniformNoise | LinfBall  # the threats sampled here (a ball: uniformly)


def sampler_for(
    threat: Random, strength: float, value_range: tuple[float, float], features: FeatureNoise | None = None
) -> sampling.Sampler:
    """The perturbation distribution of a threat: clipped Gaussian, clipped uniform, uniform box;
    with ``features`` (tabular data), the same in units of each feature's scale (``feature_noise``)."""
    if features is not None:
        if isinstance(threat, GaussianNoise):
            return FeatureGaussian(strength, features)
        if isinstance(threat, UniformNoise):
            return FeatureUniform(strength, features)
        return FeatureBall(strength, features)
    if isinstance(threat, GaussianNoise):
        return sampling.Gaussian(strength, clip=value_range)
    if isinstance(threat, UniformNoise):
        return sampling.UniformNoise(strength, clip=value_range)
    return sampling.UniformBox(strength, clip=value_range)


@register
class ProbabilisticRobustness(RobustnessMethod[ProbabilisticParams, Random]):
    """Per-sample probability that a random perturbation changes the prediction, with upper bounds.

    Reference: ISO/IEC TR 24029-1 5.3.2 (contrastive); Monte Carlo estimation with exact one-sided
    Clopper-Pearson bounds (as in Webb et al., ICLR 2019, and probabilistic robustness by sampling).
    Threat model: Gaussian noise (sigma, clipped to the value range), uniform noise (eps, clipped), or
    an L-inf ball treated as the uniform distribution over the ball within the value range (not a
    worst case). On tabular data the strength is in units of each feature's scale, fixed features keep
    their values, integer features stay whole and every feature stays in its bounds (``feature_noise``).
    Parameters: ``draws`` (1000) perturbations per sample, ``tolerated_flip_probability`` (0.01),
    ``bound_confidence`` (the goal's). Result: ``robust_sample_fraction``, the share of samples
    whose upper bound on the flip probability is at most the tolerated level; and
    ``mean_flip_probability`` over all draws; a histogram of the per-sample upper bounds.
    """

    name = "statistical.probabilistic_robustness"
    family = MethodFamily.STATISTICAL
    clause = "5.3.2"  # contrastive: flips of the clean prediction
    threats = ("gaussian_noise", "uniform_noise", "linf_ball")
    metrics = ("robust_sample_fraction", "mean_flip_probability")
    claim = ClaimKind.BOUND
    priority = 40
    shard_unit = 1  # every sample has its own random stream

    @classmethod
    def cost(cls, params: ProbabilisticParams, samples: int) -> Cost:
        """Clean predictions, then ``draws`` perturbed copies of every sample in large batches."""
        return passes(samples) + passes(samples * params.draws, batch=params.batch, drawn=True)

    def derive_params(self, threat: Random, overrides: dict[str, Any]) -> ProbabilisticParams:
        strength = threat.sigma if isinstance(threat, GaussianNoise) else threat.eps
        return ProbabilisticParams(**{"strength": strength, **overrides})

    def run(self, ctx: RunContext[Random], params: ProbabilisticParams) -> MethodOutcome:
        return self.merge_parts(ctx, params, [self.run_part(ctx, params, 0, len(ctx.data))])

    def run_part(
        self, ctx: RunContext[Random], params: ProbabilisticParams, start: int, stop: int
    ) -> FlipPart:
        """Flip counts of samples [start, stop); stops early when the time budget runs out."""
        assert params.strength is not None
        x = ctx.data.x[start:stop]
        clean = ctx.model.predict(x)
        sampler = sampler_for(ctx.threat, params.strength, ctx.model.value_range, features_of(ctx))
        counts, done = sampling.class_counts(
            ctx.model,
            x,
            sampler,
            params.draws,
            seed=ctx.seed,
            stage=0,
            first_index=start,
            batch=params.batch,
            keep_going=lambda: ctx.time_left() > 0,
            progress=ctx.progress,
        )
        flips = params.draws - counts[np.arange(done), clean[:done]]
        return FlipPart(start=start, flips=flips, total=stop - start)

    def merge_parts(
        self, ctx: RunContext[Random], params: ProbabilisticParams, parts: list[Any]
    ) -> MethodOutcome:
        """The outcome over all parts (concatenation of per-sample counts: exact)."""
        assert params.strength is not None
        parts = sorted(parts, key=lambda p: p.start)
        flips = np.concatenate([p.flips for p in _prefix(parts)]) if parts else np.zeros(0, np.int64)
        confidence = params.bound_confidence or ctx.confidence
        features = features_of(ctx)
        sampler = sampler_for(ctx.threat, params.strength, ctx.model.value_range, features)
        units: dict[str, Any] = {"eps_units": DATA_UNITS}
        if features is not None:
            units = features.details(BALL_RULE) if isinstance(ctx.threat, LinfBall) else features.details()
        facts: dict[str, Any] = {
            "perturbation": sampler.label,
            **units,
            "draws": params.draws,
            "bound_confidence": confidence,
            "samples_assessed": len(flips),
            "tolerated_flip_probability": params.tolerated_flip_probability,
        }
        floor = float(upper_bounds(0, params.draws, confidence))
        if floor > params.tolerated_flip_probability:
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                details=facts,
                reason=(
                    f"{params.draws} draws cannot bound a flip probability below "
                    f"{params.tolerated_flip_probability:g} at {confidence:.0%} (smallest bound {floor:.3g})"
                ),
            )
        if len(flips) == 0:
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                details=facts,
                reason="the time budget ran out before any sample was assessed",
            )
        return budget_cut(self._outcome(ctx, params, flips, confidence, facts), len(flips), len(ctx.data))

    def _outcome(
        self,
        ctx: RunContext,
        params: ProbabilisticParams,
        flips: np.ndarray,
        confidence: float,
        facts: dict[str, Any],
    ) -> MethodOutcome:
        bounds = upper_bounds(flips, params.draws, confidence)
        robust = bounds <= params.tolerated_flip_probability
        tol, n = params.tolerated_flip_probability, len(flips)
        metrics = {
            "robust_sample_fraction": rate(
                int(robust.sum()),
                n,
                ctx,
                (
                    f"Share of test samples for which a one-sided {confidence:.0%} upper confidence bound on "
                    f"the probability that {facts['perturbation']} changes the prediction is at most {tol:g} "
                    f"({params.draws} draws per sample)."
                ),
                ClaimKind.BOUND,
            ),
            "mean_flip_probability": rate(
                int(flips.sum()),
                n * params.draws,
                ctx,
                (
                    f"Average probability that {facts['perturbation']} changes the prediction, over test "
                    "samples (interval treats all draws as independent)."
                ),
                ClaimKind.ESTIMATE,
            ),
        }
        facts |= {
            "max_upper_bound": float(bounds.max()),
            "median_upper_bound": float(np.median(bounds)),
            "per_sample": per_sample(robust_sample_fraction=robust),
        }
        buffer = io.BytesIO()
        np.savez(buffer, flips=flips, upper_bound=bounds, draws=params.draws)
        artifact = ctx.save_artifact(
            "flip_probabilities.npz",
            buffer.getvalue(),
            "application/x-npz",
            "Per-sample flip counts and upper bounds of the flip probability.",
        )
        return MethodOutcome(
            metrics=metrics, series=[_histogram(bounds, tol, confidence)], artifacts=[artifact], details=facts
        )


def _prefix(parts: list[FlipPart]) -> list[FlipPart]:
    """Parts up to and including the first incomplete one (later samples would leave a gap)."""
    kept = []
    for part in parts:
        kept.append(part)
        if len(part.flips) < part.total:
            break
    return kept


def _histogram(bounds: np.ndarray, tolerated: float, confidence: float) -> Series:
    floor = max(float(bounds.min()), 1e-12)
    edges = np.unique(np.concatenate([np.geomspace(floor, 1.0, 13), [tolerated]]))
    edges[0] = min(edges[0], floor) * (1 - 1e-9)
    counts, _ = np.histogram(bounds, bins=edges)
    return Series(
        name="samples by flip-probability upper bound",
        kind="histogram",
        x_label=f"{confidence:.0%} upper bound of the flip probability (bin upper edge)",
        y_label="test samples",
        x=[float(e) for e in edges[1:]],
        y=[float(c) for c in counts],
    )
