"""Noise on tabular data in units of each feature's scale, inside the attacks' per-feature box.

On tabular data (``tabular_box(ctx)`` is not None: the test the attacks use) a noise strength s
(Gaussian sigma, uniform-noise eps, L-inf ball eps) moves feature j by s x scale_j, the scale of
``nnassay.tasks.methods.empirical.features`` (declared, else the feature's standard deviation in the
test data). Immutable and categorical features never move. Integer features get the noise, then are
rounded to the nearest whole value; every moved feature is clipped to its bounds (integer features
to the whole values inside them). Uniform draws from an L-inf ball give integer features each whole
value of the ball with equal probability. Image data keeps the data-unit samplers of ``sampling``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import JsonValue

from nnassay.tasks.methods.empirical.features import FeatureBox, tabular_box
from nnassay.tasks.methods.registry import RunContext
from nnassay.tasks.methods.statistical.sampling import Sampler

EPS_UNITS = "units of each feature's scale"
DATA_UNITS = "data units"
NOISE_RULE = (
    "noise of strength s has spread s x scale on each feature; immutable and categorical features keep "
    "their values; integer features get the noise, then are rounded to the nearest whole value; every "
    "moved feature is clipped to its bounds (integer features to the whole values inside them)"
)
BALL_RULE = (
    "uniform over the L-inf ball x +- eps x scale within each feature's bounds; immutable and categorical "
    "features keep their values; integer features take each whole value of the ball with equal probability"
)


@dataclass(frozen=True)
class FeatureNoise:
    """The per-feature arrays noise needs, from the attacks' box (all of shape (features,))."""

    box: FeatureBox
    spread: np.ndarray  # each feature's scale, 0 on fixed (immutable, categorical) features
    low: np.ndarray  # bounds, whole for integer features; -inf / inf on fixed features (never clipped)
    high: np.ndarray
    whole: np.ndarray  # indices of the integer features

    @classmethod
    def of(cls, box: FeatureBox) -> FeatureNoise:
        low, high = box.whole_bounds()
        return cls(
            box=box,
            spread=np.where(box.frozen, 0.0, box.scale),
            low=np.where(box.frozen, -np.inf, low),
            high=np.where(box.frozen, np.inf, high),
            whole=np.flatnonzero(box.integer & ~box.frozen),
        )

    def snap(self, out: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None) -> None:
        """In place on noisy copies (..., features): integer features rounded, every feature clipped
        to ``low``/``high`` (default: its bounds). Fixed features are left as they are."""
        if len(self.whole):
            out[..., self.whole] = np.round(out[..., self.whole])
        lo = self.low if low is None else low
        hi = self.high if high is None else high
        np.clip(out, lo.astype(out.dtype), hi.astype(out.dtype), out=out)

    def interval(self, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """Continuous corners (float64) of the L-inf ball x +- eps x scale within each feature's
        bounds, integer features relaxed to their interval, fixed features at x."""
        x64 = np.asarray(x, np.float64)
        return np.maximum(x64 - eps * self.spread, self.low), np.minimum(x64 + eps * self.spread, self.high)

    def ball(self, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The L-inf ball of radius eps around samples x (..., features), as (sampling low, sampling high, snap low,
        snap high), float64: drawing uniformly in [sampling low, sampling high] and snapping to
        [snap low, snap high] is uniform over the ball's valid points.

        Continuous features: x +- eps x scale within the bounds (both pairs alike). Integer features:
        the whole values w in the ball, sampled from [w_min - 1/2, w_max + 1/2] so that rounding
        gives each one equal probability (x itself when the ball holds no whole value). Fixed: x.
        """
        x64 = np.asarray(x, np.float64)
        lo, hi = self.interval(x64, eps)
        integer = np.zeros(x64.shape[-1], bool)
        integer[self.whole] = True
        w_lo, w_hi = np.ceil(lo), np.floor(hi)
        fits = integer & (w_lo <= w_hi)
        snap_lo = np.where(integer, np.where(fits, w_lo, x64), lo)
        snap_hi = np.where(integer, np.where(fits, w_hi, x64), hi)
        half = np.where(fits, 0.5, 0.0)
        return snap_lo - half, snap_hi + half, snap_lo, snap_hi

    def details(self, rule: str = NOISE_RULE) -> dict[str, JsonValue]:
        """The units for the evidence: the attacks' keys (``FeatureBox.details``) and the rule."""
        return {"eps_units": EPS_UNITS, **self.box.details(), "feature_noise": rule}


def features_of(ctx: RunContext) -> FeatureNoise | None:
    """The per-feature noise of a test's tabular data (the attacks' box), None for images."""
    box = tabular_box(ctx)
    return None if box is None else FeatureNoise.of(box)


@dataclass(frozen=True)
class FeatureGaussian(Sampler):
    """x + sigma x scale x N(0, I) on the movable features, then snapped (rounded, clipped)."""

    sigma: float
    noise: FeatureNoise

    @property
    def label(self) -> str:  # type: ignore[override]
        return (
            f"Gaussian noise of sigma {self.sigma:g} in {EPS_UNITS} (integer features rounded, clipped "
            "to each feature's bounds, fixed features unchanged)"
        )

    def fill(self, rng: np.random.Generator, x: np.ndarray, out: np.ndarray) -> None:
        rng.standard_normal(dtype=np.float32, out=out)
        out *= (self.sigma * self.noise.spread).astype(np.float32)
        out += x
        self.noise.snap(out)


@dataclass(frozen=True)
class FeatureUniform(Sampler):
    """x + U(-eps, eps) x scale per movable feature, then snapped inside the ball and the bounds."""

    eps: float
    noise: FeatureNoise

    @property
    def label(self) -> str:  # type: ignore[override]
        return (
            f"uniform noise of eps {self.eps:g} in {EPS_UNITS} (integer features rounded, clipped to "
            "each feature's bounds, fixed features unchanged)"
        )

    def fill(self, rng: np.random.Generator, x: np.ndarray, out: np.ndarray) -> None:
        radius = (self.eps * self.noise.spread).astype(np.float32)
        rng.random(dtype=np.float32, out=out)
        out *= 2 * radius
        out += x - radius
        _, _, low, high = self.noise.ball(x, self.eps)
        self.noise.snap(out, low, high)


@dataclass(frozen=True)
class FeatureBall(Sampler):
    """Uniform over the valid points of the L-inf ball x +- eps x scale (see ``FeatureNoise.ball``)."""

    eps: float
    noise: FeatureNoise

    @property
    def label(self) -> str:  # type: ignore[override]
        return (
            f"uniform over the L-inf ball of radius {self.eps:g} in {EPS_UNITS} within each feature's "
            "bounds (integer features: its whole values; fixed features unchanged)"
        )

    def fill(self, rng: np.random.Generator, x: np.ndarray, out: np.ndarray) -> None:
        low, high, snap_low, snap_high = (v.astype(np.float32) for v in self.noise.ball(x, self.eps))
        rng.random(dtype=np.float32, out=out)
        out *= high - low
        out += low
        self.noise.snap(out, snap_low, snap_high)


def perturb_features(
    x: np.ndarray, noise: FeatureNoise, gaussian: bool, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Noisy copies of samples x (n, features): Gaussian (sigma) or uniform (eps) in feature scales,
    drawn as ``core.perturb`` draws data-unit noise (one call on the whole block), then snapped."""
    if gaussian:
        draw = rng.normal(0.0, strength, size=x.shape)
    else:
        draw = rng.uniform(-strength, strength, size=x.shape)
    noisy = np.asarray(x, np.float64) + draw * noise.spread
    if gaussian:
        noise.snap(noisy)
    else:
        noise.snap(noisy, *noise.ball(x, strength)[2:])
    return noisy.astype(np.float32)
