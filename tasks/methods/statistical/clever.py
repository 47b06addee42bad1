"""CLEVER scores (Weng et al., ICLR 2018): extreme-value estimates of the minimal adversarial distortion.

Gradients come from the shared ONNX-to-torch executor (``ModelRunner.torch_module``); when it cannot
run the model, the test is inconclusive with the executor's reason. The scores are estimates with
no guarantee: a sampled maximum can miss the true local Lipschitz constant.

On tabular data CLEVER works in the scaled space z = x / scale (each feature's scale, as the attacks
use it): it samples the attacks' ball (L-inf: x +- R x scale; L2: sum((delta / scale)^2) <= R^2) over
the movable features within each feature's bounds, integer features relaxed to their continuous
interval (gradients need it), fixed features held; the gradient norms are those with respect to z
(gradient x scale, fixed features zero), so scores are distances in units of each feature's scale.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field
from scipy.stats import kstest, weibull_max

from nnassay.schemas.common import ClaimKind, Measurement, MethodFamily
from nnassay.schemas.results import MethodOutcome, Series, TestStatus
from nnassay.schemas.threats import L2Ball, LinfBall
from nnassay.tasks.methods.cost import Cost, passes
from nnassay.tasks.methods.registry import MethodParams, RobustnessMethod, RunContext, register
from nnassay.tasks.methods.statistical import sampling
from nnassay.tasks.methods.statistical.budget import budget_cut
from nnassay.tasks.methods.statistical.core import per_sample, rate
from nnassay.tasks.methods.statistical.feature_noise import (
    DATA_UNITS,
    EPS_UNITS,
    FeatureNoise,
    features_of,
)
from nnassay.tasks.stats.bootstrap import bootstrap_interval

SCALED_RULE = (
    "CLEVER samples the ball over the movable features within each feature's bounds (integer features "
    "relaxed to their continuous interval, fixed features held) and takes gradient norms with respect to "
    "x / scale, so scores are in units of each feature's scale"
)


@dataclass(frozen=True)
class LipschitzEstimate:
    """Reverse-Weibull estimate of the largest gradient norm in the ball, from batch maxima."""

    value: float  # estimated local Lipschitz constant (>= the largest observed norm)
    observed_max: float
    ks_p_value: float | None  # goodness of fit of the reverse Weibull (None when not fitted)


def estimate_lipschitz(maxima: np.ndarray) -> LipschitzEstimate:
    """Fit a reverse Weibull (``scipy.stats.weibull_max``) to batch maxima; its location estimates
    the maximum gradient norm. The fit runs on maxima scaled to 1 and keeps the best likelihood of a
    few starting shapes; the result is never below the largest observed norm (a fit location below
    it would contradict the data). Constant maxima (e.g. a linear model) give that constant."""
    top = float(np.max(maxima))
    if top <= 0 or np.ptp(maxima) <= 1e-9 * top:
        return LipschitzEstimate(top, top, None)
    scaled = np.asarray(maxima, float) / top
    best: tuple[float, tuple[float, float, float]] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for shape in (0.5, 1.0, 2.0, 5.0):
            try:
                fit = weibull_max.fit(scaled, shape, loc=1.01, scale=float(np.ptp(scaled)) or 0.1)
            except (ValueError, RuntimeError, FloatingPointError):
                continue
            nll = float(weibull_max.nnlf(fit, scaled))
            if np.isfinite(nll) and (best is None or nll < best[0]):
                best = (nll, fit)
    if best is None:
        return LipschitzEstimate(top, top, None)
    fit = best[1]
    p = float(kstest(scaled, weibull_max.cdf, args=fit).pvalue)
    return LipschitzEstimate(max(float(fit[1]), 1.0) * top, top, p)


def sample_ball(
    rng: np.random.Generator,
    x0: np.ndarray,
    radius: float,
    norm: str,
    count: int,
    value_range: tuple[float, float],
    features: FeatureNoise | None = None,
) -> np.ndarray:
    """``count`` points uniform in the L-inf or L2 ball around x0, clipped to the value range; with
    ``features`` (tabular), the ball in units of each feature's scale (``scaled_ball``)."""
    if features is not None:
        return scaled_ball(rng, x0, radius, norm, count, features)
    if norm == "linf":
        low, high = sampling.box(x0, radius, value_range)
        return (low + rng.random((count, *x0.shape), dtype=np.float32) * (high - low)).astype(np.float32)
    d = x0.size
    direction = rng.standard_normal((count, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    r = radius * rng.random((count, 1)) ** (1.0 / d)
    points = x0.reshape(1, -1) + direction * r
    return np.clip(points, *value_range).reshape(count, *x0.shape).astype(np.float32)


def scaled_ball(
    rng: np.random.Generator, x0: np.ndarray, radius: float, norm: str, count: int, features: FeatureNoise
) -> np.ndarray:
    """``count`` points uniform in the ball of radius ``radius`` in the scaled space x / scale over the
    movable features (L-inf: a box; L2: an ellipsoid in data units), clipped to each feature's bounds."""
    if norm == "linf":
        low, high = features.interval(x0, radius)
        return (low + rng.random((count, *x0.shape)) * (high - low)).astype(np.float32)
    movable = features.spread > 0
    direction = np.zeros((count, x0.size))
    direction[:, movable] = rng.standard_normal((count, int(movable.sum())))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-300)
    r = radius * rng.random((count, 1)) ** (1.0 / max(int(movable.sum()), 1))
    points = x0.reshape(1, -1).astype(np.float64) + direction * r * features.spread
    return np.clip(points, features.low, features.high).reshape(count, *x0.shape).astype(np.float32)


def clever_score(
    module: Any,
    x0: np.ndarray,
    label: int,
    margins: np.ndarray,
    targets: list[int],
    *,
    radius: float,
    norm: str,
    n_batches: int,
    batch_size: int,
    rng: np.random.Generator,
    value_range: tuple[float, float],
    features: FeatureNoise | None = None,
) -> tuple[float, list[LipschitzEstimate]]:
    """Untargeted CLEVER score of one sample: min over targets j of min(margin_j / L_j, radius).

    ``margins[j]`` is logit_label - logit_j at x0; L_j estimates the largest dual norm (L1 for an
    L-inf ball, L2 for an L2 ball) of the gradient of logit_label - logit_j in the ball. With
    ``features`` (tabular) the ball and the gradients are in the scaled space x / scale.
    """
    import torch

    dual = 1 if norm == "linf" else 2
    maxima = np.zeros((len(targets), n_batches))
    for b in range(n_batches):
        points = torch.from_numpy(sample_ball(rng, x0, radius, norm, batch_size, value_range, features))
        points.requires_grad_(True)
        grads = _target_gradients(module(points), points, label, targets)
        if features is not None:  # d/d(x / scale) = scale x d/dx; fixed features cannot move
            grads = grads * torch.from_numpy(features.spread.reshape(x0.shape)).to(grads.dtype)
        norms = torch.linalg.vector_norm(grads.reshape(len(targets), batch_size, -1), ord=dual, dim=2)
        maxima[:, b] = norms.max(dim=1).values.detach().numpy()
    estimates = [estimate_lipschitz(m) for m in maxima]
    scores = [
        min(float(margins[j]) / max(e.value, 1e-12), radius) for j, e in zip(targets, estimates, strict=True)
    ]
    return max(min(scores), 0.0), estimates


def _target_gradients(logits: Any, points: Any, label: int, targets: list[int]) -> Any:
    """Gradients of logit_label - logit_j for every target j, shape (targets, batch, ...).

    One batched backward pass (``is_grads_batched``) when the executor's ops allow it, else one
    backward pass per target.
    """
    import torch

    weights = torch.zeros((len(targets), *logits.shape), dtype=logits.dtype)
    for t, j in enumerate(targets):
        weights[t, :, label], weights[t, :, j] = 1.0, -1.0
    try:
        (grads,) = torch.autograd.grad(
            logits, points, grad_outputs=weights, is_grads_batched=True, retain_graph=True
        )
        return grads
    except (RuntimeError, NotImplementedError):
        return torch.stack(
            [torch.autograd.grad(logits, points, grad_outputs=w, retain_graph=True)[0] for w in weights]
        )


class CleverParams(MethodParams):
    """Parameters of the CLEVER estimate (names as in Weng et al.)."""

    eps: float | None = Field(default=None, gt=0, description="Radius of the goal; from the threat.")
    sample_radius: float | None = Field(
        default=None, gt=0, description="Radius R of the sampling ball and cap of the score; default: eps."
    )
    n_batches: int = Field(default=40, ge=3, description="Batches N_b; one gradient-norm maximum each.")
    batch_size: int = Field(default=64, ge=1, description="Points N_s sampled per batch.")
    max_targets: int = Field(default=2, ge=1, description="Runner-up classes (by logit) scored against.")
    max_samples: int = Field(default=50, ge=1, description="Score at most this many (the first) samples.")
    torch_threads: int = Field(
        default=1,
        ge=1,
        description="Torch threads for the gradients; 1 avoids thread hand-offs that cost more than they"
        " save on small batches and on a busy machine.",
    )


@register
class Clever(RobustnessMethod[CleverParams, LinfBall | L2Ball]):
    """CLEVER: extreme-value estimates of the smallest perturbation that changes the prediction.

    Reference: Weng, Zhang, Chen, Yi, Su, Gao, Hsieh, Daniel, "Evaluating the Robustness of Neural
    Networks: An Extreme Value Theory Approach", ICLR 2018; ISO/IEC TR 24029-1 5.3. Threat model:
    L-inf or L2 ball of radius eps. Parameters: ``n_batches`` (40) x ``batch_size`` (64) gradients
    sampled in the ball of radius ``sample_radius`` (eps), reverse-Weibull fit of the batch maxima,
    ``max_targets`` (2) runner-up classes, ``max_samples`` (50). Result: ``mean_clever_score`` and
    ``fraction_clever_above_eps``. ESTIMATES ONLY: CLEVER can overestimate robustness (a sampled
    maximum can miss the true local Lipschitz constant); it is never a guarantee.
    """

    name = "statistical.clever"
    family = MethodFamily.STATISTICAL
    clause = "5.3"  # no sub-clause fits a Lipschitz estimate: the general one
    threats = ("linf_ball", "l2_ball")
    metrics = ("mean_clever_score", "fraction_clever_above_eps")
    needs_executor = True
    claim = ClaimKind.ESTIMATE
    priority = 70
    default = False  # an estimate; chosen when a goal names it

    @classmethod
    def cost(cls, params: CleverParams, samples: int) -> Cost:
        """Per scored sample, ``n_batches`` batches of ``batch_size`` points in the ball, each with
        the gradient of every target's margin (one backward per target)."""
        scored = min(samples, params.max_samples)
        points = scored * params.n_batches * params.batch_size
        return passes(samples) + Cost(
            backwards=points * params.max_targets,
            backward_calls=scored * params.n_batches * params.max_targets,
            draws=points,
        )

    def derive_params(self, threat: LinfBall | L2Ball, overrides: dict[str, Any]) -> CleverParams:
        return CleverParams(**{"eps": threat.eps, **overrides})

    def run(self, ctx: RunContext[LinfBall | L2Ball], params: CleverParams) -> MethodOutcome:
        assert params.eps is not None
        try:
            module = ctx.model.torch_module().eval()
        except Exception as exc:  # the executor reports unsupported models in its own exceptions
            return MethodOutcome(
                status=TestStatus.INCONCLUSIVE,
                reason=f"no gradients: the ONNX-to-torch executor cannot run this model "
                f"({type(exc).__name__}: {str(exc)[:300]})",
            )
        import torch

        x = ctx.data.x[: params.max_samples]
        logits = ctx.model.logits(x)
        threads = torch.get_num_threads()
        torch.set_num_threads(params.torch_threads)
        try:
            mismatch = _executor_mismatch(module, x, logits)
            if mismatch:
                return MethodOutcome(status=TestStatus.INCONCLUSIVE, reason=mismatch)
            return self._scores(ctx, params, module, x, logits)
        finally:
            torch.set_num_threads(threads)

    def _scores(
        self, ctx: RunContext, params: CleverParams, module: Any, x: np.ndarray, logits: np.ndarray
    ) -> MethodOutcome:
        norm = "linf" if ctx.threat.kind == "linf_ball" else "l2"
        radius = params.sample_radius or params.eps or 0.0
        features = features_of(ctx)
        scores, fits = [], []
        for i, (x0, row) in enumerate(zip(x, logits, strict=True)):
            if i and ctx.time_left() <= 0:  # one sample at least, so a spent budget still shows a score
                break
            label = int(np.argmax(row))
            targets = [int(j) for j in np.argsort(-row) if j != label][: params.max_targets]
            score, estimates = clever_score(
                module,
                x0,
                label,
                row[label] - row,
                targets,
                radius=radius,
                norm=norm,
                n_batches=params.n_batches,
                batch_size=params.batch_size,
                rng=sampling.stream(ctx.seed, 5, i),
                value_range=ctx.model.value_range,
                features=features,
            )
            scores.append(score)
            fits += [e.ks_p_value for e in estimates if e.ks_p_value is not None]
            ctx.progress(i + 1, len(x))
        if not scores:
            return MethodOutcome(status=TestStatus.INCONCLUSIVE, reason="the time budget ran out first")
        outcome = _outcome(ctx, params, np.array(scores), norm, radius, fits, features)
        return budget_cut(outcome, len(scores), len(x))


def _executor_mismatch(module: Any, x: np.ndarray, logits: np.ndarray) -> str | None:
    import torch

    with torch.no_grad():
        mine = module(torch.from_numpy(x[:8].astype(np.float32))).double().numpy()
    gap = float(np.max(np.abs(mine - logits[:8]))) if len(x) else 0.0
    scale = float(np.max(np.abs(logits[:8]))) if len(x) else 1.0
    if not np.isfinite(gap) or gap > 1e-3 * max(scale, 1.0):
        return (
            f"the torch executor's logits differ from ONNX Runtime's by {gap:.3g}; gradients from it "
            "would not describe the assessed model"
        )
    return None


def _outcome(
    ctx: RunContext,
    params: CleverParams,
    scores: np.ndarray,
    norm: str,
    radius: float,
    fits: list[float],
    features: FeatureNoise | None = None,
) -> MethodOutcome:
    eps = params.eps or 0.0
    above = scores >= eps
    units = DATA_UNITS if features is None else EPS_UNITS
    unit = f"{'L-inf' if norm == 'linf' else 'L2'} ({units})"
    metrics = {
        "mean_clever_score": Measurement(
            value=float(scores.mean()),
            n=len(scores),
            claim=ClaimKind.ESTIMATE,
            interval=bootstrap_interval(scores, np.mean, ctx.confidence, np.random.default_rng(ctx.seed)),
            description=f"Average CLEVER score: an estimate (not a bound) of the smallest {unit} "
            f"perturbation that changes the prediction, capped at {radius:g} (interval: "
            "bootstrap over samples).",
        ),
        "fraction_clever_above_eps": rate(
            int(above.sum()),
            len(scores),
            ctx,
            (
                f"Share of test samples whose CLEVER score reaches the goal's {unit} eps {eps:g}: an "
                "estimate of the share robust at eps, never a guarantee."
            ),
            ClaimKind.ESTIMATE,
        ),
    }
    counts, edges = np.histogram(scores, bins=10, range=(0.0, max(radius, float(scores.max()), 1e-12)))
    series = Series(
        name="samples by CLEVER score",
        kind="histogram",
        x_label=f"CLEVER score ({unit})",
        y_label="test samples",
        x=[float(e) for e in edges[1:]],
        y=[float(c) for c in counts],
    )
    details: dict[str, Any] = {
        "scores": [float(s) for s in scores],
        "norm": norm,
        "sample_radius": radius,
        "gradients_per_target": params.n_batches * params.batch_size,
        "weibull_fit_ks_p_median": float(np.median(fits)) if fits else None,
        "per_sample": per_sample(fraction_clever_above_eps=above),
        **({"eps_units": DATA_UNITS} if features is None else features.details(SCALED_RULE)),
    }
    return MethodOutcome(
        metrics=metrics,
        series=[series],
        details=details,
        reason="CLEVER scores are estimates, not guarantees",
    )
